"""The outside-world check (nextgpt/world_profile.py): the statistics on toy data, world.json round trips, the
shipped nano profile on real uploads (world media pass, noise is flagged), and the notice in `Reply.notices`,
which never fails a turn and never appears without a calibrated profile (nextgpt-7b).

    .venv/bin/python -m pytest tests/test_world_profile.py -q
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from nextgpt.config import GenerationSettings, Modality, NextGPTConfig
from nextgpt.eval.provenance import weight_hash
from nextgpt.world_profile import WORLD_FILE, ModalityCheck, WorldModality, WorldProfile, either

ROOT = Path(__file__).resolve().parent.parent
NANO = ROOT / "checkpoints" / "nano"
EXAMPLES = ROOT / "assets" / "examples"


def toy_check(dim: int = 8, threshold: float = float("inf"), seed: int = 0) -> ModalityCheck:
    """Two classes of unit vectors around two directions in `dim` dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:2]
    feats = np.concatenate([c + 0.05 * rng.normal(size=(200, dim)) for c in centres])
    labels = ["a"] * 200 + ["b"] * 200
    return ModalityCheck.fit(feats, labels, components=4).with_threshold(threshold)


def toy_profile(dim: int = 8, threshold: float = float("inf")) -> WorldProfile:
    parts = {
        Modality.IMAGE: WorldModality({"colour": ("red", "green"), "shape": ("circle", "square")}, "a {colour} {shape}",
                                      "coloured shapes on white", "one {shape} in {colour}", toy_check(dim, threshold)),
        Modality.AUDIO: WorldModality({"pitch": ("low", "high")}, "a {pitch} tone", "tones", "a {pitch} tone"),
    }
    return WorldProfile(name="a toy world", modalities=parts)


# ---- the statistics and the file -------------------------------------------------------------------------
def test_distances_are_small_near_a_class_and_large_away_from_both():
    check = toy_check()
    rng = np.random.default_rng(1)
    near = np.eye(8)[:2] + 0.05 * rng.normal(size=(2, 8))
    away = np.eye(8)[2:4]
    d_near, d_away = check.distances(near), check.distances(away)
    assert d_near.max() < 6 and d_away.min() > 5 * d_near.max()
    assert check.classes == ("a", "b") and check.distances(near[0]).shape == (1,)  # one vector is a batch of one


def test_distances_ignore_the_embedding_scale():
    check = toy_check()
    x = np.eye(8)[:2] + 0.01
    assert np.allclose(check.distances(x), check.distances(20 * x))  # ImageBind scales audio by 20


def test_profile_round_trips_through_world_json(tmp_path):
    profile = toy_profile(threshold=3.0)
    profile.save(tmp_path / WORLD_FILE)
    back = WorldProfile.load(tmp_path)
    assert back is not None and back.name == "a toy world" and set(back.modalities) == {Modality.IMAGE, Modality.AUDIO}
    x = np.random.default_rng(2).normal(size=(5, 8))
    # stored as float16: the distances move by well under 1 %
    assert np.allclose(back.modalities[Modality.IMAGE].check.distances(x),
                       profile.modalities[Modality.IMAGE].check.distances(x), rtol=1e-2)
    assert back.calibrated(Modality.IMAGE) and not back.calibrated(Modality.AUDIO) and not back.calibrated(Modality.VIDEO)


def test_a_missing_or_broken_world_json_is_no_profile(tmp_path, caplog):
    assert WorldProfile.load(tmp_path) is None
    (tmp_path / WORLD_FILE).write_text('{"name": "x", "modalities": {"image": {"vocabulary": {}}}}')
    with caplog.at_level(logging.WARNING):
        assert WorldProfile.load(tmp_path) is None
    assert "cannot be read" in caplog.text
    bad = toy_profile().to_dict()
    bad["modalities"]["image"]["check"]["variances"] = [1.0]  # does not fit the basis
    (tmp_path / WORLD_FILE).write_text(json.dumps(bad))
    assert WorldProfile.load(tmp_path) is None


