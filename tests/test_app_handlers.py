"""Tests for app/handlers.py and app/media.py: chat turns driven directly, no browser.

    .venv/bin/python -m pytest tests/test_app_handlers.py -q

The end-to-end tests use the real NextGPT class on tiny random components (app/standin.py) whose next
reply the test dictates, so signal tokens and therefore generated media are produced on demand; the UI
plumbing tests use a fake with the same interface (stream / can_encode / can_generate / cfg).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.examples import ASSETS, EXAMPLES, EXAMPLES_DIR, THUMBNAILS, thumbnail
from app.handlers import DEFAULT_SETTINGS, ChatHandlers, Session, conversion, describe, make_settings
from app.media import OutputRoot
from app.standin import STANDIN_NOTE, tiny_model
from app.store import ScoreStore
from nextgpt.config import GenerationSettings, Modality, NextGPTConfig
from nextgpt.conversation import ConversationError
from nextgpt.media import load_audio, load_image, load_video, save_audio, save_image, save_video
from nextgpt.model import Reply, StreamEvent

SIGNALS = {m: "".join(f"[{p}{i}]" for i in range(4)) for m, p in
           ((Modality.IMAGE, "IMG"), (Modality.AUDIO, "AUD"), (Modality.VIDEO, "VID"))}


# ---- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture()
def handlers(model, tmp_path):
    return ChatHandlers(model, OutputRoot(tmp_path / "out"), ScoreStore(tmp_path / "scores.sqlite"), note=STANDIN_NOTE)


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    return {
        "image": save_image(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), folder / "photo.jpg"),
        "audio": save_audio(0.3 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 440), folder / "voice.wav"),
        "video": save_video(rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), folder / "clip.mp4"),
        "text": _write(folder / "notes.txt", b"not media"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def run(gen) -> tuple[list[dict[str, Any]], Session, int]:
    """Drain a handler generator -> (last chatbot, session, number of updates)."""
    n, last = 0, None
    for last in gen:
        n += 1
    chat, session = last
    return chat, session, n


def texts(message: dict[str, Any]) -> str:
    return " ".join(c for c in message["content"] if isinstance(c, str))


def files(message: dict[str, Any]) -> list[Path]:
    return [Path(c["path"]) for c in message["content"] if isinstance(c, dict)]


class FakeModel:
    """The engine's interface without the engine: replies by keyword, emits media like NextGPT."""

    def __init__(self, can_encode: bool = True, can_generate=tuple(Modality), error: Exception | None = None):
        self.cfg = NextGPTConfig.from_name("nano")
        self.can_encode = can_encode
        self.can_generate = set(can_generate)
        self.error = error
        self.seen: list[list[dict[str, Any]]] = []
        self.settings: list[GenerationSettings | None] = []

    def stream(self, messages, settings: GenerationSettings | None = None):
        self.seen.append(messages)
        self.settings.append(settings)
        if self.error is not None:
            raise self.error
        said = " ".join(p.get("text", "") for p in messages[-1]["content"]).lower()
        reply = Reply(text="Here you go.")
        if "draw" in said or "make it" in said:
            reply.images.append(np.full((8, 8, 3), 200, np.uint8))
        if "play" in said:
            reply.audios.append(np.zeros(1600, np.float32))
        if "a video" in said:
            reply.videos.append(np.zeros((2, 8, 8, 3), np.uint8))
        yield StreamEvent(delta="Here ")
        yield StreamEvent(delta="you go.")
        yield StreamEvent(reply=reply)


def fake_handlers(tmp_path: Path, **kwargs: Any) -> ChatHandlers:
    return ChatHandlers(FakeModel(**kwargs), OutputRoot(tmp_path / "out"), ScoreStore(tmp_path / "s.sqlite"))


# ---- end to end: the real NextGPT on tiny random parts -----------------------------------------------
def test_text_turn_streams_and_keeps_history(handlers, model):
    model.llm.queue_reply("A red circle.")
    chat, session, updates = run(handlers.chat({"text": "What can you draw?", "files": []}, None, *DEFAULT_SETTINGS))
    assert updates >= 3  # the user message, text deltas, the final reply
    assert [m["role"] for m in chat] == ["user", "assistant"]
    assert texts(chat[0]) == "What can you draw?" and texts(chat[1]) == "A red circle."
    model.llm.queue_reply("It is red.")
    chat, session, _ = run(handlers.chat("Which colour?", session, *DEFAULT_SETTINGS))
    assert len(chat) == 4 and texts(chat[3]) == "It is red."
    assert [session.category(i)[0] for i in range(2)] == ["T->T", "multi-turn"]


