"""The one training loop every trainer uses: the LLM stages, the encoder, the decoders, the projector alignment.

    module, summary = fit("vae", vae, loss_fn, len(media.units), LoopSettings(steps=700, batch_size=8, lr=1e-3),
                          run_dir=Path("runs/decoders/image/vae"))

A trainer supplies the module and a loss function of one step's `Batch` (this process's example indices, the
step number and a generator for the step's random draws); the loop owns the rest: AdamW, the learning-rate
schedule (warm-up + cosine, optionally ending with a time budget), gradient clipping, an optional EMA of the
weights, the data order, a tqdm bar, ``log.jsonl`` and ``summary.json``, and atomic resumable state.

Resuming: ``<run_dir>/state`` holds the trainable weights, the EMA, the optimiser, the seconds trained, the
step and torch's global generator (dropout draws from it). The examples of step k come from `data_order(seed)`
and the loss's own random draws from a generator seeded by (seed, k), so a resumed run ends with the weights an
uninterrupted one ends with.

Several processes (``accelerate launch --num_processes N``, gloo on CPU, NCCL on GPUs): each process takes its
1/N of every step's global batch (`batch_size` must divide by N), gradients are averaged across processes
before the clip and the optimiser step, so N processes take the steps one process takes with the same global
batch; only the main process writes files. A trainer whose loss draws random numbers gets a generator per
(step, process): the same distribution, not the same draws, as one process.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm import tqdm

from nextgpt import files
from nextgpt.training.plans import StagePlan

log = logging.getLogger(__name__)

T = TypeVar("T")
STATE = "state"  # <run_dir>/state: the resumable training state
SCHEDULES = ("cosine", "cosine_from_start")


@dataclass(frozen=True)
class LoopSettings:
    """How one training run goes; every trainer fills one in."""

    steps: int  # optimiser steps (at most: a time budget may end the run first)
    batch_size: int  # examples per step, over all processes (the first stream's; see `Stream`)
    lr: float  # peak learning rate
    warmup: int = 0  # linear warm-up steps
    schedule: str = "cosine"  # "cosine": transformers' get_cosine_schedule_with_warmup (0 -> lr over the warm-up,
    # then cosine to 0 over the remaining steps); "cosine_from_start": min(1, (step + 1) / warmup) x a cosine over
    # all steps (the encoder's)
    max_minutes: float | None = None  # time budget: the cosine reaches 0 at `steps` or here, whichever comes first
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    weight_decay: float = 0.0  # AdamW (a parameter group may set its own)
    ema_decay: float = 0.0  # exponential moving average of the weights, warmed up as diffusers' EMAModel (0 = none)
    grad_clip: float = 1.0  # max global gradient norm (0 = no clipping)
    save_every: int = 50  # resumable state every N steps (and at the end)
    log_every: int = 10  # a log.jsonl row every N steps (and at the end)
    seed: int = 0  # data order and per-step random draws

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r}: one of {SCHEDULES}")
        if self.steps < 1 or self.batch_size < 1 or self.save_every < 1 or self.log_every < 1:
            raise ValueError(f"steps, batch_size, save_every and log_every must be >= 1: {self}")


@dataclass(frozen=True)
class Stream:
    """One kind of example a step draws from (the encoder draws images, sounds and videos at once)."""

    n: int  # examples
    batch_size: int  # examples per step, over all processes


@dataclass
class Batch:
    """What the loss function gets for one step."""

    step: int  # 0-based
    index: Tensor  # (B / processes,) this process's examples of the first stream
    streams: dict[str, Tensor]  # every stream's share, by name
    generator: torch.Generator  # the step's random draws, seeded by (seed, step, process)
    process: int = 0
    processes: int = 1


LossFn = Callable[[Batch], dict[str, Tensor]]  # -> {"loss": scalar to minimise, other scalars to log}


def data_order(n: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """Example indices for every step: shuffled epochs, fixed by the seed (so resuming sees the same order)."""
    rng = np.random.default_rng(seed)
    need = steps * batch_size
    chunks = [rng.permutation(n) for _ in range(-(-need // n))]
    return np.concatenate(chunks)[:need].reshape(steps, batch_size)


class EMA:
    """Exponential moving average of a module's weights, warmed up as in diffusers' EMAModel."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for shadow, param in zip(self.shadow.parameters(), module.parameters()):
            shadow.lerp_(param.detach(), 1.0 - decay)
        for shadow, buf in zip(self.shadow.buffers(), module.buffers()):
            shadow.copy_(buf)


