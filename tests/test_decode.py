"""Tests for nextgpt/decode.py: tiny stock pipelines (8/16 channels, 2 steps, 32x32) on the CPU.

    .venv/bin/python -m pytest tests/test_decode.py -q
"""

from __future__ import annotations

import dataclasses

import diffusers
import numpy as np
import pytest
import torch

from nextgpt.config import DecoderSpec, Modality, NextGPTConfig
from nextgpt.decode import (
    NANO_CAPTION_TOKENS,
    Decoders,
    build_nano_pipeline,
    count_parameters,
    load_caption_encoder,
    nano_decoder_components,
    reference_decoder_components,
)
from nextgpt.tiny import tiny_pipeline

TINY = NextGPTConfig.from_name("tiny")
TINY_SPECS = tuple(TINY.decoder(m) for m in (Modality.IMAGE, Modality.AUDIO, Modality.VIDEO))
COND_DIM = TINY_SPECS[0].cond_dim
EXPECTED_SHAPE = {Modality.IMAGE: (32, 32, 3), Modality.AUDIO: (8000,), Modality.VIDEO: (3, 32, 32, 3)}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_cfg() -> NextGPTConfig:
    """Tiny decoders with their own tiny text encoders (saved inside each pipeline folder)."""
    return TINY.replace(caption_encoder="")


@pytest.fixture(scope="module")
def tokenizer():
    return load_caption_encoder(max_length=NANO_CAPTION_TOKENS)[1]



@pytest.fixture(scope="module")
def decoders(tiny_cfg, tokenizer) -> Decoders:
    return Decoders(tiny_cfg, {spec.modality: tiny_pipeline(spec, tokenizer) for spec in TINY_SPECS})


