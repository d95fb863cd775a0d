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

Sharded (``accelerate launch --config_file nextgpt/configs/accelerate/fsdp.yaml``, which sets
ACCELERATE_USE_FSDP): `fit` shards the module in place with torch's `fully_shard` (FSDP2) on a mesh of all the
processes, each `shard=` submodule (default: every element of every nn.ModuleList) a unit of its own, then the
whole module; each process holds 1/N of every parameter, gradient, optimiser moment and EMA weight, and FSDP
reduce-scatters the gradients instead of the hand-made average. The state on disk and `Fitted.module` are
gathered whole, so a state written sharded resumes in one process and the other way round. What a sharded
trainer may not do is in `Sharding`'s docstring: the LLM stages and the projector alignment call only forward
and train sharded; the decoders' VAE (encode, decode) and the encoder (the text tower outside forward, an
evaluation in `after_step` on the main process alone) cannot.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, distribute_tensor
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
        # FSDP: `accelerate launch` with an FSDP config (fsdp.yaml) says so in the environment
        self.sharded = self.count > 1 and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
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


def end_processes() -> None:
    """The end of a script that `accelerate launch` started as several processes: wait for all of them, then
    leave at once with status 0, without the interpreter's teardown. During that teardown a gloo worker thread
    can still be releasing the last collective's work (`ProcessGroupGloo::runLoop` destroying an
    `AsyncAllgatherCoalescedWork`, in a core dump); its tensors need the GIL, a thread that takes it then is
    ended, and the process aborts ("terminate called without an active exception", SIGABRT), so the launcher
    reports a failed run whose work was all written. Destroying the process group does not prevent it: the
    sharded modules and meshes still hold the group. One process returns and exits as usual."""
    processes = Processes()
    if processes.count == 1:
        return
    processes.wait()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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


# ---- sharding (FSDP2) -------------------------------------------------------------------------------
def _full(t: Tensor) -> Tensor:
    """A tensor whole: a sharded one gathered from every process (collective), any other as it is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def _full_tensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: _full(v) for k, v in tensors.items()}


def _assign(target: Tensor, value: Tensor) -> None:
    """Copy a whole tensor into `target`, or into this process's shard of it when `target` is sharded."""
    if isinstance(target, DTensor):  # every process read the whole tensor: each keeps its shard, no communication
        value = distribute_tensor(value.to(target.device, target.dtype), target.device_mesh, target.placements,
                                  src_data_rank=None)
    target.copy_(value)


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (module.get_submodule(path) if path else module), leaf


