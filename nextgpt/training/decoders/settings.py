"""The decoders' recipe as data: per modality the sizes and, per part, how it trains (`PartSettings`), and the
step from a part's settings to the one training loop (`fit_part`).

    python scripts/train_decoders.py --modality video --part unet --set frame_positions=true --set frame_init=0.3

`--set field=value` overrides one `PartSettings` field of the chosen part(s) (`parse_settings` types and checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from nextgpt.config import Modality
from nextgpt.decoder_configs import NANO_PREDICTION, NANO_SIZES, DecoderSizes
from nextgpt.training.loop import LossFn, LoopSettings, fit

PARTS = ("vae", "vocoder", "unet", "vae_decoder")  # every part a recipe may list
COMPONENT = {"vae_decoder": "vae"}  # the pipeline component a part writes, where it differs from the part's name


@dataclass(frozen=True)
class PartSettings:
    """How one part trains."""

    steps: int
    batch_size: int
    lr: float
    warmup: int = 50
    weight_decay: float = 0.0
    kl_weight: float = 1e-5  # vae: weight of the mean KL against the mean L1
    cond_dropout: float = 0.1  # unet: fraction of conditions replaced by the null condition
    ema_decay: float = 0.0  # unet: exponential moving average of the weights (0 = none)
    snr_gamma: float = 0.0  # unet: Min-SNR-gamma weighting of the epsilon loss, min(SNR, gamma) / SNR (0 = plain)
    high_noise_fraction: float = 0.0  # unet: this fraction of a batch draws t from the noisier half [T/2, T)
    prediction: str = "epsilon"  # unet: "epsilon" | "v_prediction"; written to the pipeline's scheduler config
    frame_positions: bool = False  # unet (video): train as UNet3DFramePositions (a stock UNet3D is converted)
    frame_init: float = 0.0  # unet (video): frame embeddings start at this scale x sinusoids (0 = as they are: zeros
    # for a fresh or converted UNet, the learnt ones for the checkpoint's)
    sign_contrast: float = 0.0  # unet: weight of the hinge that the true caption beat the world's contrast caption
    # (its direction reversed: nextgpt.world.training; see train_unet)
    sign_margin: float = 0.02  # unet: ... by this fraction of the true caption's loss
    zero_terminal_snr: bool = False  # unet (v only): betas rescaled so t = T-1 is pure noise; sampler "trailing"
    segment_frames: int = 32  # vocoder: mel frames per training segment (x hop samples of waveform)
    vae_mels: float = 0.0  # vocoder: this fraction of a batch reads its mel as the trained VAE gives it back
    crop_frames: int = 0  # vae: train on random crops of this many mel frames (0 = whole units); convolutional
    foreground_weight: float = 0.0  # vae (pixels): extra loss weight on the world's objects (its foreground hook)
    save_every: int = 200


@dataclass(frozen=True)
class Recipe:
    """Sizes and part settings of one modality."""

    sizes: DecoderSizes
    parts: dict[str, PartSettings]  # in training order; "vocoder" only for audio


# What made checkpoints/nano (2 shared CPU cores, one thread per modality). The image unet got there in pieces:
# a run resumed with a larger --steps keeps its first steps' data and noise and restarts the cosine tail there
# (200 -> 1000 -> 1600 -> 2200). Audio and video epsilon unets (1700 / 1800 steps) stayed at chance level on
# pitch/rhythm and direction: they learn v instead, from scratch (audio 700 -> 1500 -> 4000, video 800 -> 1600 -> 6000).
# Then the audio UNet trained on for 3000 steps (--from-checkpoint --set snr_gamma=0 --set high_noise_fraction=0.5):
# Min-SNR weights for v, min(SNR, 5) / (SNR + 1), give the timesteps where the caption decides the pitch
# (SNR ~0.01-0.1) ~1/20 of the weight, and the UNet had learnt to read the pitch off the noise. Those settings are
# now the audio recipe's own: 4000 steps of them from scratch (23.3 min) give the same decoder eval as the shipped
# UNet (pitch+rhythm 1.00, sound 0.50), so the recipe has no continuation for audio. That sound 0.50 was the
# vocoder's: a plain SpeechT5HifiGan cannot write a buzz at the world's pitches (nextgpt/vocoder.py); the audio
# vocoder is now a HarmonicHifiGan, half of each batch read through the trained VAE (`vae_mels`).
RECIPES: dict[Modality, Recipe] = {
    Modality.IMAGE: Recipe(
        NANO_SIZES[Modality.IMAGE],
        {"vae": PartSettings(steps=700, batch_size=8, lr=1e-3),
         "unet": PartSettings(steps=2200, batch_size=16, lr=8e-4, ema_decay=0.995, snr_gamma=5.0)},
    ),
    Modality.AUDIO: Recipe(
        NANO_SIZES[Modality.AUDIO],
        {"vae": PartSettings(steps=400, batch_size=8, lr=1e-3, crop_frames=48),
         "vocoder": PartSettings(steps=700, batch_size=8, lr=2e-3, vae_mels=0.5),
         "unet": PartSettings(steps=4000, batch_size=16, lr=5e-4, ema_decay=0.995, snr_gamma=0.0,
                              high_noise_fraction=0.5, prediction=NANO_PREDICTION[Modality.AUDIO])},
    ),
    Modality.VIDEO: Recipe(
        NANO_SIZES[Modality.VIDEO],
        {"vae": PartSettings(steps=700, batch_size=8, lr=1e-3),
         "unet": PartSettings(steps=6000, batch_size=8, lr=8e-4, ema_decay=0.995, snr_gamma=5.0,
                              prediction=NANO_PREDICTION[Modality.VIDEO]),
         "vae_decoder": PartSettings(steps=400, batch_size=8, lr=5e-4)},
    ),
}
SMOKE_SIZES = DecoderSizes(unet_channels=(8, 16), vae_channels=(8, 16, 16), vocoder_channels=16)
SMOKE_LIMIT = 8  # training items per modality in smoke mode
SMOKE_SETTINGS = PartSettings(steps=4, batch_size=2, lr=1e-3, warmup=1, save_every=2, segment_frames=8)

@dataclass(frozen=True)
class DecoderTrainArgs:
    """One invocation of scripts/train_decoders.py."""

    data: Path = Path("data/world")  # the world (python -m nextgpt.world.records)
    out: Path = Path("checkpoints/nano")  # receives decoders/<modality>/ and decoders/metrics.json
    run_dir: Path = Path("runs/decoders")  # caches, resumable state, logs
    modality: str = "all"  # image | audio | video | all
    part: str = "all"  # vae | vocoder | unet | vae_decoder | eval | all (= the recipe's parts in order, then eval)
    steps: int | None = None  # override the recipe's steps of every chosen part
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    threads: int = 1
    limit: int | None = None  # use at most this many training items per modality
    smoke: bool = False  # tiny components, a few steps, a few items (what the tests run)
    eval_split: str = "val"  # develop on val; test once, for the figures a checkpoint ships with
    from_checkpoint: bool = False  # start the part from the checkpoint's component instead of a fresh one
    settings: tuple[str, ...] = ()  # "field=value" overrides of the part's PartSettings, e.g. "snr_gamma=0"


def _settings(args: DecoderTrainArgs, recipe: Recipe, part: str) -> PartSettings:
    """The recipe's settings of `part`, with the smoke sizes and the command line's overrides."""
    base = recipe.parts[part]
    if args.smoke:
        base = replace(SMOKE_SETTINGS, ema_decay=0.9 if base.ema_decay else 0.0, cond_dropout=base.cond_dropout,
                       snr_gamma=base.snr_gamma, prediction=base.prediction, vae_mels=base.vae_mels)
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr))
                 if v is not None}
    return replace(base, **overrides, **parse_settings(args.settings))


def parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """["snr_gamma=0", "prediction=epsilon"] -> typed PartSettings overrides; a clear error for anything else."""
    fields = {name: type(value) for name, value in asdict(SMOKE_SETTINGS).items()}
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"bad setting {pair!r}: expected field=value with a field among {sorted(fields)}")
        try:
            if fields[name] is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                out[name] = value.lower() in ("true", "1")
            else:
                out[name] = fields[name](value)
        except ValueError as err:
            raise ValueError(f"bad setting {pair!r}: {name} takes a {fields[name].__name__}") from err
    return out


def fit_part(part: str, module: nn.Module, loss_fn: LossFn, n_examples: int, settings: PartSettings,
             run_dir: Path, *, seed: int, stop_after: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train one part on the one loop -> (the trained module, its EMA where there is one; the summary)."""
    fitted = fit(part, module, loss_fn, n_examples, loop_settings(settings, seed), run_dir, stop_after=stop_after)
    return fitted.module, {"part": part, **fitted.summary}


def loop_settings(settings: PartSettings, seed: int) -> LoopSettings:
    """The one loop's settings for a part (AdamW betas 0.9 / 0.999, warm-up at most a fifth of the steps)."""
    return LoopSettings(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                        warmup=min(settings.warmup, settings.steps // 5), weight_decay=settings.weight_decay,
                        ema_decay=settings.ema_decay, save_every=settings.save_every, log_every=10, seed=seed)
