"""What the decoder trainers need to know about this world, handed to them as hooks (`decoder_hooks`).

The generic trainers (nextgpt.training.decoders) know nothing of shapes or directions; two of their terms are
written for this world:

    contrast    the direction hinge of the video UNet: for each caption, the caption with its direction reversed
                ("a red circle moving left" <-> "... moving right"); the UNet must predict worse under it
    foreground  the VAE's extra weight on the world's shapes: a picture is a shape on a white ground, a few % of
                its pixels, and plain MSE learns their brightness long before their hue

Both are array functions (torch tensors in, torch tensors out) and import nothing heavier than the world itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

OPPOSITE_WORDS = {"left": "right", "right": "left", "up": "down", "down": "up"}  # the world's directions, reversed
FOREGROUND_MIN = 0.1  # a pixel in [-1, 1] this far below white in some channel belongs to the shape


def opposite_rows(captions: Sequence[str]) -> list[int]:
    """For each caption, the index of the one with its direction word reversed (-1 if none is among them).

    A UNet that cannot tell the frames apart predicts the same for "moving left" and "moving right", and the
    per-pixel loss barely notices, because the sign is a small part of it.
    """
    where = {c: i for i, c in enumerate(captions)}
    rows = []
    for caption in captions:
        swapped = " ".join(OPPOSITE_WORDS.get(w, w) for w in caption.split())
        rows.append(where.get(swapped, -1) if swapped != caption else -1)
    return rows


def foreground(pixels: Any) -> Any:
    """(B, 3, H, W) pixels in [-1, 1] -> (B, 1, H, W) float mask of the shapes (every pixel that is not white)."""
    return ((1.0 - pixels).amax(1, keepdim=True) > FOREGROUND_MIN).float()


@dataclass(frozen=True)
class DecoderHooks:
    """World-specific terms of the decoder trainers; None switches a term off whatever its weight."""

    contrast: Callable[[Sequence[str]], list[int]] | None = None  # captions -> row of the caption to lose to (-1: none)
    foreground: Callable[[Any], Any] | None = None  # (B, 3, H, W) pixels -> (B, 1, H, W) weight mask


def decoder_hooks() -> DecoderHooks:
    """This world's hooks."""
    return DecoderHooks(contrast=opposite_rows, foreground=foreground)
