"""The VAE part: AutoencoderKL on the modality's units (images, video frames, log-mels), and its latents.

MSE reconstruction + `kl_weight` x KL, then `scaling_factor` = 1 / RMS of the latents (SD's "latent std", about
zero: the stock pipelines divide by it and never shift). `vae_decoder` trains the decoder alone on the frozen
encoder's posteriors. With `foreground_weight`, the world's `foreground` hook adds the error on its objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline
from torch import Tensor, nn
from tqdm import tqdm

from nextgpt.files import torch_save
from nextgpt.training.decoders.media import WorldMedia
from nextgpt.training.decoders.settings import PartSettings, fit_part
from nextgpt.training.loop import Batch, LossFn

log = logging.getLogger(__name__)

LOGVAR_INIT_SHIFT = 6.0  # fresh VAE: initial posterior log-variance shift (see train_vae)


def _kl(dist: Any) -> Tensor:
    """Mean KL of a diagonal Gaussian posterior to N(0, 1), per latent element."""
    return 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()


@torch.no_grad()
def latent_rms(vae: nn.Module, media: WorldMedia, n: int = 256, batch: int = 32) -> float:
    """Root mean square of posterior means over up to `n` units: 1 / it is the VAE's scaling factor."""
    index = torch.linspace(0, len(media.units) - 1, min(n, len(media.units))).long()
    sq = [vae.encode(media.vae_input(chunk)).latent_dist.mean.pow(2).mean() for chunk in index.split(batch)]
    return float(torch.stack(sq).mean().sqrt())


def _vae_loss(vae: nn.Module, media: WorldMedia, settings: PartSettings,
              foreground: Callable[[Tensor], Tensor] | None) -> LossFn:
    def loss_fn(batch: Batch) -> dict[str, Tensor]:
        generator = batch.generator
        x = media.vae_input(batch.index)  # (B, C, H, W)
        if 0 < settings.crop_frames < x.shape[2]:  # one random window of the time axis per batch
            start = int(torch.randint(0, x.shape[2] - settings.crop_frames + 1, (1,), generator=generator))
            x = x[:, :, start:start + settings.crop_frames]
        dist = vae.encode(x).latent_dist
        recon = vae.decode(dist.sample(generator)).sample
        sq = (recon - x).pow(2)
        mse, kl = sq.mean(), _kl(dist)
        loss = mse + settings.kl_weight * kl
        if settings.foreground_weight and media.pixels and foreground is not None:
            # the world's objects are a few % of a frame: plain MSE learns their brightness long before their hue
            # (blue and purple had one latent and decoded to the hue between them)
            shape = foreground(x)  # (B, 1, H, W)
            loss = loss + settings.foreground_weight * (sq * shape).sum() / (shape.sum() * x.shape[1]).clamp(min=1)
        return {"loss": loss, "mse": mse, "l1": (recon - x).abs().mean().detach(), "kl": kl}

    return loss_fn


def train_vae(pipe: DiffusionPipeline, media: WorldMedia, settings: PartSettings, run_dir: Path, *, seed: int,
              decoder_only: bool = False, fresh: bool = True, foreground: Callable[[Tensor], Tensor] | None = None,
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
        return fit_part("vae_decoder", vae, _vae_loss(vae, media, settings, foreground), len(media.units), settings,
                        run_dir, seed=seed, stop_after=stop_after)
    if fresh:  # a resumed run loads its own weights over this
        with torch.no_grad():
            if vae.quant_conv is not None:  # narrow posterior (std ~0.05): the latents carry colour from the start
                vae.quant_conv.bias[vae.config.latent_channels:] -= LOGVAR_INIT_SHIFT
            sample = media.vae_input(torch.linspace(0, len(media.units) - 1, 256).long())
            # output bias = data mean: white pixels sit at +0.8, silence at log(1e-5) = -11.5, far for lr-sized steps
            vae.decoder.conv_out.bias.copy_(sample.mean(dim=(0, 2, 3)))
    vae, summary = fit_part("vae", vae, _vae_loss(vae, media, settings, foreground), len(media.units), settings,
                            run_dir, seed=seed, stop_after=stop_after)
    if "stopped_at" not in summary:
        rms = latent_rms(vae, media)
        vae.register_to_config(scaling_factor=1.0 / rms)
        summary["scaling_factor"] = 1.0 / rms
        log.info("vae: latent RMS %.4f -> scaling_factor %.4f", rms, 1.0 / rms)
    return vae, summary


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
    torch_save(saved, path)
    return saved
