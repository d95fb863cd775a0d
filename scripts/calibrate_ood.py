"""Calibrate the "outside its world" notice of a world checkpoint: fit, pick the threshold, measure, write world.json.

    python scripts/calibrate_ood.py                         # checkpoints/nano and data/world: ~5 min on 2 CPU cores
    python scripts/calibrate_ood.py --fit 100 --ood 5 --out /tmp/world.json      # a quick look

1. fit: the encoder's embeddings of `--fit` world media per modality, drawn as the checkpoint's training items
   were (every attribute combination: training_world.json) and passed through the files an upload arrives in
   (PNG, 16-bit WAV, H.264 MP4, read back with nextgpt.media) -> one prototype per class and the covariance they
   share (`world_profile.ModalityCheck.fit`);
2. threshold: the `--quantile` of the distances of every medium of the world's val split (built if missing);
3. measure: how many test-split media (none of them val's) are flagged, and how many of each kind of medium from
   outside: made here with numpy (noise, gradients, textures, shapes and colours the world lacks, several shapes,
   noise and chirps and speech-like sounds, ...) and the real photos, recordings and clips that installed packages
   ship, each with its n;
4. write world.json beside the weights with the world's words, the statistics, the threshold and these figures
   (the weight hash covers *.safetensors files only, so it stays as it was).

Prints the measured separation as Markdown tables (docs/abilities.md quotes them).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from nextgpt import media
from nextgpt.config import MODALITY_INFO, Modality, NextGPTConfig
from nextgpt.encode import MediaEncoder
from nextgpt.eval.provenance import display_path, weight_hash
from nextgpt.world.records import MEDIA_DIRS, encode_videos, ensure_split
from nextgpt.world.render import draw_shape, synth_sound
from nextgpt.world.vocab import (ATTRIBUTES, CAPTION_TEMPLATES, COLOURS, SAMPLE_RATE, VIDEO_FPS, WORLD_GISTS,
                                 WORLD_PHRASES, sample_spec)
from nextgpt.world_profile import WORLD_FILE, ModalityCheck, WorldModality, WorldProfile

log = logging.getLogger("calibrate_ood")

# the attributes whose combinations are the prototypes' classes; a video's direction is spread over its frames,
# and one prototype per colour and shape (18) separates as well as one per direction too (72), in a smaller file
CLASS_ATTRIBUTES = {"image": ("colour", "shape"), "audio": ("pitch", "rhythm", "sound"), "video": ("colour", "shape")}
SR = SAMPLE_RATE
OTHER_COLOURS = ((255, 105, 180), (120, 70, 20), (128, 128, 128), (0, 0, 0), (0, 200, 200), (170, 255, 120))


# ---- media from outside the world -----------------------------------------------------------------------
def _texture(rng: np.random.Generator, side: int = 256) -> np.ndarray:
    """A natural-looking colour texture: 1/f noise per channel -> (side, side, 3) uint8."""
    f = np.fft.fftfreq(side)[:, None] ** 2 + np.fft.fftfreq(side)[None, :] ** 2
    f[0, 0] = 1.0
    channels = []
    for _ in range(3):
        x = np.real(np.fft.ifft2((rng.normal(size=(side, side)) + 1j * rng.normal(size=(side, side))) / f))
        channels.append((x - x.min()) / (x.max() - x.min()))
    return (np.stack(channels, -1) * 255).astype(np.uint8)


def _gradient(rng: np.random.Generator, side: int = 256) -> np.ndarray:
    """A smooth blend of three random colours -> (side, side, 3) uint8."""
    y, x = (np.mgrid[0:side, 0:side] / (side - 1))[..., None]
    a, b, c = rng.uniform(0, 255, (3, 3))
    return np.clip(a * (1 - x) * (1 - y) + b * x + c * y * (1 - x), 0, 255).astype(np.uint8)


def _polygon(kind: int, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """A star (0), hexagon (1) or plus sign (2) around (cx, cy): shapes the world has no word for."""
    if kind == 0:
        return [(cx + (r if k % 2 == 0 else r / 2.5) * np.cos(np.pi * k / 5 - np.pi / 2),
                 cy + (r if k % 2 == 0 else r / 2.5) * np.sin(np.pi * k / 5 - np.pi / 2)) for k in range(10)]
    if kind == 1:
        return [(cx + r * np.cos(np.pi * k / 3), cy + r * np.sin(np.pi * k / 3)) for k in range(6)]
    t = r / 3
    return [(cx - r, cy - t), (cx - t, cy - t), (cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
            (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t)]


def _other_shape(rng: np.random.Generator, cx: float | None = None, cy: float | None = None) -> np.ndarray:
    img = Image.new("RGB", (64, 64), (255, 255, 255))
    colour = list(COLOURS.values())[rng.integers(len(COLOURS))]
    cx = rng.uniform(20, 44) if cx is None else cx
    cy = rng.uniform(20, 44) if cy is None else cy
    ImageDraw.Draw(img).polygon(_polygon(int(rng.integers(3)), cx, cy, rng.uniform(10, 18)), fill=colour)
    return np.asarray(img)


def _several(rng: np.random.Generator) -> np.ndarray:
    img = np.full((64, 64, 3), 255, np.uint8)
    for _ in range(int(rng.integers(2, 4))):
        shape = sample_spec("image", rng).render()
        mask = (shape != 255).any(-1)
        img[mask] = shape[mask]
    return img


def _other_colour(rng: np.random.Generator) -> np.ndarray:
    spec = sample_spec("image", rng)
    return draw_shape(spec.shape, OTHER_COLOURS[rng.integers(len(OTHER_COLOURS))], spec.size, spec.cx, spec.cy)


def _coloured_background(rng: np.random.Generator) -> np.ndarray:
    img = sample_spec("image", rng).render().copy()
    img[(img == 255).all(-1)] = rng.integers(0, 200, 3)
    return img


def _speech_like(rng: np.random.Generator) -> np.ndarray:
    """A voice-like buzz: a wandering 100-200 Hz glottal pulse train through two formants, in syllables."""
    from scipy.signal import lfilter

    t = np.arange(2 * SR) / SR
    f0 = rng.uniform(100, 200) + 25 * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 30))
    for formant in rng.uniform((400, 1200), (900, 2500)):
        radius = 0.97
        x = lfilter([1.0], [1.0, -2 * radius * np.cos(2 * np.pi * formant / SR), radius**2], x)
    x = x * (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > -0.2)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def _chirp(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(2 * SR) / SR
    f0, f1 = rng.uniform(100, 4000, 2)
    return (0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / 4))).astype(np.float32)


def _chord(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(2 * SR) / SR
    x = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(200, 1200, 3))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def _melody(rng: np.random.Generator) -> np.ndarray:
    notes = 220 * 2 ** (rng.integers(0, 24, 8) / 12)  # eight quarter-second notes over two octaves
    return np.concatenate([synth_sound(f, bool(rng.integers(2)), None, 0.25, SR) for f in notes]).astype(np.float32)


def _other_pitch(rng: np.random.Generator) -> np.ndarray:
    """A world-like tone or buzz at a pitch neither 'low' (200-300 Hz) nor 'high' (800-1200 Hz)."""
    f0 = (rng.uniform(60, 150), rng.uniform(400, 700), rng.uniform(1800, 4000))[rng.integers(3)]
    return synth_sound(f0, bool(rng.integers(2)), rng.uniform(3, 5) if rng.integers(2) else None, 2.0, SR)


def _moving(frame: Callable[[float], np.ndarray]) -> np.ndarray:
    return np.stack([frame(k / 7) for k in range(8)])


def _moving_other_shape(rng: np.random.Generator) -> np.ndarray:
    kind, colour, r = int(rng.integers(3)), list(COLOURS.values())[rng.integers(len(COLOURS))], rng.uniform(7, 11)
    y, x0, x1 = rng.uniform(16, 48), rng.uniform(12, 24), rng.uniform(40, 52)

    def frame(s: float) -> np.ndarray:
        img = Image.new("RGB", (64, 64), (255, 255, 255))
        ImageDraw.Draw(img).polygon(_polygon(kind, x0 + s * (x1 - x0), y, r), fill=colour)
        return np.asarray(img)

    return _moving(frame)


def _panning_texture(rng: np.random.Generator) -> np.ndarray:
    tex = _texture(rng, 128)
    return np.stack([tex[4 * k: 4 * k + 64, 8: 72] for k in range(8)])


def _several_moving(rng: np.random.Generator) -> np.ndarray:
    frames = sample_spec("video", rng).render().copy()
    for _ in range(int(rng.integers(1, 3))):
        other = sample_spec("video", rng).render()
        mask = (other != 255).any(-1)
        frames[mask] = other[mask]
    return frames


OUTSIDE: dict[str, dict[str, Callable[[np.random.Generator], np.ndarray]]] = {
    "image": {
        "noise photo (512x384)": lambda rng: rng.integers(0, 256, (384, 512, 3), dtype=np.uint8),
        "smooth gradient": _gradient,
        "natural-looking texture": _texture,
        "shape with no world word (star, hexagon, plus)": _other_shape,
        "several world shapes": _several,
        "world shape in another colour": _other_colour,
        "world shape on a coloured background": _coloured_background,
    },
    "audio": {
        "white noise": lambda rng: rng.uniform(-0.5, 0.5, 2 * SR).astype(np.float32),
        "speech-like voice": _speech_like,
        "chirp (sweep)": _chirp,
        "chord of three tones": _chord,
        "melody of eight notes": _melody,
        "tone or buzz at another pitch": _other_pitch,
    },
    "video": {
        "noise video": lambda rng: rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8),
        "panning texture": _panning_texture,
        "moving shape with no world word": _moving_other_shape,
        "several moving shapes": _several_moving,
        "world shape standing still": lambda rng: np.stack([sample_spec("image", rng).render()] * 8),
    },
}
REAL_MEDIA = {  # package -> files it ships (photos, recordings, clips); used where installed
    "gradio": ("media_assets/images/*.jp*g", "media_assets/images/bus.png", "media_assets/audio/*",
               "media_assets/videos/*.mp4"),
    "matplotlib": ("mpl-data/sample_data/grace_hopper.jpg",),
}


def real_media() -> dict[str, list[Path]]:
    """Real photos, recordings and clips that installed packages ship, by modality (empty where none)."""
    found: dict[str, list[Path]] = {m.value: [] for m in Modality}
    for package, patterns in REAL_MEDIA.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for pattern in patterns:
            for path in sorted(root.glob(pattern)):
                modality = media.guess_modality(path)
                if modality is not None:
                    found[modality.value].append(path)
    return found


# ---- through the upload path --------------------------------------------------------------------------
def as_uploads(modality: str, items: list[np.ndarray], folder: Path) -> list[np.ndarray]:
    """Write items as the files an upload arrives in and read them back as the engine does."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:06d}{MODALITY_INFO[Modality(modality)].extension}" for i in range(len(items))]
    if modality == "video":
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, clip in enumerate(items):
            by_size.setdefault(clip.shape[1:], []).append(i)
        for group in by_size.values():  # one ffmpeg process per frame size
            encode_videos([items[i] for i in group], [paths[i] for i in group], fps=VIDEO_FPS)
    else:
        for path, item in zip(paths, items):
            media.save(modality, item, path, sample_rate=SR)
    return [read_upload(modality, p) for p in paths]


