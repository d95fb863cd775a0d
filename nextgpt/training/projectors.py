"""Decoding-side alignment on cached signal states: the output projectors alone, under the final LLM.

    python scripts/align_projectors.py --data data/world --checkpoint checkpoints/nano [--steps 3000]

Stages 2 and 3 train the output projectors through the LLM, a batch of 8 a step for a few hundred steps: on 2
CPU cores that is too little for their conditions to land on the decoders' caption encodings, and stage 3 moves
the hidden states they read. Once the LLM is final it is frozen, so the projector's inputs - the last hidden
state and the token embedding at every signal token - are a fixed function of each example: they are computed
once (one teacher-forced pass over the generation, T2M and MosIT records) and the projectors train on them for
thousands of steps at a tiny fraction of the cost. Objective and targets are stage 2's (MSE to the decoder's own
caption encoding); nothing else in the checkpoint changes.

The projector's input layer trains on standardized inputs (`standardize`): the LLM's hidden states have a few
dimensions with means and spreads near 10 where most sit near 1, and AdamW, whose steps are about the same size
for every weight, then moves the condition mostly along those. Measured on the video projector (val split,
nearest of 72 captions): 0.88 -> 0.94 overall and 0.44 -> 0.73 at MosIT edit turns, where the new caption differs
from one word of the last. The mean and spread are folded back into the input layer's weight and bias after
training, so the saved projector is the same function in the official layout (nothing changes at inference).

Reported before and after, on the val split: MSE, and nearest-caption accuracy - the fraction of conditions whose
nearest caption encoding (among every caption of that modality in the data) is the one asked for. Written to
``<run_dir>/summary.json``; the projectors to ``<checkpoint>/output_projectors``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from nextgpt.config import Modality
from nextgpt.files import torch_save, write_json
from nextgpt.training.loop import end_processes
from nextgpt.world import parse_caption

log = logging.getLogger(__name__)

STATES_VERSION = 2  # of the cached States (2: with each block's previous caption)
KINDS = ("generation", "t2m", "mosit")  # records whose gpt turns produce media (signal blocks with captions)


@dataclass(frozen=True)
class AlignArgs:
    data: Path = Path("data/world")
    checkpoint: Path = Path("checkpoints/nano")  # read (LLM, LoRA, projections), output_projectors written
    run_dir: Path = Path("runs/projectors")  # cached states + summary
    steps: int = 3000  # per modality
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    limit: int | None = 2000  # examples per record kind (train; 0 = all), drawn at random; val: a quarter
    max_len: int = 192  # every MosIT signal block fits; at 128 a fifth were cut (late turns: most edits)
    seed: int = 0
    threads: int = 2
    modality: str = "all"  # image | audio | video | all: the projector(s) to align (the others are left as they are)
    standardize: bool = True  # train the input layer on per-feature standardized inputs (folded back afterwards)
    fresh: bool = False  # re-initialise the projector's layers first (its query embeddings are kept)
    smoke: bool = False  # a few examples and steps (what the tests run)


@dataclass
class States:
    """Projector inputs and targets of every signal block of one modality."""

    hidden: torch.Tensor  # (N, n, H)
    embeds: torch.Tensor  # (N, n, H)
    targets: torch.Tensor  # (N, cond_len, cond_dim) or (N, cond_dim)
    captions: list[str]
    previous: list[str | None] | None = None  # per block: the caption of the last block of its modality before it

    def subset(self, index: Sequence[int]) -> "States":
        index = list(index)
        previous = None if self.previous is None else [self.previous[i] for i in index]
        return States(self.hidden[index], self.embeds[index], self.targets[index], [self.captions[i] for i in index],
                      previous)

    def edits(self) -> list[int]:
        """Blocks that follow a block of the same modality with another caption (edits, mostly)."""
        return [i for i, (c, p) in enumerate(zip(self.captions, self.previous or [])) if p is not None and p != c]


def split_states(model: Any, data: Path, split: str, limit: int | None, max_len: int,
                 modality: Modality | None = None, seed: int = 0) -> dict[Modality, "States"]:
    """The projector inputs at every captioned signal block of one split's generation, T2M and MosIT records
    (only the records with a block of `modality`, when given). `limit` records per kind are drawn at random:
    the record files are grouped by modality, so their first records would all be images (as they were for the
    first alignment run: video had 1,099 training blocks, image 5,123)."""
    import random

    from nextgpt.training.data import Collator, compute_features, compute_targets, features_cache, load_kind, prepare

    prepared = []
    for kind in KINDS:
        kept = [p for p in prepare(load_kind(data, split, kind), model.builder, max_len) if p.block_keys and
                (modality is None or any(m == modality for m, _ in p.block_keys))]
        if limit and len(kept) > limit:
            kept = random.Random(seed).sample(kept, limit)
        prepared += kept
    features = (compute_features(model.encoder, prepared, cache=features_cache(data, model.encoder))
                if any(p.media_keys for p in prepared) else {})
    collate = Collator(model.tokenizer.pad_token_id or 0, features, compute_targets(model.decoders, prepared))
    return collect_states(model, prepared, collate, desc=f"signal states ({split})", modality=modality)


def through_last_block(prepared: Any, num_tokens: dict[Modality, int], modality: Modality | None = None) -> Any:
    """The example cut after its last signal block (of `modality`, when given; the other modalities' blocks are
    then dropped): the causal LLM's states at the signal tokens do not depend on anything after them."""
    from nextgpt.conversation import TrainingExample
    from nextgpt.training.data import Prepared

    ex = prepared.example
    mine = [i for i, b in enumerate(ex.blocks) if modality in (None, b.modality)]
    end = max(ex.blocks[i].start + num_tokens[ex.blocks[i].modality] for i in mine)
    media = [i for i, (pos, _) in enumerate(ex.media) if pos < end]
    return Prepared(TrainingExample(ex.ids[:end], ex.labels[:end], [ex.media[i] for i in media],
                                    [ex.blocks[i] for i in mine]),
                    [prepared.media_keys[i] for i in media], [prepared.block_keys[i] for i in mine])


