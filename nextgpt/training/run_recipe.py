"""Run a recipe of nextgpt/training/recipe.py step by step, with progress, a state file and resume.

    python -m nextgpt train --recipe nano [--out checkpoints/nano] [--data data/world] [--runs runs]
                            [--from STEP] [--only STEP] [--smoke] [--list]

State: ``<runs>/recipe.json`` records every finished step (each step of a lane on its own) with its wall time,
settings and final metrics. A rerun skips what is recorded there; an interrupted step starts again on its own run
folder, from which its trainer resumes. After every step the state is copied beside the checkpoint
(``<out>/recipe.json``), so a checkpoint built by the recipe carries how it was built (scripts/model_card.py
lists it). `--smoke` runs every step at toy size for a few steps (tests/test_recipe.py); its state records that
it is a smoke run, and a runs folder never mixes the two.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator

from nextgpt.files import write_json
from nextgpt.training.recipe import GOAL_MINUTES, Step, find, get, total_minutes

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # the repository: scripts/ and assets/ are found from here
STATE_FILE = "recipe.json"
SMOKE_WORLD = {"train": 4, "val": 4, "test": 4,  # items per modality of each split of a smoke world
               "train-tasks": 1, "val-tasks": 1, "test-tasks": 1}  # and records per task row
SMOKE_STEPS = 3  # every smoke trainer runs 3 or more steps: a part that stops early stops at its share of these


def smoke_stop_after(stop_after: int | None, steps: int) -> int | None:
    """Where a part that stops after `stop_after` of `steps` steps stops in a smoke run (1 .. SMOKE_STEPS - 1)."""
    if not stop_after:
        return None
    return min(SMOKE_STEPS - 1, max(1, round(stop_after / steps * SMOKE_STEPS)))


Progress = Callable[[str], None]


@dataclass(frozen=True)
class RecipeRun:
    """Where one run of a recipe reads and writes, and which of its steps it runs."""

    recipe: str = "nano"
    out: Path = Path("checkpoints/nano")  # the checkpoint folder the steps write into
    data: Path = Path("data/world")  # the world (written by the world step)
    runs: Path = Path("runs")  # every step's run folder, and the state file
    start: str | None = None  # run from this (top-level) step on
    only: str | None = None  # run only this step (a lane's step too)
    smoke: bool = False  # every step at toy size, a few steps each


# ---- the state file --------------------------------------------------------------------------------------------
class RecipeState:
    """<runs>/recipe.json: {"recipe", "smoke", "steps": {name: entry}}; written under a lock (lanes write at once)."""

    def __init__(self, run: RecipeRun) -> None:
        self.path = run.runs / STATE_FILE
        self.copy = run.out / STATE_FILE
        self.run = run

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(STATE_FILE + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        if self.path.is_file():
            state = json.loads(self.path.read_text())
            if state.get("smoke") != self.run.smoke or state.get("recipe") != self.run.recipe:
                raise ValueError(f"{self.path} is the state of a {'smoke ' if state.get('smoke') else ''}run of "
                                 f"the {state.get('recipe')} recipe: use another --runs folder")
            return state
        return {"recipe": self.run.recipe, "smoke": self.run.smoke, "out": str(self.run.out),
                "data": str(self.run.data), "steps": {}}

    def finished(self, name: str) -> dict[str, Any] | None:
        return self.read()["steps"].get(name)

    def record(self, name: str, entry: dict[str, Any]) -> None:
        with self._locked():
            state = self.read()
            state["steps"][name] = entry
            write_json(self.path, state)
            write_json(self.copy, state)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _entry(step: Step, seconds: float, metrics: dict[str, Any], lane_of: str | None = None) -> dict[str, Any]:
    return {"runs": step.runs, "lane_of": lane_of, "seconds": round(seconds, 1),
            "expected_minutes": round(step.minutes, 1),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "settings": _jsonable(step.settings), "metrics": _jsonable(metrics)}


def _already(state: RecipeState, step: Step) -> bool:
    """Whether `step` is recorded as finished (a warning when it finished with other settings)."""
    done = state.finished(step.name)
    if done is None:
        return False
    if done.get("settings") != _jsonable(step.settings):
        log.warning("%s finished with other settings (%s); kept. To run it again, remove its entry from %s and its "
                    "run folder", step.name, done.get("settings"), state.path)
    return True


# ---- one step per runner ---------------------------------------------------------------------------------------
def _general_chat_path(run: RecipeRun) -> Path:
    step = find(get(run.recipe), "general_chat")
    return run.runs / "general_chat.json" if run.smoke else ROOT / step.settings["out"]


def _world(step: Step, run: RecipeRun, threads: int) -> dict[str, Any]:
    from nextgpt.world.records import SPLITS, main, split_ready

    s = {**step.settings, **(SMOKE_WORLD if run.smoke else {})}
    if not all(split_ready(run.data, split) for split in SPLITS):
        main(["--out", str(run.data), *(a for k, v in s.items() for a in (f"--{k}", str(v)))])
    metrics = {}
    for split in SPLITS:
        meta = json.loads((run.data / split / "meta.json").read_text())
        if meta["n"] != s[split] or meta["seed"] != s["seed"]:
            raise ValueError(f"{run.data}/{split} holds {meta['n']} items per modality of seed {meta['seed']}, the "
                             f"recipe's has {s[split]} of seed {s['seed']}: move it away or pass another --data")
        metrics[split] = {"items_per_modality": meta["n"], "version": meta["version"], "media": meta["media_files"]}
    return metrics


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], env=env, capture_output=True,
                          text=True)


def _general_chat(step: Step, run: RecipeRun, threads: int) -> dict[str, Any]:
    out = _general_chat_path(run)
    made = not out.is_file()
    if made:
        tokens = 8 if run.smoke else step.settings["max_new_tokens"]
        proc = _script("make_general_chat.py", "--out", str(out), "--max-new-tokens", str(tokens),
                       *(["--limit", "2"] if run.smoke else []))
        if proc.returncode:
            raise RuntimeError(f"make_general_chat.py failed: {proc.stderr[-2000:]}")
    return {"examples": len(json.loads(out.read_text())), "written": made, "file": str(out)}


def _encoder(step: Step, run: RecipeRun, threads: int) -> dict[str, Any]:
    import torch

    from nextgpt.config import NextGPTConfig
    from nextgpt.training.encoder import EncoderTraining, train_encoder

    s = dict(step.settings)
    run_dir = run.runs / s.pop("run_dir")
    settings = EncoderTraining.smoke() if run.smoke else EncoderTraining(**s)
    torch.set_num_threads(threads)
    m = train_encoder(NextGPTConfig.from_name("nano").encoder, run.data, run.out, run_dir, settings)
    return {k: m[k] for k in ("steps", "seconds", "final_loss", "ended_by", "eval_seconds", "zero_shot", "probe")
            if k in m}


def _flag(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def decoder_args(step: Step, run: RecipeRun, threads: int) -> tuple[Any, int | None]:
    """(DecoderTrainArgs, stop_after) of a decoders step."""
    from nextgpt.training.decoders import DecoderTrainArgs

    s = dict(step.settings)
    stop_after, sets = s.pop("stop_after", None), s.pop("set", {})
    s.pop("threads", None)
    if run.smoke:  # the trainer's own smoke sizes and steps
        stop_after = smoke_stop_after(stop_after, s.get("steps", 0))
        s = {k: v for k, v in s.items() if k not in ("steps", "batch_size", "lr")}
    args = DecoderTrainArgs(data=run.data, out=run.out, run_dir=run.runs / s.pop("run_dir"), threads=threads,
                            smoke=run.smoke, settings=tuple(f"{k}={_flag(v)}" for k, v in sets.items()), **s)
    return args, stop_after


def _decoders(step: Step, run: RecipeRun, threads: int) -> dict[str, Any]:
    from nextgpt.training.decoders import run as train_decoders

    args, stop_after = decoder_args(step, run, threads)
    results = train_decoders(args, stop_after=stop_after)
    if args.part == "eval":
        return {key.split("/")[0]: {k: v for k, v in r.items() if k.startswith(("accuracy_", "round_trip_"))}
                | {"samples": r.get("samples"), "split": r.get("split")} for key, r in results.items()}
    ((_, summary),) = results.items()
    return {k: summary[k] for k in ("stopped_at", "steps", "seconds_this_run", "final") if k in summary}


def _stage(step: Step, run: RecipeRun, threads: int) -> dict[str, Any]:
    from nextgpt.training.stages import StageArgs, run_stage

    s = dict(step.settings)
    stop_after = s.pop("stop_after", None)
    run_dir = run.runs / s.pop("run_dir")
    s["threads"] = threads
    if run.smoke:  # run_stage's smoke defaults: 3 steps of 2 on 8 examples per record kind
        stop_after = smoke_stop_after(stop_after, s.get("steps", 0))
        s = {k: v for k, v in s.items() if k not in ("steps", "batch_size", "limit")}
    result = run_stage(StageArgs(data=run.data, checkpoint=run.out, run_dir=run_dir,
                                 general_chat=_general_chat_path(run), smoke=run.smoke, **s), stop_after=stop_after)
    final = result.get("final") or (result.get("history") or [{}])[-1]
    return {"stopped_at": result.get("stopped_at"), "steps": result.get("steps"), "seconds": result.get("seconds"),
            "final": {k: v for k, v in final.items() if k in ("step", "loss", "ce", "l2")}}


def _align(step: Step, run: RecipeRun, threads: int) -> dict[str, Any]:
    from nextgpt.training.projectors import AlignArgs, align_projectors

    s = dict(step.settings)
    s["threads"] = threads
    summary = align_projectors(AlignArgs(data=run.data, checkpoint=run.out, run_dir=run.runs / s.pop("run_dir"),
                                         smoke=run.smoke, **s))
    return {"seconds": summary["seconds"],
            **{m: {k: v[k] for k in ("train_blocks", "before", "after")} for m, v in summary["modalities"].items()}}


def _fp16(step: Step, run: RecipeRun, threads: int) -> dict[str, Any]:
    proc = _script("checkpoint_fp16.py", str(run.out))
    not_half = [line.split("not fp16: ", 1)[1] for line in proc.stderr.splitlines() if "not fp16: " in line]
    if proc.returncode:
        raise RuntimeError(f"checkpoint_fp16.py: parts not in fp16: {not_half or proc.stderr[-2000:]}")
    return {"fp16_files": sum(1 for line in proc.stderr.splitlines() if " F16 " in line)}


def _world_profile(step: Step, run: RecipeRun, threads: int) -> dict[str, Any]:
    """training_world.json (which world the checkpoint learnt) and world.json (scripts/calibrate_ood.py)."""
    train = json.loads((run.data / "train" / "meta.json").read_text())
    held_out = train.get("held_out_pairs") if train.get("held_out_in_split") is False else None
    write_json(run.out / "training_world.json", {
        "world_version": train["version"], "seed": train["seed"], "items_per_modality": train["n"],
        "held_out_pairs": held_out,
        "note": (f"trained on the world's train split of version {train['version']} (`python -m nextgpt train "
                 f"--recipe {run.recipe}`, its world step: seed {train['seed']}, {train['n']} items per modality): "
                 "the phrasings of prompts.TRAIN_BOOK and every attribute combination "
                 + ("but the held-out ones (vocab.HELD_OUT_PAIRS)" if held_out else ""))})
    s = {**step.settings, **({"fit": 24, "ood": 2, "components": 4} if run.smoke else {})}
    args = [a for k, v in s.items() for a in (f"--{k}", str(v))]
    proc = _script("calibrate_ood.py", "--checkpoint", str(run.out), "--data", str(run.data), *args)
    if proc.returncode:
        raise RuntimeError(f"calibrate_ood.py failed: {proc.stderr[-2000:]}")
    calibration = json.loads((run.out / "world.json").read_text())["calibration"]
    return {"world_version": train["version"], "held_out_pairs": held_out,
            **{m: {"threshold": f["threshold"], "test_flagged": f"{f['test']['flagged']}/{f['test']['n']}"}
               for m, f in calibration["modalities"].items()}}


RUN: dict[str, Callable[[Step, RecipeRun, int], dict[str, Any]]] = {
    "world": _world, "general_chat": _general_chat, "encoder": _encoder, "decoders": _decoders, "stage": _stage,
    "align": _align, "fp16": _fp16, "world_profile": _world_profile,
}


def run_leaf(step: Step, run: RecipeRun, state: RecipeState, *, threads: int, lane_of: str | None = None) -> bool:
    """Run one step unless it is recorded as finished; record it. Returns whether it ran."""
    if _already(state, step):
        return False
    t0 = time.perf_counter()
    metrics = RUN[step.runs](step, run, 1 if run.smoke else threads)
    state.record(step.name, _entry(step, time.perf_counter() - t0, metrics, lane_of))
    return True


def _lane_init(level: int) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _run_in_lane(step: Step, run: RecipeRun, parent: str, number: int) -> bool:
    """One lane step, in a (spawned) process of its own, on one torch thread."""
    log.info("%s lane %d: %s (expected %.0f min)", parent, number, step.name, step.minutes)
    return run_leaf(step, run, RecipeState(run), threads=1, lane_of=parent)


def run_lanes(step: Step, run: RecipeRun, state: RecipeState) -> list[str]:
    """Every unfinished lane of `step` at once, each lane's steps in order; recorded when every lane is done.

    Each step runs in a fresh process (one per task), so it starts from the state a step started alone with
    --only starts from (torch's global generator, which dropout draws from, included), whatever ran before it."""
    todo = [(i, lane) for i, lane in enumerate(step.lanes, 1) if not all(state.finished(s.name) for s in lane)]
    # OpenMP threads that spin while they wait waste a shared core (see scripts/train_encoder.py); read at torch's
    # start in each lane process
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ran: list[str] = []
    if not todo:
        return ran
    with ProcessPoolExecutor(len(todo), mp_context=get_context("spawn"), initializer=_lane_init,
                             initargs=(logging.getLogger().getEffectiveLevel(),), max_tasks_per_child=1) as pool:

        def lane(number: int, steps: tuple[Step, ...]) -> list[str]:
            return [s.name for s in steps if pool.submit(_run_in_lane, s, run, step.name, number).result()]

        with ThreadPoolExecutor(len(todo)) as lanes:
            for done in [lanes.submit(lane, i, steps) for i, steps in todo]:
                ran += done.result()
    return ran


# ---- the whole recipe ------------------------------------------------------------------------------------------
def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _left(step: Step, state: RecipeState) -> float:
    """Planned minutes of what is left of `step`: a lanes step's slowest lane, counting its unfinished steps."""
    if state.finished(step.name):
        return 0.0
    if not step.lanes:
        return step.minutes
    return max(sum(s.minutes for s in lane if not state.finished(s.name)) for lane in step.lanes)


def _in_lane(recipe: str, name: str) -> bool:
    """Whether the step called `name` is one of a lanes step's steps."""
    return any(step.lanes and name in {leaf.name for leaf in step.leaves()} for step in get(recipe))


def chosen_steps(run: RecipeRun) -> list[Step]:
    """The steps this run goes through: all, from `start` on, or `only` one (a lane's step is run alone)."""
    steps = list(get(run.recipe))
    if run.only:
        return [find(tuple(steps), run.only)]
    if run.start:
        names = [s.name for s in steps]
        if run.start not in names:
            raise ValueError(f"--from takes a step of the recipe ({', '.join(names)}), not {run.start!r}")
        return steps[names.index(run.start):]
    return steps


def run_recipe(run: RecipeRun, progress: Progress = log.info) -> dict[str, Any]:
    """Run the chosen steps in order (skipping finished ones); returns what ran and where the state is."""
    steps = chosen_steps(run)
    state = RecipeState(run)
    state.read()  # refuses a runs folder of the other kind (smoke / real) before anything runs
    run.runs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    spent_expected = spent_actual = 0.0
    ran: list[str] = []
    skipped: list[str] = []
    for i, step in enumerate(steps, 1):
        leaves = list(step.leaves())
        if all(_already(state, leaf) for leaf in leaves) and (not step.lanes or state.finished(step.name)):
            skipped.append(step.name)
            progress(f"step {i}/{len(steps)} {step.name}: finished before, skipped")
            continue
        elapsed = time.perf_counter() - t0
        remaining = sum(_left(s, state) for s in steps[i - 1:]) * 60
        pace = spent_actual / spent_expected if spent_expected else 1.0  # this machine against the plan
        progress(f"step {i}/{len(steps)} {step.name} (expected {step.minutes:.0f} min) | elapsed {_clock(elapsed)} | "
                 f"ETA {_clock(remaining * pace)}" + (" (smoke)" if run.smoke else ""))
        start = time.perf_counter()
        if step.lanes:
            ran += run_lanes(step, run, state)
            state.record(step.name, _entry(step, time.perf_counter() - start,
                                           {"lanes": [[s.name for s in lane] for lane in step.lanes]}))
        else:
            # a lane's step run alone (--only) keeps its lane's one thread: the plan's speeds were measured so, and
            # two threads of each of two lanes started by hand oversubscribe the cores (8x slower steps)
            threads = 1 if _in_lane(run.recipe, step.name) else int(step.settings.get("threads", 2))
            if run_leaf(step, run, state, threads=threads):
                ran.append(step.name)
        took = time.perf_counter() - start
        spent_expected += step.minutes * 60
        spent_actual += took
        progress(f"step {i}/{len(steps)} {step.name} done in {_clock(took)}")
    total = time.perf_counter() - t0
    progress(f"recipe {run.recipe}: {len(ran)} steps run, {len(skipped)} finished before, {_clock(total)}")
    return {"recipe": run.recipe, "state": str(state.path), "checkpoint": str(run.out), "ran": ran,
            "skipped": skipped, "seconds": round(total, 1), "smoke": run.smoke}


# ---- --list ----------------------------------------------------------------------------------------------------
def resolved(step: Step) -> dict[str, Any]:
    """A step's settings with what it inherits filled in: a decoder part's whole PartSettings, a stage's plan."""
    out = dict(step.settings)
    if step.runs == "decoders" and step.settings["part"] != "eval":
        from nextgpt.config import Modality
        from nextgpt.training.decoders import RECIPES, parse_settings

        base = RECIPES[Modality(step.settings["modality"])].parts[step.settings["part"]]
        changes = {k: step.settings[k] for k in ("steps", "batch_size", "lr")}
        sets = parse_settings([f"{k}={_flag(v)}" for k, v in step.settings["set"].items()])
        out["part_settings"] = dataclasses.asdict(dataclasses.replace(base, **changes, **sets))
    elif step.runs == "stage":
        from nextgpt.training.plans import PLANS

        plan = PLANS[step.settings["stage"]]
        out["plan"] = {k: v for k, v in dataclasses.asdict(plan).items() if k not in ("steps", "batch_size", "lr")}
    return _jsonable(out)


def describe(recipe: str, progress: Progress = log.info) -> dict[str, Any]:
    """Every step with its settings (as `resolved`), expected minutes and their basis; the total."""
    steps = get(recipe)
    rows = []
    for i, step in enumerate(steps, 1):
        progress(f"{i:2d}. {step.name:<16} {step.runs:<12} {step.minutes:6.1f} min  ({step.basis})")
        entry = {"name": step.name, "runs": step.runs, "minutes": round(step.minutes, 1), "basis": step.basis,
                 "note": step.note}
        if step.lanes:
            entry["lanes"] = []
            for n, lane in enumerate(step.lanes, 1):
                entry["lanes"].append([])
                for leaf in lane:
                    progress(f"      lane {n}: {leaf.name:<30} {leaf.minutes:6.1f} min  {_brief(leaf)}")
                    entry["lanes"][-1].append({"name": leaf.name, "runs": leaf.runs,
                                               "minutes": round(leaf.minutes, 1), "basis": leaf.basis,
                                               "note": leaf.note, "settings": resolved(leaf)})
        else:
            progress(f"      {_brief(step)}")
            entry["settings"] = resolved(step)
        rows.append(entry)
    minutes = total_minutes(steps)
    longest = max(leaf.minutes for step in steps for leaf in step.leaves())
    goal = (f"{minutes - GOAL_MINUTES:.0f} min over" if minutes > GOAL_MINUTES else "within") + \
        f" the {GOAL_MINUTES / 60:g} h goal"
    progress(f"in all: {minutes:.0f} min ({minutes / 60:.1f} h) on 2 CPU cores, {goal}; no step over "
             f"{longest:.0f} min (a lane's steps one by one)")
    return {"recipe": recipe, "steps": rows, "minutes": round(minutes, 1)}


def _brief(step: Step) -> str:
    return " ".join(f"{k}={_flag(v)}" for k, v in step.settings.items() if v not in (None, {}, ""))