class Sharding:
    """A module sharded in place over all processes with torch's `fully_shard` (FSDP2): each process holds
    1/N of every parameter, FSDP gathers a unit's parameters around its forward and backward and
    reduce-scatters the gradients (their mean over the processes) into the shards. Scalar parameters (a CLIP-style
    logit scale), which `fully_shard` cannot cut, stay whole on every process, their gradients averaged as the
    data-parallel path does.

    FSDP2 gathers a unit's parameters only around its `forward`: a loss that calls another method of a sharded
    module (a VAE's `encode`, a model's `generate`) meets sharded parameters and fails. Gradient hooks on
    parameters are refused, as `fully_shard` replaces the parameters: a parameter group's "grad_mask" does what
    a masking hook does."""

    def __init__(self, module: nn.Module, groups: list[dict[str, Any]], units: Sequence[nn.Module] | None,
                 processes: Processes):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        names = {id(p): n for n, p in module.named_parameters()}
        for group in groups:
            for p in group["params"]:
                if id(p) not in names:
                    raise ValueError("a parameter to train is not one of the module's: cannot shard it")
                if getattr(p, "_backward_hooks", None):
                    raise ValueError(f"{names[id(p)]} has a gradient hook, which sharding would drop "
                                     "(fully_shard replaces the parameters): train it unsharded (ddp.yaml)")
        # a skeleton on the meta device (no memory): the shape of the unsharded copies made later
        memo: dict[int, Any] = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
                                for p in module.parameters()}
        memo.update({id(b): torch.empty_like(b, device="meta") for b in module.buffers()})
        self.skeleton = copy.deepcopy(module, memo)
        if units is None:  # every element of every nn.ModuleList (a transformer's layers), innermost first
            lists = [m for m in module.modules() if isinstance(m, nn.ModuleList)]
            units = [u for lst in reversed(lists) for u in lst if any(True for _ in u.parameters())]
        mesh = init_device_mesh(processes.device.type, (processes.count,))
        reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() != "false"
        scalars = {p for p in module.parameters() if p.dim() == 0}
        for unit in units:
            fully_shard(unit, mesh=mesh, reshard_after_forward=reshard, ignored_params=scalars)
        fully_shard(module, mesh=mesh, reshard_after_forward=reshard, ignored_params=scalars)
        self.module, self.processes = module, processes
        now = dict(module.named_parameters())  # the sharded parameters, under their old names
        self.groups = [{**g, "params": [now[names[id(p)]] for p in g["params"]]} for g in groups]
        params = [p for g in self.groups for p in g["params"]]
        self.whole = [p for p in params if not isinstance(p, DTensor)]  # the scalars
        self.params = params

    def loss(self, name: str, loss_fn: LossFn, batch: Batch) -> dict[str, Tensor]:
        """`loss_fn(batch)`, ready for a backward that every process's FSDP units reduce alike.

        A parameter of the root unit (gathered from its forward until the backward) that this process's batch did
        not use gets a zero gradient: FSDP reduce-scatters only the gradients a process has, so one used on one
        process and not on another would make the processes' collectives differ. A parameter no process used
        then takes an AdamW step on a zero gradient, where one process would leave it alone. Units below the
        root are gathered around each call of their forward: every process must call the same ones in the same
        order, so a submodule that runs only for some batches (a modality's projector) must stay in the root
        unit (see `fit`'s `shard`); otherwise the processes' collectives differ and gloo aborts."""
        try:
            losses = loss_fn(batch)
        except (RuntimeError, NotImplementedError) as e:
            if "DTensor" not in str(e):
                raise
            raise RuntimeError(f"{name}: the loss met sharded parameters. FSDP gathers a sharded module's "
                               "parameters only around its forward: a loss that calls another method (encode, "
                               "decode, generate) or reads parameters directly cannot train sharded; launch it "
                               "with ddp.yaml") from e
        # FSDP2 keeps a unit's gathered parameters apart from the module's (sharded) ones: reached through its
        # private state (torch 2.13); the same objects receive the gradients in the backward
        group = self.module._get_fsdp_state()._fsdp_param_group
        for fsdp_param in group.fsdp_params if group is not None else ():
            whole = getattr(fsdp_param, "_unsharded_param", None)
            if whole is not None and whole.requires_grad and whole.grad is None:
                whole.grad = torch.zeros(whole.shape, dtype=whole.dtype, device=whole.device)
        return losses

    def sync_grads(self) -> None:
        """FSDP reduce-scattered the sharded parameters' gradients in the backward; average the scalars'."""
        if self.whole:
            self.processes.average_grads(self.whole)

    @torch.no_grad()
    def clip_grads(self, max_norm: float) -> None:
        """nn.utils.clip_grad_norm_ over shards and whole parameters: the global norm from each process's share
        of the squares (one all-reduce), the whole parameters counted once."""
        grads = [p.grad for p in self.params if p.grad is not None]
        device = grads[0].device if grads else torch.device("cpu")
        square = torch.zeros((), dtype=torch.float64, device=device)
        for g in grads:
            if isinstance(g, DTensor):
                square += g.to_local().double().pow(2).sum()
        torch.distributed.all_reduce(square)
        for g in grads:
            if not isinstance(g, DTensor):
                square += g.double().pow(2).sum()
        coef = min(1.0, max_norm / (float(square.sqrt()) + 1e-6))
        for g in grads:
            g.mul_(coef)

    def copy(self, source: nn.Module, *, whole: bool) -> nn.Module:
        """A plain module shaped as the sharded one holding `source`'s tensors: gathered whole (collective) with
        `whole`, else `source`'s own (sharded) tensors. Tied parameters stay tied."""
        out = copy.deepcopy(self.skeleton)
        made: dict[int, nn.Parameter] = {}
        with torch.no_grad():
            for name, p in out.named_parameters(remove_duplicate=False):
                src = source.get_parameter(name)
                if id(src) not in made:
                    made[id(src)] = nn.Parameter(_full(src.detach()) if whole else src.detach(), p.requires_grad)
                owner, leaf = _owner(out, name)
                owner._parameters[leaf] = made[id(src)]
            for name, _ in out.named_buffers(remove_duplicate=False):
                owner, leaf = _owner(out, name)
                owner._buffers[leaf] = _full(source.get_buffer(name)).clone()
        return out


# ---- the resumable state ----------------------------------------------------------------------------
def _trainable(module: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}


def _full_optimizer(state: dict[str, Any]) -> dict[str, Any]:
    """An optimiser's state_dict with every sharded tensor gathered whole (collective): as one process saves it."""
    return {**state, "state": {i: {k: _full(v) for k, v in s.items()} for i, s in state["state"].items()}}