@torch.no_grad()
def collect_states(model: Any, prepared: Sequence[Any], collate: Any, *, batch_size: int = 16,
                   desc: str = "signal states", modality: Modality | None = None) -> dict[Modality, States]:
    """One teacher-forced pass of the (frozen) model over `prepared` examples with captioned blocks (of
    `modality` only, when given), blocks in the examples' order. The pass runs each example only through its
    last such block, batches examples of about the same length (little padding) and skips the LM head: the
    states are the ones the whole records give, in a fraction of the time (`scripts/bench_training_inputs.py`)."""
    num_tokens = {spec.modality: spec.num_signal_tokens for spec in model.cfg.decoders}
    cut = [through_last_block(p, num_tokens, modality) for p in prepared]
    captions: dict[Modality, list[str]] = {}
    previous: dict[Modality, list[str | None]] = {}
    first: list[dict[Modality, int]] = []  # per example: the index of its first block of each modality
    for p in cut:
        first.append({m: len(captions.get(m, [])) for m in num_tokens})
        last: dict[Modality, str] = {}
        for m, caption in p.block_keys:
            captions.setdefault(m, []).append(caption)
            previous.setdefault(m, []).append(last.get(m))
            last[m] = caption
    order = sorted(range(len(cut)), key=lambda i: -len(cut[i].example.ids))
    parts: dict[Modality, dict[str, list]] = {}
    for i in tqdm(range(0, len(order), batch_size), desc=desc, mininterval=10):
        rows = order[i : i + batch_size]
        batch = collate([cut[r] for r in rows])
        _, states = model.signal_states(batch, logits=False)
        for m, (h, e) in states.items():
            acc = parts.setdefault(m, {"h": [], "e": [], "t": [], "at": []})
            acc["h"].append(h.float().cpu())
            acc["e"].append(e.float().cpu())
            acc["t"].append(batch["block_targets"][m].float().cpu())
            for r in rows:  # where each block of this batch goes in the examples' order
                k = sum(b == m for b, _ in cut[r].block_keys)
                acc["at"] += range(first[r][m], first[r][m] + k)
    out = {}
    for m, a in parts.items():
        back = torch.argsort(torch.tensor(a["at"]))
        out[m] = States(torch.cat(a["h"])[back], torch.cat(a["e"])[back], torch.cat(a["t"])[back], captions[m],
                        previous[m])
    return out


