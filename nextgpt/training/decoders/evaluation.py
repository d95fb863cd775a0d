"""The decoders' evaluation: generate from held-out captions and seeds through `Decoders`, judge the media with
the world's rule-based judges; for images and video also the VAE round trip of held-out media (what the VAE alone
keeps). The figures go to ``<out>/decoders/metrics.json`` (`merge_metrics`, safe for parallel modalities).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nextgpt.config import Modality, NextGPTConfig
from nextgpt.decode import Decoders
from nextgpt.decoder_configs import SAMPLE_RATE
from nextgpt.files import write_json
from nextgpt.training.decoders.components import decoder_folder
from nextgpt.training.foundation import captioned_items, read_all
from nextgpt.world import JUDGES, parse_caption
from nextgpt.world.records import ensure_split, load_records

METRICS_FILE = "metrics.json"
# held-out evaluation: (captions, seeds per caption) per modality; the world has 18 image captions (6 colours x
# 3 shapes), 8 audio and 72 video ones
ROUND_TRIP_ITEMS = 120  # held-out images / clips the VAE round trip of the evaluation judges
EVAL_PLAN: dict[Modality, tuple[int, int]] = {Modality.IMAGE: (18, 4), Modality.AUDIO: (8, 4), Modality.VIDEO: (24, 2)}
# attribute sets a sample must match to count, per modality: the first is the headline number
MATCH_SETS: dict[Modality, dict[str, tuple[str, ...]]] = {
    Modality.IMAGE: {"colour+shape": ("colour", "shape")},
    Modality.AUDIO: {"pitch+rhythm": ("pitch", "rhythm"), "pitch+rhythm+sound": ("pitch", "rhythm", "sound")},
    Modality.VIDEO: {"direction": ("direction",), "direction+colour": ("direction", "colour"),
                     "direction+colour+shape": ("direction", "colour", "shape")},
}


def eval_captions(data: Path, split: str, modality: Modality, n: int) -> list[str]:
    """The first `n` distinct captions of the split's generation records (held-out items)."""
    key = f"{modality.value}_captions"
    seen: list[str] = []
    for rec in load_records(data, split, "generation"):
        if key in rec and rec[key] not in seen:
            seen.append(rec[key])
            if len(seen) == n:
                break
    return seen


def evaluate(cfg: NextGPTConfig, out: Path, data: Path, modality: Modality, *, split: str = "val",
             plan: tuple[int, int] | None = None, num_inference_steps: int | None = None,
             seed_base: int = 1000) -> dict[str, Any]:
    """Generate (one item per call, the spec's default steps and guidance) and judge against the caption."""
    n_captions, n_seeds = plan or EVAL_PLAN[modality]
    ensure_split(data, split)  # a missing split is written first (deterministic, seconds)
    captions = eval_captions(data, split, modality, n_captions)
    decoders = Decoders.from_folder(cfg, out)
    decoders.pipeline(modality)  # load before timing
    judge = JUDGES[modality.value]
    rows, latency = [], []
    for caption in tqdm(captions, desc=f"eval {modality.value}", leave=False, disable=None):
        want = parse_caption(caption, modality.value)
        cond = decoders.encode_captions(modality, [caption])
        for k in range(n_seeds):
            start = time.perf_counter()
            media = decoders.generate(modality, cond, seed=seed_base + k, num_inference_steps=num_inference_steps)
            latency.append(time.perf_counter() - start)
            got = judge(media[0], SAMPLE_RATE)
            rows.append({"caption": caption, "seed": seed_base + k, "judged": got,
                         "match": {a: got.get(a) == w for a, w in want.items()}})
    metrics: dict[str, Any] = {"samples": len(rows), "captions": len(captions), "seeds_per_caption": n_seeds,
                               "split": split}
    for name, attrs in MATCH_SETS[modality].items():
        metrics[f"accuracy_{name}"] = float(np.mean([all(r["match"][a] for a in attrs) for r in rows]))
    for attr in rows[0]["match"] if rows else ():
        metrics[f"accuracy_{attr}"] = float(np.mean([r["match"][attr] for r in rows]))
    if modality != Modality.AUDIO:
        metrics.update(vae_round_trip(decoders.pipeline(modality).vae, data, split, modality,
                                      n=ROUND_TRIP_ITEMS if plan is None else 1))
    spec = cfg.decoder(modality)
    metrics.update({
        "latency_s_per_call_mean": float(np.mean(latency)), "latency_s_per_call_median": float(np.median(latency)),
        "num_inference_steps": num_inference_steps or spec.num_inference_steps,
        "guidance_scale": spec.guidance_scale, "threads": torch.get_num_threads(),
        "size_mb_on_disk": round(folder_size(decoder_folder(out, modality)) / 2 ** 20, 2),
        "failures": [{"caption": r["caption"], "seed": r["seed"], "judged": r["judged"]}
                     for r in rows if not all(r["match"].values())][:12],
    })
    return metrics


@torch.no_grad()
def vae_round_trip(vae: nn.Module, data: Path, split: str, modality: Modality, *, n: int) -> dict[str, Any]:
    """Encode `n` media of the split to their posterior mean, decode, judge: what the VAE alone keeps.

    A UNet can only be as right as the VAE it writes for (the video VAE once decoded blue as purple and purple as
    blue). -> {"round_trip_items": n, "round_trip_<attribute>": accuracy, ...}; images and video only.
    """
    items = captioned_items(data, split, modality, limit=n)
    judge, hits = JUDGES[modality.value], {}
    dtype = next(vae.parameters()).dtype
    for item, arr in zip(items, read_all(modality, [it.path for it in items])):
        frames = torch.from_numpy(arr if arr.ndim == 4 else arr[None])  # (T, H, W, 3) uint8
        x = frames.permute(0, 3, 1, 2).to(dtype) / 127.5 - 1.0
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample.float()
        out = ((recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        got = judge(out if arr.ndim == 4 else out[0])
        for attr, want in parse_caption(item.caption, modality.value).items():
            hits.setdefault(attr, []).append(got.get(attr) == want)
    return {"round_trip_items": len(items), **{f"round_trip_{a}": float(np.mean(v)) for a, v in hits.items()}}


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def merge_metrics(path: Path, modality: Modality, entry: dict[str, Any]) -> dict[str, Any]:
    """Read-modify-write ``metrics.json`` under a file lock (modalities may train in parallel processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)  # lock the folder: no lock file left beside the checkpoint
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        metrics = json.loads(path.read_text()) if path.is_file() else {}
        # a part this run dir did not train keeps the training record already there (an eval run with another
        # --run-dir must not erase how the checkpoint was made)
        before = (metrics.get(modality.value) or {}).get("training") or {}
        if "training" in entry:
            entry = {**entry, "training": {**before, **{k: v for k, v in entry["training"].items() if v is not None}}}
        metrics[modality.value] = entry
        write_json(path, metrics)
    finally:
        os.close(folder)  # releases the lock
    return metrics
