"""Audio features and losses of the decoder trainers: AudioLDM's log-mel and a multi-resolution STFT loss.

    mel = LogMel()(wave)          # (B, N) 16 kHz waveform -> (B, N // 160, 64) log-mel, AudioLDM's layout
    loss = stft_loss(pred, wave)  # spectral convergence + log-magnitude L1 at four resolutions
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.audio_utils import mel_filter_bank

from nextgpt.decoder_configs import HOP_LENGTH, MEL_BINS, SAMPLE_RATE

MEL_FLOOR = 1e-5  # log(clamp(mel, 1e-5)): HiFi-GAN's / AudioLDM's "spectral_normalize"
N_FFT = 1024  # AudioLDM's STFT: window 1024, hop 160 at 16 kHz, 64 slaney mel bins over 0-8 kHz


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


def stft_loss(pred: Tensor, target: Tensor,
              resolutions: Sequence[tuple[int, int]] = ((2048, 512), (1024, 256), (512, 128), (256, 64))) -> Tensor:
    """Multi-resolution STFT loss (spectral convergence + log-magnitude L1) between (B, N) waveforms."""
    total = pred.new_zeros(())
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=pred.device)
        p, t = (torch.stft(w, n_fft, hop, window=window, return_complex=True).abs().clamp(min=1e-7)
                for w in (pred, target))  # (B, F, T)
        total = total + torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp(min=1e-7)
        total = total + (t.log() - p.log()).abs().mean()
    return total / len(resolutions)
