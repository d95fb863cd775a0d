"""Tests for nextgpt.encode: a 1-block, width-32 ImageBind on the CPU, plus a meta-device ImageBind-huge."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch

from nextgpt.config import Modality, NextGPTConfig
from nextgpt.encode import (
    AUDIO_MEAN,
    AUDIO_STD,
    CLIP_MEAN,
    CLIP_STD,
    ENCODER_FILE,
    EncoderCheckpointError,
    MediaEncoder,
    audio_clip_bounds,
    build_imagebind,
    clip_frame_indices,
    load_official_imagebind,
)

# the tiny preset's encoder: image_size 56 (not ImageBind's 224) also exercises the rebuilt vision preprocessor
# (2x2 patches of 28); two audio clips exercise the averaging over clips
TINY = dataclasses.replace(NextGPTConfig.from_name("tiny").encoder, audio_clips=2)
RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (40, 70, 3), dtype=np.uint8)
VIDEO = RNG.integers(0, 256, (6, 30, 40, 3), dtype=np.uint8)
AUDIO = (0.1 * RNG.standard_normal(24000)).astype(np.float32)  # 1.5 s at 16 kHz
ITEMS = {Modality.IMAGE: IMAGE, Modality.VIDEO: VIDEO, Modality.AUDIO: AUDIO}


@pytest.fixture(scope="module")
def encoder() -> MediaEncoder:
    torch.manual_seed(0)
    return MediaEncoder(TINY)


# ---- preprocessing --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "modality, shape",
    [(Modality.IMAGE, (3, 56, 56)), (Modality.VIDEO, (2, 3, 2, 56, 56)), (Modality.AUDIO, (2, 1, 64, 100))],
)
def test_preprocess_shapes(encoder, modality, shape):
    x = encoder.preprocess(modality, ITEMS[modality])
    assert tuple(x.shape) == shape and x.dtype == torch.float32


def test_nano_audio_is_imagebind_layout():
    """Nano/huge audio input is ImageBind's (clips, 1, 128 mel, 204 frames)."""
    enc_cfg = NextGPTConfig.from_name("nano").encoder
    from nextgpt.encode import audio_to_tensor, make_fbank

    x = audio_to_tensor(AUDIO, enc_cfg, make_fbank(enc_cfg))
    assert tuple(x.shape) == (enc_cfg.audio_clips, 1, 128, 204)


def test_image_preprocess_normalises_and_centre_crops():
    from nextgpt.encode import image_to_tensor

    white = np.full((30, 90, 3), 255, np.uint8)
    x = image_to_tensor(white, 56)
    expected = (1.0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-4)
    # A wide image keeps its centre: left third black, middle white, right third black.
    img = np.zeros((30, 90, 3), np.uint8)
    img[:, 30:60] = 255
    x = image_to_tensor(img, 30)  # short side already 30 -> pure crop of columns 30..59
    assert torch.allclose(x[0], torch.full((30, 30), float(expected[0])), atol=1e-4)


def test_clip_frame_indices():
    assert clip_frame_indices(8, 4).tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert clip_frame_indices(3, 2).tolist() == [[0, 1], [1, 2]]
    assert clip_frame_indices(1, 4).tolist() == [[0, 0]] * 4


def test_audio_clip_bounds_follow_imagebind_sampler():
    cfg = dataclasses.replace(TINY, audio_clips=3, audio_clip_seconds=2.0)
    assert audio_clip_bounds(5 * 16000, cfg) == [(0, 32000), (16000, 48000), (32000, 64000)]
    assert audio_clip_bounds(8000, cfg) == [(0, 32000)] * 3  # shorter than a clip: padded later


def test_audio_fbank_axes_are_mel_then_time(encoder):
    """(1, mel, time): a high tone lights up high mel rows; silence-then-tone rises along time."""
    t = np.arange(16000) / 16000
    wave = np.where(t >= 0.5, 0.5 * np.sin(2 * np.pi * 6000 * t), 0.0).astype(np.float32)
    x = encoder.preprocess(Modality.AUDIO, wave)[0, 0]  # (64 mel, 100 frames)
    assert x.shape == (64, 100)
    loud = x[:, 60:95].mean(dim=1)
    assert int(loud.argmax()) > 48  # 6 kHz sits in the top quarter of the mel axis
    assert x[:, 60:95].amax(dim=0).min() > x[:, 5:40].amax(dim=0).max() + 0.5
    pad_value = (0.0 - AUDIO_MEAN) / AUDIO_STD  # ImageBind pads with 0 before normalising
    short = encoder.preprocess(Modality.AUDIO, wave[:4000])[0, 0]
    assert torch.allclose(short[:, -10:], torch.full((64, 10), pad_value), atol=1e-5)


