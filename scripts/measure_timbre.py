"""Where the audio decoder loses a buzz's timbre: the world judge's reading at each step of the signal path.

    python scripts/measure_timbre.py --checkpoint checkpoints/nano --n 120 --out runs/timbre/shipped.json
    python scripts/measure_timbre.py --checkpoint runs/buzz/ckpt --steps b c     # a candidate, two steps only

Held-out world sounds (their own seed, drawn as the world draws them) go through

    a  world audio -> judge                                     (the judge on what the world makes)
    mel the true log-mel alone: its harmonic ratio at 3, 5, 7 f0 over f0 (mel bins at those frequencies) -> the
        best single threshold's accuracy (does the 64-bin 0-8 kHz log-mel keep tone vs buzz at all?)
    b  true log-mel -> vocoder -> judge
    c  true log-mel -> VAE (posterior mean) -> VAE decoder -> vocoder -> judge; also the mel step's threshold
       accuracy on the VAE's reconstruction (does the VAE keep the harmonics in the mel?)
    d  caption -> caption encoder -> UNet (the spec's steps and guidance) -> VAE decoder -> vocoder -> judge,
       as the decoder evaluation generates (`Decoders.generate`); n / 8 seeds for each of the 8 captions

Each step reports tone/buzz (`sound`), pitch + rhythm and all three as rates with n and a 95 % Wilson interval,
and the judge's buzz feature (power at 3, 5, 7 f0 over f0; threshold `judge.BUZZ_RATIO`) by true sound, so the
margin either side of the threshold is visible. `--noise-db` adds the judge's robustness check: the world audio
again with white noise at that SNR.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nextgpt.config import Modality, NextGPTConfig  # noqa: E402
from nextgpt.decode import Decoders  # noqa: E402
from nextgpt.eval.metrics import rate_of  # noqa: E402
from nextgpt.training.decoders import LogMel  # noqa: E402
from nextgpt.world.judge import BAND_HZ, judge_audio  # noqa: E402
from nextgpt.world.vocab import AudioSpec, sample_audio_spec  # noqa: E402

log = logging.getLogger("measure_timbre")

STEPS = ("a", "mel", "b", "c", "d")
SAMPLE_RATE = 16000


def held_out_sounds(n: int, seed: int) -> tuple[list[AudioSpec], torch.Tensor]:
    """`n` world sounds drawn as the world draws them -> (specs, (n, samples) float32 as PCM_16 stores them)."""
    rng = np.random.default_rng(seed)
    specs = [sample_audio_spec(rng) for _ in range(n)]
    waves = torch.from_numpy(np.stack([s.render() for s in specs]))
    return specs, (waves * 32768.0).round().clamp(-32768, 32767) / 32768.0


def buzz_ratio(wave: np.ndarray, f0: float | None = None, sr: int = SAMPLE_RATE) -> float:
    """The judge's buzz feature: power within BAND_HZ of 3, 5, 7 f0 over that of f0 (f0: the strongest peak)."""
    x = np.asarray(wave, dtype=np.float64)
    x = x - x.mean()
    power = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / sr)
    if f0 is None:
        f0 = float(freqs[np.argmax(np.where(freqs >= 60.0, power, 0.0))])
    def band(f: float) -> float:
        return float(power[np.abs(freqs - f) <= BAND_HZ].sum())
    overtones = [k * f0 for k in (3, 5, 7) if k * f0 < sr / 2 - BAND_HZ]
    return sum(band(f) for f in overtones) / max(band(f0), 1e-12)


def mel_ratio(logmel: torch.Tensor, f0: float, centres: np.ndarray) -> float:
    """Buzz feature read off a (T, M) log-mel: mean power of the bins nearest 3, 5, 7 f0 over the bin of f0."""
    power = logmel.exp().mean(0).numpy()  # (M,)
    bin_of = [int(np.argmin(np.abs(centres - k * f0))) for k in (1, 3, 5, 7) if k * f0 < centres[-1]]
    return float(power[bin_of[1:]].sum() / max(power[bin_of[0]], 1e-12))


def best_threshold_accuracy(scores: Sequence[float], is_buzz: Sequence[bool]) -> float:
    """Accuracy of the best single threshold "score > thr means buzz" (1.0: the classes do not overlap)."""
    s, y = np.asarray(scores), np.asarray(is_buzz, dtype=bool)
    cuts = np.concatenate([[-np.inf], np.sort(s)])
    return float(max(((s > c) == y).mean() for c in cuts))


def score(specs: Sequence[AudioSpec], waves: Sequence[np.ndarray]) -> dict[str, Any]:
    """Judge `waves` against `specs`: rates of sound, pitch + rhythm and all three, and the buzz feature."""
    judged = [judge_audio(np.asarray(w), SAMPLE_RATE) for w in waves]
    sound = [j["sound"] == s.sound for s, j in zip(specs, judged)]
    pitch_rhythm = [j["pitch"] == s.pitch and j["rhythm"] == s.rhythm for s, j in zip(specs, judged)]
    ratios = {kind: [buzz_ratio(np.asarray(w)) for s, w in zip(specs, waves) if s.sound == kind]
              for kind in ("tone", "buzz")}
    return {"sound": rate_of(sound, 0.5), "pitch+rhythm": rate_of(pitch_rhythm, 0.25),
            "all": rate_of([a and b for a, b in zip(sound, pitch_rhythm)], 0.125),
            "sound_by_class": {f"{p} {k}": rate_of([ok for ok, sp in zip(sound, specs)
                                                    if (sp.pitch, sp.sound) == (p, k)])
                               for p in ("low", "high") for k in ("tone", "buzz")},
            "unjudged": int(sum(j["sound"] is None for j in judged)),
            "buzz_ratio_median": {k: float(np.median(v)) if v else None for k, v in ratios.items()},
            "buzz_ratio_range": {k: [float(np.min(v)), float(np.max(v))] if v else None for k, v in ratios.items()}}


