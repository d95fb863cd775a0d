"""Time what the LLM-side steps compute before they train: upload features and the alignment's signal states.

    python scripts/bench_training_inputs.py --checkpoint checkpoints/nano --data data/world --limit 200 --threads 1

1. Upload features of stage 3's train records: encoded from scratch into a features file (in a temporary folder,
   as `training.data.features_cache` keeps them), then read back from it, which is what stage 3's later parts,
   stage1_video and the alignment do once an earlier step has encoded the files. Prints both times.
2. Signal states: the plain pass runs every record whole, in the data's order, through the LLM with its LM head
   (what `NextGPT.forward` does); `projectors.collect_states` cuts each record after its last signal block of the
   modality, batches records of about the same length and skips the LM head. Both run, per modality, on the train
   records with a block of it (`--limit` per record kind, drawn at random as the alignment draws them). Prints
   each one's seconds and the largest difference between the two passes' states.

The recipe runs the LLM-side steps on one thread (`--threads 1`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


@torch.no_grad()
def plain_states(model, prepared, collate, batch_size: int = 16) -> dict:
    """Every record whole, in order, with the LM head."""
    parts: dict = {}
    for i in range(0, len(prepared), batch_size):
        batch = collate(prepared[i : i + batch_size])
        _, states = model.signal_states(batch)
        for m, (h, e) in states.items():
            parts.setdefault(m, ([], []))
            parts[m][0].append(h.float())
            parts[m][1].append(e.float())
    return {m: (torch.cat(h), torch.cat(e)) for m, (h, e) in parts.items()}


def main() -> None:
    import random

    from nextgpt.config import Modality
    from nextgpt.model import NextGPT
    from nextgpt.training.data import Collator, compute_features, compute_targets, load_kind, prepare
    from nextgpt.training.plans import PLANS
    from nextgpt.training.projectors import KINDS, collect_states

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("checkpoints/nano"))
    ap.add_argument("--data", type=Path, default=Path("data/world"))
    ap.add_argument("--limit", type=int, default=200, help="records per kind (generation, t2m, mosit)")
    ap.add_argument("--max-len", type=int, default=192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", choices=("features", "states"), action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = NextGPT.from_preset("nano", folder=args.checkpoint, merge_lora=True)
    if "features" not in args.skip:
        plan = PLANS["stage3"]
        prepared = prepare([c for kind in plan.data if kind != "general" for c in load_kind(args.data, "train", kind)],
                           model.builder, plan.max_len)
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "features.pt"
            t0 = time.perf_counter()
            cold = compute_features(model.encoder, prepared, cache=cache)
            t_cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            compute_features(model.encoder, prepared, cache=cache)
            t_warm = time.perf_counter() - t0
        print(f"features of stage 3's uploads ({len(cold)} files, {len(prepared)} records): encoded {t_cold:.1f} s, "
              f"from the features file {t_warm:.1f} s ({args.threads} threads)", flush=True)
    if "states" in args.skip:
        return
    records = {kind: [p for p in prepare(load_kind(args.data, "train", kind), model.builder, args.max_len)
                      if p.block_keys] for kind in KINDS}
    totals = [0.0, 0.0]
    for modality in Modality:
        prepared = []
        for kind, kept in records.items():
            kept = [p for p in kept if any(m == modality for m, _ in p.block_keys)]
            prepared += random.Random(0).sample(kept, min(args.limit, len(kept)))
        collate = Collator(model.tokenizer.pad_token_id or 0, compute_features(model.encoder, prepared),
                           compute_targets(model.decoders, prepared))
        t0 = time.perf_counter()
        h, e = plain_states(model, prepared, collate)[modality]
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        fast = collect_states(model, prepared, collate, modality=modality)[modality]
        t_fast = time.perf_counter() - t0
        totals[0] += t_plain
        totals[1] += t_fast
        tokens = sum(len(p.example.ids) for p in prepared)
        print(f"{modality.value}: {len(prepared)} records ({tokens} tokens), {len(h)} blocks: plain {t_plain:.1f} s, "
              f"collect_states {t_fast:.1f} s ({t_fast / t_plain:.2f}); largest difference: hidden "
              f"{(fast.hidden - h).abs().max():.1e} (largest value {h.abs().max():.1f}), embeddings "
              f"{(fast.embeds - e).abs().max():.1e}", flush=True)
    print(f"in all ({args.threads} threads): plain {totals[0]:.1f} s, collect_states {totals[1]:.1f} s "
          f"({totals[1] / totals[0]:.2f} of the time)")


if __name__ == "__main__":
    main()