@pytest.mark.parametrize("kind", ["image", "audio", "video"])
def test_each_upload_type_is_read(handlers, model, uploads, kind):
    model.llm.queue_reply("I see it.")
    message = {"text": "What is this?", "files": [str(uploads[kind])]}
    chat, session, _ = run(handlers.chat(message, None, *DEFAULT_SETTINGS))
    assert texts(chat[1]) == "I see it."
    (shown,) = files(chat[0])
    assert handlers.output.owns(shown) and shown.name.startswith("in-") and "photo" not in shown.name
    assert session.turns[0].user[0]["type"] == kind
    assert session.category(0)[0] == {"image": "I->T", "audio": "A->T", "video": "V->T"}[kind]


def test_several_files_in_one_turn(handlers, model, uploads):
    model.llm.queue_reply("Both.")
    message = {"text": "Compare them.", "files": [str(uploads["image"]), str(uploads["audio"])]}
    chat, session, _ = run(handlers.chat(message, None, *DEFAULT_SETTINGS))
    assert len(files(chat[0])) == 2 and texts(chat[1]) == "Both."
    assert session.category(0)[0] == "I+A->T"


def test_each_generated_type_is_shown_inline(handlers, model):
    model.llm.queue_reply(f"Here. {SIGNALS[Modality.IMAGE]} {SIGNALS[Modality.AUDIO]} {SIGNALS[Modality.VIDEO]}")
    updates = list(handlers.chat("Draw, play and film it.", None, *DEFAULT_SETTINGS))
    # while the decoders run, the bubble says what is coming; the finished one does not
    waiting = [texts(c[1]) for c, _ in updates if "Generating" in texts(c[1])]
    assert waiting == ["Here. _Generating image…_ _Generating sound…_ _Generating video…_"]
    chat, session = updates[-1]
    assert "Generating" not in texts(chat[1])
    produced = files(chat[1])
    assert [p.suffix for p in produced] == [".png", ".wav", ".mp4"]
    assert all(handlers.output.owns(p) for p in produced)
    assert load_image(produced[0]).array.shape == (32, 32, 3)
    assert load_audio(produced[1]).array.shape[0] > 0
    assert load_video(produced[2]).array.shape[0] == 3
    assert session.category(0)[0] == "T->I+A+V"


def test_settings_reach_the_decoders(handlers, model):
    model.llm.queue_reply(SIGNALS[Modality.VIDEO])
    values = list(DEFAULT_SETTINGS)
    values[5] = 2  # video frames
    chat, session, _ = run(handlers.chat("A video please.", None, *values))
    assert load_video(files(chat[1])[0]).array.shape[0] == 2
    assert session.turns[0].settings["num_frames"] == 2


def test_upload_to_a_text_only_checkpoint_is_a_chat_message(handlers, model, uploads, monkeypatch):
    monkeypatch.setattr(model, "can_encode", False)
    chat, session, _ = run(handlers.chat({"text": "What is this?", "files": [str(uploads["image"])]}, None,
                                         *DEFAULT_SETTINGS))
    assert texts(chat[1]).startswith("⚠️") and "cannot read images" in texts(chat[1])
    assert "Traceback" not in texts(chat[1])
    model.llm.queue_reply("Hello.")
    chat, session, _ = run(handlers.chat("Hi", session, *DEFAULT_SETTINGS))  # the session goes on
    assert texts(chat[3]) == "Hello."
    assert session.messages(session.turns[1]) == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert "reads: text · writes: text, images, audio, video" in describe(model, "v1")
    assert "Uploads are not read" in describe(model, "v1")


