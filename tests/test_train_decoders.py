"""Tests for nextgpt.training.decoders and scripts/train_decoders.py: tiny components on a tiny world, on the CPU."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_world
from nextgpt.config import Modality, NextGPTConfig
from nextgpt.decode import Decoders
from nextgpt.training.decoders import SMOKE_SETTINGS, DecoderTrainArgs, LogMel, PartSettings, run, spectral_loss

PARTS = {"image": ("vae", "unet"), "audio": ("vae", "vocoder", "unet"), "video": ("vae", "unet", "vae_decoder")}
COMPONENTS = {"image": ("vae", "unet"), "audio": ("vae", "vocoder", "unet"), "video": ("vae", "unet")}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world"), ("train", "val", "test"), n=4, n_dialogues=0)


def _args(world: Path, tmp: Path, **kw) -> DecoderTrainArgs:
    return DecoderTrainArgs(data=world, out=tmp / "ckpt", run_dir=tmp / "runs", smoke=True, limit=4, threads=1, **kw)


def test_smoke_run_writes_every_part_fp16_and_the_metrics(world, tmp_path):
    args = _args(world, tmp_path)
    results = run(args)
    assert sorted(results) == sorted(f"{m}/{p}" for m, parts in PARTS.items() for p in (*parts, "eval"))
    for modality, parts in PARTS.items():
        folder = args.out / "decoders" / modality
        assert (folder / "model_index.json").is_file() and (folder / "null_cond.safetensors").is_file()
        assert not (folder / "text_encoder").exists()  # the bundled caption encoder is never saved
        for component in COMPONENTS[modality]:
            weights = next((folder / component).glob("*.safetensors"))
            assert {t.dtype for t in load_file(weights).values()} == {torch.float16}
        for part in parts:
            log = (args.run_dir / modality / part / "log.jsonl").read_text().splitlines()
            rows = [json.loads(line) for line in log]
            assert rows[-1]["step"] == 4 and math.isfinite(rows[-1]["loss"])
        assert json.loads((folder / "vae" / "config.json").read_text())["scaling_factor"] > 0
    metrics = json.loads((args.out / "decoders" / "metrics.json").read_text())
    assert set(metrics) == set(COMPONENTS)
    assert 0.0 <= metrics["image"]["accuracy_colour+shape"] <= 1.0
    assert metrics["audio"]["latency_s_per_call_mean"] > 0
    assert {"accuracy_direction", "accuracy_direction+colour"} <= set(metrics["video"])

    # the trained folder is what Decoders loads; a second run skips the parts already trained
    decoders = Decoders.from_folder(NextGPTConfig.from_name("nano"), args.out)
    cond = decoders.encode_captions("image", ["a red circle"])
    assert decoders.generate("image", cond, num_inference_steps=2).shape == (1, 64, 64, 3)
    again = run(_args(world, tmp_path, modality="image", part="unet"))
    assert again["image/unet"]["steps"] == 4
    # model_index.json names the class each component was trained as
    index = json.loads((args.out / "decoders" / "video" / "model_index.json").read_text())
    assert index["unet"] == ["nextgpt.unet3d", type(decoders.pipeline("video").unet).__name__]
    assert index["unet"][1] == "UNet3DFramePositions" and index["vae"] == ["diffusers", "AutoencoderKL"]

    # --from-checkpoint trains on from the component in --out: with lr 0 the weights come back unchanged
    before = load_file(next((args.out / "decoders" / "image" / "unet").glob("*.safetensors")))
    on = replace(_args(world, tmp_path, modality="image", part="unet", from_checkpoint=True, lr=0.0),
                 run_dir=tmp_path / "runs_on")
    assert run(on)["image/unet"]["steps"] == 4
    after = load_file(next((args.out / "decoders" / "image" / "unet").glob("*.safetensors")))
    assert all(torch.equal(before[k], after[k]) for k in before)
    # a component loaded from a folder does not write that folder's path into the shipped config
    assert "_name_or_path" not in json.loads((args.out / "decoders" / "image" / "unet" / "config.json").read_text())


@pytest.mark.parametrize("modality, part", [("image", "vae"), ("video", "unet")])
def test_interrupted_run_resumes_to_the_same_weights(world, tmp_path, modality, part):
    """The video UNet's temporal convolutions draw dropout from torch's global generator: the state carries it.
    Each run starts the generator from one seed, as each new process starts it from torch's default seed."""
    default_seed = 0
    interrupted = _args(world, tmp_path / "a", modality=modality, part=part)
    torch.manual_seed(default_seed)
    stopped = run(interrupted, stop_after=2)
    assert stopped[f"{modality}/{part}"]["stopped_at"] == 2
    assert (interrupted.run_dir / modality / part / "state" / "optimizer.pt").is_file()
    torch.manual_seed(default_seed)
    resumed = run(interrupted)
    assert resumed[f"{modality}/{part}"]["steps"] == 4

    straight = _args(world, tmp_path / "b", modality=modality, part=part)
    torch.manual_seed(default_seed)
    run(straight)
    a, b = (load_file(next((args.out / "decoders" / modality / part).glob("*.safetensors")))
            for args in (interrupted, straight))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_part_of_a_modality_is_a_clear_error(world, tmp_path):
    with pytest.raises(ValueError, match="no 'vocoder' part"):
        run(_args(world, tmp_path, modality="image", part="vocoder"))