def read_upload(modality: str, path: Path) -> np.ndarray:
    return media.load(modality, path).array


def split_media(data: Path, split: str, modality: str) -> list[np.ndarray]:
    folder = ensure_split(data, split) / MEDIA_DIRS[modality]
    return [read_upload(modality, p) for p in sorted(folder.iterdir())]


# ---- measuring ------------------------------------------------------------------------------------------
def embed(encoder: MediaEncoder, modality: str, items: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return encoder.encode(Modality(modality), items).float().numpy()


def summary(distances: np.ndarray, threshold: float) -> dict[str, float | int]:
    q = np.quantile(distances, [0.0, 0.05, 0.5, 0.95, 1.0]) if len(distances) else [float("nan")] * 5
    return {"n": int(len(distances)), "flagged": int((distances > threshold).sum()),
            **{k: round(float(v), 2) for k, v in zip(("min", "p5", "median", "p95", "max"), q)}}


def _row(name: str, s: dict[str, float | int]) -> str:
    rate = 100 * s["flagged"] / s["n"] if s["n"] else float("nan")
    return (f"| {name} | {s['n']} | {s['flagged']} | {rate:.1f} | {s['min']:.1f} / {s['median']:.1f} / "
            f"{s['max']:.1f} |")


def report(profile: WorldProfile) -> str:
    """The measured separation as Markdown: one table per modality."""
    cal = profile.calibration
    lines = [f"Outside-world check of `{cal['checkpoint']}` ({cal['weight_hash'][:19]}...): fit on {cal['fit']['n']} "
             f"world media per modality, threshold = the {cal['quantile']} quantile of the val split's distances."]
    for modality, figures in cal["modalities"].items():
        lines += ["", f"**{modality}**: threshold {figures['threshold']:.2f}", "",
                  "| media | n | flagged | flagged % | distance min / median / max |", "|---|---|---|---|---|",
                  _row("world, val split (sets the threshold)", figures["val"]),
                  _row("world, test split", figures["test"])]
        lines += [_row(name, s) for name, s in figures["outside"].items()]
        if figures.get("real", {}).get("n"):
            lines.append(_row("real files from installed packages", figures["real"]))
    return "\n".join(lines)


def calibrate(checkpoint: Path, data: Path, *, n_fit: int, n_outside: int, quantile: float, components: int,
              seed: int) -> WorldProfile:
    cfg = NextGPTConfig.load(checkpoint)
    encoder = MediaEncoder.load(checkpoint / "encoder", cfg.encoder)
    trained = json.loads((checkpoint / "training_world.json").read_text()) if (
        checkpoint / "training_world.json").is_file() else {}
    reals = real_media()
    parts, figures = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, modality in enumerate(m.value for m in Modality):
            # 1. fit on world media drawn as training items are, through the upload files
            rng = np.random.default_rng([seed, k])
            specs = [sample_spec(modality, rng) for _ in range(n_fit)]
            fit_items = as_uploads(modality, [s.render() for s in specs], Path(tmp) / f"fit-{modality}")
            labels = [" ".join(s.attributes[a] for a in CLASS_ATTRIBUTES[modality]) for s in specs]
            check = ModalityCheck.fit(embed(encoder, modality, fit_items), labels, components=components)
            # 2. threshold from the val split
            val = check.distances(embed(encoder, modality, split_media(data, "val", modality)))
            check = check.with_threshold(float(np.quantile(val, quantile)))
            # 3. measure: test split, media from outside, real files
            test = check.distances(embed(encoder, modality, split_media(data, "test", modality)))
            outside = {}
            for j, (name, make) in enumerate(OUTSIDE[modality].items()):
                items = [make(np.random.default_rng([seed, 100 + k, j, i])) for i in range(n_outside)]
                items = as_uploads(modality, items, Path(tmp) / f"out-{modality}-{j}")
                outside[name] = summary(check.distances(embed(encoder, modality, items)), check.threshold)
            real = [read_upload(modality, p) for p in reals[modality]]
            figures[modality] = {
                "threshold": round(check.threshold, 3), "val": summary(val, check.threshold),
                "test": summary(test, check.threshold), "outside": outside,
                "real": {**summary(check.distances(embed(encoder, modality, real)) if real else np.empty(0),
                                   check.threshold), "files": [p.name for p in reals[modality]]},
            }
            parts[Modality(modality)] = WorldModality(
                vocabulary=dict(ATTRIBUTES[modality]), caption=CAPTION_TEMPLATES[modality],
                gist=WORLD_GISTS[modality], phrase=WORLD_PHRASES[modality], check=check)
            log.info("%s: threshold %.2f, val %s, test %s", modality, check.threshold, figures[modality]["val"],
                     figures[modality]["test"])
    name = (f"the nano world (nextgpt/world, version {trained.get('world_version', '?')}, "
            f"seed {trained.get('seed', '?')})")
    calibration = {
        "method": "class-conditional Mahalanobis distance of the unit encoder embedding to the world's prototypes",
        "checkpoint": display_path(checkpoint), "weight_hash": weight_hash(checkpoint),
        "fit": {"n": n_fit, "seed": seed, "components": components, "classes": CLASS_ATTRIBUTES,
                "drawn": "every attribute combination, through PNG / 16-bit WAV / H.264 MP4 files"},
        "quantile": quantile, "data": display_path(data), "modalities": figures,
    }
    return WorldProfile(name=name, modalities=parts, calibration=calibration)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("checkpoints/nano"))
    ap.add_argument("--data", type=Path, default=Path("data/world"), help="the world's splits (val, test built if missing)")
    ap.add_argument("--out", type=Path, default=None, help=f"default: <checkpoint>/{WORLD_FILE}")
    ap.add_argument("--fit", type=int, default=1000, help="world media per modality the statistics are fitted on")
    ap.add_argument("--ood", type=int, default=50, help="media per kind from outside the world")
    ap.add_argument("--quantile", type=float, default=0.995, help="of the val split's distances: the threshold")
    ap.add_argument("--components", type=int, default=32, help="principal directions of the covariance kept")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    profile = calibrate(args.checkpoint, args.data, n_fit=args.fit, n_outside=args.ood, quantile=args.quantile,
                        components=args.components, seed=args.seed)
    out = profile.save(args.out or args.checkpoint / WORLD_FILE)
    log.info("wrote %s (%.0f kB)", out, out.stat().st_size / 1e3)
    print(report(profile))  # the script's output: the tables docs/abilities.md quotes
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