# ---- encoding --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("modality", list(Modality))
def test_encode_shapes_and_norms(encoder, modality):
    emb = encoder.encode(modality, [ITEMS[modality], ITEMS[modality]])
    assert emb.shape == (2, TINY.out_embed_dim) and not emb.requires_grad
    norms = emb.norm(dim=-1)
    scale = 20.0 if modality == Modality.AUDIO else 1.0  # ImageBind's fixed audio logit scale
    if modality == Modality.IMAGE:
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    else:  # the mean of the clips' scaled unit vectors
        assert bool((norms <= scale * (1 + 1e-5)).all()) and bool((norms > 0.1 * scale).all())


def test_identical_clips_keep_imagebind_scale(encoder):
    """Audio shorter than a clip gives identical clips, so the mean keeps each clip's norm (20)."""
    norms = encoder.encode(Modality.AUDIO, [AUDIO[:8000]]).norm(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, 20.0), atol=1e-3)


def test_encode_text(encoder):
    tokens = encoder.tokenize(["a dog barking"])
    assert tokens.shape == (1, 77) and tokens[0, 0] == 49406 and 49407 in tokens[0].tolist()
    emb = encoder.encode_text(["a dog barking", "rain on a window", ""])
    assert emb.shape == (3, TINY.out_embed_dim)
    assert encoder.encode_text([]).shape == (0, TINY.out_embed_dim)


def test_batching_matches_one_by_one(encoder):
    images = [RNG.integers(0, 256, (20 + 7 * i, 30, 3), dtype=np.uint8) for i in range(5)]
    together = encoder.encode(Modality.IMAGE, images, batch_size=2)
    alone = torch.cat([encoder.encode(Modality.IMAGE, [im]) for im in images])
    assert torch.allclose(together, alone, atol=1e-5)
    assert encoder.encode(Modality.AUDIO, []).shape == (0, TINY.out_embed_dim)


def test_deterministic_even_in_train_mode(encoder):
    first = encoder.encode(Modality.AUDIO, [AUDIO])
    encoder.train()  # a parent model in training must not switch on ImageBind's audio drop-path
    try:
        assert not encoder.model.training
        assert torch.equal(first, encoder.encode(Modality.AUDIO, [AUDIO]))
    finally:
        encoder.eval()


def test_still_image_equals_one_frame_video(encoder):
    """ImageBind pads a still image to a 2-frame clip by repetition (PadIm2Video)."""
    img = encoder.encode(Modality.IMAGE, [IMAGE])
    vid = encoder.encode(Modality.VIDEO, [IMAGE[None]])
    assert torch.allclose(img, vid, atol=1e-5)


def test_imagebind_import_leaves_no_stand_ins():
    assert "torchaudio" not in sys.modules and "torchvision" not in sys.modules
    timm = sys.modules.get("timm")
    assert timm is None or hasattr(timm, "__spec__") and timm.__spec__ is not None


def test_bad_patch_size_is_refused():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        build_imagebind(dataclasses.replace(TINY, patch_size=25))


# ---- ImageBind-huge on the meta device -------------------------------------------------------------------
def _count(model: torch.nn.Module, tower: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if f".{tower}." in n)


def test_huge_builds_on_meta_with_plausible_sizes():
    huge = NextGPTConfig.from_name("nextgpt-7b").encoder
    with torch.device("meta"):
        model = build_imagebind(huge)
    assert all(p.device.type == "meta" for p in model.parameters())
    # Vision ViT-H/14: 32 blocks x 12 x 1280^2 = 629.1M + stem/pos/head ~3.1M.
    assert 630e6 < _count(model, "vision") < 636e6
    # Audio ViT-B: 12 blocks x 12 x 768^2 = 84.9M + stem/pos/head ~1.2M.
    assert 85e6 < _count(model, "audio") < 88e6
    # Text: 24 blocks x 12 x 1024^2 = 302M + 49408 x 1024 token table (50.6M) + head.
    assert 350e6 < _count(model, "text") < 358e6
    # ImageBind-huge is ~1.2B with the depth/thermal/IMU towers that NExT-GPT does not use.
    assert 1.06e9 < sum(p.numel() for p in model.parameters()) < 1.09e9
    direct = build_imagebind(huge, device="meta")
    assert direct.modality_trunks["vision"].blocks[0].attn.in_proj_weight.is_meta


# ---- checkpoints -----------------------------------------------------------------------------------------
def assert_same_weights(a: MediaEncoder, b: MediaEncoder) -> None:
    """The two encoders hold the same tensors, bit for bit."""
    first, second = a.model.state_dict(), b.model.state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_save_load_round_trip(encoder, tmp_path):
    path = encoder.save(tmp_path)
    assert path.name == ENCODER_FILE and not list(tmp_path.glob("*.pt*"))
    loaded = MediaEncoder.load(tmp_path, TINY)
    assert_same_weights(encoder, loaded)
    # the same weights may take another kernel path (memory layout): outputs agree to float rounding
    for modality, item in ITEMS.items():
        torch.testing.assert_close(encoder.encode(modality, [item]), loaded.encode(modality, [item]))
    torch.testing.assert_close(encoder.encode_text(["hi"]), loaded.encode_text(["hi"]))