def _sharded_optimizer(state: dict[str, Any], opt: torch.optim.Optimizer) -> dict[str, Any]:
    """A whole optimiser state_dict cut to this process's shards of `opt`'s (sharded) parameters."""
    params = [p for g in opt.param_groups for p in g["params"]]

    def cut(value: Any, param: Tensor) -> Any:
        if isinstance(param, DTensor) and torch.is_tensor(value) and value.shape == param.shape:
            return distribute_tensor(value.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
        return value

    return {**state, "state": {i: {k: cut(v, params[i]) for k, v in s.items()} for i, s in state["state"].items()}}


def save_state(run_dir: Path, step: int, module: nn.Module, opt: torch.optim.Optimizer, *, seconds: float = 0.0,
               ema: EMA | None = None, write: bool = True) -> None:
    """Atomic: written to a temporary folder, then renamed over the previous state. A sharded module's tensors
    are gathered whole first, which takes every process: all of them call this, `write` on the main one only."""
    trainable = _full_tensors(_trainable(module))
    shadow = _full_tensors(ema.shadow.state_dict()) if ema is not None else None
    optimizer = _full_optimizer(opt.state_dict())
    if not write:
        return
    with files.atomic_folder(run_dir / STATE) as tmp:
        files.save_tensors(trainable, tmp / "trainable.safetensors")
        if shadow is not None:
            files.save_tensors(shadow, tmp / "ema.safetensors")
        torch.save({"optimizer": optimizer, "step": step, "seconds": seconds,
                    "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")


def load_state(run_dir: Path, module: nn.Module, opt: torch.optim.Optimizer, *,
               ema: EMA | None = None) -> tuple[int, float]:
    """(step, seconds trained) of the saved state, loaded into `module`, `opt` and `ema` (each process its shards
    when they are sharded); (0, 0) if none."""
    folder = files.readable_folder(run_dir / STATE, "optimizer.pt")
    if folder is None:
        return 0, 0.0
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in load_file(folder / "trainable.safetensors").items():
            _assign(params[name], value)
    if ema is not None:
        saved = load_file(folder / "ema.safetensors")
        targets = ema.shadow.state_dict(keep_vars=True)
        if saved.keys() != targets.keys():
            raise KeyError(f"{folder}: the EMA's tensors differ from the module's: "
                           f"{sorted(saved.keys() ^ targets.keys())[:5]}")
        with torch.no_grad():
            for name, value in saved.items():
                _assign(targets[name], value)
    extra = torch.load(folder / "optimizer.pt", weights_only=True)
    sharded = any(isinstance(p, DTensor) for p in params.values())
    opt.load_state_dict(_sharded_optimizer(extra["optimizer"], opt) if sharded else extra["optimizer"])
    torch.set_rng_state(extra["torch_rng"])
    return int(extra["step"]), float(extra.get("seconds", 0.0))


# ---- the loop ---------------------------------------------------------------------------------------
@dataclass
class Fitted:
    """What `fit` returns."""

    module: nn.Module  # the trained module (the EMA's copy when `ema_decay` > 0); sharded runs: a whole copy
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
    shard: Sequence[nn.Module] | None = None,
) -> Fitted:
    """Train `module` on `loss_fn` for `settings.steps` steps (resuming from `run_dir`'s state if there is one).

    examples: how many examples there are (a single stream of `settings.batch_size` per step), or named streams.
    run_dir: state, log.jsonl, settings.json and summary.json; None trains in memory (nothing written, no resume).
    param_groups: AdamW's groups (default: every parameter that requires grad, `settings.weight_decay`); a group's
        "grad_mask" (a tensor that broadcasts to its parameters) multiplies their gradients before the clip.
    warmup: warm-up steps (default `settings.warmup`).
    after_step: called on the main process with (step, row) after every step; True logs the row whatever the step.
        Sharded, it must not run the module (its parameters are shards, and the other processes are not there).
    stop_after: save the state and return after this step (the tests' stand-in for a killed process).
    shard: under FSDP (fsdp.yaml), the submodules that get their own `fully_shard` before the whole module gets
        one (default: every element of every nn.ModuleList). `module` is then left sharded: use `Fitted.module`,
        gathered whole on every process. See `Sharding` for what a sharded loss may not do.
    """
    processes = Processes()
    streams = {"": Stream(examples, settings.batch_size)} if isinstance(examples, int) else dict(examples)
    for key, stream in streams.items():
        if stream.batch_size % processes.count:
            raise ValueError(f"{name}: batch size {stream.batch_size} of {key or 'the examples'} does not divide "
                             f"among {processes.count} processes")
    groups = param_groups or [{"params": [p for p in module.parameters() if p.requires_grad]}]
    sharding = Sharding(module, groups, shard, processes) if processes.sharded else None
    if sharding is not None:
        groups = sharding.groups
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "grad_mask"} for g in groups], lr=settings.lr,
                            betas=settings.betas, weight_decay=settings.weight_decay)
    for group in opt.param_groups:
        group["peak_lr"] = group["lr"]
    warmup = settings.warmup if warmup is None else warmup
    ema = None
    if settings.ema_decay > 0:  # a sharded module's EMA is sharded as it is
        ema = EMA(module if sharding is None else sharding.copy(module, whole=False), settings.ema_decay)
    writes = run_dir is not None and processes.main
    start, seconds = load_state(run_dir, module, opt, ema=ema) if run_dir is not None else (0, 0.0)
    if start:
        _check_same_settings(name, run_dir, settings)
        log.info("%s: resuming at step %d", name, start)
        if writes and (run_dir / "log.jsonl").is_file():  # a killed run logged steps past its state: they rerun
            rows = (run_dir / "log.jsonl").read_text().splitlines(keepends=True)
            files.write_text(run_dir / "log.jsonl", "".join(r for r in rows if json.loads(r)["step"] <= start))
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        files.write_json(run_dir / "settings.json", asdict(settings))

    def save(at: int, elapsed: float) -> None:
        """The state at step `at`: a sharded module's processes all gather it, the main process writes it."""
        if processes.main or sharding is not None:
            save_state(run_dir, at, module, opt, seconds=elapsed, ema=ema, write=processes.main)
        processes.wait()

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
            losses = sharding.loss(name, loss_fn, batch) if sharding is not None else loss_fn(batch)
            losses["loss"].backward()
            if sharding is None:
                processes.average_grads(params)
            else:
                sharding.sync_grads()
            _mask_grads(groups)
            values = processes.mean(losses)
            if not math.isfinite(values["loss"]):
                raise FloatingPointError(f"{name}: loss is {values['loss']} at step {step + 1}")
            if settings.grad_clip and sharding is not None:
                sharding.clip_grads(settings.grad_clip)
            elif settings.grad_clip:
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
                save(step, tick())
            if stopping:
                stopped = module if sharding is None else sharding.copy(module, whole=True)
                return Fitted(stopped, {"name": name, "stopped_at": step, "final": row}, history)
        if logf is not None and row and not logged:  # ended by the time budget between two log rows
            logf.write(json.dumps(row) + "\n")
        if run_dir is not None and ended_by != "steps" and step % settings.save_every:
            save(step, seconds)
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
    trained = ema.shadow if ema is not None else module
    if sharding is not None:
        trained = sharding.copy(trained, whole=True).eval()
    return Fitted(trained, summary, history)