def test_logmel_matches_audioldm_layout_and_pitch():
    sr = 16000
    t = np.arange(2 * sr) / sr
    wave = torch.tensor(0.5 * np.sin(2 * np.pi * 1000.0 * t), dtype=torch.float32)[None]
    mel = LogMel()(wave)  # (1, 200, 64): 100 frames per second, 64 bins
    assert mel.shape == (1, 200, 64)
    assert mel.min() >= math.log(1e-5) - 1e-4
    peak = int(mel[0, 100].argmax())
    # slaney mel: linear below 1 kHz; 64 bins over 0-8 kHz put 1 kHz near bin 21
    assert 19 <= peak <= 23
    assert spectral_loss(wave, wave).item() == pytest.approx(0.0, abs=1e-5)


def test_script_parses_and_validates(monkeypatch):
    import importlib.util

    path = Path(__file__).parent.parent / "scripts" / "train_decoders.py"
    spec = importlib.util.spec_from_file_location("train_decoders", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = script.parse_args(["--modality", "audio", "--part", "vocoder", "--steps", "7", "--smoke"])
    assert (args.modality, args.part, args.steps, args.smoke) == ("audio", "vocoder", 7, True)
    assert args.out == Path("checkpoints/nano")
    with pytest.raises(SystemExit):
        script.parse_args(["--part", "decoder"])
    assert Modality(args.modality) == Modality.AUDIO
    on = script.parse_args(["--modality", "audio", "--part", "unet", "--from-checkpoint",
                            "--set", "snr_gamma=0", "--set", "high_noise_fraction=0.5"])
    assert on.from_checkpoint and on.settings == ("snr_gamma=0", "high_noise_fraction=0.5")
    from nextgpt.training.decoders import RECIPES, _settings

    settings = _settings(on, RECIPES[Modality.AUDIO], "unet")
    assert (settings.snr_gamma, settings.high_noise_fraction) == (0.0, 0.5)
    assert settings.prediction == RECIPES[Modality.AUDIO].parts["unet"].prediction  # the rest is the recipe's
    for flag, want in (("true", True), ("False", False), ("1", True), ("0", False)):
        zero = script.parse_args(["--part", "unet", "--set", f"zero_terminal_snr={flag}"])
        assert _settings(zero, RECIPES[Modality.VIDEO], "unet").zero_terminal_snr is want
    for bad in (["--set", "snr=0"], ["--set", "steps=many"], ["--set", "lr"], ["--set", "zero_terminal_snr=maybe"]):
        with pytest.raises(SystemExit):
            script.parse_args(bad)


def test_zero_terminal_snr_sampler_starts_from_pure_noise():
    """A UNet trained with zero terminal SNR is sampled on the same rescaled betas, from t = 999 (trailing)."""
    from diffusers import DPMSolverMultistepScheduler

    from nextgpt.training.decoders import sampler_for

    leaky = DPMSolverMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                        prediction_type="epsilon", steps_offset=1)
    leaky.set_timesteps(10)
    assert float(leaky.alphas_cumprod[-1]) > 1e-3  # SD's betas leave signal in the noisiest step
    zero = sampler_for(leaky, PartSettings(steps=1, batch_size=1, lr=1.0, prediction="v_prediction",
                                           zero_terminal_snr=True))
    zero.set_timesteps(10)
    assert int(zero.timesteps[0]) == 999 and float(zero.alphas_cumprod[-1]) < 1e-6
    assert zero.config.prediction_type == "v_prediction"
    back = sampler_for(zero, PartSettings(steps=1, batch_size=1, lr=1.0, prediction="v_prediction"))
    assert float(back.alphas_cumprod[-1]) == pytest.approx(float(leaky.alphas_cumprod[-1]))
    assert back.config.timestep_spacing == "linspace"