def test_an_upload_outside_the_world_is_noted_beside_the_answer(handlers, model, uploads, monkeypatch):
    from nextgpt.world_profile import ModalityCheck, WorldModality, WorldProfile

    feats = np.random.default_rng(0).normal(size=(64, model.cfg.encoder.out_embed_dim))
    check = ModalityCheck.fit(feats, ["a", "b"] * 32, components=4).with_threshold(0.0)  # all is outside this world
    monkeypatch.setattr(model, "world", WorldProfile("a toy world", {Modality.IMAGE: WorldModality(
        {"shape": ("circle",)}, "a {shape}", "coloured shapes on white", "one {shape}", check)}))
    monkeypatch.setattr(model, "ability_questions", lambda text: "what can you do" in text.lower())
    model.llm.queue_reply("A purple square.")
    chat, session, _ = run(handlers.chat({"text": "What is this?", "files": [str(uploads["image"])]}, None,
                                         *DEFAULT_SETTINGS))
    assert texts(chat[1]) == ("A purple square.\n\n_This picture does not look like anything nano was trained on "
                              "(coloured shapes on white); the answer may be wrong._")
    chat, session, _ = run(handlers.chat("What can you do?", session, *DEFAULT_SETTINGS))  # no reply queued: no LLM
    assert texts(chat[3]) == model.abilities() and "one circle" in texts(chat[3])


# ---- errors and plumbing, with a fake model ----------------------------------------------------------
@pytest.mark.parametrize("error, shown", [
    (ConversationError("the conversation is empty"), "the conversation is empty"),
    (ValueError("top_p must be in (0, 1]"), "top_p must be in (0, 1]"),
    (RuntimeError("CUDA out of memory at 0x7f"), "Something went wrong inside the model (RuntimeError)"),
])
def test_model_errors_are_shown_in_the_chat(tmp_path, error, shown):
    h = fake_handlers(tmp_path, error=error)
    chat, session, _ = run(h.chat("Hi", None, *DEFAULT_SETTINGS))
    assert shown in texts(chat[1]) and "0x7f" not in texts(chat[1])
    h.model.error = None
    chat, _, _ = run(h.chat("Again", session, *DEFAULT_SETTINGS))
    assert texts(chat[3]) == "Here you go."
    assert [m["role"] for m in h.model.seen[-1]] == ["user"]  # the failed turn is not in the history


def test_bad_settings_and_non_media_uploads_are_shown_in_the_chat(tmp_path, uploads):
    h = fake_handlers(tmp_path)
    values = list(DEFAULT_SETTINGS)
    values[1] = 0.0  # top_p
    chat, session, _ = run(h.chat("Hi", None, *values))
    assert texts(chat[1]) == "⚠️ Settings: top_p must be in (0, 1]"
    values[1], values[2] = 1.0, 2.5  # max new tokens
    chat, session, _ = run(h.chat("Hi", session, *values))
    assert "max new tokens must be a whole number" in texts(chat[3])
    chat, session, _ = run(h.chat({"text": "Read this", "files": [str(uploads["text"])]}, session, *DEFAULT_SETTINGS))
    assert "notes.txt: not an image, audio or video file" in texts(chat[5])
    assert h.model.seen == [] and not list((h.output.root / session.id).glob("in-*"))


def test_make_settings_maps_zero_to_the_preset_default():
    s = make_settings(0.7, 0.9, 64, 0, 0.0, 0, 0.0, 3)
    assert (s.temperature, s.top_p, s.max_new_tokens, s.seed) == (0.7, 0.9, 64, 3)
    assert (s.num_inference_steps, s.guidance_scale, s.num_frames, s.audio_seconds) == (None, None, None, None)
    s = make_settings(0, 1, 8, 10, 2.5, 16, 1.5, 0)
    assert (s.num_inference_steps, s.guidance_scale, s.num_frames, s.audio_seconds) == (10, 2.5, 16, 1.5)
    with pytest.raises(ValueError, match="num_frames must be in 2..64"):
        make_settings(0, 1, 8, 0, 0, 1, 0, 0)


