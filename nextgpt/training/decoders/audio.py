"""Audio features and losses of the decoder trainers: AudioLDM's log-mel and the vocoder's spectral loss.

    mel = LogMel()(wave)              # (B, N) 16 kHz waveform -> (B, N // 160, 64) log-mel, AudioLDM's layout
    loss = spectral_loss(pred, wave)  # (B, N) waveforms -> scalar: multi-resolution STFT, a buzz's harmonics count

A world buzz is a band-limited square wave: besides its fundamental it has odd harmonics at 1/3, 1/5, 1/7 ...
of its amplitude (-10, -14, -17 dB), a few narrow lines among thousands of silent STFT bins. Compared in log
magnitude down to an absolute floor (1e-7, -140 dB), the loss is ruled by how deep the silence between the lines
is: against a 1150 Hz square wave, the square wave with white noise 35 dB down costs more than a clean sine
(tests/test_audio_losses.py). Here the log magnitudes are compared above a floor `floor_db` under each target's
own peak (per example and resolution), as log(magnitude + floor): bins the target and the output both leave
under it cost nothing, a missing harmonic costs its depth above the floor, and noise the output adds above it
costs as much. Spectral convergence (linear magnitudes) keeps the loudest line, the fundamental, exact.

The loss alone does not make a plain HiFi-GAN write buzzes (it cannot, see nextgpt/vocoder.py); with the harmonic
source it is the better of the two (VAE round trip -> vocoder, 700 steps: tone/buzz 113/120 against 109/120 with
the absolute floor).
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


RESOLUTIONS: tuple[tuple[int, int], ...] = ((2048, 512), (1024, 256), (512, 128), (256, 64))  # (n_fft, hop)
FLOOR_DB = -40.0  # floor under each target's peak: a buzz's 3rd, 5th, 7th harmonics (what the judge reads) sit at
                  # -10, -14, -17 dB, so missing them costs ~3 nats a bin; background noise 40 dB down costs ~0


def spectral_loss(pred: Tensor, target: Tensor, resolutions: Sequence[tuple[int, int]] = RESOLUTIONS,
                  floor_db: float = FLOOR_DB) -> Tensor:
    """Multi-resolution STFT loss between (B, N) waveforms: spectral convergence + L1 of log(magnitude + floor),
    the floor `floor_db` under the target's peak (per example and resolution). 0 for identical waves.

    The floor is added, not clamped at: an output quieter than the floor (a fresh vocoder's) still has a gradient.
    """
    total = pred.new_zeros(())
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=pred.device)
        p, t = (torch.stft(w.float(), n_fft, hop, window=window, return_complex=True).abs() for w in (pred, target))
        floor = t.amax(dim=(1, 2), keepdim=True).clamp(min=1e-7) * 10.0 ** (floor_db / 20.0)  # (B, 1, 1)
        total = total + torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp(min=1e-7)
        total = total + ((t + floor).log() - (p + floor).log()).abs().mean()
    return total / len(resolutions)
