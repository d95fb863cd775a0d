"""Train the nano decoders on the world: per modality a VAE, (audio) a vocoder, then the UNet.

    python scripts/train_decoders.py --data data/world --out checkpoints/nano --modality image --part all

The decoders are the stock diffusers pipelines of `nextgpt.decode` (StableDiffusion / TextToVideoSD /
AudioLDM) at small sizes. Their caption encoder, all-MiniLM-L6-v2, is pretrained and stays frozen; it ships
in a package and is never written to the checkpoint. The parts of one modality train in order:

    vae      AutoencoderKL on world media (images; video frames; AudioLDM log-mel spectrograms): MSE + small KL,
             then `scaling_factor` = 1 / RMS of the latents (SD's "latent std", about zero: the stock
             pipelines divide by it and never shift)
    vocoder  (audio) HarmonicHifiGan (SpeechT5HifiGan + a harmonic source at the mel's pitch, nextgpt/vocoder.py),
             log-mel -> waveform: L1 on the log-mel of its output + multi-resolution STFT loss with a floor under
             the target's peak (`audio_losses.spectral_loss`: a buzz's harmonics count); no GAN: the world's sounds
             are tones and buzzes
    unet     DDPM loss on scaled latents (DDPMScheduler with the pipeline scheduler's betas; epsilon target for
             the image, v for audio and video, written to the pipeline's scheduler config), conditioned on the
             frozen caption encodings, 10 % of them replaced by the encoding of "" so classifier-free guidance works
    vae_decoder  (video, after the unet) more training of the VAE decoder alone: the encoder, hence the latents
             the UNet learnt and the scaling factor, stay as they were
    eval     generate from held-out captions and seeds through `Decoders`, judge the media with the world's
             rule-based judges; for images and video also the VAE round trip of held-out media (what the VAE
             alone keeps) -> ``<out>/decoders/metrics.json``

Each part writes only its own component (fp16 safetensors) into ``<out>/decoders/<modality>/<component>/``;
the folder itself (model_index.json, scheduler, null condition) is written once by `Decoders.save`. Media are
decoded once into a tensor cache, latents are cached once the VAE is trained. Every part is resumable:
``<run_dir>/<modality>/<part>/state`` holds the weights, optimizer and step (atomic), and the data order and
noise of step k are fixed by the seed, so an interrupted run ends where an uninterrupted one ends.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiffusionPipeline, UNet3DConditionModel
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup
from transformers.audio_utils import mel_filter_bank

from nextgpt.config import DecoderSpec, Modality, NextGPTConfig
from nextgpt.decode import Decoders, build_nano_pipeline
from nextgpt.decoder_configs import (
    HOP_LENGTH,
    MEL_BINS,
    NANO_PREDICTION,
    NANO_SIZES,
    SAMPLE_RATE,
    DecoderSizes,
    instantiate,
    nano_decoder_components,
)
from nextgpt.training.audio_losses import spectral_loss
from nextgpt.training.foundation import captioned_items, read_all, write_json
from nextgpt.training.loop import data_order
from nextgpt.unet3d import UNet3DFramePositions
from nextgpt.world import JUDGES, parse_caption
from nextgpt.world.records import ensure_split, load_records

log = logging.getLogger(__name__)

PARTS = ("vae", "vocoder", "unet", "vae_decoder")  # every part a recipe may list
COMPONENT = {"vae_decoder": "vae"}  # the pipeline component a part writes, where it differs from the part's name
MEL_FLOOR = 1e-5  # log(clamp(mel, 1e-5)): HiFi-GAN's / AudioLDM's "spectral_normalize"
N_FFT = 1024  # AudioLDM's STFT: window 1024, hop 160 at 16 kHz, 64 slaney mel bins over 0-8 kHz
METRICS_FILE = "metrics.json"
VOCODER_LOSS_FLOOR = -8.0  # log-mel floor of the vocoder loss (~40 dB under the tones; silence is -11.5)
LOGVAR_INIT_SHIFT = 6.0  # fresh VAE: initial posterior log-variance shift (see train_vae)
FOREGROUND_MIN = 0.1  # a pixel in [-1, 1] this far below white in some channel belongs to the shape


# ---- settings as data -------------------------------------------------------------------------------
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
    frame_init: float = 0.0  # unet: ... whose frame embeddings start at this scale x sinusoids (0 = zeros)
    sign_contrast: float = 0.0  # unet: weight of the hinge that the true caption beat its opposite (see train_unet)
    sign_margin: float = 0.02  # unet: ... by this fraction of the true caption's loss
    zero_terminal_snr: bool = False  # unet (v only): betas rescaled so t = T-1 is pure noise; sampler "trailing"
    segment_frames: int = 32  # vocoder: mel frames per training segment (x hop samples of waveform)
    vae_mels: float = 0.0  # vocoder: this fraction of a batch reads its mel as the trained VAE gives it back
    crop_frames: int = 0  # vae: train on random crops of this many mel frames (0 = whole units); convolutional
    foreground_weight: float = 0.0  # vae (pixels): extra loss weight on pixels of the target that are not white
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

# held-out evaluation: (captions, seeds per caption) per modality; the world has 18 image captions (6 colours x
# 3 shapes), 8 audio and 72 video ones
ROUND_TRIP_ITEMS = 120  # held-out images / clips the VAE round trip of the evaluation judges
EVAL_PLAN: dict[Modality, tuple[int, int]] = {Modality.IMAGE: (18, 4), Modality.AUDIO: (8, 4), Modality.VIDEO: (24, 2)}
# attribute sets a sample must match to count, per modality: the first is the headline number
MATCH_SETS: dict[Modality, dict[str, tuple[str, ...]]] = {
    Modality.IMAGE: {"colour+shape": ("colour", "shape")},
    Modality.AUDIO: {"pitch+rhythm": ("pitch", "rhythm"), "pitch+rhythm+sound": ("pitch", "rhythm", "sound")},
    Modality.VIDEO: {"direction": ("direction",), "direction+colour": ("direction", "colour"),
                     "direction+colour+shape": ("direction", "colour", "shape")},
}


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


# ---- log-mel spectrograms ---------------------------------------------------------------------------
class LogMel(nn.Module):
    """AudioLDM's log-mel: |STFT| (n_fft 1024, hop 160, Hann) -> 64 slaney mel bins 0-8 kHz -> log(clamp 1e-5).

    (B, N) waveform at 16 kHz -> (B, N // 160, 64), the layout the AudioLDM VAE and SpeechT5HifiGan use
    (time first, mel bins last). Reflect padding of (n_fft - hop) / 2 on both sides, as HiFi-GAN does, puts
    frame i at the centre of samples [160 i, 160 (i + 1)), the samples the vocoder writes for it.
    """

    def __init__(self, n_fft: int = N_FFT, hop: int = HOP_LENGTH, n_mels: int = MEL_BINS, sr: int = SAMPLE_RATE):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        basis = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                                max_frequency=sr / 2, sampling_rate=sr, norm="slaney", mel_scale="slaney")
        self.register_buffer("basis", torch.tensor(basis.T, dtype=torch.float32), persistent=False)  # (M, F)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        pad = (self.n_fft - self.hop) // 2
        x = F.pad(wave.float().unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)  # (B, N + n_fft - hop)
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
        magnitude = torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)  # (B, F, T); smooth at 0
        mel = self.basis @ magnitude  # (B, M, T)
        return torch.log(mel.clamp(min=MEL_FLOOR)).transpose(1, 2)  # (B, T, M)


# ---- world media, decoded once ----------------------------------------------------------------------
@dataclass
class WorldMedia:
    """Training media of one modality as tensors; a VAE *unit* is an image, a video frame or a mel."""

    captions: list[str]  # one per item
    units: Tensor  # image (N, 3, H, W) uint8 | video (N * T, 3, H, W) uint8 | audio (N, 1, T_mel, 64) float32
    frames: int = 1  # units per item (T for video)
    waves: Tensor | None = None  # audio: (N, samples) int16, the vocoder's targets

    @property
    def pixels(self) -> bool:
        """Whether the units are images / frames (uint8 RGB) rather than log-mels."""
        return self.units.dtype == torch.uint8

    def vae_input(self, index: Tensor) -> Tensor:
        """Units `index` as VAE input: pixels in [-1, 1] (B, 3, H, W), or log-mel (B, 1, T, 64)."""
        units = self.units[index]
        return units.float() / 127.5 - 1.0 if self.pixels else units


def load_media(data: Path, modality: Modality, cache: Path, limit: int | None = None) -> WorldMedia:
    """The train split of one modality, decoded once and cached in `cache` (media.pt)."""
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if saved["limit"] == limit and saved["data"] == str(data):
            return WorldMedia(saved["captions"], saved["units"], saved["frames"], saved.get("waves"))
    items = captioned_items(data, "train", modality, limit=limit)
    if not items:
        raise FileNotFoundError(f"no {modality.value} items in {data}/train/comprehension.json")
    arrays = read_all(modality, [it.path for it in items])
    captions = [it.caption for it in items]
    frames, waves = 1, None
    if modality == Modality.AUDIO:
        length = min(len(a) for a in arrays) // HOP_LENGTH * HOP_LENGTH
        wave = torch.from_numpy(np.stack([a[:length] for a in arrays]))  # (N, samples) float32
        mel = LogMel()
        units = torch.cat([mel(chunk) for chunk in wave.split(64)]).unsqueeze(1)  # (N, 1, T, 64)
        waves = (wave * 32768.0).round().clamp(-32768, 32767).to(torch.int16)  # exactly the PCM_16 file
    else:
        stacked = torch.from_numpy(np.stack(arrays))  # (N, H, W, 3) | (N, T, H, W, 3) uint8
        if modality == Modality.VIDEO:
            frames = stacked.shape[1]
            stacked = stacked.flatten(0, 1)
        units = stacked.permute(0, 3, 1, 2).contiguous()  # (units, 3, H, W)
    cache.parent.mkdir(parents=True, exist_ok=True)
    _atomic_torch_save({"limit": limit, "data": str(data), "captions": captions, "units": units, "frames": frames,
                        "waves": waves}, cache)
    log.info("%s: %d items cached in %s", modality.value, len(captions), cache)
    return WorldMedia(captions, units, frames, waves)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ---- the pipeline folder ----------------------------------------------------------------------------
def decoder_folder(out: Path, modality: Modality) -> Path:
    return Path(out) / "decoders" / modality.value


def ensure_folder(cfg: NextGPTConfig, modality: Modality, out: Path, sizes: DecoderSizes, seed: int) -> Path:
    """Write a fresh pipeline of `sizes` to ``out/decoders/<modality>/`` unless one is there already."""
    folder = decoder_folder(out, modality)
    if not (folder / "model_index.json").is_file():
        pipe = build_nano_pipeline(cfg.decoder(modality), seed=seed, unet_channels=sizes.unet_channels,
                                   vae_channels=sizes.vae_channels, vocoder_channels=sizes.vocoder_channels)
        Decoders(cfg, {modality: pipe}).save(out, [modality])
        log.info("%s: fresh pipeline written to %s (%s)", modality.value, folder, sizes)
    return folder


def load_pipeline(cfg: NextGPTConfig, out: Path, modality: Modality) -> tuple[Decoders, DiffusionPipeline]:
    """The modality's pipeline in float32 from the checkpoint folder (with the bundled caption encoder)."""
    decoders = Decoders.from_folder(cfg, out)
    return decoders, decoders.pipeline(modality)


def fresh_component(spec: DecoderSpec, sizes: DecoderSizes, part: str, seed: int) -> nn.Module:
    """A randomly initialised component of the recipe's sizes: every part trains from scratch (a resumed run
    then loads its saved state over it), so the recipe, not the placeholder folder, fixes the sizes."""
    table = nano_decoder_components(spec, unet_channels=sizes.unet_channels, vae_channels=sizes.vae_channels,
                                    vocoder_channels=sizes.vocoder_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return instantiate(*table[part]).float()


def with_frame_positions(unet: nn.Module, settings: PartSettings) -> nn.Module:
    """The UNet to train: with `settings.frame_positions` a stock UNet3D becomes a UNet3DFramePositions (frame
    embeddings `frame_init` x sinusoids; 0 = the same outputs); anything else is returned as it is."""
    if settings.frame_positions and type(unet) is UNet3DConditionModel:
        log.info("unet: stock UNet3D converted to UNet3DFramePositions (frame_init %s)", settings.frame_init)
        return UNet3DFramePositions.from_stock(unet, scale=settings.frame_init)
    return unet


def save_component(module: nn.Module, folder: Path) -> None:
    """Write one trained component as fp16 safetensors, replacing the folder atomically."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    copy.deepcopy(module).to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    config_path = tmp / "config.json"  # a component loaded from a folder remembers it: not for a shipped config
    config = json.loads(config_path.read_text())
    if config.pop("_name_or_path", None) is not None:
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def register_class(folder: Path, component: str, module: nn.Module) -> None:
    """Point the pipeline's model_index.json at the class a component was trained as (as diffusers writes it:
    the top-level library for diffusers / transformers classes, the defining module for any other)."""
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    library = type(module).__module__
    if library.split(".")[0] in ("diffusers", "transformers"):
        library = library.split(".")[0]
    if index.get(component) != [library, type(module).__name__]:
        index[component] = [library, type(module).__name__]
        write_json(index_path, index)


def _digest(folder: Path) -> str:
    """Content hash of a component's weights (the latent cache is valid for one VAE only)."""
    h = hashlib.sha1()
    for path in sorted(folder.glob("*.safetensors")):
        h.update(path.read_bytes())
    return h.hexdigest()


# ---- the one training loop --------------------------------------------------------------------------
class EMA:
    """Exponential moving average of a module's weights, warmed up as in diffusers' EMAModel."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for shadow, param in zip(self.shadow.parameters(), module.parameters()):
            shadow.lerp_(param.detach(), 1.0 - decay)
        for shadow, buf in zip(self.shadow.buffers(), module.buffers()):
            shadow.copy_(buf)


def _save_state(run_dir: Path, step: int, module: nn.Module, ema: EMA | None, opt: Any, sched: Any) -> None:
    """Atomic: written to a temporary folder, then renamed over the previous state (as loop.save_state)."""
    tmp = run_dir / f"state.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp / "model.safetensors"))
    if ema is not None:
        save_file({k: v.contiguous() for k, v in ema.shadow.state_dict().items()}, str(tmp / "ema.safetensors"))
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step}, tmp / "optimizer.pt")
    final, old = run_dir / "state", run_dir / "state.old"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _load_state(run_dir: Path, module: nn.Module, ema: EMA | None, opt: Any, sched: Any) -> int:
    final = run_dir / "state"
    if not (final / "optimizer.pt").is_file():
        final = run_dir / "state.old"  # a crash between the two renames
        if not (final / "optimizer.pt").is_file():
            return 0
    module.load_state_dict(load_file(str(final / "model.safetensors")))
    if ema is not None:
        ema.shadow.load_state_dict(load_file(str(final / "ema.safetensors")))
    extra = torch.load(final / "optimizer.pt", weights_only=True)
    opt.load_state_dict(extra["optimizer"])
    sched.load_state_dict(extra["scheduler"])
    return int(extra["step"])


LossFn = Callable[[Tensor, torch.Generator], dict[str, Tensor]]


def fit(name: str, module: nn.Module, loss_fn: LossFn, n_examples: int, settings: PartSettings, run_dir: Path,
        *, seed: int = 0, stop_after: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train `module` on `loss_fn(example indices, generator)` for `settings.steps` steps, resumably.

    Returns the trained module (its EMA when `settings.ema_decay` > 0) and a summary. The batch of step k and
    every random draw in it come from the seed and k alone, so resuming reproduces an uninterrupted run.
    `stop_after` saves the state and returns early (the tests' stand-in for a killed process).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "settings.json").write_text(json.dumps(asdict(settings), indent=2) + "\n")
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.999), weight_decay=settings.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, min(settings.warmup, settings.steps // 5), settings.steps)
    ema = EMA(module, settings.ema_decay) if settings.ema_decay > 0 else None
    start = _load_state(run_dir, module, ema, opt, sched)
    if start:
        log.info("%s: resuming at step %d", name, start)
    order = torch.from_numpy(data_order(n_examples, settings.steps, settings.batch_size, seed))
    module.train()
    t0, last = time.perf_counter(), {}
    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps, desc=name, disable=None,
               mininterval=10)
    with open(run_dir / "log.jsonl", "a") as logf:
        for step in bar:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
            losses = loss_fn(order[step], generator)
            if not torch.isfinite(losses["loss"]):
                raise FloatingPointError(f"{name}: loss is {losses['loss'].item()} at step {step + 1}")
            losses["loss"].backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(module, step)
            last = {"step": step + 1, **{k: float(v.detach()) for k, v in losses.items()}, "lr": sched.get_last_lr()[0],
                    "seconds": round(time.perf_counter() - t0, 2)}
            bar.set_postfix({k: f"{v:.4f}" for k, v in last.items() if k not in ("step", "lr", "seconds")})
            if (step + 1) % 10 == 0 or step + 1 == settings.steps:
                logf.write(json.dumps(last) + "\n")
                logf.flush()
            done = step + 1 == settings.steps
            if done or (step + 1) % settings.save_every == 0 or (stop_after is not None and step + 1 >= stop_after):
                _save_state(run_dir, step + 1, module, ema, opt, sched)
            if stop_after is not None and step + 1 >= stop_after and not done:
                return module, {"stopped_at": step + 1, "final": last}
    module.eval()
    trained = ema.shadow if ema is not None else module
    summary = {"part": name, "steps": settings.steps, "seconds_this_run": round(time.perf_counter() - t0, 1),
               "final": last}
    write_json(run_dir / "summary.json", summary)
    return trained, summary


# ---- the parts --------------------------------------------------------------------------------------
def _kl(dist: Any) -> Tensor:
    """Mean KL of a diagonal Gaussian posterior to N(0, 1), per latent element."""
    return 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()


@torch.no_grad()
def latent_rms(vae: nn.Module, media: WorldMedia, n: int = 256, batch: int = 32) -> float:
    """Root mean square of posterior means over up to `n` units: 1 / it is the VAE's scaling factor."""
    index = torch.linspace(0, len(media.units) - 1, min(n, len(media.units))).long()
    sq = [vae.encode(media.vae_input(chunk)).latent_dist.mean.pow(2).mean() for chunk in index.split(batch)]
    return float(torch.stack(sq).mean().sqrt())


def _vae_loss(vae: nn.Module, media: WorldMedia, settings: PartSettings) -> LossFn:
    def loss_fn(index: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        x = media.vae_input(index)  # (B, C, H, W)
        if 0 < settings.crop_frames < x.shape[2]:  # one random window of the time axis per batch
            start = int(torch.randint(0, x.shape[2] - settings.crop_frames + 1, (1,), generator=generator))
            x = x[:, :, start:start + settings.crop_frames]
        dist = vae.encode(x).latent_dist
        recon = vae.decode(dist.sample(generator)).sample
        sq = (recon - x).pow(2)
        mse, kl = sq.mean(), _kl(dist)
        loss = mse + settings.kl_weight * kl
        if settings.foreground_weight and media.pixels:
            # the shape is a few % of a white frame: plain MSE learns its brightness long before its hue
            # (blue and purple had one latent and decoded to the hue between them)
            shape = ((1.0 - x).amax(1, keepdim=True) > FOREGROUND_MIN).float()  # (B, 1, H, W)
            loss = loss + settings.foreground_weight * (sq * shape).sum() / (shape.sum() * x.shape[1]).clamp(min=1)
        return {"loss": loss, "mse": mse, "l1": (recon - x).abs().mean().detach(), "kl": kl}

    return loss_fn


def train_vae(pipe: DiffusionPipeline, media: WorldMedia, settings: PartSettings, run_dir: Path, *, seed: int,
              decoder_only: bool = False, fresh: bool = True,
              stop_after: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """AutoencoderKL on the modality's units: MSE reconstruction + `kl_weight` x KL; sets scaling_factor.

    `decoder_only`: go on training the decoder of a trained VAE on its frozen encoder's posteriors; the latent
    space (and so a UNet trained on it) and the scaling factor are kept. `fresh=False`: the pipeline's VAE is a
    trained one to go on from (no initial bias shifts); the scaling factor is measured again.
    """
    vae = pipe.vae.float().requires_grad_(True)
    vae.disable_slicing()
    if decoder_only:
        vae.encoder.requires_grad_(False)
        if vae.quant_conv is not None:
            vae.quant_conv.requires_grad_(False)
        return fit("vae_decoder", vae, _vae_loss(vae, media, settings), len(media.units), settings, run_dir,
                   seed=seed, stop_after=stop_after)
    if fresh:  # a resumed run loads its own weights over this
        with torch.no_grad():
            if vae.quant_conv is not None:  # narrow posterior (std ~0.05): the latents carry colour from the start
                vae.quant_conv.bias[vae.config.latent_channels:] -= LOGVAR_INIT_SHIFT
            sample = media.vae_input(torch.linspace(0, len(media.units) - 1, 256).long())
            # output bias = data mean: white pixels sit at +0.8, silence at log(1e-5) = -11.5, far for lr-sized steps
            vae.decoder.conv_out.bias.copy_(sample.mean(dim=(0, 2, 3)))
    vae, summary = fit("vae", vae, _vae_loss(vae, media, settings), len(media.units), settings, run_dir, seed=seed,
                       stop_after=stop_after)
    if "stopped_at" not in summary:
        rms = latent_rms(vae, media)
        vae.register_to_config(scaling_factor=1.0 / rms)
        summary["scaling_factor"] = 1.0 / rms
        log.info("vae: latent RMS %.4f -> scaling_factor %.4f", rms, 1.0 / rms)
    return vae, summary


def train_vocoder(pipe: DiffusionPipeline, media: WorldMedia, settings: PartSettings, run_dir: Path, *, seed: int,
                  stop_after: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The vocoder on random `segment_frames`-frame windows: mel L1 of its output + multi-resolution STFT."""
    vocoder = pipe.vocoder.float().requires_grad_(True)
    if media.waves is None:
        raise ValueError("the vocoder trains on audio media")
    logmel = LogMel()
    hop = int(np.prod(vocoder.config.upsample_rates))
    seg = min(settings.segment_frames, media.units.shape[2])
    vae = pipe.vae.float().eval().requires_grad_(False) if settings.vae_mels else None

    def loss_fn(index: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        starts = torch.randint(0, media.units.shape[2] - seg + 1, (len(index),), generator=generator)
        mel = torch.stack([media.units[i, 0, s:s + seg] for i, s in zip(index, starts)])  # (B, seg, 64)
        wave = torch.stack([media.waves[i, s * hop:(s + seg) * hop] for i, s in zip(index, starts)]).float() / 32768
        n_vae = round(settings.vae_mels * len(index)) if vae is not None else 0
        if n_vae:  # generation hands the vocoder a VAE-decoded mel: smoother lines, a pitch read up to ~4 % off
            with torch.no_grad():
                recon = vae.decode(vae.encode(mel[-n_vae:, None]).latent_dist.mean).sample[:, 0]
            mel = torch.cat([mel[:-n_vae], recon])
        pred = vocoder(mel)  # (B, seg * hop)
        # log-mels compared above a floor: the loss goes to the tones and harmonics, not to the depth of silence
        mel_l1 = (logmel(pred).clamp(min=VOCODER_LOSS_FLOOR) - logmel(wave).clamp(min=VOCODER_LOSS_FLOOR)).abs().mean()
        stft = spectral_loss(pred, wave)  # log magnitudes floored under the target's peak: the harmonics count
        return {"loss": mel_l1 + 2.0 * stft, "mel_l1": mel_l1, "stft": stft}

    return fit("vocoder", vocoder, loss_fn, len(media.captions), settings, run_dir, seed=seed, stop_after=stop_after)


@torch.no_grad()
def cache_latents(vae: nn.Module, media: WorldMedia, path: Path, digest: str, batch: int = 64) -> dict[str, Tensor]:
    """Posterior mean and std of every unit, grouped by item: (N, frames, C, h, w) each; cached at `path`."""
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved["digest"] == digest and saved["mean"].shape[0] * media.frames == len(media.units):
            return saved
    vae.eval()
    means, stds = [], []
    for chunk in tqdm(torch.arange(len(media.units)).split(batch), desc="latents", leave=False, disable=None):
        dist = vae.encode(media.vae_input(chunk)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    n = len(media.captions)
    saved = {"digest": digest, "mean": torch.cat(means).unflatten(0, (n, media.frames)),
             "std": torch.cat(stds).unflatten(0, (n, media.frames))}
    _atomic_torch_save(saved, path)
    return saved


class CaptionTable(NamedTuple):
    """The conditions of a training set: each distinct caption encoded once."""
    captions: list[str]  # the distinct captions, sorted: row i of `table`
    table: Tensor  # (n, ...) their encodings
    row: Tensor  # (items,) each item's row
    null: Tensor  # (1, ...) the null (unconditional) condition


def caption_conditions(decoders: Decoders, modality: Modality, captions: Sequence[str]) -> CaptionTable:
    unique = sorted(set(captions))
    table = torch.cat([decoders.encode_captions(modality, unique[i:i + 64]) for i in range(0, len(unique), 64)])
    rows = {c: i for i, c in enumerate(unique)}
    return CaptionTable(unique, table, torch.tensor([rows[c] for c in captions]), decoders.null_cond(modality).float())


def train_unet(decoders: Decoders, pipe: DiffusionPipeline, spec: DecoderSpec, media: WorldMedia,
               latents: dict[str, Tensor], settings: PartSettings, run_dir: Path, *, seed: int,
               stop_after: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """DDPM loss on scaled latents (epsilon or v target), conditions dropped to the null one `cond_dropout` of the time.

    With `snr_gamma` the per-sample loss is weighted by min(SNR, gamma) / SNR, or / (SNR + 1) for v (Min-SNR, as
    diffusers' train_text_to_image.py --snr_gamma): fewer steps wasted on nearly clean timesteps.
    `high_noise_fraction` draws part of the timesteps from the noisier half. v-prediction: at high noise an
    epsilon target hardly depends on the clean latent (AudioLDM's betas leave sqrt(alpha_bar) = 0.07 at t = 800),
    so the coarse layout the caption decides (pitch, rhythm, motion) is learnt very slowly; v is about -x0 there.
    """
    if settings.zero_terminal_snr and settings.prediction != "v_prediction":
        raise ValueError("zero_terminal_snr needs prediction=v_prediction: at pure noise the epsilon target is "
                         "the input")
    unet = pipe.unet.float().requires_grad_(True)
    # same betas as the pipeline's DPM-Solver++; run_part writes the prediction type to the pipeline's scheduler
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config, prediction_type=settings.prediction,
                                          rescale_betas_zero_snr=settings.zero_terminal_snr)
    scale = pipe.vae.config.scaling_factor
    captions, table, row, null = caption_conditions(decoders, spec.modality, media.captions)
    opposite = opposite_rows(captions) if settings.sign_contrast else None
    video = spec.pipeline == "TextToVideoSDPipeline"
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1.0 - alphas)  # (T,) signal-to-noise ratio of every timestep

    def conditioned(cond: Tensor) -> dict[str, Tensor | None]:
        # AudioLDM feeds its pooled condition as the UNet's class embedding; SD / TextToVideoSD cross-attend to it
        return {"encoder_hidden_states": None, "class_labels": cond} if spec.pooled else {"encoder_hidden_states": cond}

    def loss_fn(index: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        mean, std = latents["mean"][index], latents["std"][index]  # (B, frames, C, h, w)
        z = (mean + std * torch.randn(mean.shape, generator=generator)) * scale
        z = z.transpose(1, 2) if video else z[:, 0]  # video (B, C, T, h, w) | (B, C, h, w)
        noise = torch.randn(z.shape, generator=generator)
        steps = scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (len(index),), generator=generator)
        high = torch.rand(len(index), generator=generator) < settings.high_noise_fraction
        t = torch.where(high, steps // 2 + t // 2, t)  # the coarse layout (pitch, rhythm, motion) is set there
        cond = table[row[index]]  # (B, L, D) | (B, D)
        drop = torch.rand(len(index), generator=generator) < settings.cond_dropout
        cond = torch.where(drop.view(-1, *[1] * (cond.ndim - 1)), null.expand_as(cond), cond)
        x_t = scheduler.add_noise(z, noise, t)
        pred = unet(x_t, t, **conditioned(cond)).sample
        target = noise if settings.prediction == "epsilon" else scheduler.get_velocity(z, noise, t)
        mse = (pred - target).pow(2).flatten(1).mean(1)  # (B,)
        base = snr[t] if settings.prediction == "epsilon" else snr[t] + 1.0
        weight = snr[t].clamp(max=settings.snr_gamma) / base if settings.snr_gamma else torch.ones_like(mse)
        out = {"loss": (weight * mse).mean(), "mse": mse.mean().detach()}
        if opposite is not None:  # the same noisy input under the opposite caption must be predicted worse
            other = opposite[row[index]]
            keep = (other >= 0) & ~drop
            hinge = mse.new_zeros(())
            if keep.any():
                wrong = unet(x_t[keep], t[keep], **conditioned(table[other[keep]])).sample
                mse_wrong = (wrong - target[keep]).pow(2).flatten(1).mean(1)
                hinge = F.relu(mse[keep] * (1.0 + settings.sign_margin) - mse_wrong).mean()
            out["loss"] = out["loss"] + settings.sign_contrast * hinge
            out["hinge"] = hinge.detach()
        return out

    return fit("unet", unet, loss_fn, len(media.captions), settings, run_dir, seed=seed, stop_after=stop_after)


# ---- evaluation -------------------------------------------------------------------------------------
def eval_captions(data: Path, split: str, modality: Modality, n: int) -> list[str]:
    """The first `n` distinct captions of the split's generation records (held-out items)."""
    key = f"{modality.value}_captions"
    seen: list[str] = []
    for rec in load_records(data, split, "generation"):
        if key in rec and rec[key] not in seen:
            seen.append(rec[key])
            if len(seen) == n:
                break
    return seen


def evaluate(cfg: NextGPTConfig, out: Path, data: Path, modality: Modality, *, split: str = "val",
             plan: tuple[int, int] | None = None, num_inference_steps: int | None = None,
             seed_base: int = 1000) -> dict[str, Any]:
    """Generate (one item per call, the spec's default steps and guidance) and judge against the caption."""
    n_captions, n_seeds = plan or EVAL_PLAN[modality]
    ensure_split(data, split)  # a missing split is written first (deterministic, seconds)
    captions = eval_captions(data, split, modality, n_captions)
    decoders = Decoders.from_folder(cfg, out)
    decoders.pipeline(modality)  # load before timing
    judge = JUDGES[modality.value]
    rows, latency = [], []
    for caption in tqdm(captions, desc=f"eval {modality.value}", leave=False, disable=None):
        want = parse_caption(caption, modality.value)
        cond = decoders.encode_captions(modality, [caption])
        for k in range(n_seeds):
            start = time.perf_counter()
            media = decoders.generate(modality, cond, seed=seed_base + k, num_inference_steps=num_inference_steps)
            latency.append(time.perf_counter() - start)
            got = judge(media[0], SAMPLE_RATE)
            rows.append({"caption": caption, "seed": seed_base + k, "judged": got,
                         "match": {a: got.get(a) == w for a, w in want.items()}})
    metrics: dict[str, Any] = {"samples": len(rows), "captions": len(captions), "seeds_per_caption": n_seeds,
                               "split": split}
    for name, attrs in MATCH_SETS[modality].items():
        metrics[f"accuracy_{name}"] = float(np.mean([all(r["match"][a] for a in attrs) for r in rows]))
    for attr in rows[0]["match"] if rows else ():
        metrics[f"accuracy_{attr}"] = float(np.mean([r["match"][attr] for r in rows]))
    if modality != Modality.AUDIO:
        metrics.update(vae_round_trip(decoders.pipeline(modality).vae, data, split, modality,
                                      n=ROUND_TRIP_ITEMS if plan is None else 1))
    spec = cfg.decoder(modality)
    metrics.update({
        "latency_s_per_call_mean": float(np.mean(latency)), "latency_s_per_call_median": float(np.median(latency)),
        "num_inference_steps": num_inference_steps or spec.num_inference_steps,
        "guidance_scale": spec.guidance_scale, "threads": torch.get_num_threads(),
        "size_mb_on_disk": round(folder_size(decoder_folder(out, modality)) / 2 ** 20, 2),
        "failures": [{"caption": r["caption"], "seed": r["seed"], "judged": r["judged"]}
                     for r in rows if not all(r["match"].values())][:12],
    })
    return metrics


@torch.no_grad()
def vae_round_trip(vae: nn.Module, data: Path, split: str, modality: Modality, *, n: int) -> dict[str, Any]:
    """Encode `n` media of the split to their posterior mean, decode, judge: what the VAE alone keeps.

    A UNet can only be as right as the VAE it writes for (the video VAE once decoded blue as purple and purple as
    blue). -> {"round_trip_items": n, "round_trip_<attribute>": accuracy, ...}; images and video only.
    """
    items = captioned_items(data, split, modality, limit=n)
    judge, hits = JUDGES[modality.value], {}
    dtype = next(vae.parameters()).dtype
    for item, arr in zip(items, read_all(modality, [it.path for it in items])):
        frames = torch.from_numpy(arr if arr.ndim == 4 else arr[None])  # (T, H, W, 3) uint8
        x = frames.permute(0, 3, 1, 2).to(dtype) / 127.5 - 1.0
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample.float()
        out = ((recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        got = judge(out if arr.ndim == 4 else out[0])
        for attr, want in parse_caption(item.caption, modality.value).items():
            hits.setdefault(attr, []).append(got.get(attr) == want)
    return {"round_trip_items": len(items), **{f"round_trip_{a}": float(np.mean(v)) for a, v in hits.items()}}


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def merge_metrics(path: Path, modality: Modality, entry: dict[str, Any]) -> dict[str, Any]:
    """Read-modify-write ``metrics.json`` under a file lock (modalities may train in parallel processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)  # lock the folder: no lock file left beside the checkpoint
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        metrics = json.loads(path.read_text()) if path.is_file() else {}
        # a part this run dir did not train keeps the training record already there (an eval run with another
        # --run-dir must not erase how the checkpoint was made)
        before = (metrics.get(modality.value) or {}).get("training") or {}
        if "training" in entry:
            entry = {**entry, "training": {**before, **{k: v for k, v in entry["training"].items() if v is not None}}}
        metrics[modality.value] = entry
        write_json(path, metrics)
    finally:
        os.close(folder)  # releases the lock
    return metrics


# ---- one modality, end to end -----------------------------------------------------------------------
def _settings(args: DecoderTrainArgs, recipe: Recipe, part: str) -> PartSettings:
    base = recipe.parts[part]
    if args.smoke:
        base = replace(SMOKE_SETTINGS, ema_decay=0.9 if base.ema_decay else 0.0, cond_dropout=base.cond_dropout,
                       snr_gamma=base.snr_gamma, vae_mels=base.vae_mels)
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


def run_part(cfg: NextGPTConfig, args: DecoderTrainArgs, modality: Modality, part: str,
             *, stop_after: int | None = None) -> dict[str, Any]:
    """Train (or evaluate) one part of one modality; returns its summary."""
    recipe = RECIPES[modality]
    run_dir = args.run_dir / modality.value
    part_dir = run_dir / part
    if part == "eval":
        plan = (1, 1) if args.smoke else None
        metrics = evaluate(cfg, args.out, args.data, modality, split=args.eval_split, plan=plan,
                           num_inference_steps=2 if args.smoke else None)
        metrics["training"] = {p: _read_json(run_dir / p / "summary.json") for p in recipe.parts}
        merge_metrics(args.out / "decoders" / METRICS_FILE, modality, metrics)
        log.info("%s eval: %s", modality.value, {k: v for k, v in metrics.items() if k.startswith(("acc", "lat"))})
        return metrics
    if part not in recipe.parts:
        raise ValueError(f"the {modality.value} decoder has no {part!r} part; it has {list(recipe.parts)}")
    settings = _settings(args, recipe, part)
    component = COMPONENT.get(part, part)
    done = _read_json(part_dir / "summary.json")
    if done and done.get("steps") == settings.steps and (decoder_folder(args.out, modality) / component).is_dir():
        log.info("%s %s: already trained (%s); delete %s to train again", modality.value, part, done["final"], part_dir)
        return done
    sizes = SMOKE_SIZES if args.smoke else recipe.sizes
    folder = ensure_folder(cfg, modality, args.out, sizes, args.seed)
    limit = SMOKE_LIMIT if args.smoke and args.limit is None else args.limit
    media = load_media(args.data, modality, run_dir / "media.pt", limit=limit)
    decoders, pipe = load_pipeline(cfg, args.out, modality)
    if part != "vae_decoder" and not args.from_checkpoint:  # every other part starts from scratch by default
        setattr(pipe, part, fresh_component(cfg.decoder(modality), sizes, part, args.seed))
    if part == "unet":
        pipe.unet = with_frame_positions(pipe.unet, settings)
    if part in ("vae", "vae_decoder"):
        module, summary = train_vae(pipe, media, settings, part_dir, seed=args.seed,
                                    decoder_only=part == "vae_decoder", fresh=not args.from_checkpoint,
                                    stop_after=stop_after)
    elif part == "vocoder":
        module, summary = train_vocoder(pipe, media, settings, part_dir, seed=args.seed, stop_after=stop_after)
    else:
        latents = cache_latents(pipe.vae, media, run_dir / "latents.pt", _digest(folder / "vae"))
        module, summary = train_unet(decoders, pipe, cfg.decoder(modality), media, latents, settings, part_dir,
                                     seed=args.seed, stop_after=stop_after)
        if "stopped_at" not in summary:  # the sampler must predict what the UNet learnt, on the same betas
            pipe.scheduler = sampler_for(pipe.scheduler, settings)
            pipe.scheduler.save_pretrained(folder / "scheduler")
    if "stopped_at" not in summary:
        save_component(module, folder / component)
        register_class(folder, component, module)
        log.info("%s %s: written to %s (%s)", modality.value, part, folder / component, summary["final"])
    return summary


OPPOSITE_WORDS = {"left": "right", "right": "left", "up": "down", "down": "up"}


def opposite_rows(captions: Sequence[str]) -> Tensor:
    """For each caption, the index of the one with its direction word reversed (-1 if none is among them).

    The contrast term of `train_unet`: a UNet that cannot tell the frames apart predicts the same for "moving
    left" and "moving right", and the per-pixel loss barely notices, because the sign is a small part of it.
    """
    where = {c: i for i, c in enumerate(captions)}
    rows = []
    for caption in captions:
        words = caption.split()
        swapped = " ".join(OPPOSITE_WORDS.get(w, w) for w in words)
        rows.append(where.get(swapped, -1) if swapped != caption else -1)
    return torch.tensor(rows, dtype=torch.long)


def sampler_for(scheduler: Any, settings: PartSettings) -> Any:
    """The pipeline's scheduler rebuilt for a UNet trained with `settings` (its betas are computed at init).

    Zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"): Stable
    Diffusion's betas leave sqrt(alpha_bar) = 0.068 of the clean latent in the noisiest training step, so a UNet
    learns to take what the caption does not pin down from it; sampling starts from pure noise and takes that
    from the seed instead (the nano video UNet's left/right came from the seed, not the caption). The rescaled
    betas make t = T-1 pure noise in training too; sampling uses the paper's "trailing" timesteps.
    """
    return type(scheduler).from_config(
        scheduler.config, prediction_type=settings.prediction, rescale_betas_zero_snr=settings.zero_terminal_snr,
        timestep_spacing="trailing" if settings.zero_terminal_snr else "linspace")


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def run(args: DecoderTrainArgs, *, stop_after: int | None = None) -> dict[str, Any]:
    """Every chosen part of every chosen modality, in order; 'all' ends with the evaluation."""
    torch.set_num_threads(args.threads)
    cfg = NextGPTConfig.from_name("nano")
    modalities = [m.value for m in Modality] if args.modality == "all" else [args.modality]
    results: dict[str, Any] = {}
    for name in modalities:
        modality = Modality(name)
        recipe = RECIPES[modality]
        parts = [*recipe.parts, "eval"] if args.part == "all" else [args.part]
        for part in parts:
            if args.modality == "all" and part not in (*recipe.parts, "eval"):
                log.info("%s has no %s part; skipped", name, part)
                continue
            start = time.perf_counter()
            results[f"{name}/{part}"] = run_part(cfg, args, modality, part, stop_after=stop_after)
            log.info("%s %s: %.1f s", name, part, time.perf_counter() - start)
            if stop_after is not None and "stopped_at" in results[f"{name}/{part}"]:
                return results
    return results


__all__ = [
    "DecoderSizes", "DecoderTrainArgs", "LogMel", "PARTS", "PartSettings", "RECIPES", "Recipe", "WorldMedia",
    "cache_latents", "evaluate", "fit", "load_media", "run", "run_part", "train_unet", "train_vae",
    "train_vocoder", "vae_round_trip",
]