def random_cond(spec: DecoderSpec, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (batch, spec.cond_dim) if spec.pooled else (batch, spec.cond_len, spec.cond_dim)
    return torch.randn(shape, generator=g)


@pytest.mark.parametrize("spec", TINY_SPECS, ids=lambda s: s.modality.value)
def test_generate_shape_dtype_range_and_determinism(decoders, spec):
    cond = random_cond(spec)
    out = decoders.generate(spec.modality, cond, seed=3)
    assert out.shape == (2, *EXPECTED_SHAPE[spec.modality])
    if spec.modality == Modality.AUDIO:
        assert out.dtype == np.float32 and np.isfinite(out).all()
    else:
        assert out.dtype == np.uint8 and out.max() > out.min()
    np.testing.assert_array_equal(out, decoders.generate(spec.modality, cond, seed=3))
    assert not np.array_equal(out, decoders.generate(spec.modality, cond, seed=4))


def test_generate_overrides_sizes(decoders):
    video = decoders.generate("video", random_cond(TINY_SPECS[2], 1), num_frames=2, guidance_scale=1.0)
    assert video.shape == (1, 2, 32, 32, 3)
    audio = decoders.generate("audio", random_cond(TINY_SPECS[1], 1), audio_seconds=0.3, num_inference_steps=1)
    assert audio.shape == (1, 4800)


def test_pooled_condition_accepts_singleton_sequence(decoders):
    cond = random_cond(TINY_SPECS[1], 1)
    np.testing.assert_array_equal(decoders.generate("audio", cond), decoders.generate("audio", cond[:, None]))


@pytest.mark.parametrize("modality, shape", [
    ("image", (1, 77, COND_DIM)),  # wrong length
    ("image", (1, 16, 768)),  # wrong width (official issue #97)
    ("image", (16, COND_DIM)),  # missing batch
    ("audio", (1, 3, COND_DIM)),  # sequence for a pooled decoder
    ("video", (1, 16, 2 * COND_DIM)),
])
def test_wrong_condition_shape_is_a_clear_error(decoders, modality, shape):
    with pytest.raises(ValueError, match=rf"{modality} condition has shape .* needs \(B, "):
        decoders.generate(modality, torch.zeros(shape))


def test_non_finite_condition_is_rejected(decoders):
    cond = random_cond(TINY_SPECS[0], 1)
    cond[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        decoders.generate("image", cond)


def test_encode_captions_shapes_and_null_cond(decoders):
    image = decoders.encode_captions("image", ["a red circle", "a blue square"])
    assert image.shape == (2, 16, COND_DIM) and image.dtype == torch.float32
    audio = decoders.encode_captions("audio", ["a low tone", "a buzz", "a high tone"])
    assert audio.shape == (3, COND_DIM)
    torch.testing.assert_close(audio.norm(dim=-1), torch.ones(3))
    assert decoders.null_cond("video").shape == (1, 16, COND_DIM)
    torch.testing.assert_close(decoders.null_cond("image"), decoders.encode_captions("image", [""]))


def test_encode_captions_matches_the_pipelines_own_text_path(decoders):
    """The stage-2 target is what the stock pipeline itself would feed the UNet for that caption."""
    pipe = decoders.pipeline("image")
    embeds, negative = pipe.encode_prompt("a red circle", "cpu", 1, True, negative_prompt="")
    torch.testing.assert_close(decoders.encode_captions("image", ["a red circle"]), embeds)
    torch.testing.assert_close(decoders.null_cond("image"), negative)


def test_save_and_from_folder_round_trip_loads_once(decoders, tiny_cfg, tmp_path, monkeypatch):
    written = decoders.save(tmp_path)
    assert sorted(p.name for p in written) == ["audio", "image", "video"]
    assert (tmp_path / "decoders" / "image" / "model_index.json").is_file()
    assert (tmp_path / "decoders" / "audio" / "null_cond.safetensors").is_file()

    calls = []
    original = diffusers.DiffusionPipeline.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        calls.append(cls.__name__)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", classmethod(counting))
    loaded = Decoders.from_folder(tiny_cfg, tmp_path, offload=True)  # no CUDA here: logged, stays on the CPU
    assert calls == [] and not loaded.is_loaded("image")  # lazy
    for spec in TINY_SPECS:
        cond = random_cond(spec, 1)
        np.testing.assert_array_equal(loaded.generate(spec.modality, cond), decoders.generate(spec.modality, cond))
    loaded.generate("image", random_cond(TINY_SPECS[0], 1), seed=5)
    loaded.encode_captions("audio", ["again"])
    assert sorted(calls) == ["AudioLDMPipeline", "StableDiffusionPipeline", "TextToVideoSDPipeline"]


def test_bundled_caption_encoder_is_shared_and_not_saved(tmp_path):
    """With cfg.caption_encoder set (nano), MiniLM is loaded once for all decoders and not written 3 times."""
    specs = tuple(dataclasses.replace(s, cond_dim=384) for s in TINY_SPECS[:2])
    cfg = NextGPTConfig.from_name("nano").replace(decoders=specs)
    small = dict(unet_channels=(8, 16), vae_channels=(8, 16), vocoder_channels=16)
    decoders = Decoders(cfg, {s.modality: build_nano_pipeline(s, **small) for s in specs})
    decoders.save(tmp_path)
    folder = tmp_path / "decoders" / "image"
    assert not (folder / "text_encoder").exists() and (folder / "unet").is_dir()
    loaded = Decoders.from_folder(cfg, tmp_path)
    assert loaded.pipeline("image").text_encoder is loaded.pipeline("audio").text_encoder
    assert loaded.pipeline("image").tokenizer.model_max_length == 16
    for spec in specs:
        cond = random_cond(spec, 1)
        np.testing.assert_array_equal(loaded.generate(spec.modality, cond), decoders.generate(spec.modality, cond))
        torch.testing.assert_close(loaded.encode_captions(spec.modality, ["a red circle"]),
                                   decoders.encode_captions(spec.modality, ["a red circle"]))


def test_missing_folder_names_modality_and_path(tiny_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no video decoder at .*decoders/video"):
        Decoders.from_folder(tiny_cfg, tmp_path).generate("video", random_cond(TINY_SPECS[2], 1))


def test_pipeline_that_disagrees_with_the_spec_is_refused(tiny_cfg, tokenizer):
    wide = dataclasses.replace(TINY_SPECS[0], cond_dim=2 * COND_DIM)
    cfg = tiny_cfg.replace(decoders=(wide,))
    with pytest.raises(ValueError, match="cross_attention_dim=32, the config says cond_dim=64"):
        Decoders(cfg, {"image": tiny_pipeline(TINY_SPECS[0], tokenizer)})


def test_nano_pipelines_match_the_preset():
    """Default nano decoders: MiniLM text encoder, factor-4 VAEs, AudioLDM's mel layout; a few M params."""
    cfg = NextGPTConfig.from_name("nano")
    image = build_nano_pipeline(cfg.decoder("image"))
    assert image.vae_scale_factor == 4 and image.unet.config.cross_attention_dim == 384
    assert image.tokenizer.model_max_length == 16
    audio_spec = cfg.decoder("audio")
    table = nano_decoder_components(audio_spec)
    assert table["vocoder"][1]["model_in_dim"] == 64
    assert np.prod(table["vocoder"][1]["upsample_rates"]) == 160
    counts = count_parameters(table)
    assert 1e6 < counts["unet"] < 20e6 and counts["text_encoder"] == pytest.approx(22.7e6, rel=0.01)
    video = count_parameters(nano_decoder_components(cfg.decoder("video")))
    assert 1e6 < video["unet"] < 20e6
    decoders = Decoders(cfg, {"image": image})
    assert decoders.encode_captions("image", ["a red circle"]).shape == (1, 16, 384)


def test_reference_architectures_parameter_counts():
    cfg = NextGPTConfig.from_name("nextgpt-7b")
    sd = count_parameters(reference_decoder_components(cfg.decoder("image")))
    assert sd["unet"] == pytest.approx(859.52e6, rel=1e-3)
    assert sd["vae"] == pytest.approx(83.65e6, rel=1e-3)
    assert sd["text_encoder"] == pytest.approx(123.06e6, rel=1e-3)
    video = count_parameters(reference_decoder_components(cfg.decoder("video")))
    assert video["unet"] == pytest.approx(1.41e9, rel=0.01)  # ModelScope T2V / Zeroscope UNet3D
    assert video["text_encoder"] == pytest.approx(340e6, rel=0.01)  # OpenCLIP-H text, 23 layers
    audio = count_parameters(reference_decoder_components(cfg.decoder("audio")))
    assert audio["unet"] == pytest.approx(739e6, rel=0.01)  # AudioLDM-L, as in the paper
    assert set(audio) == {"unet", "vae", "text_encoder", "vocoder"}
    with pytest.raises(ValueError, match="nano_decoder_components"):
        reference_decoder_components(NextGPTConfig.from_name("nano").decoder("image"))


@pytest.mark.parametrize("modality", list(Modality), ids=lambda m: m.value)
def test_shipped_nano_decoders_have_the_sizes_and_prediction_the_code_builds(modality):
    """NANO_SIZES / NANO_PREDICTION build fresh nano decoders and drive their training: they must describe the
    decoders in checkpoints/nano."""
    import json
    from pathlib import Path

    from nextgpt.decoder_configs import NANO_PREDICTION, NANO_SIZES

    folder = Path(__file__).resolve().parents[1] / "checkpoints" / "nano" / "decoders" / modality.value

    def read(part: str) -> dict:
        return json.loads((folder / part / ("scheduler_config.json" if part == "scheduler" else "config.json")).read_text())

    assert tuple(read("unet")["block_out_channels"]) == NANO_SIZES[modality].unet_channels
    assert tuple(read("vae")["block_out_channels"]) == NANO_SIZES[modality].vae_channels
    assert read("scheduler")["prediction_type"] == NANO_PREDICTION[modality]
    built = nano_decoder_components(NextGPTConfig.from_name("nano").decoder(modality))["unet"][0]
    assert read("unet")["_class_name"] == built.__name__
    if modality == Modality.AUDIO:
        assert read("vocoder")["upsample_initial_channel"] == NANO_SIZES[modality].vocoder_channels


def test_frame_positions_unet_starts_as_the_stock_one_and_round_trips(tmp_path):
    """UNet3DFramePositions: a converted stock UNet3D computes exactly what it did (zero frame embeddings); learnt
    embeddings change the output and survive save/load; too many frames is a clear error."""
    from diffusers import UNet3DConditionModel

    from nextgpt.unet3d import MAX_FRAMES, UNet3DFramePositions

    config = dict(sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                  down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                  up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), attention_head_dim=1,
                  cross_attention_dim=COND_DIM, norm_num_groups=8)
    torch.manual_seed(0)
    stock = UNet3DConditionModel(**config).eval()
    unet = UNet3DFramePositions.from_stock(stock)
    assert not unet.training
    embeddings = {n: p for n, p in unet.named_parameters() if n.endswith("frame_embedding")}
    temporal = [m for m in unet.modules() if type(m).__name__ == "TransformerTemporalModel"]
    assert len(embeddings) == len(temporal) == 5 and unet.temporal_transformers() == temporal
    assert all(p.shape[0] == MAX_FRAMES and not p.any() for p in embeddings.values())
    x, cond, t = torch.randn(1, 4, 5, 4, 4), torch.randn(1, 16, COND_DIM), torch.tensor([999])
    with torch.no_grad():
        before = stock(x, t, encoder_hidden_states=cond).sample
        assert torch.equal(unet(x, t, encoder_hidden_states=cond).sample, before)
        for p in embeddings.values():
            p.normal_()
        after = unet(x, t, encoder_hidden_states=cond).sample
    assert (after - before).abs().max() > 1e-3
    unet.save_pretrained(tmp_path / "unet", safe_serialization=True)
    loaded = UNet3DFramePositions.from_pretrained(tmp_path / "unet").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, encoder_hidden_states=cond).sample, after)
        with pytest.raises(ValueError, match="at most"):
            loaded(torch.randn(1, 4, MAX_FRAMES + 1, 4, 4), t, encoder_hidden_states=cond)