def lr_factor(settings: LoopSettings, step: int, warmup: int, seconds: float) -> float:
    """The fraction of the peak learning rate at 0-based `step` after `seconds` of training."""
    time_done = seconds / (settings.max_minutes * 60) if settings.max_minutes else 0.0
    if settings.schedule == "cosine":
        if step < warmup:
            return step / max(1, warmup)
        done = max((step - warmup) / max(1, settings.steps - warmup), time_done)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, done))))
    warm = min(1.0, (step + 1) / max(1, warmup))
    return warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(step / settings.steps, time_done))))


# ---- processes --------------------------------------------------------------------------------------
class Processes:
    """This process's place among the ones `accelerate launch` started (one when run plainly)."""

    def __init__(self) -> None:
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())
        self.index, self.count, self.device = state.process_index, state.num_processes, state.device
        self.main = state.is_main_process
        self._state = state

    def wait(self) -> None:
        if self.count > 1:
            self._state.wait_for_everyone()

    def share(self, indices: np.ndarray) -> np.ndarray:
        """This process's contiguous share of a step's global batch."""
        return np.array_split(indices, self.count)[self.index] if self.count > 1 else indices

    def average_grads(self, params: Sequence[nn.Parameter]) -> None:
        """Average the gradients over the processes (one all-reduce of them all, flattened). A parameter no
        process gave a gradient keeps none (AdamW leaves it alone, as it does in one process)."""
        if self.count == 1:
            return
        had = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self._device_of(params))
        torch.distributed.all_reduce(had)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch.distributed.all_reduce(flat)
        flat /= self.count
        offset = 0
        for p, count in zip(params, had.tolist()):
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()
            if count == 0:
                p.grad = None

    def mean(self, values: dict[str, Tensor]) -> dict[str, float]:
        """Each logged scalar averaged over the processes that have it (a batch without media has no l2)."""
        local = {k: float(v.detach().float()) for k, v in values.items()}
        if self.count == 1:
            return local
        gathered: list[dict[str, float] | None] = [None] * self.count
        torch.distributed.all_gather_object(gathered, local)
        keys = list(dict.fromkeys(k for g in gathered for k in g))
        return {k: sum(g[k] for g in gathered if k in g) / sum(k in g for g in gathered) for k in keys}

    def _device_of(self, params: Sequence[nn.Parameter]) -> torch.device:
        return params[0].device if params else torch.device("cpu")

    def from_main(self, value: float) -> float:
        """The main process's value (the seconds trained: every process must stop at the same step)."""
        if self.count == 1:
            return value
        box = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.broadcast(box, 0)
        return float(box)


def main_first(make: Callable[[], T]) -> T:
    """`make()` on the main process, then on the others: the main one writes a cache that the others then read."""
    processes = Processes()
    if processes.main:
        made = make()
    processes.wait()
    if not processes.main:
        made = make()
    return made


def on_main(write: Callable[[], Any]) -> None:
    """`write()` on the main process only; every process waits until it is done."""
    processes = Processes()
    if processes.main:
        write()
    processes.wait()


# ---- the resumable state ----------------------------------------------------------------------------
def _trainable(module: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}


