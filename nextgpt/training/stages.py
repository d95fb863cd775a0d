"""Run one LLM-side tuning stage (1, 2 or 3) end to end: load, prepare data, train, save.

    python scripts/train_stage1.py --data data/world --checkpoint checkpoints/nano [--smoke]

The checkpoint folder is read (what earlier steps trained) and receives this stage's parts only.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from nextgpt.config import MODALITY_INFO
from nextgpt.training.loop import end_processes
from nextgpt.training.plans import PLANS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageArgs:
    stage: str  # stage1 | stage2 | stage3
    data: Path = Path("data/world")  # world records (python -m nextgpt.world.records)
    checkpoint: Path = Path("checkpoints/nano")  # read from and written to
    run_dir: Path | None = None  # resumable state; default runs/<stage>
    general_chat: Path = Path("assets/training/general_chat.json")  # stage 3's general text mix
    steps: int | None = None  # default: the plan's
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    limit: int | None = None  # use at most this many examples per record kind
    modality: str | None = None  # keep only conversations with an item of this modality (e.g. more stage 1 on video)
    smoke: bool = False  # a few steps on a few examples (what the tests run)
    threads: int = 2


def parse_args(stage: str, argv: Sequence[str] | None = None) -> StageArgs:
    plan = PLANS[stage]
    ap = argparse.ArgumentParser(description=f"{stage}: trains {', '.join(plan.trains)} on {', '.join(plan.data)}")
    ap.add_argument("--data", type=Path, default=StageArgs.data)
    ap.add_argument("--checkpoint", type=Path, default=StageArgs.checkpoint)
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--general-chat", type=Path, default=StageArgs.general_chat)
    ap.add_argument("--steps", type=int, default=None, help=f"default {plan.steps}")
    ap.add_argument("--batch-size", type=int, default=None, help=f"default {plan.batch_size}")
    ap.add_argument("--lr", type=float, default=None, help=f"default {plan.lr}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--modality", choices=[s.name for s in MODALITY_INFO.values()], default=None,
                    help="keep only conversations with an item of this modality")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    return StageArgs(stage=stage, **{k: v for k, v in vars(a).items()})


def run_stage(args: StageArgs, *, stop_after: int | None = None) -> dict[str, Any]:
    from nextgpt.model import NextGPT
    from nextgpt.training.data import Collator, compute_features, compute_targets, features_cache, load_kind, prepare
    from nextgpt.training.loop import RunConfig, train

    torch.set_num_threads(args.threads)
    plan = PLANS[args.stage]
    steps = args.steps or (3 if args.smoke else plan.steps)
    batch = args.batch_size or (2 if args.smoke else plan.batch_size)
    limit = 8 if args.smoke and args.limit is None else args.limit
    run_dir = args.run_dir or Path("runs") / args.stage

    # 1. model: what the checkpoint folder already has (stage 3 keeps LoRA unmerged to go on training it)
    model = NextGPT.from_preset("nano", folder=args.checkpoint, merge_lora=False)
    # 2. data -> token ids with labels
    conversations = []
    rng = random.Random(args.seed)
    for kind in plan.data:
        convs = load_kind(args.data, "train", kind, general_chat=args.general_chat)
        if args.modality:
            convs = [c for c in convs if has_modality(c, args.modality)]
        convs = convs[:limit] if limit else convs
        conversations += mixed(convs, plan.repeats(kind), rng)
    prepared = prepare(conversations, model.builder, plan.max_len)
    log.info("%s: %d examples", plan.name, len(prepared))
    # 3. frozen features and targets, once
    needs_media = any(p.media_keys for p in prepared)
    if needs_media and model.encoder is None:
        raise FileNotFoundError(f"{args.checkpoint}/encoder missing: train the encoder first (scripts/train_encoder.py)")
    features = (compute_features(model.encoder, prepared, cache=features_cache(args.data, model.encoder))
                if needs_media else {})
    targets = compute_targets(_caption_encoders(model), prepared) if "l2" in plan.losses else {}
    collate = Collator(model.tokenizer.pad_token_id or 0, features, targets)
    # 4. train and save this stage's parts
    run = RunConfig(out=args.checkpoint, run_dir=run_dir, steps=steps, batch_size=batch, lr=args.lr or plan.lr,
                    seed=args.seed, save_every=max(1, min(50, steps // 4)))
    return train(model, dataclasses.replace(plan, steps=steps, batch_size=batch), prepared, collate, run,
                 stop_after=stop_after)


def has_modality(messages: list[dict[str, Any]], modality: str) -> bool:
    """Whether any message of a conversation holds an item (uploaded or produced) of `modality`."""
    return any(isinstance(m["content"], list) and any(p.get("type") == modality for p in m["content"])
               for m in messages)


def mixed(items: list[Any], repeats: float, rng: random.Random) -> list[Any]:
    """`items` repeated int(repeats) times, plus a seeded subset for the fractional part (at least one item)."""
    whole, frac = int(repeats), repeats - int(repeats)
    extra = rng.sample(items, max(1, round(frac * len(items)))) if frac > 0 and items else []
    return items * whole + extra


def _caption_encoders(model: Any) -> Any:
    """The decoders' own caption encodings are the L2 targets. They come from the frozen caption encoder,
    not from trained decoder weights, so decoders still being trained are stood in for by fresh ones."""
    from nextgpt.decode import Decoders
    from nextgpt.loading import decoder_available

    if all(decoder_available(model.decoders, s.modality) for s in model.cfg.decoders):
        return model.decoders
    log.info("some decoders are not trained yet: caption targets from the (frozen) caption encoder of fresh ones")
    return Decoders.nano(model.cfg)


def main(stage: str, argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run_stage(parse_args(stage, argv))
    log.info("done: %s", {k: v for k, v in result.items() if k != "history"})
    end_processes()