# ---- loudness of generated sound --------------------------------------------------------------------
def loudness(sound: np.ndarray) -> tuple[float, float, float]:
    """(peak dBFS, RMS dBFS, peak of the first 2 ms / RMS) of one waveform; the last is > 1 for a start click."""
    peak = float(np.abs(sound).max())
    rms = float(np.sqrt(np.mean(sound.astype(np.float64) ** 2)))
    return 20 * np.log10(peak), 20 * np.log10(rms), float(np.abs(sound[:32]).max()) / rms


def test_a_quiet_tiny_decoder_sounds_at_minus_1_dbfs_without_a_start_click(tiny_cfg, tokenizer):
    spec = TINY_SPECS[1]
    pipe = tiny_pipeline(spec, tokenizer)
    with torch.no_grad():  # a random vocoder is ~-190 dBFS: raise its output to a quiet but audible level
        pipe.vocoder.conv_post.weight.mul_(3e6)
        pipe.vocoder.harmonic_offset.fill_(-60.0)  # and keep its harmonic source (nextgpt/vocoder.py) near silent
    quiet = Decoders(tiny_cfg, {Modality.AUDIO: pipe})
    cond = random_cond(spec)
    raw = pipe(prompt_embeds=cond, negative_prompt_embeds=quiet.null_cond("audio").expand(2, -1),
               num_inference_steps=2, generator=torch.Generator().manual_seed(3), output_type="np").audios
    assert 20 * np.log10(np.abs(raw).max()) < -30.0  # what the vocoder gives
    for sound in quiet.generate("audio", cond, seed=3):
        peak, rms, start = loudness(sound)
        assert abs(peak + 1.0) < 0.05 and rms > -30.0 and start < 1.0, (peak, rms, start)
        assert abs(float(sound.mean())) < 1e-3  # no DC offset


