"""Shared pieces for training the foundation parts the real system downloads (ImageBind, the decoders) on the world.

    items = captioned_items("data/world", "train", Modality.VIDEO)  # [CaptionedItem(path, caption, attributes)]
    vocab = caption_vocabulary(Modality.VIDEO)                       # all 72 possible video captions
    arrays = read_all(Modality.VIDEO, [it.path for it in items])    # decoded once, on a thread pool

Captions come from the world's comprehension records (X -> caption pairs): the answer phrase ("I see a red
circle.") is read back with the world's own caption parser and rewritten as the bare caption ("a red circle").
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from nextgpt import media
from nextgpt.config import Modality
from nextgpt.world import ATTRIBUTES, CAPTION_TEMPLATES, parse_caption
from nextgpt.world.records import load_records


@dataclass(frozen=True)
class CaptionedItem:
    """One media file of the world and what it shows."""

    path: Path  # absolute media file (png / wav / mp4)
    caption: str  # bare caption, e.g. "a red circle moving left"
    attributes: dict[str, str]  # e.g. {"colour": "red", "shape": "circle", "direction": "left"}


def caption_text(modality: Modality | str, attributes: dict[str, str]) -> str:
    """{"colour": "red", "shape": "circle"} -> "a red circle" (the world's caption template)."""
    return CAPTION_TEMPLATES[Modality(modality).value].format(**attributes)


def caption_vocabulary(modality: Modality | str) -> list[dict[str, str]]:
    """Every attribute combination of `modality` (36 image, 8 audio, 72 video), in a fixed order."""
    table = ATTRIBUTES[Modality(modality).value]
    return [dict(zip(table, words)) for words in itertools.product(*table.values())]


def captioned_items(
    data: str | Path, split: str, modality: Modality | str, limit: int | None = None,
) -> list[CaptionedItem]:
    """The comprehension records of one modality in `data/split`, at most `limit` of them."""
    modality = Modality(modality)
    root = Path(data) / split
    key = f"input_{modality.value}"
    items = []
    for rec in load_records(data, split, "comprehension"):
        if key not in rec:
            continue
        answer = rec["conversations"][-1]["value"]
        attributes = parse_caption(answer, modality.value)
        if any(v is None for v in attributes.values()):
            raise ValueError(f"{root / 'comprehension.json'}: cannot read a {modality.value} caption from {answer!r}")
        items.append(CaptionedItem(root / rec[key], caption_text(modality, attributes), attributes))
        if limit is not None and len(items) >= limit:
            break
    return items


def read_one(modality: Modality | str, path: Path) -> np.ndarray:
    """One media file as the app and the LLM stages read it (nextgpt.media loaders, default limits).

    image (H, W, 3) uint8 | audio (N,) float32 at 16 kHz | video (T, H, W, 3) uint8
    """
    return media.load(modality, path).array


def read_all(modality: Modality | str, paths: Sequence[Path], workers: int = 2) -> list[np.ndarray]:
    """`read_one` over many files on a thread pool (ffmpeg and PIL release the GIL), in order."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(partial(read_one, modality), paths))


