"""Tests for nextgpt.vocoder: why the nano vocoder has a harmonic source, and that the source follows the mel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from nextgpt.decoder_configs import NANO_HARMONICS
from nextgpt.training.decoders import LogMel
from nextgpt.vocoder import HarmonicHifiGan
from nextgpt.world.render import synth_sound

CONFIG = dict(model_in_dim=64, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[5, 4, 4, 2],
              upsample_kernel_sizes=[10, 8, 8, 4], resblock_kernel_sizes=[3, 7],
              resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]], normalize_before=False)


def _steady_mel(f0: float, buzz: bool = False) -> torch.Tensor:
    """(1, T, 64) log-mel of the middle of a steady world sound: every frame alike."""
    mel = LogMel()(torch.from_numpy(synth_sound(f0, buzz, None, duration=1.0))[None])
    return mel[:, 30:70]


def _peak_hz(wave: np.ndarray, sr: int = 16000) -> float:
    power = np.abs(np.fft.rfft(wave * np.hanning(wave.size))) ** 2
    freqs = np.fft.rfftfreq(wave.size, 1.0 / sr)
    return float(freqs[np.argmax(np.where(freqs >= 60.0, power, 0.0))])


@torch.no_grad()
def test_a_plain_hifigan_repeats_every_hop_on_steady_frames():
    """The cause: alike frames in, the same 160 samples out, so a steady output holds only multiples of 100 Hz."""
    torch.manual_seed(0)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**CONFIG)).eval()
    wave = vocoder(_steady_mel(250.0))[0].numpy()  # (40 * 160,)
    inner = wave[1600:-1600]
    assert np.abs(inner[:-160] - inner[160:]).max() < 1e-4 * max(np.abs(inner).max(), 1e-12)


@pytest.mark.parametrize("f0", [212.0, 1047.0])
@torch.no_grad()
def test_the_source_sounds_at_the_mels_pitch(f0):
    torch.manual_seed(0)
    vocoder = HarmonicHifiGan(SpeechT5HifiGanConfig(**CONFIG, harmonics=NANO_HARMONICS)).eval()
    mel = _steady_mel(f0, buzz=True)
    assert vocoder.pitch(mel)[0].median().item() == pytest.approx(f0, rel=0.01)
    source = vocoder.source(mel, mel.shape[1] * 160)[0].numpy()
    assert _peak_hz(source) == pytest.approx(f0, abs=10.0)  # not the nearest multiple of 100 Hz
    # a sine's mel has no lines at 3, 5, 7 f0: the source's overtones stay far below a buzz's
    def overtones(wave: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(wave * np.hanning(wave.size))) ** 2
        freqs = np.fft.rfftfreq(wave.size, 1.0 / 16000)
        return sum(power[np.abs(freqs - k * f0) <= 40].sum() for k in (3, 5)) / power[np.abs(freqs - f0) <= 40].sum()
    tone = vocoder.source(_steady_mel(f0), mel.shape[1] * 160)[0].numpy()
    assert overtones(tone) < 1e-3 < overtones(source)
