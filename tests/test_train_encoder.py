"""Tests for step 0's encoder training (scripts/train_encoder.py, nextgpt/training/encoder.py) on a tiny world."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_world
from nextgpt.config import Modality, NextGPTConfig
from nextgpt.encode import ENCODER_FILE, MediaEncoder
from nextgpt.training.encoder import (METRICS_FILE, MediaBank, binding_loss, embed_captions, from_pixels,
                                     to_pixels, train_captions)
from nextgpt.training.foundation import caption_text, caption_vocabulary, captioned_items
from nextgpt.world import ATTRIBUTES

ROOT = Path(__file__).resolve().parent.parent
TINY = NextGPTConfig.from_name("tiny").encoder  # widths 32, one block per tower, 56 px images


def _script():
    spec = importlib.util.spec_from_file_location("train_encoder_script", ROOT / "scripts" / "train_encoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world"), ("train", "test"), n=6, n_dialogues=0)


def test_caption_vocabulary_and_items(world):
    assert [len(caption_vocabulary(m)) for m in Modality] == [18, 8, 72]
    items = captioned_items(world, "train", Modality.VIDEO)
    assert len(items) == 6 and all(it.path.is_file() for it in items)
    assert all(it.caption == f"a {it.attributes['colour']} {it.attributes['shape']} moving "
                              f"{it.attributes['direction']}" for it in items)


def test_vision_inputs_stored_as_uint8_exactly(world):
    enc = MediaEncoder(TINY)
    frames = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    x = enc.preprocess(Modality.VIDEO, frames)  # (clips, 3, 2, S, S)
    pixels = to_pixels(Modality.VIDEO, x)
    assert pixels.dtype == torch.uint8
    torch.testing.assert_close(from_pixels(Modality.VIDEO, pixels), x, atol=1e-5, rtol=0)


def test_embed_captions_equals_the_full_text_tower():
    enc = MediaEncoder(TINY)
    tokens = enc.tokenize([caption_text(m, a) for m in Modality for a in caption_vocabulary(m)[:5]])
    with torch.no_grad():
        torch.testing.assert_close(embed_captions(enc.model, tokens), enc("text", tokens), atol=1e-5, rtol=1e-5)


def test_binding_loss_multi_positive():
    text = torch.eye(3, 8)  # 3 distinct captions
    targets = torch.tensor([0, 0, 1, 2, 2, 2])  # repeated captions in one batch
    aligned = binding_loss(text[targets], text, targets, torch.tensor(20.0))
    shuffled = binding_loss(text[targets.roll(1)], text, targets, torch.tensor(20.0))
    assert torch.isfinite(aligned) and aligned < 1.2 < shuffled  # the floor is log(items per caption) / 2


def test_training_contrasts_only_the_captions_train_items_show():
    """A held-out combination's caption must not be every item's negative (nothing would ever match it)."""
    enc = MediaEncoder(TINY)
    shown = {Modality.IMAGE: [0, 3, 3, 7], Modality.AUDIO: list(range(8)), Modality.VIDEO: [5, 1]}
    banks = {m: MediaBank(m, np.zeros((len(ids), 1)), torch.tensor(ids)) for m, ids in shown.items()}
    tokens, rows = train_captions(enc, banks)
    for m, ids in shown.items():
        vocab = [caption_text(m, a) for a in caption_vocabulary(m)]
        kept = sorted(set(ids))
        assert torch.equal(tokens[m], enc.tokenize([vocab[i] for i in kept]))
        assert [int(rows[m][i]) for i in kept] == list(range(len(kept)))  # an item's target row
        assert all(int(rows[m][i]) == -1 for i in range(len(vocab)) if i not in kept)


def test_smoke_run_writes_files_and_resumes(world, tmp_path, caplog):
    script = _script()
    argv = ["--smoke", "--data", str(world), "--out", str(tmp_path / "ckpt"), "--run-dir", str(tmp_path / "run"),
            "--threads", "1"]
    first = script.run(script.parse_args(argv), TINY, stop_after=2)  # an interrupted run
    assert first["stopped_at"] == 2
    assert (tmp_path / "run" / "state" / "trainable.safetensors").is_file()
    assert not (tmp_path / "ckpt" / "encoder").exists()

    with caplog.at_level(logging.INFO, logger="nextgpt.training.loop"):
        metrics = script.run(script.parse_args(argv), TINY)
    assert "resuming at step 2" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # the rerun trained step 3 only
    assert all(math.isfinite(r["loss"]) for r in rows)

    folder = tmp_path / "ckpt" / "encoder"
    assert (folder / ENCODER_FILE).is_file()
    saved = json.loads((folder / METRICS_FILE).read_text())
    assert saved["steps"] == 3 and saved == json.loads(json.dumps(metrics))
    for m in Modality:
        assert set(saved["zero_shot"][m.value]) == {"caption", *ATTRIBUTES[m.value]}
        assert set(saved["probe"][m.value]) == set(ATTRIBUTES[m.value])
    enc = MediaEncoder.load(folder, TINY)
    assert enc.encode_text(["a red circle"]).shape == (1, TINY.out_embed_dim)
