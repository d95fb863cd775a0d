"""The vocoder part (audio): HarmonicHifiGan (SpeechT5HifiGan + a harmonic source at the mel's pitch,
nextgpt/vocoder.py), log-mel -> waveform, trained on random windows of the world's sounds.

The loss, in `train_vocoder`'s `loss_fn`: L1 between the log-mels of its output and of the true waveform (above
a floor) + 2 x the multi-resolution spectral loss floored under the target's peak (`spectral_loss`: a buzz's
harmonics count); no GAN (the world's sounds are tones and buzzes). A fraction `vae_mels` of each batch reads its
mel as the trained VAE gives it back, since generation hands the vocoder a VAE-decoded mel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from torch import Tensor, nn

from nextgpt.training.decoders.audio import LogMel, spectral_loss
from nextgpt.training.decoders.media import WorldMedia
from nextgpt.training.decoders.settings import PartSettings, fit_part
from nextgpt.training.loop import Batch

VOCODER_LOSS_FLOOR = -8.0  # log-mel floor of the vocoder loss (~40 dB under the tones; silence is -11.5)


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

    def loss_fn(batch: Batch) -> dict[str, Tensor]:
        index, generator = batch.index, batch.generator
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

    return fit_part("vocoder", vocoder, loss_fn, len(media.captions), settings, run_dir, seed=seed,
                    stop_after=stop_after)
