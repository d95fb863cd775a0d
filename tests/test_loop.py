"""Tests for nextgpt.training.loop, the one training loop: schedule, time budget, resume, and several processes
(`accelerate launch --num_processes 2` on the CPU, gloo) against one process with the same global batch."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import free_port
from nextgpt.training.loop import Batch, LoopSettings, fit, lr_factor

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "loop_worker.py"
DDP = ROOT / "nextgpt" / "configs" / "accelerate" / "ddp.yaml"
FSDP = ROOT / "nextgpt" / "configs" / "accelerate" / "fsdp.yaml"


def test_cosine_schedule_is_transformers_warmup_cosine():
    from transformers import get_cosine_schedule_with_warmup

    settings = LoopSettings(steps=30, batch_size=1, lr=1.0, warmup=5)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_cosine_schedule_with_warmup(opt, 5, 30)
    for step in range(30):
        assert lr_factor(settings, step, 5, 0.0) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12), step
        opt.step()
        sched.step()


def test_time_budget_ends_the_cosine():
    budget = LoopSettings(steps=100, batch_size=1, lr=1.0, warmup=2, schedule="cosine_from_start", max_minutes=1.0)
    assert lr_factor(budget, 0, 2, 0.0) == pytest.approx(0.5)  # warm-up
    assert lr_factor(budget, 10, 2, 30.0) == pytest.approx(0.5, abs=1e-3)  # half the time used: time dominates
    assert lr_factor(budget, 10, 2, 60.0) == pytest.approx(0.0, abs=1e-6)
    steps_only = LoopSettings(steps=100, batch_size=1, lr=1.0, warmup=2, schedule="cosine_from_start")
    assert lr_factor(steps_only, 50, 2, 1e6) == pytest.approx(0.5)  # no budget: steps only
    with pytest.raises(ValueError, match="schedule"):
        LoopSettings(steps=1, batch_size=1, lr=1.0, schedule="linear")


def _regression(noise: bool = True):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, generator=gen)
    y = x.sum(1, keepdim=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def loss_fn(batch: Batch) -> dict[str, torch.Tensor]:
        jitter = 0.1 * torch.randn(len(batch.index), 3, generator=batch.generator) if noise else 0.0
        err = model(x[batch.index] + jitter) - y[batch.index]
        return {"loss": err.pow(2).mean(), "mae": err.abs().mean().detach()}

    return model, loss_fn


def test_budget_run_stops_saves_and_logs_its_last_step(tmp_path):
    model, inner = _regression()

    def slow(batch: Batch) -> dict[str, torch.Tensor]:
        time.sleep(0.05)
        return inner(batch)

    settings = LoopSettings(steps=1000, batch_size=4, lr=1e-2, max_minutes=0.25 / 60, save_every=500, log_every=500)
    fitted = fit("budget", model, slow, 24, settings, tmp_path / "run")
    assert fitted.summary["ended_by"] == "time budget" and 1 <= fitted.summary["steps"] < 1000
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == fitted.summary["steps"]
    again = fit("budget", _regression()[0], slow, 24, settings, tmp_path / "run")  # resumed: the budget is spent
    assert again.summary["steps"] == fitted.summary["steps"] and again.summary["ended_by"] == "time budget"


def test_interrupted_run_with_ema_and_random_draws_resumes_to_the_same_weights(tmp_path):
    settings = LoopSettings(steps=7, batch_size=4, lr=1e-2, warmup=2, ema_decay=0.9, save_every=3, log_every=1, seed=5)
    model, loss_fn = _regression()
    straight = fit("r", model, loss_fn, 24, settings, tmp_path / "straight").module.state_dict()

    model, loss_fn = _regression()
    stopped = fit("r", model, loss_fn, 24, settings, tmp_path / "cut", stop_after=4)
    assert stopped.summary["stopped_at"] == 4
    with open(tmp_path / "cut" / "log.jsonl", "a") as f:  # a process killed after logging a step past its state
        f.write(json.dumps({"step": 5, "loss": 0.0}) + "\n")
    model, loss_fn = _regression()  # a new process: fresh weights, the state loaded over them
    resumed = fit("r", model, loss_fn, 24, settings, tmp_path / "cut")
    assert [r["step"] for r in resumed.history] == [5, 6, 7]
    got = resumed.module.state_dict()
    assert all(torch.equal(got[k], straight[k]) for k in straight)
    rows = [json.loads(line)["step"] for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4, 5, 6, 7]


def test_a_state_resumes_only_under_its_own_settings(tmp_path):
    settings = LoopSettings(steps=6, batch_size=4, lr=1e-2, save_every=2, log_every=1)
    fit("r", *_regression(), 24, settings, tmp_path / "run", stop_after=3)
    with pytest.raises(ValueError, match=r"other settings \(batch_size 4 -> 8, lr 0.01 -> 0.02\)"):
        fit("r", *_regression(), 24, dataclasses.replace(settings, batch_size=8, lr=2e-2), tmp_path / "run")
    assert fit("r", *_regression(), 24, settings, tmp_path / "run").summary["steps"] == 6  # same settings resume


def test_in_memory_fit_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, loss_fn = _regression(noise=False)
    fitted = fit("m", model, loss_fn, 24, LoopSettings(steps=20, batch_size=8, lr=3e-2), None)
    assert fitted.history[-1]["loss"] < fitted.history[0]["loss"] and not list(tmp_path.iterdir())


def _run(tmp: Path, trainer: str, processes: int, *extra: str, config: Path = DDP) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if processes == 1:
        cmd = [sys.executable, str(WORKER), trainer, str(tmp / "run"), *extra]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes",
               str(processes), "--main_process_port", str(free_port()), str(WORKER), trainer, str(tmp / "run"), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _launch(tmp: Path, trainer: str, processes: int, *extra: str, config: Path = DDP) -> list[dict]:
    done = _run(tmp, trainer, processes, *extra, config=config)
    assert done.returncode == 0, f"{done.stdout[-1500:]}\n{done.stderr[-6000:]}"
    # several processes leave at the worker's end_processes() (no teardown, see loop.end_processes); one goes on
    assert [(tmp / f"after-{i}.json").exists() for i in range(processes)] == [processes == 1] * processes
    return [json.loads((tmp / f"seen-{i}.json").read_text()) for i in range(processes)]


def _files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))


def test_two_processes_end_with_the_weights_of_one_at_the_same_global_batch(tmp_path):
    one = _launch(tmp_path / "one", "regression", 1)[0]
    two = _launch(tmp_path / "two", "regression", 2)
    assert [p["processes"] for p in two] == [2, 2] and one["processes"] == 1
    # data sharded: each process took half of every step's batch, together the one process's batch
    for step, batch in enumerate(one["seen"]):
        assert two[0]["seen"][step] + two[1]["seen"][step] == batch
        assert not set(two[0]["seen"][step]) & set(two[1]["seen"][step])
    # gradients synchronised: both processes end with the one process's weights (EMA included)
    for proc in two:
        for key, value in one["weights"].items():
            torch.testing.assert_close(torch.tensor(proc["weights"][key]), torch.tensor(value), atol=1e-6, rtol=1e-5)
    assert two[0]["summary"]["final"]["loss"] == pytest.approx(one["summary"]["final"]["loss"], rel=1e-5)
    # only the main process wrote: the same files as one process, one log row per step
    assert _files(tmp_path / "two" / "run") == _files(tmp_path / "one" / "run")
    rows = (tmp_path / "two" / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == list(range(1, 7))


def _state(run_dir: Path) -> dict[str, torch.Tensor]:
    """A run's saved state as flat tensors: weights, EMA and the optimiser's moments."""
    from safetensors.torch import load_file

    state = run_dir / "state"
    flat = {f"w.{k}": v for k, v in load_file(state / "trainable.safetensors").items()}
    flat |= {f"ema.{k}": v for k, v in load_file(state / "ema.safetensors").items()}
    opt = torch.load(state / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    return flat | {f"opt.{i}.{k}": v for i, s in opt.items() for k, v in s.items()}


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        torch.testing.assert_close(torch.as_tensor(got[key]), torch.as_tensor(value), atol=1e-6, rtol=1e-5, msg=key)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> tuple[dict, Path]:
    """The regression worker in one process: what it saw and its run folder."""
    tmp = tmp_path_factory.mktemp("one")
    return _launch(tmp, "regression", 1)[0], tmp / "run"


def test_two_sharded_processes_end_with_the_weights_of_one_holding_half_each(tmp_path, one_process):
    one, one_run = one_process
    two = _launch(tmp_path, "regression", 2, config=FSDP)
    assert [p["processes"] for p in two] == [2, 2]
    # sharded: each process held half of the first layer's 16 x 5 weight at every step, the one process all of it
    assert one["held"] == [80] * 6 and two[0]["held"] == two[1]["held"] == [40] * 6
    for step, batch in enumerate(one["seen"]):
        assert two[0]["seen"][step] + two[1]["seen"][step] == batch
    # the same steps: both processes return the one process's (EMA) weights, gathered whole
    for proc in two:
        _assert_same(proc["weights"], one["weights"])
    # the main process wrote the whole state: weights, EMA and optimiser moments as one process writes them
    assert _files(tmp_path / "run") == _files(one_run)
    _assert_same(_state(tmp_path / "run"), _state(one_run))
    rows = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == list(range(1, 7))


def test_an_interrupted_sharded_run_resumes_sharded_or_in_one_process(tmp_path, one_process):
    import shutil

    one, one_run = one_process
    _launch(tmp_path / "cut", "regression", 2, "--stop-after", "3", config=FSDP)
    shutil.copytree(tmp_path / "cut", tmp_path / "cut1")
    sharded = _launch(tmp_path / "cut", "regression", 2, config=FSDP)
    assert [len(p["seen"]) for p in sharded] == [3, 3]  # steps 4-6 only: resumed at step 3
    alone = _launch(tmp_path / "cut1", "regression", 1)[0]
    assert len(alone["seen"]) == 3
    for weights in (sharded[0]["weights"], sharded[1]["weights"], alone["weights"]):
        _assert_same(weights, one["weights"])
    for run in (tmp_path / "cut" / "run", tmp_path / "cut1" / "run"):
        _assert_same(_state(run), _state(one_run))


def test_a_loss_that_bypasses_forward_is_refused_sharded(tmp_path):
    done = _run(tmp_path, "regression", 2, "--functional", config=FSDP)
    assert done.returncode != 0 and "the loss met sharded parameters" in done.stderr


def test_llm_stage_trains_under_two_sharded_processes(tmp_path):
    two = _launch(tmp_path, "stage", 2, config=FSDP)
    assert two[0]["losses"] == two[1]["losses"] and len(two[0]["losses"]) == 4
    assert all(torch.isfinite(torch.tensor(two[0]["losses"])))
    written = {p.name for p in (tmp_path / "run" / "ckpt").iterdir()}  # whole tensors, from the main process
    assert written == {"config.json", "output_projectors.safetensors", "token_rows.safetensors"}
    rows = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3, 4]


def test_llm_stage_trains_under_two_processes(tmp_path):
    two = _launch(tmp_path, "stage", 2)
    assert two[0]["losses"] == two[1]["losses"] and len(two[0]["losses"]) == 4  # the logged mean of both
    assert all(torch.isfinite(torch.tensor(two[0]["losses"])))
    written = {p.name for p in (tmp_path / "run" / "ckpt").iterdir()}
    assert written == {"config.json", "output_projectors.safetensors", "token_rows.safetensors"}
    rows = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3, 4]


def test_decoder_parts_train_and_evaluate_under_two_processes(tmp_path):
    """The decoders' orchestration under 2 processes: caches and components written once, by the main process,
    the evaluation run there alone; both processes log the same (averaged) losses."""
    from conftest import make_world

    world = make_world(tmp_path / "world", ("train", "val", "test"), n=4, n_dialogues=0)
    two = _launch(tmp_path, "decoders", 2, "--world", str(world))
    assert two[0]["parts"] == two[1]["parts"] == ["image/eval", "image/unet", "image/vae"]
    losses = [{part: {k: v for k, v in row.items() if k != "seconds"} for part, row in p["final"].items()} for p in two]
    assert losses[0] == losses[1] and set(losses[0]) == {"image/vae", "image/unet"}
    folder = tmp_path / "run" / "ckpt" / "decoders"
    assert (folder / "image" / "vae").is_dir() and (folder / "image" / "unet").is_dir()
    assert "image" in json.loads((folder / "metrics.json").read_text())
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name or p.name.endswith(".old")]