def test_words_descriptions_and_notices():
    profile = toy_profile(threshold=1.0)
    assert either(["red"]) == "red" and either(["a", "b", "c"]) == "a, b or c" and either(["a", "b"], "and") == "a and b"
    assert profile.describe(Modality.IMAGE) == "one circle or square in red or green"
    assert profile.example(Modality.IMAGE) == "a red circle"
    assert profile.words() == ["red", "green", "circle", "square", "low", "high"]
    assert profile.notice(Modality.IMAGE, "nano") == (
        "This picture does not look like anything nano was trained on (coloured shapes on white); "
        "the answer may be wrong.")
    assert profile.notice(Modality.IMAGE, "nano", 2).startswith("The second picture does not look like")
    # a modality without a calibrated check never flags
    assert profile.outside(Modality.AUDIO, np.ones((3, 8))) == [False, False, False]
    assert profile.outside(Modality.IMAGE, np.eye(8)[[0, 5]]) == [False, True]


# ---- the shipped nano profile, on real uploads -------------------------------------------------------------
@pytest.fixture(scope="module")
def nano_world() -> WorldProfile:
    profile = WorldProfile.load(NANO)
    assert profile is not None, "checkpoints/nano/world.json is missing: run scripts/calibrate_ood.py"
    return profile


@pytest.fixture(scope="module")
def nano_encoder():
    from nextgpt.encode import MediaEncoder

    torch.set_num_threads(1)
    return MediaEncoder.load(NANO / "encoder", NextGPTConfig.load(NANO).encoder)


def _embed(encoder, modality: Modality, items: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return encoder.encode(modality, items).float().numpy()


def test_the_shipped_profile_was_calibrated_on_the_shipped_weights(nano_world):
    cal = nano_world.calibration
    assert cal["weight_hash"] == weight_hash(NANO), "world.json was calibrated on other weights: rerun the script"
    for modality in Modality:
        assert nano_world.calibrated(modality)
        figures = cal["modalities"][modality.value]
        assert figures["test"]["n"] >= 300 and figures["test"]["flagged"] / figures["test"]["n"] <= 0.02
        noise = next(s for name, s in figures["outside"].items() if "noise" in name)
        assert noise["n"] >= 50 and noise["flagged"] == noise["n"]
    # the file stays small: the tracked tree has a size limit (tests/test_checkpoint_size.py)
    assert (NANO / WORLD_FILE).stat().st_size < 150_000


def test_world_uploads_pass_and_noise_is_flagged(nano_world, nano_encoder):
    """The example files pass; of 15 more world items per modality at most one is flagged (the test split measured
    0-1.2 %: small shapes in a corner sit in the tail); every noise item is flagged."""
    from nextgpt.media import load_audio, load_image, load_video
    from nextgpt.world.vocab import sample_spec

    rng = np.random.default_rng(5)
    examples = {Modality.IMAGE: load_image(EXAMPLES / "green_triangle.png").array,
                Modality.AUDIO: load_audio(EXAMPLES / "high_steady_buzz.wav").array,
                Modality.VIDEO: load_video(EXAMPLES / "orange_circle_moving_up.mp4").array}
    noise = {
        Modality.IMAGE: [rng.integers(0, 256, (384, 512, 3), dtype=np.uint8) for _ in range(4)],
        Modality.AUDIO: [rng.uniform(-0.5, 0.5, 32000).astype(np.float32) for _ in range(4)],
        Modality.VIDEO: [rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8) for _ in range(2)],
    }
    for modality in Modality:
        world = [examples[modality]] + [sample_spec(modality.value, rng).render() for _ in range(15)]
        flagged = nano_world.outside(modality, _embed(nano_encoder, modality, world))
        assert not flagged[0] and sum(flagged) <= 1, (modality, flagged)
        assert all(nano_world.outside(modality, _embed(nano_encoder, modality, noise[modality]))), modality


# ---- the notice in Reply.notices -------------------------------------------------------------------------
def _profile_for(model, threshold: float) -> WorldProfile:
    """A toy profile whose statistics fit the tiny model's encoder width; threshold 0 flags everything."""
    dim = model.cfg.encoder.out_embed_dim
    return WorldProfile("a toy world", {m: WorldModality({"shape": ("circle",)}, "a {shape}", f"toy {m.value}s",
                                                         "a {shape}", toy_check(dim, threshold)) for m in Modality})


