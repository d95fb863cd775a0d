"""The UNet part: the DDPM loss on the VAE's scaled latents, conditioned on the frozen caption encodings.

DDPMScheduler with the pipeline scheduler's betas; epsilon target for the image, v for audio and video (written
to the pipeline's scheduler config by `sampler_for`); 10 % of the conditions replaced by the encoding of "" so
classifier-free guidance works.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiffusionPipeline
from torch import Tensor, nn

from nextgpt.config import DecoderSpec, Modality
from nextgpt.decode import Decoders
from nextgpt.training.decoders.media import WorldMedia
from nextgpt.training.decoders.settings import PartSettings, fit_part
from nextgpt.training.loop import Batch


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
               contrast: Callable[[Sequence[str]], list[int]] | None = None,
               stop_after: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """DDPM loss on scaled latents (epsilon or v target), conditions dropped to the null one `cond_dropout` of the time.

    With `snr_gamma` the per-sample loss is weighted by min(SNR, gamma) / SNR, or / (SNR + 1) for v (Min-SNR, as
    diffusers' train_text_to_image.py --snr_gamma): fewer steps wasted on nearly clean timesteps.
    `high_noise_fraction` draws part of the timesteps from the noisier half. v-prediction: at high noise an
    epsilon target hardly depends on the clean latent (AudioLDM's betas leave sqrt(alpha_bar) = 0.07 at t = 800),
    so the coarse layout the caption decides (pitch, rhythm, motion) is learnt very slowly; v is about -x0 there.
    With `sign_contrast`, the `contrast` hook names for each caption one that must be predicted worse (the world's:
    the direction reversed): the same noisy input under it must miss the target by `sign_margin` more (a hinge).
    A UNet that cannot tell the frames apart predicts the same for "moving left" and "moving right", and the
    per-pixel loss barely notices, because the sign is a small part of it.
    """
    if settings.sign_contrast and contrast is None:
        raise ValueError("sign_contrast needs a contrast hook (which caption each caption must beat)")
    if settings.zero_terminal_snr and settings.prediction != "v_prediction":
        raise ValueError("zero_terminal_snr needs prediction=v_prediction: at pure noise the epsilon target is "
                         "the input")
    unet = pipe.unet.float().requires_grad_(True)
    # same betas as the pipeline's DPM-Solver++; run_part writes the prediction type to the pipeline's scheduler
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config, prediction_type=settings.prediction,
                                          rescale_betas_zero_snr=settings.zero_terminal_snr)
    scale = pipe.vae.config.scaling_factor
    captions, table, row, null = caption_conditions(decoders, spec.modality, media.captions)
    opposite = torch.tensor(contrast(captions), dtype=torch.long) if settings.sign_contrast else None
    video = spec.pipeline == "TextToVideoSDPipeline"
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1.0 - alphas)  # (T,) signal-to-noise ratio of every timestep

    def conditioned(cond: Tensor) -> dict[str, Tensor | None]:
        # AudioLDM feeds its pooled condition as the UNet's class embedding; SD / TextToVideoSD cross-attend to it
        return {"encoder_hidden_states": None, "class_labels": cond} if spec.pooled else {"encoder_hidden_states": cond}

    def loss_fn(batch: Batch) -> dict[str, Tensor]:
        index, generator = batch.index, batch.generator
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

    return fit_part("unet", unet, loss_fn, len(media.captions), settings, run_dir, seed=seed, stop_after=stop_after)


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