def save_state(run_dir: Path, step: int, module: nn.Module, opt: torch.optim.Optimizer, *, seconds: float = 0.0,
               ema: EMA | None = None) -> None:
    """Atomic: written to a temporary folder, then renamed over the previous state."""
    with files.atomic_folder(run_dir / STATE) as tmp:
        files.save_tensors(_trainable(module), tmp / "trainable.safetensors")
        if ema is not None:
            files.save_tensors(ema.shadow.state_dict(), tmp / "ema.safetensors")
        torch.save({"optimizer": opt.state_dict(), "step": step, "seconds": seconds,
                    "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")


def load_state(run_dir: Path, module: nn.Module, opt: torch.optim.Optimizer, *,
               ema: EMA | None = None) -> tuple[int, float]:
    """(step, seconds trained) of the saved state, loaded into `module`, `opt` and `ema`; (0, 0) if none."""
    folder = files.readable_folder(run_dir / STATE, "optimizer.pt")
    if folder is None:
        return 0, 0.0
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in load_file(folder / "trainable.safetensors").items():
            params[name].copy_(value)
    if ema is not None:
        ema.shadow.load_state_dict(load_file(folder / "ema.safetensors"))
    extra = torch.load(folder / "optimizer.pt", weights_only=True)
    opt.load_state_dict(extra["optimizer"])
    torch.set_rng_state(extra["torch_rng"])
    return int(extra["step"]), float(extra.get("seconds", 0.0))


# ---- the loop ---------------------------------------------------------------------------------------
@dataclass
class Fitted:
    """What `fit` returns."""

    module: nn.Module  # the trained module (the EMA's copy when `ema_decay` > 0)
    summary: dict[str, Any]  # as written to summary.json; with "stopped_at" when `stop_after` ended the run
    history: list[dict[str, Any]] = field(default_factory=list)  # every step's row of this run


def _check_same_settings(name: str, run_dir: Path, settings: LoopSettings) -> None:
    """A state resumes only under the settings it was trained with (steps, batch and seed fix the data order)."""
    path = run_dir / "settings.json"
    if not path.is_file():
        return
    before = json.loads(path.read_text())
    now = json.loads(json.dumps(asdict(settings)))
    changed = sorted(k for k in now.keys() | before.keys() if before.get(k) != now.get(k))
    if changed:
        raise ValueError(f"{name}: {run_dir} holds a state trained with other settings ("
                         + ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
                         + "): give the run another folder, or move this one away to start afresh")


def fit(
    name: str,
    module: nn.Module,
    loss_fn: LossFn,
    examples: int | Mapping[str, Stream],
    settings: LoopSettings,
    run_dir: Path | None,
    *,
    param_groups: list[dict[str, Any]] | None = None,
    warmup: int | None = None,
    after_step: Callable[[int, dict[str, Any]], bool] | None = None,
    stop_after: int | None = None,
) -> Fitted:
    """Train `module` on `loss_fn` for `settings.steps` steps (resuming from `run_dir`'s state if there is one).

    examples: how many examples there are (a single stream of `settings.batch_size` per step), or named streams.
    run_dir: state, log.jsonl, settings.json and summary.json; None trains in memory (nothing written, no resume).
    param_groups: AdamW's groups (default: every parameter that requires grad, `settings.weight_decay`).
    warmup: warm-up steps (default `settings.warmup`).
    after_step: called on the main process with (step, row) after every step; True logs the row whatever the step.
    stop_after: save the state and return after this step (the tests' stand-in for a killed process).
    """
    processes = Processes()
    streams = {"": Stream(examples, settings.batch_size)} if isinstance(examples, int) else dict(examples)
    for key, stream in streams.items():
        if stream.batch_size % processes.count:
            raise ValueError(f"{name}: batch size {stream.batch_size} of {key or 'the examples'} does not divide "
                             f"among {processes.count} processes")
    groups = param_groups or [{"params": [p for p in module.parameters() if p.requires_grad]}]
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)
    for group in opt.param_groups:
        group["peak_lr"] = group["lr"]
    warmup = settings.warmup if warmup is None else warmup
    ema = EMA(module, settings.ema_decay) if settings.ema_decay > 0 else None
    writes = run_dir is not None and processes.main
    start, seconds = load_state(run_dir, module, opt, ema=ema) if run_dir is not None else (0, 0.0)
    if start:
        _check_same_settings(name, run_dir, settings)
        log.info("%s: resuming at step %d", name, start)
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        files.write_json(run_dir / "settings.json", asdict(settings))
    orders = {key: torch.from_numpy(data_order(s.n, settings.steps, s.batch_size, settings.seed + 1000 * k))
              for k, (key, s) in enumerate(streams.items())}
    module.train()
    history: list[dict[str, Any]] = []
    row: dict[str, Any] = {}
    logged = True
    ended_by = "steps"
    t0 = time.perf_counter()
    bar = tqdm(total=settings.steps, initial=start, desc=name, disable=None if processes.main else True,
               mininterval=10)
    logf = open(run_dir / "log.jsonl", "a") if writes else None
    step, last = start, time.perf_counter()

    def tick() -> float:  # the wall time trained so far (evaluations and saves included, as a budget counts them)
        nonlocal seconds, last
        now = time.perf_counter()
        seconds, last = seconds + now - last, now
        return seconds

    try:
        while step < settings.steps:
            tick()
            if settings.max_minutes:  # every process goes by the main one's clock: all stop at the same step
                seconds = processes.from_main(seconds)
            if settings.max_minutes and seconds >= settings.max_minutes * 60:
                ended_by = "time budget"
                log.info("%s: time budget of %.1f min used up after %d steps", name, settings.max_minutes, step)
                break
            factor = lr_factor(settings, step, warmup, seconds)
            for group in opt.param_groups:
                group["lr"] = group["peak_lr"] * factor
            shares = {key: torch.from_numpy(processes.share(order[step].numpy())) for key, order in orders.items()}
            seed = (settings.seed * 1_000_003 + step) * processes.count + processes.index
            batch = Batch(step, next(iter(shares.values())), shares, torch.Generator().manual_seed(seed),
                          processes.index, processes.count)
            losses = loss_fn(batch)
            losses["loss"].backward()
            processes.average_grads(params)
            values = processes.mean(losses)
            if not math.isfinite(values["loss"]):
                raise FloatingPointError(f"{name}: loss is {values['loss']} at step {step + 1}")
            if settings.grad_clip:
                nn.utils.clip_grad_norm_(params, settings.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(module, step)
            step += 1
            row = {"step": step, **values,
                   "lr": opt.param_groups[0]["lr"], "seconds": round(seconds, 2)}
            history.append(row)
            # the postfix is drawn with the bar, every `mininterval` s: refreshing it here redrew the bar every step
            bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k not in ("step", "lr", "seconds")},
                            refresh=False)
            bar.update()
            force = bool(after_step(step, row)) if after_step is not None and processes.main else False
            logged = False
            if logf is not None and (force or step % settings.log_every == 0 or step == settings.steps):
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                logged = True
            stopping = stop_after is not None and step >= stop_after and step < settings.steps
            if run_dir is not None and (step % settings.save_every == 0 or step == settings.steps or stopping):
                if processes.main:
                    save_state(run_dir, step, module, opt, seconds=tick(), ema=ema)
                processes.wait()
            if stopping:
                return Fitted(module, {"name": name, "stopped_at": step, "final": row}, history)
        if logf is not None and row and not logged:  # ended by the time budget between two log rows
            logf.write(json.dumps(row) + "\n")
        if run_dir is not None and ended_by != "steps" and step % settings.save_every:
            if processes.main:
                save_state(run_dir, step, module, opt, seconds=seconds, ema=ema)
            processes.wait()
    finally:
        bar.close()
        if logf is not None:
            logf.close()
    module.eval()
    summary = {"name": name, "steps": step, "planned_steps": settings.steps, "ended_by": ended_by,
               "seconds": round(seconds, 1), "seconds_this_run": round(time.perf_counter() - t0, 1),
               "processes": processes.count, "final": row or _last_logged(run_dir)}
    if writes:
        files.write_json(run_dir / "summary.json", summary)
    return Fitted(ema.shadow if ema is not None else module, summary, history)


