"""The official demo's way of decoding, for side-by-side benchmarks: a fresh pipeline set for every item."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch


class ReloadingDecoders:
    """The official demo's decoders: a fresh pipeline set is loaded for every item it generates (and dropped
    after it)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.loads = 0
        self.load_s = 0.0

    def generate(self, modality: Any, cond: torch.Tensor, **kwargs: Any) -> np.ndarray:
        self.loads += 1
        t0 = time.perf_counter()
        decoders = self.factory()
        decoders.pipeline(modality)  # from_folder is lazy: the load happens here
        self.load_s += time.perf_counter() - t0
        return decoders.generate(modality, cond, **kwargs)