def test_bad_checkpoint_names_file_and_key(encoder, tmp_path):
    encoder.save(tmp_path)
    wider = dataclasses.replace(TINY, vision_embed_dim=48)
    with pytest.raises(EncoderCheckpointError) as err:
        MediaEncoder.load(tmp_path, wider)
    msg = str(err.value)
    assert ENCODER_FILE in msg and "modality_" in msg and "vision" in msg and "\n" not in msg

    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / ENCODER_FILE))
    state.pop("modality_heads.audio.2.weight")
    save_file(state, str(tmp_path / ENCODER_FILE))
    missing = r"encoder\.safetensors: missing key 'modality_heads\.audio\.2\.weight'"
    with pytest.raises(EncoderCheckpointError, match=missing):
        MediaEncoder.load(tmp_path, TINY)

    (tmp_path / ENCODER_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(EncoderCheckpointError, match="encoder.safetensors"):
        MediaEncoder.load(tmp_path, TINY)
    with pytest.raises(FileNotFoundError, match="encoder.safetensors"):
        MediaEncoder.load(tmp_path / "nowhere", TINY)


def test_load_official_imagebind_converts_once(encoder, tmp_path):
    state = dict(encoder.model.state_dict())
    state["modality_trunks.depth.blocks.0.norm_1.weight"] = torch.ones(4)  # dropped tower
    state["modality_postprocessors.imu.1.log_logit_scale"] = torch.zeros(())
    pth = tmp_path / "imagebind_huge.pth"
    torch.save(state, pth)
    loaded = load_official_imagebind(pth, TINY, tmp_path / "encoder")
    assert (tmp_path / "encoder" / ENCODER_FILE).is_file()
    assert_same_weights(loaded, encoder)  # the dropped towers' keys are gone, every kept tensor is exact
    torch.testing.assert_close(loaded.encode(Modality.IMAGE, [IMAGE]), encoder.encode(Modality.IMAGE, [IMAGE]))
    pth.unlink()  # the second call uses the converted file only
    again = load_official_imagebind(pth, TINY, tmp_path / "encoder")
    assert_same_weights(again, encoder)
    torch.testing.assert_close(again.encode(Modality.AUDIO, [AUDIO]), encoder.encode(Modality.AUDIO, [AUDIO]))


def test_load_official_imagebind_rejects_other_architecture(tmp_path):
    pth = tmp_path / "other.pth"
    torch.save({"visual.proj": torch.zeros(2, 2)}, pth)
    with pytest.raises(EncoderCheckpointError, match=r"other\.pth: missing key"):
        load_official_imagebind(pth, TINY)


def test_video_three_spatial_crops_as_imagebind():
    """nextgpt-7b's video path: 5 clips x 3 crops (start, centre, end of the long side) after a short-side scale."""
    from nextgpt.config import NextGPTConfig
    from nextgpt.encode import video_to_tensor

    assert NextGPTConfig.from_name("nextgpt-7b").encoder.video_crops == 3
    assert NextGPTConfig.from_name("nano").encoder.video_crops == 1
    frames = np.zeros((10, 32, 64, 3), np.uint8)
    frames[:, :, :4] = 255  # a white stripe at the left edge
    frames[:, :, -4:, 0] = 255  # a red stripe at the right edge
    out = video_to_tensor(frames, 16, num_clips=5, num_crops=3)
    assert out.shape == (15, 3, 2, 16, 16)
    white = out[:, 1].amax(dim=(1, 2, 3))  # green channel: high only where the white stripe is
    red = (out[:, 0] - out[:, 1]).amax(dim=(1, 2, 3))  # red minus green: the red stripe
    assert (white[0::3] > 1).all() and (white[1::3] < 0).all() and (white[2::3] < 0).all()
    assert (red[2::3] > 1).all() and (red[0::3] < 0.5).all() and (red[1::3] < 0.5).all()
    assert video_to_tensor(frames, 16, num_clips=5).shape == (5, 3, 2, 16, 16)


def test_official_imagebind_from_a_read_only_folder(encoder, tmp_path, monkeypatch):
    """The converted file goes to the cache, so a read-only model folder works; weights come in the asked dtype."""
    import stat

    monkeypatch.setenv("NEXTGPT_CACHE", str(tmp_path / "cache"))
    models = tmp_path / "models"
    models.mkdir()
    torch.save(dict(encoder.model.state_dict()), models / "imagebind_huge.pth")
    models.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        loaded = load_official_imagebind(models / "imagebind_huge.pth", TINY, dtype=torch.float16)
    finally:
        models.chmod(stat.S_IRWXU)
    assert loaded.dtype == torch.float16 and list(models.iterdir()) == [models / "imagebind_huge.pth"]
    assert len(list((tmp_path / "cache" / "imagebind").glob(f"imagebind_huge-*/{ENCODER_FILE}"))) == 1
    expected = encoder.encode(Modality.IMAGE, [IMAGE])
    torch.testing.assert_close(loaded.encode(Modality.IMAGE, [IMAGE]).float(), expected, atol=2e-2, rtol=2e-2)
