"""Hugging Face ZeroGPU: the model's GPU work runs under `spaces.GPU` where the `spaces` package is installed.

    stream = on_gpu(model.stream, seconds=gpu_seconds("nextgpt-7b"))   # spaces.GPU(duration=60)(model.stream)

On a ZeroGPU Space a GPU is attached only while a function decorated with `spaces.GPU` runs, for at most its
`duration`; everywhere else (no `spaces` package) `on_gpu` returns the function unchanged. Decorate at start-up,
before the app is served, as ZeroGPU expects.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# the GPU time one chat turn may take, per preset (seconds), with margin for the first use of each decoder:
# - nextgpt-7b: benchmarks/gpu/bench.md (one H200, fp16, the preset's 50 diffusion steps): the slowest turn of
#   the 5-turn conversation took 15.3 s (text -> video; 23.4 s for all five turns, ~4.7 s a turn), a turn that
#   writes image + video + audio adds up to ~16 s (decode 2.1 + 11.2 + 1.7 s), and loading the three decoders
#   once took 15 s more: 60 s is ~2x the worst first turn and ~4x the slowest warm one;
# - nano: its slowest turn on 2 CPU cores takes 3.4 s (video, benchmarks/bench.md), all three media ~8 s
GPU_SECONDS = {"nextgpt-7b": 60, "nano": 20}
DEFAULT_GPU_SECONDS = 60  # ZeroGPU's own default, for a preset not in the table


def gpu_seconds(preset: str) -> int:
    """The `spaces.GPU` duration of one chat turn of `preset`."""
    return GPU_SECONDS.get(preset, DEFAULT_GPU_SECONDS)


def spaces_module() -> Any:
    """The `spaces` package where it is importable (Hugging Face Spaces), else None."""
    try:
        return importlib.import_module("spaces")
    except ImportError:
        return None


def on_gpu(fn: F, *, seconds: int) -> F:
    """`fn` under `spaces.GPU(duration=seconds)` where `spaces` is importable; `fn` itself elsewhere.

    Generator functions (the model's `stream`) are supported by `spaces.GPU` as they are."""
    spaces = spaces_module()
    if spaces is None:
        return fn
    log.info("ZeroGPU: %s runs under spaces.GPU(duration=%d)", getattr(fn, "__name__", fn), seconds)
    return spaces.GPU(duration=seconds)(fn)
