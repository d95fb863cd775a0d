"""Official-format records -> chat messages (the `NextGPT.chat` format), for training and evaluation alike.

    messages = record_to_messages(record, root)   # [{"role": "user", "content": [{"type": "image", ...}, ...]}, ...]

Records (see records.py and REFERENCE.md) mark media with `<image>` / `<audio>` / `<video>` in the turns; the k-th
marker of a modality is the k-th item of that record's media (`input_image`, `output_image` + `image_captions`,
or `image_list` in MosIT dialogues), its path relative to `root`. Each marker becomes a media part with the
item's absolute path and caption (None when the record has none).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nextgpt.config import Modality

MARKER = re.compile(r"<(image|audio|video)>")


def _media_lists(rec: dict[str, Any], root: Path) -> dict[str, list[tuple[str, str | None]]]:
    """Per modality, the record's items in order: (absolute path, caption or None)."""
    lists: dict[str, list[tuple[str, str | None]]] = {}
    for m in Modality:
        key = m.value
        items: list[tuple[str, str | None]] = []
        for entry in rec.get(f"{key}_list") or []:
            items.append((str(root / entry[f"{key}_name"]), entry.get("caption")))
        for field in (f"input_{key}", f"output_{key}"):
            if rec.get(field):
                items.append((str(root / rec[field]), rec.get(f"{key}_captions")))
        lists[key] = items
    return lists


def record_to_messages(rec: dict[str, Any], root: Path) -> list[dict[str, Any]]:
    """One record's turns as chat messages; a marker with no item left is a ValueError."""
    lists = _media_lists(rec, root)
    used = {m: 0 for m in lists}
    messages = []
    for turn in rec.get("conversations") or rec.get("conversation") or []:
        role = "user" if turn["from"] == "human" else "assistant"
        parts: list[dict[str, Any]] = []
        pieces = MARKER.split(turn["value"])
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                if piece.strip():
                    parts.append({"type": "text", "text": piece.strip()})
                continue
            items = lists[piece]
            if used[piece] >= len(items):
                raise ValueError(f"record has more <{piece}> markers than {piece} items")
            path, caption = items[used[piece]]
            used[piece] += 1
            parts.append({"type": piece, "path": path, "caption": caption})
        messages.append({"role": role, "content": parts})
    return messages