def _last_logged(run_dir: Path | None) -> dict[str, Any] | None:
    """The last log.jsonl row of a run that had nothing left to train when it was started again."""
    path = None if run_dir is None else run_dir / "log.jsonl"
    if path is None or not path.is_file():
        return None
    lines = path.read_text().splitlines()
    return json.loads(lines[-1]) if lines else None


# ---- the LLM stages ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """Where an LLM stage reads and writes, and how long it goes."""

    out: Path  # checkpoint folder that receives the trained parts (e.g. checkpoints/nano)
    run_dir: Path  # resumable state and logs
    steps: int
    batch_size: int
    lr: float
    seed: int = 0
    save_every: int = 50
    log_every: int = 10


def set_trainable(model: Any, plan: StagePlan) -> list[dict[str, Any]]:
    """Freeze everything, then unfreeze what the plan trains. Returns optimizer parameter groups."""
    model.requires_grad_(False)
    groups: list[dict[str, Any]] = []
    if "lora" in plan.trains:
        if not hasattr(model.llm, "peft_config"):
            model.add_lora()
        lora = [p for n, p in model.llm.named_parameters() if "lora_" in n]
        for p in lora:
            p.requires_grad_(True)
        groups.append({"params": lora, "name": "lora"})
    if "input_proj" in plan.trains:
        model.input_proj.requires_grad_(True)
        groups.append({"params": list(model.input_proj.parameters()), "name": "input_proj"})
    if "output_proj" in plan.trains:
        model.output_projectors.requires_grad_(True)
        groups.append({"params": list(model.output_projectors.parameters()), "name": "output_proj"})
    if "token_rows" in plan.trains:
        weight = model.llm.get_input_embeddings().weight
        weight.requires_grad_(True)
        base = model.cfg.llm.base_vocab_size
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        mask[base:] = 1.0
        weight.register_hook(lambda g: g * mask)  # only the added tokens' rows learn
        groups.append({"params": [weight], "name": "token_rows", "weight_decay": 0.0})
        out = model.llm.get_output_embeddings()
        if out is not None and out.weight is not weight:
            out.weight.requires_grad_(True)
            out.weight.register_hook(lambda g: g * mask)
            groups.append({"params": [out.weight], "name": "lm_head_rows", "weight_decay": 0.0})
    return groups


