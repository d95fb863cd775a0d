"""A tiny trainer for tests/test_loop.py to run under `accelerate launch` (or plainly, as one process).

    python tests/loop_worker.py regression RUN_DIR [--stop-after N]   # a 2-layer MLP on a fixed regression
        [--functional]                                                # its first layer as F.linear of the weights
    python tests/loop_worker.py stage RUN_DIR [--plan stage1]          # loop.train: stage 2 on the tiny NextGPT
    python tests/loop_worker.py decoders RUN_DIR --world WORLD         # the image decoder's parts, smoke sizes

Every process writes what it saw to RUN_DIR/../seen-<process>.json, outside the run folder (the test's window
into the processes); the loop itself must write into RUN_DIR from the main process only.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from nextgpt.training.loop import Batch, LoopSettings, Processes, end_processes, fit  # noqa: E402

SETTINGS = LoopSettings(steps=6, batch_size=8, lr=0.05, warmup=2, ema_decay=0.9, save_every=2, log_every=1, seed=3)


def regression(run_dir: Path, stop_after: int | None, functional: bool = False) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=gen)
    y = x @ torch.randn(5, 2, generator=gen) + 0.1 * torch.randn(40, 2, generator=gen)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    seen: list[list[int]] = []
    held: list[int] = []  # the first layer's weight elements this process held during training

    def loss_fn(batch: Batch) -> dict[str, torch.Tensor]:
        seen.append(batch.index.tolist())
        weight = model[0].weight
        held.append(weight.to_local().numel() if hasattr(weight, "to_local") else weight.numel())
        if functional:  # reads the weights instead of calling forward: sharded, they are never gathered
            hidden = torch.nn.functional.linear(x[batch.index], model[0].weight, model[0].bias)
            return {"loss": (model[2](model[1](hidden)) - y[batch.index]).pow(2).mean()}
        return {"loss": (model(x[batch.index]) - y[batch.index]).pow(2).mean()}

    fitted = fit("regression", model, loss_fn, len(x), SETTINGS, run_dir, stop_after=stop_after)
    return {"seen": seen, "summary": fitted.summary, "held": held,
            "weights": {k: v.tolist() for k, v in fitted.module.state_dict().items()}}


def stage(run_dir: Path, plan: str) -> dict:
    from nextgpt.tiny import tiny_model
    from nextgpt.training.loop import RunConfig, train
    from nextgpt.training.plans import PLANS
    from test_training import examples

    torch.manual_seed(0)
    model = tiny_model()
    prepared, collate = examples(model)
    run = RunConfig(out=run_dir / "ckpt", run_dir=run_dir, steps=4, batch_size=4, lr=3e-3, save_every=2,
                    log_every=1)
    result = train(model, PLANS[plan], prepared, collate, run)
    return {"losses": [r["loss"] for r in result["history"]]}


def decoders(run_dir: Path, world: Path) -> dict:
    from nextgpt.training.decoders import DecoderTrainArgs, run

    args = DecoderTrainArgs(data=world, out=run_dir / "ckpt", run_dir=run_dir, modality="image", smoke=True,
                            limit=4, threads=1)
    results = run(args)
    return {"parts": sorted(results), "final": {k: v.get("final") for k, v in results.items() if "final" in v}}


def main() -> None:
    faulthandler.enable()  # a fatal signal (an abort in gloo) prints where every thread was
    faulthandler.dump_traceback_later(240, exit=True)  # a stuck collective fails the test, with the stacks
    ap = argparse.ArgumentParser()
    ap.add_argument("trainer", choices=("regression", "stage", "decoders"))
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--stop-after", type=int, default=None)
    ap.add_argument("--world", type=Path, default=None)
    ap.add_argument("--plan", default="stage2")
    ap.add_argument("--functional", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.trainer == "regression":
        out = regression(a.run_dir, a.stop_after, a.functional)
    else:
        out = stage(a.run_dir, a.plan) if a.trainer == "stage" else decoders(a.run_dir, a.world)
    processes = Processes()
    out["processes"] = processes.count
    (a.run_dir.parent / f"seen-{processes.index}.json").write_text(json.dumps(out))
    end_processes()  # several processes end here, without the interpreter's teardown
    (a.run_dir.parent / f"after-{processes.index}.json").write_text("{}")


if __name__ == "__main__":
    main()