@torch.no_grad()
def measure(projector: torch.nn.Module, states: States, candidates: dict[str, torch.Tensor],
            modality: Modality | None = None) -> dict[str, float]:
    """MSE to the targets and nearest-caption accuracy among `candidates` (caption -> encoding); with the
    modality, also per caption word (how often the nearest caption has the asked-for colour, pitch, ...)."""
    dtype = next(projector.parameters()).dtype
    pred = torch.cat([projector(states.hidden[i : i + 256].to(dtype), states.embeds[i : i + 256].to(dtype)).float()
                      for i in range(0, len(states.captions), 256)])
    names = sorted(candidates)
    bank = torch.stack([candidates[c] for c in names]).flatten(1)  # (C, D)
    dist = torch.cdist(pred.flatten(1), bank)  # (N, C)
    nearest = [names[j] for j in dist.argmin(1).tolist()]
    right = sum(a == b for a, b in zip(nearest, states.captions))
    out = {"mse": float(torch.nn.functional.mse_loss(pred, states.targets)), "nearest_caption_accuracy":
           right / max(1, len(states.captions)), "n": len(states.captions), "candidates": len(names)}
    if modality is not None:  # which words of the caption the nearest one gets right (colour, direction, ...)
        pairs = [(parse_caption(a, modality.value), parse_caption(b, modality.value))
                 for a, b in zip(nearest, states.captions)]
        for attribute in (pairs[0][1] if pairs else {}):
            out[f"nearest_{attribute}_accuracy"] = sum(g[attribute] == w[attribute] for g, w in pairs) / len(pairs)
    edits = states.edits()
    if edits:  # the blocks whose caption changed from the last one of the dialogue
        out["edit_blocks"] = len(edits)
        out["edit_nearest_caption_accuracy"] = sum(nearest[i] == states.captions[i] for i in edits) / len(edits)
    return out


def input_statistics(states: States) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation of the projector's input (hidden + token embedding), (H,) each."""
    x = (states.hidden + states.embeds).flatten(0, 1)  # (N * n, H)
    return x.mean(0), x.std(0).clamp(min=1e-3)