@torch.no_grad()
def _mask_grads(groups: list[dict[str, Any]]) -> None:
    """Multiply the gradients of each group that has a "grad_mask" by it (a sharded gradient by its shard of it)."""
    for group in groups:
        mask = group.get("grad_mask")
        for p in group["params"] if mask is not None else ():
            if isinstance(p.grad, DTensor):
                whole = mask.to(p.device).expand(p.shape)
                p.grad.to_local().mul_(distribute_tensor(whole, p.device_mesh, p.placements,
                                                         src_data_rank=None).to_local())
            elif p.grad is not None:
                p.grad.mul_(mask)


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
        # only the added tokens' rows learn: fit multiplies the gradient by the mask (a hook on the parameter
        # would not survive sharding, which replaces the parameters)
        groups.append({"params": [weight], "name": "token_rows", "weight_decay": 0.0, "grad_mask": mask})
        out = model.llm.get_output_embeddings()
        if out is not None and out.weight is not weight:
            out.weight.requires_grad_(True)
            groups.append({"params": [out.weight], "name": "lm_head_rows", "weight_decay": 0.0, "grad_mask": mask})
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

    # sharded (fsdp.yaml): each LLM layer is its own unit, as every batch runs them all in order; the encoders and
    # projectors, which run only for batches with their modality, stay in the root unit
    layers = [unit for lst in model.llm.modules() if isinstance(lst, nn.ModuleList) for unit in lst]
    fitted = fit(plan.name, model, loss_fn, len(examples), settings, run.run_dir, param_groups=groups,
                 stop_after=stop_after, shard=layers)
    if "stopped_at" in fitted.summary:
        return {"stopped_at": fitted.summary["stopped_at"], "history": fitted.history}
    if Processes().main:  # fitted.module: `model` itself, or its whole copy when it trained sharded
        save_checkpoint(fitted.module, run.out, parts=plan.saves)
    Processes().wait()
    summary = {"stage": plan.name, "steps": fitted.summary["steps"], "seconds": fitted.summary["seconds"],
               "final": fitted.summary["final"]}
    return {"history": fitted.history, **summary}
