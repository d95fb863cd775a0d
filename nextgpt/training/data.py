"""Official-format records -> chat messages -> padded training batches.

Records become messages in nextgpt/world/messages.py. In a human turn a media part is an upload (encoded); in
a gpt turn it is a generated item: the signal tokens, with the item's caption as the L2 target. The frozen
encoder's features and the decoders' caption encodings are computed once, up front.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from nextgpt.config import Modality
from nextgpt.conversation import ConversationBuilder, TrainingExample
from nextgpt.world.messages import record_to_messages

log = logging.getLogger(__name__)

KIND_FILES = {"caption": "comprehension.json", "generation": "generation.json", "t2m": "t2m.json", "mosit": "mosit.json"}


def load_kind(data_dir: Path, split: str, kind: str, *, general_chat: Path | None = None) -> list[list[dict[str, Any]]]:
    """All conversations of one record kind, as message lists."""
    if kind == "general":
        if general_chat is None or not general_chat.is_file():
            raise FileNotFoundError(f"general chat data not found: {general_chat}")
        return [record_to_messages(r, general_chat.parent) for r in json.loads(general_chat.read_text())]
    root = data_dir / split
    path = root / KIND_FILES[kind]
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: make the world first (python -m nextgpt.world.records)")
    return [record_to_messages(r, root) for r in json.loads(path.read_text())]


@dataclass
class Prepared:
    """A training example plus the keys of its media features and caption targets."""

    example: TrainingExample
    media_keys: list[str]  # per example.media entry: the file path
    block_keys: list[tuple[Modality, str]]  # per example.blocks entry: (modality, caption)


def prepare(conversations: Iterable[list[dict[str, Any]]], builder: ConversationBuilder, max_len: int) -> list[Prepared]:
    out = []
    for messages in conversations:
        ex = builder.build_training(messages, max_tokens=max_len)
        if all(l == -100 for l in ex.labels):
            continue
        blocks = [b for b in ex.blocks if b.caption]
        ex.blocks = blocks
        out.append(Prepared(ex, [str(it.path) for _, it in ex.media], [(b.modality, b.caption) for b in blocks]))
    return out


def features_cache(data_dir: Path, encoder: Any) -> Path:
    """Where the features of `data_dir`'s media under this encoder are kept: one file per encoder weights (a hash
    of them names it), so the stages and the alignment, which all read uploads through the same frozen encoder,
    encode each file once."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return data_dir / ".features" / f"{digest.hexdigest()[:16]}.pt"


@torch.no_grad()
def compute_features(encoder: Any, prepared: Sequence[Prepared], batch_size: int = 32,
                     cache: Path | None = None) -> dict[str, torch.Tensor]:
    """Frozen-encoder features of every distinct uploaded file (one pass). With `cache` (`features_cache`), the
    features it holds for a file of the same size and modification time are taken from it, and it is rewritten
    with the ones encoded here."""
    from tqdm import tqdm

    from nextgpt import media
    from nextgpt.files import torch_save

    todo: dict[Modality, dict[str, None]] = {}
    for p in prepared:
        for (_, item), key in zip(p.example.media, p.media_keys):
            todo.setdefault(item.modality, {})[key] = None
    stored: dict[str, tuple[int, int, torch.Tensor]] = {}
    if cache is not None and cache.is_file():
        try:
            stored = torch.load(cache, weights_only=False)
        except Exception as e:  # a file cut short or of another format: encode again and rewrite it
            log.warning("features file %s unreadable (%s): encoding the uploads again", cache, e)

    def stamp(key: str) -> tuple[int, int]:
        st = Path(key).stat()
        return st.st_size, st.st_mtime_ns

    feats: dict[str, torch.Tensor] = {}
    encoded = 0
    for modality, keys in todo.items():
        stamps = {k: stamp(k) for k in keys}
        missing = []
        for k in keys:
            if k in stored and stored[k][:2] == stamps[k]:
                feats[k] = stored[k][2]
            else:
                missing.append(k)
        for i in tqdm(range(0, len(missing), batch_size), desc=f"encode {modality.value}", disable=None):
            chunk = missing[i : i + batch_size]
            arrays = [media.load(modality, Path(k), media.MediaLimits()).array for k in chunk]
            for k, f in zip(chunk, encoder.encode(modality, arrays)):
                feats[k] = f.float().cpu()
                stored[k] = (*stamps[k], feats[k])
        encoded += len(missing)
    if cache is not None:
        log.info("features of %d files: %d from %s, %d encoded", len(feats), len(feats) - encoded, cache, encoded)
        if encoded:
            torch_save(stored, cache)
    return feats


@torch.no_grad()
def compute_targets(decoders: Any, prepared: Sequence[Prepared]) -> dict[tuple[Modality, str], torch.Tensor]:
    """The decoders' own encodings of every distinct caption (the L2 targets)."""
    wanted: dict[Modality, list[str]] = {}
    for p in prepared:
        for modality, caption in p.block_keys:
            lst = wanted.setdefault(modality, [])
            if caption not in lst:
                lst.append(caption)
    targets = {}
    for modality, captions in wanted.items():
        for c, t in zip(captions, decoders.encode_captions(modality, captions)):
            targets[(modality, c)] = t.float().cpu()
    return targets


class Collator:
    """Pads a list of `Prepared` into the batch dict `NextGPT.forward` takes."""

    def __init__(self, pad_id: int, features: dict[str, torch.Tensor], targets: dict[tuple[Modality, str], torch.Tensor]):
        self.pad_id = pad_id
        self.features = features
        self.targets = targets

    def __call__(self, items: list[Prepared]) -> dict[str, Any]:
        T = max(len(p.example.ids) for p in items)
        B = len(items)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        labels = torch.full((B, T), -100, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        media_index, media_feats, blocks = [], [], []
        targets: dict[Modality, list[torch.Tensor]] = {}
        for r, p in enumerate(items):
            n = len(p.example.ids)
            ids[r, :n] = torch.tensor(p.example.ids)
            labels[r, :n] = torch.tensor(p.example.labels)
            mask[r, :n] = 1
            for (pos, _), key in zip(p.example.media, p.media_keys):
                media_index.append((r, pos))
                media_feats.append(self.features[key])
            for block, key in zip(p.example.blocks, p.block_keys):
                blocks.append((r, block.start, block.modality))
                targets.setdefault(block.modality, []).append(self.targets[key])
        return {
            "input_ids": ids, "labels": labels, "attention_mask": mask,
            "media_index": torch.tensor(media_index, dtype=torch.long).reshape(-1, 2),
            "media_feats": torch.stack(media_feats) if media_feats else None,
            "blocks": blocks,
            "block_targets": {m: torch.stack(v) for m, v in targets.items()},
        }
