"""Train the nano decoders (VAE, vocoder, UNet per modality) on the world and measure them with the judges.

    python scripts/train_decoders.py --data data/world --out checkpoints/nano --modality image --part all
    python scripts/train_decoders.py --modality audio --part vocoder --steps 300   # one part
    python scripts/train_decoders.py --modality all --part eval                    # metrics.json only

Resumable: run it again after an interruption and every part continues from <run-dir>/<modality>/<part>/state.
See nextgpt/training/decoders/ (a package, one file per part) for what each part trains.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nextgpt.config import MODALITY_INFO  # noqa: E402
from nextgpt.training.decoders import PARTS, DecoderTrainArgs, parse_settings, run  # noqa: E402
from nextgpt.training.loop import end_processes  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> DecoderTrainArgs:
    d = DecoderTrainArgs()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=d.data, help="world folder (python -m nextgpt.world.records)")
    ap.add_argument("--out", type=Path, default=d.out, help="checkpoint folder; receives decoders/<modality>/")
    ap.add_argument("--run-dir", type=Path, default=d.run_dir, help="caches, resumable state and logs")
    ap.add_argument("--modality", choices=(*(s.name for s in MODALITY_INFO.values()), "all"), default=d.modality)
    ap.add_argument("--part", choices=(*PARTS, "eval", "all"), default=d.part,
                    help="all = every part of the modality's recipe in order, then eval")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's steps of the chosen part(s)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    ap.add_argument("--limit", type=int, default=None, help="use at most this many training items per modality")
    ap.add_argument("--eval-split", default=d.eval_split, help="split whose captions the evaluation uses")
    ap.add_argument("--smoke", action="store_true", help="tiny components, a few steps on a few items")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
                    help="override one PartSettings field of the chosen part(s), e.g. --set snr_gamma=0")
    ap.add_argument("--from-checkpoint", action="store_true",
                    help="train the part on from the component in --out instead of a fresh one (a new --run-dir)")
    a = ap.parse_args(argv)
    if a.steps is not None and a.steps < 1:
        ap.error("--steps must be >= 1")
    try:
        parse_settings(a.settings)
    except ValueError as err:
        ap.error(str(err))
    return DecoderTrainArgs(**{**vars(a), "settings": tuple(a.settings)})


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results = run(parse_args(argv))
    logging.getLogger("train_decoders").info("done: %s", sorted(results))
    end_processes()


if __name__ == "__main__":
    main()
