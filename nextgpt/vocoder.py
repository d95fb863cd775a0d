"""The nano audio vocoder: SpeechT5HifiGan plus a harmonic source at the pitch read off the log-mel.

    vocoder = HarmonicHifiGan(SpeechT5HifiGanConfig(model_in_dim=64, ..., harmonics=16))
    wave = vocoder(log_mel)  # (B, T, 64) -> (B, T * 160), as SpeechT5HifiGan

Why a source: a HiFi-GAN is convolutional and upsamples each mel frame into the same 160 samples (hop 160 at
16 kHz), so for a steady sound, whose magnitude mel frames are all alike, its output repeats every 160 samples
and holds only multiples of 100 Hz. A world tone at 250 Hz comes out at 300 Hz, and a buzz at 1050 Hz cannot
come out as a buzz at all: its 3rd, 5th, 7th harmonics (3150, 5250, 7350 Hz) are not odd multiples of any
fundamental the network can write, so the loss-optimal output is a sine near the pitch (the shipped vocoder's
"given the true mel of a square wave it returns a sine"). The fix is the neural source-filter one (NSF, Wang et
al. 2019): a source that carries the phase the frames lack. Here the pitch of each frame is the power-weighted
centre of the loudest mel bin and its neighbours (the overlapping triangular filters place a world tone within
0.1 %), its phase is integrated sample by sample, and `harmonics` sines at k x pitch are added to the HiFi-GAN's
output with amplitudes read off the log-mel at k x pitch (its loudest bin within 5 %; one learnt gain and offset
per harmonic, plus a learnt 3-frame convolution over the whole mel). Sound with no harmonic lines (noise, silence) leaves the source silent.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel, SpeechT5HifiGan, SpeechT5HifiGanConfig  # noqa: F401 (PreTrainedModel:
# diffusers' loader looks a component's base class up in the module its model_index.json names)
from transformers.audio_utils import mel_filter_bank

MEL_N_FFT = 1024  # the STFT behind the AudioLDM log-mel the vocoder reads (window 1024, hop 160, 64 slaney bins)
PITCH_TOLERANCE = 0.05  # a harmonic's level is read from the mel bins within 5 % of its frequency
MAX_LOG_AMPLITUDE = 1.0  # log-amplitudes of the source's sines are clamped here (e^1 = 2.7: far above the 0.5 peak)


class HarmonicHifiGan(SpeechT5HifiGan):
    """SpeechT5HifiGan (the stock generator, unchanged) + a harmonic source at the mel's pitch; see the module
    docstring. Config: SpeechT5HifiGanConfig with `harmonics` (number of sines, 0 = the plain HiFi-GAN)."""

    def __init__(self, config: SpeechT5HifiGanConfig):
        super().__init__(config)
        self.harmonics = int(getattr(config, "harmonics", 16))
        mel = config.model_in_dim
        basis = mel_filter_bank(
            num_frequency_bins=MEL_N_FFT // 2 + 1, num_mel_filters=mel, min_frequency=0.0,
            max_frequency=config.sampling_rate / 2, sampling_rate=config.sampling_rate, norm="slaney",
            mel_scale="slaney").T  # (M, F) numpy: no tensor, so from_pretrained's meta-device build has none to move
        freqs = np.linspace(0.0, config.sampling_rate / 2, MEL_N_FFT // 2 + 1)
        self._centres = ((basis * freqs).sum(1) / basis.sum(1)).astype(np.float32)  # (M,) Hz: each filter's centroid
        self.harmonic_gain = nn.Parameter(torch.ones(self.harmonics))  # log-amplitude per unit of log-mel
        self.harmonic_offset = nn.Parameter(torch.full((self.harmonics,), -4.0))
        self.harmonic_mix = nn.Conv1d(mel, self.harmonics, kernel_size=3, padding=1)
        nn.init.zeros_(self.harmonic_mix.weight)
        nn.init.zeros_(self.harmonic_mix.bias)

    def centres(self, device: torch.device) -> Tensor:
        """(M,) centre frequency of each mel filter in Hz."""
        return torch.from_numpy(self._centres).to(device)

    def pitch(self, log_mel: Tensor) -> Tensor:
        """(B, T, M) log-mel -> (B, T) Hz: power-weighted centre of the loudest bin and its two neighbours."""
        power = log_mel.float().exp()
        peak = power.argmax(-1, keepdim=True).clamp(1, power.shape[-1] - 2)  # (B, T, 1)
        around = torch.cat([peak - 1, peak, peak + 1], dim=-1)  # (B, T, 3)
        weights = power.gather(-1, around)
        return (weights * self.centres(log_mel.device)[around]).sum(-1) / weights.sum(-1).clamp(min=1e-12)

    def source(self, log_mel: Tensor, samples: int) -> Tensor:
        """(B, T, M) log-mel -> (B, samples) sum of harmonic sines at the mel's pitch."""
        f0 = self.pitch(log_mel).detach()  # (B, T)
        k = torch.arange(1, self.harmonics + 1, device=log_mel.device, dtype=torch.float32)  # (K,)
        # log-mel at k x pitch: the loudest bin within PITCH_TOLERANCE of it (a pitch read 3 % off, as from a VAE's
        # smoothed mel, is 7 x 3 % off at the 7th harmonic; the nearest bin always counts): (B, T, K)
        centres = self.centres(log_mel.device)
        target = f0[..., None] * k  # (B, T, K)
        distance = (centres - target[..., None]).abs()  # (B, T, K, M)
        near = (distance <= PITCH_TOLERANCE * target[..., None]) | (distance == distance.amin(-1, keepdim=True))
        level = log_mel[:, :, None, :].expand_as(distance).masked_fill(~near, -torch.inf).amax(-1)
        mix = self.harmonic_mix(log_mel.transpose(1, 2)).transpose(1, 2)  # (B, T, K)
        log_amp = (self.harmonic_gain * level + self.harmonic_offset + mix).clamp(max=MAX_LOG_AMPLITUDE)
        amp = log_amp.exp() * (f0[..., None] * k < self.config.sampling_rate / 2 - 100.0)  # below Nyquist only
        # frame i sits at the centre of its hop of samples: interpolate per sample, integrate the phase
        up = dict(size=samples, mode="linear", align_corners=False)
        f0_n = F.interpolate(f0[:, None], **up)[:, 0]  # (B, N)
        amp_n = F.interpolate(amp.transpose(1, 2), **up)  # (B, K, N)
        cycles = torch.cumsum(f0_n.double() / self.config.sampling_rate, dim=-1)  # (B, N), float64: 2 s = 2400 cycles
        phase = (2.0 * math.pi * (cycles - cycles.floor())).float()
        return (amp_n * torch.sin(k[None, :, None] * phase[:, None])).sum(1)

    def forward(self, spectrogram: Tensor) -> Tensor:  # type: ignore[override]
        wave = super().forward(spectrogram)
        if self.harmonics == 0:
            return wave
        batched = spectrogram.dim() == 3
        mel = spectrogram if batched else spectrogram[None]
        wave = wave if batched else wave[None]
        out = wave + self.source(mel.float(), wave.shape[-1]).to(wave.dtype)
        return out if batched else out[0]


__all__ = ["HarmonicHifiGan"]