def test_opposite_rows_pair_captions_whose_direction_is_reversed():
    from nextgpt.world.training import opposite_rows

    captions = ["a red circle moving left", "a red circle moving right", "a blue square moving up", "a red circle"]
    assert opposite_rows(captions) == [1, 0, -1, -1]


def test_caption_table_rows_and_opposite_rows_index_the_same_captions():
    """train_unet's contrast looks the reversed caption up in the condition table by row: both use one list."""
    from nextgpt.training.decoders import caption_conditions
    from nextgpt.world.training import opposite_rows

    class FakeDecoders:  # a caption's "encoding" is its position in a fixed vocabulary: rows can be read back
        vocab = ["a red circle moving right", "a blue square moving up", "a red circle moving left"]

        def encode_captions(self, modality, captions):
            return torch.tensor([[float(self.vocab.index(c))] for c in captions])

        def null_cond(self, modality):
            return torch.full((1, 1), -1.0)

    items = ["a red circle moving right", "a blue square moving up", "a red circle moving left",
             "a red circle moving right"]
    captions, table, row, null = caption_conditions(FakeDecoders(), Modality.VIDEO, items)
    assert [FakeDecoders.vocab[int(table[row[i], 0])] for i in range(len(items))] == items
    opposite = opposite_rows(captions)
    reversed_of = {items[i]: FakeDecoders.vocab[int(table[opposite[row[i]], 0])] for i in (0, 2)}
    assert reversed_of == {"a red circle moving right": "a red circle moving left",
                           "a red circle moving left": "a red circle moving right"}
    assert opposite[row[1]] == -1 and null.shape == (1, 1)


def test_video_unet_trains_on_with_frame_positions_the_sign_contrast_and_zero_terminal_snr(world, tmp_path):
    """--from-checkpoint on a stock UNet3D with --set frame_positions=true: converted (zero frame embeddings, the
    same outputs), trained with the contrast term logged, saved as UNet3DFramePositions with a zero-terminal-SNR
    sampler, and loaded back by Decoders through model_index.json."""
    from diffusers import UNet3DConditionModel

    from nextgpt.training.decoders import register_class, save_component

    first = _args(world, tmp_path, modality="video", part="unet")
    run(first)
    folder = first.out / "decoders" / "video"
    config = json.loads((folder / "unet" / "config.json").read_text())
    stock = UNet3DConditionModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    save_component(stock, folder / "unet")  # a checkpoint from before frame positions
    register_class(folder, "unet", stock)
    assert json.loads((folder / "model_index.json").read_text())["unet"] == ["diffusers", "UNet3DConditionModel"]

    on = replace(first, run_dir=tmp_path / "runs_on", from_checkpoint=True,
                 settings=("frame_positions=true", "zero_terminal_snr=true", "sign_contrast=1",
                           "prediction=v_prediction"))
    assert run(on)["video/unet"]["steps"] == 4
    rows = [json.loads(line) for line in (on.run_dir / "video" / "unet" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["hinge"]) and r["hinge"] >= 0 for r in rows)
    assert json.loads((folder / "model_index.json").read_text())["unet"] == ["nextgpt.unet3d", "UNet3DFramePositions"]
    sampler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert sampler["rescale_betas_zero_snr"] is True and sampler["timestep_spacing"] == "trailing"
    decoders = Decoders.from_folder(NextGPTConfig.from_name("nano"), first.out)
    assert type(decoders.pipeline("video").unet).__name__ == "UNet3DFramePositions"
    video = decoders.generate("video", decoders.encode_captions("video", ["a red circle moving left"]),
                              num_inference_steps=2)
    assert video.shape[0] == 1 and video.dtype == np.uint8
    with pytest.raises(ValueError, match="v_prediction"):
        run(replace(on, run_dir=tmp_path / "runs_eps", settings=("zero_terminal_snr=true", "prediction=epsilon")))


