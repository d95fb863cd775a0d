"""Tests for app/zerogpu.py: `spaces.GPU` where the package is importable, the function itself elsewhere.

    .venv/bin/python -m pytest tests/test_app_zerogpu.py -q

The Hugging Face `spaces` package is not installed here: the decorator path runs against a fake module put in
sys.modules that records what it was asked for.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from app.background import BackgroundModel
from app.zerogpu import GPU_SECONDS, gpu_seconds, on_gpu
from nextgpt.config import NextGPTConfig


class FakeModel:
    can_encode, can_generate = False, set()

    def stream(self, messages: Any, settings: Any = None) -> Any:
        yield f"answer to {messages[-1]['content']}"


@pytest.fixture()
def fake_spaces(monkeypatch):
    """A `spaces` module whose GPU(duration=...) records the duration and the calls of what it wraps."""
    calls: list[tuple[str, Any]] = []
    module = types.ModuleType("spaces")

    def gpu(duration: int):
        def decorate(fn):
            calls.append(("decorated", duration))

            def on_the_gpu(*args, **kwargs):
                calls.append(("ran", fn.__name__))
                return fn(*args, **kwargs)

            return on_the_gpu
        return decorate

    module.GPU = gpu
    monkeypatch.setitem(sys.modules, "spaces", module)
    return calls


def test_without_spaces_the_function_is_returned_unchanged(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError

    def turn() -> str:
        return "done"

    assert on_gpu(turn, seconds=60) is turn
    model = BackgroundModel(FakeModel, cfg=NextGPTConfig.from_name("nextgpt-7b"), can_encode=False,
                            can_generate=set())
    assert list(model.stream([{"role": "user", "content": "hi"}])) == ["answer to hi"]


def test_with_spaces_each_turn_runs_under_spaces_gpu_for_the_presets_duration(fake_spaces):
    assert gpu_seconds("nextgpt-7b") == GPU_SECONDS["nextgpt-7b"] == 60 and gpu_seconds("nano") == 20
    model = BackgroundModel(FakeModel, cfg=NextGPTConfig.from_name("nextgpt-7b"), can_encode=False,
                            can_generate=set())
    assert fake_spaces == [("decorated", 60)]  # at construction, before anything is served
    assert list(model.stream([{"role": "user", "content": "hi"}])) == ["answer to hi"]
    assert list(model.stream([{"role": "user", "content": "again"}])) == ["answer to again"]
    assert fake_spaces == [("decorated", 60), ("ran", "_stream_loaded"), ("ran", "_stream_loaded")]
    BackgroundModel(FakeModel, cfg=NextGPTConfig.from_name("nano"), can_encode=False, can_generate=set())
    assert fake_spaces[-1] == ("decorated", 20)
