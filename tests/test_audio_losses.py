"""Tests for nextgpt.training.decoders.audio: the vocoder's spectral loss must tell a buzz from a sine."""

from __future__ import annotations

import pytest
import torch

from nextgpt.training.decoders.audio import spectral_loss
from nextgpt.world.render import synth_sound


def _pair(f0: float, beep_rate: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(square wave, sine) of the world at `f0`, 0.5 s, as (1, N) tensors."""
    return tuple(torch.from_numpy(synth_sound(f0, buzz, beep_rate, duration=0.5))[None] for buzz in (True, False))


@pytest.mark.parametrize("f0", [210.0, 1150.0])
@pytest.mark.parametrize("beep_rate", [None, 4.0])
def test_a_noisy_buzz_beats_a_clean_sine(f0, beep_rate):
    """Against a square-wave target, the square wave with noise 35 dB down must cost far less than a clean sine of
    the right pitch and loudness: what a vocoder writing sines for buzzes has to pay."""
    square, sine = _pair(f0, beep_rate)
    noisy = square + 0.005 * torch.randn(square.shape, generator=torch.Generator().manual_seed(0))
    assert spectral_loss(noisy, square) < 0.5 * spectral_loss(sine, square)
    # the test has teeth: with the floor at -140 dB (an absolute clamp at 1e-7, the loss the shipped vocoder was
    # trained with) the deep silence between the harmonics rules, and a high sine costs less than the noisy buzz
    if f0 > 1000.0:
        assert spectral_loss(noisy, square, floor_db=-140.0) > spectral_loss(sine, square, floor_db=-140.0)


def test_zero_for_identical_waves_and_a_gradient_from_silence():
    square, sine = _pair(250.0, None)
    assert spectral_loss(square, square).item() == pytest.approx(0.0, abs=1e-6)
    assert spectral_loss(sine, square) > 0.1
    # a fresh vocoder writes near silence: the floor is added, not clamped at, so the loss still pulls it up
    silent = torch.zeros_like(square, requires_grad=True)
    spectral_loss(silent + 1e-6 * sine, square).backward()
    assert silent.grad is not None and silent.grad.abs().sum() > 0