@torch.no_grad()
def measure(checkpoint: Path, *, n: int = 120, seed: int = 12345, steps: Sequence[str] = STEPS,
            noise_db: float | None = None, batch: int = 16,
            progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Every chosen step of the module docstring on the audio decoder of `checkpoint` -> a JSON-able report."""
    torch.manual_seed(seed)
    specs, waves = held_out_sounds(n, seed)
    logmel = LogMel()
    mels = torch.cat([logmel(chunk) for chunk in waves.split(batch)])  # (n, T, 64)
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "n": n, "seed": seed}
    needs_model = any(s in steps for s in ("b", "c", "d"))
    decoders = Decoders.from_folder(NextGPTConfig.from_name("nano"), checkpoint) if needs_model else None
    pipe = decoders.pipeline(Modality.AUDIO) if decoders is not None else None
    if pipe is not None:
        pipe.vae.float().eval()
        pipe.vocoder.float().eval()

    def vocode(mel: torch.Tensor) -> list[np.ndarray]:
        return [w for chunk in mel.split(batch) for w in pipe.vocoder(chunk).numpy()]

    if "a" in steps:
        report["a"] = score(specs, list(waves.numpy()))
        if noise_db is not None:
            gen = torch.Generator().manual_seed(seed)
            noise = torch.randn(waves.shape, generator=gen) * waves.pow(2).mean(1, keepdim=True).sqrt()
            report["a_noise"] = {"snr_db": noise_db,
                                 **score(specs, list((waves + noise * 10 ** (-noise_db / 20)).numpy()))}
        progress(f"a: {report['a']['sound']}")
    if "mel" in steps:
        centres = _mel_centres(logmel)
        ratios = [mel_ratio(m, s.f0, centres) for s, m in zip(specs, mels)]
        buzz = [s.sound == "buzz" for s in specs]
        report["mel"] = {"best_threshold_accuracy": best_threshold_accuracy(ratios, buzz), "n": n,
                         "ratio_range": {k: [float(min(r for r, b in zip(ratios, buzz) if b == (k == "buzz"))),
                                             float(max(r for r, b in zip(ratios, buzz) if b == (k == "buzz")))]
                                         for k in ("tone", "buzz") if any(b == (k == "buzz") for b in buzz)}}
        progress(f"mel: {report['mel']}")
    if "b" in steps:
        report["b"] = score(specs, vocode(mels))
        progress(f"b: {report['b']['sound']}")
    if "c" in steps:
        vae = pipe.vae
        recon = torch.cat([vae.decode(vae.encode(chunk[:, None]).latent_dist.mean).sample[:, 0]
                           for chunk in mels.split(batch)])  # (n, T, 64)
        ratios = [mel_ratio(m, s.f0, _mel_centres(logmel)) for s, m in zip(specs, recon)]
        report["c"] = {**score(specs, vocode(recon)), "mel_l1": float((recon - mels).abs().mean()),
                       "mel_best_threshold_accuracy": best_threshold_accuracy(
                           ratios, [s.sound == "buzz" for s in specs])}
        progress(f"c: {report['c']['sound']}")
    if "d" in steps:
        report["d"] = generated(decoders, n, seed)
        progress(f"d: {report['d']['sound']}")
    return report


def _mel_centres(logmel: LogMel) -> np.ndarray:
    """Centre frequency (Hz) of each mel filter: the STFT bin where its weight peaks."""
    freqs = np.fft.rfftfreq(logmel.n_fft, 1.0 / SAMPLE_RATE)
    return freqs[logmel.basis.argmax(1).numpy()]


def generated(decoders: Decoders, n: int, seed: int) -> dict[str, Any]:
    """Step d: each of the 8 world captions generated with n / 8 seeds, judged against its caption."""
    from itertools import product

    from nextgpt.world.vocab import ATTRIBUTES, CAPTION_TEMPLATES

    words = ATTRIBUTES["audio"]
    combos = [dict(zip(words, values)) for values in product(*words.values())]
    per = max(1, n // len(combos))
    specs, waves = [], []
    for combo in combos:
        caption = CAPTION_TEMPLATES["audio"].format(**combo)
        cond = decoders.encode_captions(Modality.AUDIO, [caption])
        for k in range(per):
            waves.append(decoders.generate(Modality.AUDIO, cond, seed=seed + k)[0])
            specs.append(AudioSpec(f0=0.0, rate=0.0, **combo))
    return score(specs, waves)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("checkpoints/nano"),
                    help="folder holding decoders/audio/ (a model checkpoint or a decoder training's --out)")
    ap.add_argument("--n", type=int, default=120, help="held-out sounds per step (>= 100 for the reported figures)")
    ap.add_argument("--seed", type=int, default=12345, help="seed of the held-out sounds (the world's train "
                    "split draws from seed * 1000)")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    ap.add_argument("--noise-db", type=float, default=None, help="also judge the world audio with noise at this SNR")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write the report here as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    report = measure(args.checkpoint, n=args.n, seed=args.seed, steps=args.steps, noise_db=args.noise_db)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    log.info(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
