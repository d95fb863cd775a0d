"""Step 0: train the nano ImageBind (the encoder the real system downloads) on the world's train split.

    python scripts/train_encoder.py --data data/world --out checkpoints/nano            # <= 14 min training
    python scripts/train_encoder.py --smoke --data /tmp/world --out /tmp/ckpt            # 3 steps, 8 items

Writes <out>/encoder/encoder.safetensors and <out>/encoder/metrics.json (zero-shot and linear-probe accuracy
per attribute on the test split). Resumable: run the same command again after an interruption and it
continues from <run-dir>/state. How it trains: nextgpt/training/encoder.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# On a shared, oversubscribed CPU, OpenMP threads that spin while waiting for each other waste most of the
# time (measured here: 2 threads 5-20 s/step spinning, 3 s/step passive). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from nextgpt.config import EncoderConfig, NextGPTConfig  # noqa: E402
from nextgpt.training.encoder import EncoderTraining, train_encoder  # noqa: E402
from nextgpt.training.loop import end_processes  # noqa: E402

log = logging.getLogger("train_encoder")
DEFAULTS = EncoderTraining()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/world"), help="world splits (nextgpt.world.records)")
    ap.add_argument("--out", type=Path, default=Path("checkpoints/nano"),
                    help="checkpoint folder; writes <out>/encoder")
    ap.add_argument("--run-dir", type=Path, default=Path("runs/encoder"), help="resumable state, media cache, log")
    ap.add_argument("--cache", type=Path, default=None, help="preprocessed media; default <run-dir>/cache")
    ap.add_argument("--steps", type=int, default=None, help=f"default {DEFAULTS.steps} (smoke: 3)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help=f"images and videos per step; default {DEFAULTS.batch_size}")
    ap.add_argument("--audio-batch-size", type=int, default=None,
                    help=f"sounds per step; default {DEFAULTS.audio_batch_size}")
    ap.add_argument("--lr", type=float, default=DEFAULTS.lr, help="AdamW peak learning rate")
    ap.add_argument("--seed", type=int, default=DEFAULTS.seed)
    ap.add_argument("--limit", type=int, default=None, help="at most this many items per modality and split")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help=f"training time budget, the lr schedule ends with it; default {DEFAULTS.max_minutes}, 0 = none")
    ap.add_argument("--eval-every", type=int, default=None,
                    help=f"val zero-shot every N steps (0 = off); default {DEFAULTS.eval_every}")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--smoke", action="store_true", help="3 steps on 8 items per modality (what the tests run)")
    args = ap.parse_args(argv)
    for name in ("steps", "batch_size", "audio_batch_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.lr <= 0 or args.threads < 1 or (args.max_minutes or 0) < 0:
        ap.error("--lr must be > 0, --threads >= 1 and --max-minutes >= 0")
    return args


def settings_from(args: argparse.Namespace) -> EncoderTraining:
    base = EncoderTraining.smoke() if args.smoke else EncoderTraining()
    given = {"steps": args.steps, "batch_size": args.batch_size, "audio_batch_size": args.audio_batch_size,
             "limit": args.limit, "eval_every": args.eval_every}
    changes = {k: v for k, v in given.items() if v is not None}
    if args.max_minutes is not None:
        changes["max_minutes"] = args.max_minutes or None
    return dataclasses.replace(base, lr=args.lr, seed=args.seed, **changes)


def run(args: argparse.Namespace, encoder_cfg: EncoderConfig | None = None, *,
        stop_after: int | None = None) -> dict[str, Any]:
    """Train with `encoder_cfg` (default: the nano preset's ImageBind)."""
    torch.set_num_threads(args.threads)
    cfg = encoder_cfg or NextGPTConfig.from_name("nano").encoder
    return train_encoder(cfg, args.data, args.out, args.run_dir, settings_from(args),
                         cache=args.cache, stop_after=stop_after)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(parse_args(argv))
    log.info("done: %s", {k: result[k] for k in ("steps", "seconds", "ended_by", "zero_shot", "probe") if k in result})
    end_processes()


if __name__ == "__main__":
    main()