def train(
    model: Any,
    plan: StagePlan,
    examples: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, Any]],
    run: RunConfig,
    *,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train `plan` on `examples` for `run.steps` steps (AdamW betas 0.9/0.95, weight decay 0.001, warm-up +
    cosine, clip 1.0); write the plan's parts to `run.out` (from the main process)."""
    from nextgpt.loading import save_checkpoint

    torch.manual_seed(run.seed)
    groups = set_trainable(model, plan)
    model.to(Processes().device)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if Processes().main:
        files.write_json(run.run_dir / "run.json", {"plan": asdict(plan),
                                                    "run": {k: str(v) for k, v in asdict(run).items()}})
    settings = LoopSettings(steps=run.steps, batch_size=run.batch_size, lr=run.lr, warmup=min(plan.warmup,
                            run.steps // 5), betas=(0.9, 0.95), weight_decay=0.001, save_every=run.save_every,
                            log_every=run.log_every, seed=run.seed)

    def loss_fn(batch: Batch) -> dict[str, Tensor]:
        return model(collate([examples[i] for i in batch.index.tolist()]), l2_weight=plan.l2_weight)

    fitted = fit(plan.name, model, loss_fn, len(examples), settings, run.run_dir, param_groups=groups,
                 stop_after=stop_after)
    if "stopped_at" in fitted.summary:
        return {"stopped_at": fitted.summary["stopped_at"], "history": fitted.history}
    if Processes().main:
        save_checkpoint(model, run.out, parts=plan.saves)
    Processes().wait()
    summary = {"stage": plan.name, "steps": fitted.summary["steps"], "seconds": fitted.summary["seconds"],
               "final": fitted.summary["final"]}
    return {"history": fitted.history, **summary}
