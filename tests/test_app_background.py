"""Tests for app/background.py: the page is built while the model loads; turns wait for it.

    .venv/bin/python -m pytest tests/test_app_background.py -q
"""

from __future__ import annotations

import threading

import pytest

from app.background import BackgroundModel
from app.handlers import DEFAULT_SETTINGS, ChatHandlers, headline
from app.media import OutputRoot
from app.standin import tiny_model
from app.store import ScoreStore
from nextgpt.config import Modality
from nextgpt.model import ModelUnavailableError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def last_reply(handlers: ChatHandlers, text: str) -> tuple[str, str | None]:
    session = None
    for _, session in handlers.chat({"text": text, "files": []}, None, *DEFAULT_SETTINGS):
        pass
    turn = session.turns[-1]
    return turn.text, turn.error


def test_the_page_is_built_before_the_model_and_the_first_turn_waits(tiny, tmp_path):
    release = threading.Event()

    def load():
        release.wait(30)
        return tiny

    model = BackgroundModel(load, cfg=tiny.cfg, can_encode=True, can_generate=set(Modality))
    handlers = ChatHandlers(model, OutputRoot(tmp_path / "out"), ScoreStore(tmp_path / "s.sqlite"))
    assert handlers.headline == headline(tiny) and "writes text, images, audio, video" in handlers.headline
    model.start()
    assert not model.ready
    with pytest.raises(TimeoutError):
        model.wait(timeout=0.05)
    tiny.llm.queue_reply("Hello there.")
    answer: list = []
    turn = threading.Thread(target=lambda: answer.append(last_reply(handlers, "Hi")))
    turn.start()
    turn.join(0.3)
    assert turn.is_alive() and not answer  # waiting for the model
    release.set()
    turn.join(60)
    assert answer == [("Hello there.", None)] and model.ready
    assert model.tokenizer is tiny.tokenizer  # the rest of the model's interface is the loaded model's


def test_a_failed_load_is_said_in_every_turn(tmp_path, tiny, caplog):
    def load():
        raise OSError("the checkpoint folder is gone")

    model = BackgroundModel(load, cfg=tiny.cfg, can_encode=True, can_generate=set())
    handlers = ChatHandlers(model, OutputRoot(tmp_path / "out"), ScoreStore(tmp_path / "s.sqlite"))
    model.start()
    for _ in range(2):
        text, error = last_reply(handlers, "Hi")
        assert text == "" and "The model could not be loaded (OSError: the checkpoint folder is gone)" in error
    assert "could not be loaded" in caplog.text
    with pytest.raises(ModelUnavailableError):
        model.chat([{"role": "user", "content": "Hi"}])