def test_regenerate_undo_clear_and_stop(tmp_path):
    h = fake_handlers(tmp_path)
    _, session, _ = run(h.chat("Draw a cat", None, *DEFAULT_SETTINGS))
    chat, session, _ = run(h.regenerate(session, *DEFAULT_SETTINGS))
    assert len(chat) == 2 and len(files(chat[1])) == 1 and len(h.model.seen) == 2
    assert h.model.seen[0] == h.model.seen[1]  # the same user message again
    seeds = [h.model.settings[0].seed, h.model.settings[1].seed]
    assert seeds[0] == 0 and seeds[1] != 0 and f"Regenerated with seed {seeds[1]}." in texts(chat[1])
    assert "temperature 0" in texts(chat[1])
    warm = list(DEFAULT_SETTINGS)
    warm[0] = 0.7
    chat, session, _ = run(h.regenerate(session, *warm))
    assert h.model.settings[2].seed not in seeds[1:] and "temperature 0" not in texts(chat[1])
    assert session.turns[0].settings["seed"] == h.model.settings[2].seed  # stored with the turn's scores
    chat, session = h.undo(session)
    assert chat == [] and session.turns == []
    # Stop: the event's generator is abandoned mid-stream; the next event shows the turn as stopped
    gen = h.chat("Tell me more", session, *DEFAULT_SETTINGS)
    next(gen), next(gen)
    gen.close()
    chat = h.show(session)
    assert texts(chat[1]).startswith("Here") and "_Stopped._" in texts(chat[1])
    folder = h.output.root / session.id
    assert folder.is_dir()
    chat, fresh = h.clear(session)
    assert chat == [] and fresh.id != session.id and not folder.exists()


def test_messages_sent_while_a_reply_generates_wait_in_the_inbox(tmp_path, uploads):
    h = fake_handlers(tmp_path)
    chat, session, cleared = h.enqueue({"text": "Draw a cat", "files": []}, None)
    assert cleared is None and texts(chat[-1]) == "Draw a cat"
    gen = h.answer_inbox(session, *DEFAULT_SETTINGS)
    next(gen), next(gen)  # the first reply is streaming; two more messages arrive meanwhile
    for message in ({"text": "Play a tone", "files": []}, {"text": "", "files": [str(uploads["image"])]}):
        chat, session, _ = h.enqueue(message, session)
    assert not session.turns[0].done  # enqueue leaves the turn being answered alone
    assert [m["role"] for m in chat] == ["user", "assistant", "user", "user"]
    assert texts(chat[2]) == "Play a tone" and files(chat[3]) == [uploads["image"]]
    chat, session, _ = run(gen)
    assert session.inbox == [] and [m["role"] for m in chat] == ["user", "assistant"] * 3
    said = [" ".join(p.get("text", p["type"]) for p in seen[-1]["content"]) for seen in h.model.seen]
    assert said == ["Draw a cat", "Play a tone", "image"]  # answered in the order sent
    assert all(t.done and not t.stopped for t in session.turns)
    # Stop while messages wait: they stay in the chat, marked as stopped, and are not answered later
    h.enqueue({"text": "Make a video", "files": []}, session)
    h.enqueue({"text": "", "files": []}, session)  # an empty message is not queued
    gen = h.answer_inbox(session, *DEFAULT_SETTINGS)
    next(gen), next(gen), next(gen)  # "Make a video" is being answered
    h.enqueue({"text": "and another", "files": []}, session)
    gen.close()
    chat = h.stop(session)
    assert texts(chat[-1]) == "_Stopped._" and texts(chat[-2]) == "and another"
    assert texts(chat[-4]) == "Make a video" and "_Stopped._" in texts(chat[-3])
    assert session.inbox == [] and len(h.model.seen) == 4


def test_sessions_do_not_share_history_or_folders(tmp_path):
    h = fake_handlers(tmp_path)
    _, a, _ = run(h.chat("Draw a red circle", None, *DEFAULT_SETTINGS))
    _, b, _ = run(h.chat("Hello", None, *DEFAULT_SETTINGS))
    assert a.id != b.id and len(a.turns) == len(b.turns) == 1
    assert h.model.seen[1] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    assert all(Path(p["path"]).parent.name == a.id for p in a.turns[0].media)


def test_sweep_removes_idle_session_folders(tmp_path):
    output = OutputRoot(tmp_path / "out", ttl_seconds=60)
    old, new = output.session_dir("a" * 32), output.session_dir("b" * 32)
    (old / "out-1.png").write_bytes(b"x")
    past = time.time() - 120
    os.utime(old, (past, past))
    assert output.sweep() == 1 and not old.exists() and new.exists()
    with pytest.raises(ValueError):
        output.session_dir("../etc")


