"""Who rates what, in which order, and which answer is A: pure functions of the study's seed and the rater.

    parts = blocks(study)                        # the rated items cut into blocks of items_per_rater
    block = least_rated(raters_per_block)        # a new rater's block: the one with the fewest raters
    for screen in screens(study, rater_id, block):
        screen.item, screen.answers              # "t2i-03", ("nano-50-steps", "nano-20-steps") = (A, B)

Balanced overlap: every rater of a block rates all of its items, so each item has as many raters as its
block, blocks fill up evenly (k raters per item once k x blocks raters have started), and the raters of one
block form a complete rater x item table (what ICC(2,k) needs). Gold items go to every rater. The order of a
rater's screens and the A/B sides of each pairwise screen are drawn per rater, from the study's seed, so they
are the same after a restart and different between raters.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Sequence

from nextgpt.study.spec import Item, Study


@dataclass(frozen=True)
class Screen:
    """What a rater scores at once: one item with one answer (single mode) or two (pairwise: A, B)."""

    item: str
    answers: tuple[str, ...]  # answer keys (system ids, or gold keys) in display order


def _rng(*parts: object) -> random.Random:
    """A generator seeded by the parts (a string hash: the same on every machine and Python version)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def answer_keys(study: Study, item: Item) -> tuple[str, ...]:
    """The answers an item has: the systems' ids, or "gold-0", "gold-1", ... for a gold item."""
    if item.is_gold:
        return tuple(f"gold-{i}" for i in range(len(item.gold)))
    return tuple(s.id for s in study.systems)


def blocks(study: Study) -> list[list[str]]:
    """The rated items' ids, shuffled by the study's seed, dealt into ceil(N / items_per_rater) blocks whose
    sizes differ by at most one."""
    ids = [item.id for item in study.rated_items]
    _rng(study.seed, "blocks").shuffle(ids)
    n_blocks = math.ceil(len(ids) / (study.items_per_rater or len(ids)))
    return [ids[b::n_blocks] for b in range(n_blocks)]


def least_rated(raters_per_block: Sequence[int]) -> int:
    """The block a new rater gets: the one with the fewest raters (the first of equals)."""
    return min(range(len(raters_per_block)), key=lambda b: (raters_per_block[b], b))


def screens(study: Study, rater: int | str, block: int) -> list[Screen]:
    """A rater's screens in their own random order: every item of their block and every gold item, each with
    its answers (single mode: one screen per answer; pairwise: one per item, sides drawn per rater and item)."""
    part = blocks(study)[block]
    items = [study.item(i) for i in part] + list(study.gold_items)
    out = []
    for item in items:
        keys = list(answer_keys(study, item))
        if study.mode == "pairwise":
            _rng(study.seed, "sides", rater, item.id).shuffle(keys)
            out.append(Screen(item.id, tuple(keys)))
        else:
            out += [Screen(item.id, (key,)) for key in keys]
    _rng(study.seed, "order", rater).shuffle(out)
    return out