def test_normalize_sounds_removes_the_click_and_leaves_silence_alone():
    from nextgpt.decode import normalize_sounds

    t = np.arange(16000) / 16000
    quiet = 0.003 * np.sin(2 * np.pi * 440 * t)
    quiet[0] = 0.2  # a start click, as the nano vocoder makes
    assert loudness(quiet)[2] > 10.0
    out = normalize_sounds(np.stack([quiet, np.full(16000, 1e-6), np.zeros(16000)]))
    peak, rms, start = loudness(out[0])
    assert abs(peak + 1.0) < 0.01 and abs(rms - (peak - 3.0)) < 0.2 and start < 1.0  # a sine: RMS = peak - 3 dB
    assert np.abs(out[1:]).max() < 1e-4  # silence stays silence (not amplified noise)


def test_shipped_nano_sound_is_loud_and_starts_without_a_click():
    """The shipped nano audio decoder (checkpoints/nano) on two world captions, at 10 diffusion steps."""
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "checkpoints" / "nano"
    shipped = Decoders.from_folder(NextGPTConfig.load(folder), folder)
    cond = shipped.encode_captions("audio", ["a low beeping tone", "a high steady buzz"])
    for sound in shipped.generate("audio", cond, num_inference_steps=10, seed=0):
        peak, rms, start = loudness(sound)
        assert abs(peak + 1.0) < 0.05 and rms > -25.0 and start < 1.0, (peak, rms, start)