class _Standardize(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@contextmanager
def standardized_input(projector: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor, *, fresh: bool = False):
    """Inside the block the projector's input layer `fc` acts on (x - mean) / std through a layer W', b' of the
    same function (W' = W diag(std), b' = b + W mean), or a fresh one; on leaving, W', b' are folded back into
    `fc` (W = W' / std, b = b' - W mean): same module, same keys, the function trained inside."""
    fc = projector.fc
    dtype = fc.weight.dtype
    mean, std = mean.to(dtype), std.to(dtype)
    inner = torch.nn.Linear(fc.in_features, fc.out_features, dtype=dtype)
    if not fresh:
        with torch.no_grad():
            inner.weight.copy_(fc.weight * std)
            inner.bias.copy_(fc.bias + fc.weight @ mean)
    projector.fc = torch.nn.Sequential(_Standardize(mean, std), inner)
    try:
        yield projector
    finally:
        with torch.no_grad():
            fc.weight.copy_(inner.weight / std)
            fc.bias.copy_(inner.bias - fc.weight @ mean)
        projector.fc = fc


def reinitialise(projector: torch.nn.Module) -> None:
    """Fresh default initialisation of every layer of the projector (the query embeddings are kept)."""
    for module in projector.modules():
        if module is not projector and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def fit(projector: torch.nn.Module, states: States, args: AlignArgs, desc: str = "align",
        run_dir: Path | None = None, *, stop_after: int | None = None) -> list[dict[str, float]]:
    """The loop's AdamW (betas 0.9/0.95) with warm-up + cosine on the cached states; returns the loss every 100
    steps of this run. Batches are shuffled epochs of the states, fixed by the seed: resumable from `run_dir`
    (`stop_after` saves the state there and returns, as a killed process would have)."""
    from nextgpt.training.loop import Batch, LoopSettings
    from nextgpt.training.loop import fit as loop_fit

    projector.requires_grad_(True)
    dtype = next(projector.parameters()).dtype
    n = len(states.captions)
    settings = LoopSettings(steps=args.steps, batch_size=min(args.batch_size, n), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=args.weight_decay, warmup=min(100, args.steps // 10), seed=args.seed,
                            save_every=500, log_every=100)

    def loss_fn(batch: Batch) -> dict[str, torch.Tensor]:
        pred = projector(states.hidden[batch.index].to(dtype), states.embeds[batch.index].to(dtype))
        return {"loss": torch.nn.functional.mse_loss(pred.float(), states.targets[batch.index])}

    fitted = loop_fit(desc, projector, loss_fn, n, settings, run_dir, stop_after=stop_after)
    projector.eval().requires_grad_(False)
    return [{"step": r["step"], "mse": r["loss"]} for r in fitted.history
            if r["step"] % 100 == 0 or r["step"] == args.steps]


def _state_inputs(checkpoint: Path) -> list[tuple[str, int, int]]:
    """(file, size, mtime) of every checkpoint part the signal states depend on: the LoRA, the signal-token rows,
    and the input projection (MosIT turns upload media). A change to any of them invalidates the cached states."""
    from nextgpt.loading import INPUT_PROJECTION, LORA_DIR, TOKEN_ROWS

    files = [checkpoint / INPUT_PROJECTION, checkpoint / TOKEN_ROWS]
    files += sorted((checkpoint / LORA_DIR).glob("*")) if (checkpoint / LORA_DIR).is_dir() else []
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]


def align_projectors(args: AlignArgs) -> dict[str, Any]:
    from nextgpt.loading import save_checkpoint
    from nextgpt.model import NextGPT
    from nextgpt.training.loop import on_main

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = NextGPT.from_preset("nano", folder=args.checkpoint, merge_lora=True)
    if model.decoders is None:
        raise FileNotFoundError(f"{args.checkpoint}/decoders missing: the caption targets come from the decoders")
    limit = 4 if args.smoke else args.limit
    args.run_dir.mkdir(parents=True, exist_ok=True)
    cache = args.run_dir / "states.pt"
    chosen = None if args.modality == "all" else Modality(args.modality)
    key = {"version": STATES_VERSION, "checkpoint": str(args.checkpoint), "limit": limit, "max_len": args.max_len, "modality": args.modality,
           "seed": args.seed, "inputs": _state_inputs(args.checkpoint)}
    cached = torch.load(cache, weights_only=False) if cache.is_file() and not args.smoke else None
    if cached is not None and cached.get("key") == key:
        train, val = cached["train"], cached["val"]
        log.info("signal states from %s", cache)
    else:
        train = split_states(model, args.data, "train", limit, args.max_len, chosen, args.seed)
        val = split_states(model, args.data, "val", max(1, (limit or 400) // 4), args.max_len, chosen, args.seed)
        if not args.smoke:
            on_main(lambda: torch_save({"key": key, "train": train, "val": val}, cache))
        # a saved alignment state belongs to the states it trained on: new states start every projector afresh
        on_main(lambda: [shutil.rmtree(args.run_dir / m.value / "state", ignore_errors=True) for m in Modality])
    summary: dict[str, Any] = {"args": {k: str(v) for k, v in asdict(args).items()}, "modalities": {}}
    steps = 5 if args.smoke else args.steps
    run_args = AlignArgs(**{**asdict(args), "steps": steps})
    for modality, states in train.items():
        if modality not in val or chosen not in (None, modality):
            continue
        candidates = {}
        for part in (train[modality], val[modality]):
            for c, t in zip(part.captions, part.targets):
                candidates.setdefault(c, t)
        projector = model.output_projectors[modality.value]
        before = measure(projector, val[modality], candidates, modality)
        if args.fresh:
            reinitialise(projector)
        if args.standardize:
            with standardized_input(projector, *input_statistics(states), fresh=args.fresh):
                history = fit(projector, states, run_args, f"align {modality.value}", args.run_dir / modality.value)
        else:
            history = fit(projector, states, run_args, f"align {modality.value}", args.run_dir / modality.value)
        after = measure(projector, val[modality], candidates, modality)
        summary["modalities"][modality.value] = {"train_blocks": len(states.captions), "before": before,
                                                 "after": after, "history": history}
        log.info("%s projector: val %s -> %s", modality.value, before, after)
    summary["seconds"] = time.perf_counter() - t0
    on_main(lambda: (save_checkpoint(model, args.checkpoint, parts=("output",)),
                     write_json(args.run_dir / "summary.json", summary)))
    return summary


def parse_args(argv: Sequence[str] | None = None) -> AlignArgs:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in asdict(AlignArgs()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):  # --standardize / --no-standardize, default as in AlignArgs
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = Path if isinstance(default, Path) else (int if name == "limit" else type(default))
            ap.add_argument(flag, type=kind, default=default)
    return AlignArgs(**vars(ap.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = align_projectors(parse_args(argv))
    print(json.dumps({m: {"before": v["before"], "after": v["after"]} for m, v in summary["modalities"].items()}))
    end_processes()