@pytest.fixture()
def photo(tmp_path) -> Path:
    from nextgpt.media import save_image

    return save_image(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8), tmp_path / "photo.png")


def _ask(model, parts: list[dict], history: list[dict] | None = None):
    settings = GenerationSettings(max_new_tokens=4)
    return model.chat((history or []) + [{"role": "user", "content": parts + [{"type": "text", "text": "What is this?"}]}],
                      settings)


def test_an_upload_outside_the_world_gets_a_notice(tiny_model, photo):
    tiny_model.world = _profile_for(tiny_model, threshold=0.0)
    reply = _ask(tiny_model, [{"type": "image", "path": str(photo)}])
    assert (f"This picture does not look like anything {tiny_model.cfg.name} was trained on (toy images); the answer "
            "may be wrong.") in reply.notices
    two = _ask(tiny_model, [{"type": "image", "path": str(photo)}, {"type": "image", "array": np.zeros((8, 8, 3), np.uint8)}])
    assert [n.split(" does")[0] for n in two.notices if "trained on" in n] == ["The first picture", "The second picture"]


def test_only_the_new_uploads_are_checked(tiny_model, photo):
    tiny_model.world = _profile_for(tiny_model, threshold=0.0)
    history = [{"role": "user", "content": [{"type": "image", "path": str(photo)}]},
               {"role": "assistant", "content": "A circle."}]
    later = tiny_model.chat(history + [{"role": "user", "content": "And its colour?"}], GenerationSettings(max_new_tokens=4))
    assert not any("trained on" in n for n in later.notices)


def test_no_notice_inside_the_world_or_without_a_profile(tiny_model, photo):
    tiny_model.world = _profile_for(tiny_model, threshold=float("inf"))
    assert not any("trained on" in n for n in _ask(tiny_model, [{"type": "image", "path": str(photo)}]).notices)
    tiny_model.world = None  # a checkpoint without world.json, as nextgpt-7b
    assert not any("trained on" in n for n in _ask(tiny_model, [{"type": "image", "path": str(photo)}]).notices)


def test_a_failing_check_never_fails_the_turn(tiny_model, photo, caplog):
    tiny_model.world = WorldProfile("wrong width", {Modality.IMAGE: WorldModality(
        {"shape": ("circle",)}, "a {shape}", "toy", "a {shape}", toy_check(tiny_model.cfg.encoder.out_embed_dim + 3, 0.0))})
    with caplog.at_level(logging.ERROR):
        reply = _ask(tiny_model, [{"type": "image", "path": str(photo)}])
    assert isinstance(reply.text, str) and not any("trained on" in n for n in reply.notices)
    assert "world check of the uploads failed" in caplog.text


@pytest.fixture(scope="module")
def nano():
    """The shipped nano model without its decoders (~5 s to load on 2 CPU cores)."""
    from nextgpt.model import NextGPT

    torch.set_num_threads(1)
    return NextGPT.from_preset("nano", load_decoders=False)


def test_shipped_nano_reads_its_world_and_flags_a_noise_photo(nano, tmp_path):
    from nextgpt.media import save_image

    assert nano.world is not None and nano.world.calibrated(Modality.IMAGE)
    noise = save_image(np.random.default_rng(3).integers(0, 256, (384, 512, 3), dtype=np.uint8), tmp_path / "noise.jpg")
    settings = GenerationSettings(max_new_tokens=8, modalities=())
    reply = nano.chat([{"role": "user", "content": [{"type": "image", "path": str(noise)},
                                                    {"type": "text", "text": "What is this?"}]}], settings)
    assert ("This picture does not look like anything nano was trained on (coloured shapes on white); "
            "the answer may be wrong.") in reply.notices
    world = nano.chat([{"role": "user", "content": [{"type": "image", "path": str(EXAMPLES / "green_triangle.png")},
                                                    {"type": "text", "text": "What is this?"}]}], settings)
    assert not any("trained on" in n for n in world.notices)