@pytest.mark.parametrize("user, produced, expected", [
    ([{"type": "text", "text": "Draw"}], [{"type": "image"}], "T->I"),
    ([{"type": "image"}, {"type": "text", "text": "What?"}], [], "I->T"),
    ([{"type": "image"}, {"type": "text", "text": "Make it blue"}], [{"type": "image"}], "T+I->I"),
    ([{"type": "video"}], [], "V->T"),
    ([{"type": "text", "text": "Hi"}], [{"type": "audio"}, {"type": "video"}], "T->A+V"),
])
def test_conversion_types(user, produced, expected):
    assert conversion(user, produced) == expected


def test_every_example_runs_and_shows_its_conversion(tmp_path):
    assert sorted(p.name for p in EXAMPLES_DIR.iterdir()) == sorted([*ASSETS, THUMBNAILS])
    for example in EXAMPLES:  # every slot has its thumbnail, as make_assets draws it
        np.testing.assert_array_equal(load_image(example.thumbnail_path).array, thumbnail(example.thumbnail))
    assert [e.title for e in EXAMPLES[:4]] == ["Describe a picture", "Draw something", "Make a sound",
                                               "Edit my picture"]
    h = fake_handlers(tmp_path)
    for index, example in enumerate(EXAMPLES):
        chat, session, _ = run(h.run_example(index, None, *DEFAULT_SETTINGS))
        assert len(session.turns) == len(example.turns) and all(t.error is None for t in session.turns)
        category, kind = session.category(len(session.turns) - 1)
        assert (kind if example.conversion != "multi-turn" else category) == example.conversion, example


def test_scores_are_stored_with_the_turn(tmp_path):
    h = fake_handlers(tmp_path)
    _, session, _ = run(h.chat("Draw a red circle", None, *DEFAULT_SETTINGS))
    _, session, _ = run(h.chat("Now make it blue", session, *DEFAULT_SETTINGS))
    assert [v for _, v in h.turn_choices(session)] == [1, 2]
    assert h.score("ana", 2, 8, " crisp ", session).startswith("Saved score 8 for turn 2 (multi-turn)")
    assert h.score("", 1, 8, "", session).startswith("Not saved: type the evaluator's name")
    assert h.score("ana", 3, 8, "", session).startswith("Not saved: there is no finished assistant turn 3")
    assert h.score("ana", 1, 11, "", session).startswith("Not saved: the score must be")
    (row,) = h.store.rows()
    assert (row["evaluator"], row["category"], row["conversion"], row["turn"], row["score"], row["comment"]) == \
        ("ana", "multi-turn", "T->I", 2, 8, "crisp")
    assert row["preset"] == "nano" and row["model_version"] == h.version and row["session"] == session.id
    conversation = json.loads(row["conversation"])
    assert [m["role"] for m in conversation] == ["user", "assistant"] * 2
    assert conversation[3]["content"][1]["type"] == "image" and conversation[3]["content"][1]["file"].endswith(".png")
    assert json.loads(row["settings"])["max_new_tokens"] == 128
    plot, table = h.summary()
    assert table.to_dict("records") == [{"category": "multi-turn", "n": 1, "mean": 8.0, "95% low": None,
                                         "95% high": None}]
    assert Path(h.export()).read_text().count("\n") == 2


def test_app_py_flags_and_lazy_demo(monkeypatch):
    """app.py: `python app.py` flags, and `demo` built only when first asked for (Spaces)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nextgpt_app_entry", Path(__file__).parent.parent / "app.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    args = entry.parse_args([])
    assert (args.preset, args.host, args.quantization, args.share, args.checkpoint) == \
        ("nano", "127.0.0.1", "none", False, None)
    args = entry.parse_args(["--preset", "nextgpt-7b", "--port", "7999", "--scores-db", "s.sqlite", "--share"])
    assert (args.preset, args.port, args.scores_db, args.share) == ("nextgpt-7b", 7999, Path("s.sqlite"), True)
    built = []
    monkeypatch.setattr(entry, "create_demo", lambda a: built.append(a) or "the demo")
    assert "demo" not in vars(entry) and entry.demo == "the demo" and entry.demo == "the demo" and len(built) == 1