def test_the_stock_diffusers_loader_loads_the_shipped_video_decoder(tmp_path):
    """The shipped model_index.json names nextgpt.unet3d for the UNet: in a fresh interpreter, importing that module
    (torch and diffusers only) is all `DiffusionPipeline.from_pretrained` needs (the text encoder is the shared
    all-MiniLM-L6-v2, not in the folder). A folder that names nextgpt.decoder_configs, where the class is
    re-exported, loads the same class."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "nano" / "decoders" / "video"
    assert json.loads((shipped / "model_index.json").read_text())["unet"] == ["nextgpt.unet3d", "UNet3DFramePositions"]
    other = tmp_path / "video"
    other.mkdir()
    for part in shipped.iterdir():
        if part.name != "model_index.json":
            (other / part.name).symlink_to(part)
    index = json.loads((shipped / "model_index.json").read_text()) | {"unet": ["nextgpt.decoder_configs",
                                                                                "UNet3DFramePositions"]}
    (other / "model_index.json").write_text(json.dumps(index))
    script = (
        "import sys, nextgpt.unet3d\n"
        "from diffusers import DiffusionPipeline\n"
        "own = sorted(m for m in sys.modules if m.startswith('nextgpt'))\n"
        "pipe = DiffusionPipeline.from_pretrained(sys.argv[1], text_encoder=None, tokenizer=None)\n"
        "print(type(pipe).__name__, type(pipe.unet).__module__, type(pipe.unet).__name__, own)\n"
        "import nextgpt.decoder_configs\n"
        "print(type(DiffusionPipeline.from_pretrained(sys.argv[2], text_encoder=None, tokenizer=None).unet).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(shipped), str(other)], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = proc.stdout.strip().splitlines()[-2:]
    imported = ["nextgpt", "nextgpt.config", "nextgpt.unet3d"]  # the package's __init__ imports config only
    assert first == f"TextToVideoSDPipeline nextgpt.unet3d UNet3DFramePositions {imported}"
    assert second == "UNet3DFramePositions"