def test_vae_trains_on_from_the_checkpoint_with_the_foreground_weight(world, tmp_path):
    """--from-checkpoint on the vae part goes on from the trained weights (no fresh-init bias shifts: with lr 0 they
    come back unchanged), and foreground_weight adds the shape pixels' error to the loss."""
    first = _args(world, tmp_path, modality="video", part="vae")
    run(first)
    vae_file = first.out / "decoders" / "video" / "vae" / "diffusion_pytorch_model.safetensors"
    before = load_file(vae_file)
    on = replace(first, run_dir=tmp_path / "runs_on", from_checkpoint=True, lr=0.0,
                 settings=("foreground_weight=4",))
    assert run(on)["video/vae"]["steps"] == 4
    after = load_file(vae_file)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(line) for line in (on.run_dir / "video" / "vae" / "log.jsonl").read_text().splitlines()]
    # 4 x the shape pixels' squared error, which is larger than the frame's mean (mostly white, well fitted)
    assert rows and all(r["loss"] - r["mse"] - SMOKE_SETTINGS.kl_weight * r["kl"] > 4 * r["mse"] for r in rows)


class _PassThroughVAE(torch.nn.Module):
    """encode -> latent_dist.mean = the pixels; decode -> the pixels, optionally with red and blue swapped."""

    def __init__(self, swap_red_blue: bool = False):
        super().__init__()
        self.swap = swap_red_blue
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a dtype

    def encode(self, x):
        return type("Encoded", (), {"latent_dist": type("Dist", (), {"mean": x})()})()

    def decode(self, z):
        return type("Decoded", (), {"sample": z[:, [2, 1, 0]] if self.swap else z})()


@pytest.mark.parametrize("modality", [Modality.IMAGE, Modality.VIDEO])
def test_vae_round_trip_judges_what_the_vae_keeps(world, modality):
    from nextgpt.training.decoders import vae_round_trip

    kept = vae_round_trip(_PassThroughVAE(), world, "test", modality, n=6)
    assert kept["round_trip_items"] >= 2
    assert all(v == 1.0 for k, v in kept.items() if k.startswith("round_trip_") and k != "round_trip_items")
    swapped = vae_round_trip(_PassThroughVAE(swap_red_blue=True), world, "test", modality, n=6)
    # swapping red and blue can move a colour off the palette, and the judges read an object of no world colour
    # as nothing there, so its shape counts as lost too
    assert swapped["round_trip_colour"] < 1.0 and swapped["round_trip_shape"] >= swapped["round_trip_colour"]


def test_metrics_merge_keeps_the_training_record_of_parts_this_run_did_not_train(tmp_path):
    from nextgpt.training.decoders import merge_metrics

    path = tmp_path / "metrics.json"
    merge_metrics(path, Modality.VIDEO, {"accuracy_colour": 0.5, "training": {"vae": {"steps": 700}, "unet": None}})
    merged = merge_metrics(path, Modality.VIDEO, {"accuracy_colour": 0.9,
                                                  "training": {"vae": None, "unet": {"steps": 40}}})
    assert merged["video"] == {"accuracy_colour": 0.9, "training": {"vae": {"steps": 700}, "unet": {"steps": 40}}}


def test_frame_init_sets_the_frame_embeddings_of_a_fresh_or_trained_video_unet(world, tmp_path):
    """--set frame_init=0.3 takes effect on a fresh video UNet (built as UNet3DFramePositions, zero embeddings) and
    on the checkpoint's one (what train_nano.sh's video continuation asks for): with lr 0 the saved embeddings are
    0.3 x the sinusoid table. Without it they stay zeros; on an image UNet it is refused."""
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    def frame_embeddings(out: Path) -> dict[str, torch.Tensor]:
        saved = load_file(out / "decoders" / "video" / "unet" / "diffusion_pytorch_model.safetensors")
        return {k: v.float() for k, v in saved.items() if k.endswith("frame_embedding")}

    def assert_sinusoids(embeddings: dict[str, torch.Tensor], scale: float) -> None:
        assert embeddings
        for key, value in embeddings.items():
            table = SinusoidalPositionalEmbedding(value.shape[1], value.shape[0]).pe[0]
            torch.testing.assert_close(value, scale * table, atol=1e-3, rtol=1e-3, msg=key)

    zero = _args(world, tmp_path, modality="video", part="unet", lr=0.0)
    run(zero)
    assert all(not v.any() for v in frame_embeddings(zero.out).values())  # the default: zeros
    on = replace(zero, run_dir=tmp_path / "runs_on", from_checkpoint=True, settings=("frame_init=0.3",))
    run(on)
    assert_sinusoids(frame_embeddings(zero.out), 0.3)
    fresh = replace(zero, run_dir=tmp_path / "runs_fresh", out=tmp_path / "ckpt_fresh", settings=("frame_init=0.2",))
    run(fresh)
    assert_sinusoids(frame_embeddings(fresh.out), 0.2)
    with pytest.raises(ValueError, match="video UNet"):
        run(replace(fresh, modality="image", run_dir=tmp_path / "runs_image"))
