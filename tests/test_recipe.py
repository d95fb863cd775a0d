"""Tests for the nano recipe (nextgpt/training/recipe.py) and its runner (run_recipe.py, `python -m nextgpt train`):
a smoke run of every step on a tiny world, resume, the budget, and the model card's recipe section."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_nextgpt
from nextgpt.training import recipe as R
from nextgpt.training.run_recipe import (RUN, RecipeRun, RecipeState, _in_lane, _left, chosen_steps, resolved,
                                         run_recipe)

NANO = R.get("nano")
LEAVES = [leaf for step in NANO for leaf in step.leaves()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[RecipeRun, dict, list[str]]:
    """One smoke run of the whole recipe from nothing (world included) in a temporary folder."""
    root = tmp_path_factory.mktemp("recipe")
    run = RecipeRun(out=root / "ckpt", data=root / "world", runs=root / "runs", smoke=True)
    threads = torch.get_num_threads()
    lines: list[str] = []
    try:
        result = run_recipe(run, lines.append)
    finally:
        torch.set_num_threads(threads)
    return run, result, lines


def test_every_step_runs_in_smoke_and_is_recorded_with_its_time_settings_and_metrics(smoke):
    run, result, lines = smoke
    assert result["ran"] == [leaf.name for leaf in LEAVES if leaf.name in result["ran"]]  # recipe order per lane
    assert set(result["ran"]) == {leaf.name for leaf in LEAVES}
    state = json.loads((run.runs / "recipe.json").read_text())
    assert state["smoke"] is True
    assert set(state["steps"]) == {s.name for s in NANO} | {leaf.name for leaf in LEAVES}
    for leaf in LEAVES:
        entry = state["steps"][leaf.name]
        assert entry["seconds"] > 0 and entry["metrics"], leaf.name
        assert entry["settings"] == json.loads(json.dumps(leaf.settings)), leaf.name
    # progress: every top-level step announced as "step i/N name (expected m min)" with elapsed and ETA
    for i, step in enumerate(NANO, 1):
        assert any(line.startswith(f"step {i}/{len(NANO)} {step.name} (expected ") and "ETA" in line
                   for line in lines), step.name
    # the checkpoint beside which the state is copied has every part the recipe trains
    ckpt = run.out
    assert json.loads((ckpt / "recipe.json").read_text()) == state
    for part in ("encoder/encoder.safetensors", "input_projection.safetensors", "output_projectors.safetensors",
                 "token_rows.safetensors", "lora/adapter_model.safetensors", "decoders/metrics.json",
                 "world.json", "training_world.json"):
        assert (ckpt / part).is_file(), part
    # the world it learnt: the smoke world's version and held-out combinations; the notice calibrated on the weights
    from nextgpt.eval.provenance import weight_hash
    from nextgpt.world.records import WORLD_VERSION
    from nextgpt.world.vocab import HELD_OUT_PAIRS

    trained = json.loads((ckpt / "training_world.json").read_text())
    assert trained["world_version"] == WORLD_VERSION and trained["held_out_pairs"]
    assert sorted(p for pairs in trained["held_out_pairs"].values() for p in pairs) == sorted(
        " ".join(pair) for pairs in HELD_OUT_PAIRS.values() for pair in pairs)
    assert json.loads((ckpt / "world.json").read_text())["calibration"]["weight_hash"] == weight_hash(ckpt)
    for modality, parts in {"image": ("vae", "unet"), "audio": ("vae", "vocoder", "unet"),
                            "video": ("vae", "unet")}.items():
        for part in parts:
            assert (ckpt / "decoders" / modality / part).is_dir(), (modality, part)
    assert state["steps"]["decoders_eval"]["metrics"].keys() == {"image", "audio", "video"}


def test_a_part_that_stops_early_is_continued_by_the_next_step(smoke):
    run, _, _ = smoke
    steps = json.loads((run.runs / "recipe.json").read_text())["steps"]
    for parts in (("stage3_1", "stage3_2", "stage3_3"), ("decoders_video_unet_1", "decoders_video_unet_2")):
        stops = [steps[p]["metrics"]["stopped_at"] for p in parts[:-1]]
        assert stops == sorted(set(stops)) and stops[0] >= 1, parts  # each part goes on from the last one's stop
        assert steps[parts[-1]]["metrics"].get("stopped_at") is None
        assert steps[parts[-1]]["metrics"]["final"]["step"] > stops[-1]
    # each part trained on the last one's state: the log goes on, step by step
    rows = [json.loads(line) for line in (run.runs / "stage3" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})


def test_a_rerun_skips_every_finished_step(smoke):
    run, _, _ = smoke
    lines: list[str] = []
    again = run_recipe(run, lines.append)
    assert again["ran"] == [] and again["skipped"] == [s.name for s in NANO]
    assert all("skipped" in line for line in lines[:-1])


def test_the_model_card_lists_every_step_from_the_recipe_state(smoke, tmp_path):
    run, _, _ = smoke
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "recipe.json").write_text((run.out / "recipe.json").read_text())
    proc = subprocess.run([sys.executable, "scripts/model_card.py", "--checkpoint", str(ckpt), "--eval", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = (ckpt / "README.md").read_text()
    section = card.split("## How it was trained", 1)[1].split("\n## ", 1)[0]
    assert "in smoke mode" in section
    for step in (*NANO, *LEAVES):
        assert re.search(rf"^\| (- lane \d: )?{step.name} \|", section, re.M), step.name  # a lane's steps under it
    assert "stopped at step 2" in section


def test_the_smoke_state_refuses_a_real_run_in_the_same_folder(smoke):
    run, _, _ = smoke
    with pytest.raises(ValueError, match="smoke"):
        run_recipe(dataclasses.replace(run, smoke=False, only="fp16"))


def test_the_recipe_fits_the_budget_and_every_setting_reaches_its_trainer():
    from nextgpt.training.decoders import DecoderTrainArgs
    from nextgpt.training.encoder import EncoderTraining
    from nextgpt.training.plans import PLANS
    from nextgpt.training.projectors import AlignArgs
    from nextgpt.training.stages import StageArgs

    # no step over the hour (a lanes step's own steps are its steps); the total is `--list`'s to report
    assert max(leaf.minutes for leaf in LEAVES) <= 60
    names = [s.name for s in NANO if s.lanes] + [leaf.name for leaf in LEAVES]
    assert len(set(names)) == len(names)
    fields = {"decoders": {f.name for f in dataclasses.fields(DecoderTrainArgs)} | {"stop_after", "set"},
              "stage": {f.name for f in dataclasses.fields(StageArgs)} | {"stop_after"},
              "align": {f.name for f in dataclasses.fields(AlignArgs)},
              "encoder": {f.name for f in dataclasses.fields(EncoderTraining)} | {"run_dir"}}
    for leaf in LEAVES:
        assert leaf.runs in RUN
        assert set(leaf.settings) <= fields.get(leaf.runs, set(leaf.settings)), leaf.name
        assert leaf.minutes > 0 and leaf.basis.split(":")[0] in ("measured", "estimate"), leaf.name
        resolved(leaf)  # decoder parts: every `set` is a PartSettings field of the right type
    for step in NANO:
        if step.lanes:
            assert step.minutes == max(sum(s.minutes for s in lane) for lane in step.lanes)
    # the stage plans train as long as the recipe says (scripts/train_stage*.py without flags)
    for leaf in LEAVES:
        if leaf.runs == "stage" and leaf.settings["stage"] in PLANS and leaf.settings.get("modality") is None:
            plan = PLANS[leaf.settings["stage"]]
            assert (plan.steps, plan.lr, plan.batch_size) == tuple(leaf.settings[k]
                                                                   for k in ("steps", "lr", "batch_size"))


def test_every_step_builds_its_trainers_arguments_as_the_real_run_does():
    """Each leaf's settings become the trainer's own arguments (nothing trained): a wrong name or type fails here."""
    from nextgpt.config import Modality
    from nextgpt.training.decoders import RECIPES, _settings
    from nextgpt.training.encoder import EncoderTraining
    from nextgpt.training.projectors import AlignArgs
    from nextgpt.training.run_recipe import decoder_args
    from nextgpt.training.stages import StageArgs

    def drop(settings: dict, *keys: str) -> dict:
        return {k: v for k, v in settings.items() if k not in keys}

    for leaf in LEAVES:
        s = leaf.settings
        if leaf.runs == "decoders":
            args, stop_after = decoder_args(leaf, RecipeRun(), threads=1)
            assert stop_after == s.get("stop_after") and args.run_dir == Path("runs") / s["run_dir"]
            if args.part != "eval":
                part = _settings(args, RECIPES[Modality(args.modality)], args.part)
                assert (part.steps, part.batch_size, part.lr) == (s["steps"], s["batch_size"], s["lr"])
                assert all(getattr(part, k) == v for k, v in s["set"].items()), leaf.name
        elif leaf.runs == "encoder":
            assert EncoderTraining(**drop(s, "run_dir")).steps == s["steps"]
        elif leaf.runs == "stage":
            assert StageArgs(**drop(s, "run_dir", "stop_after")).stage == s["stage"]
        elif leaf.runs == "align":
            assert AlignArgs(**drop(s, "run_dir")).modality == s["modality"]


def test_from_and_only_choose_steps(tmp_path):
    run = RecipeRun(runs=tmp_path)
    assert [s.name for s in chosen_steps(dataclasses.replace(run, start="decoders_eval"))] == [
        "decoders_eval", "fp16", "world_profile"]
    assert [s.name for s in chosen_steps(dataclasses.replace(run, only="decoders_video_unet_sign"))] == [
        "decoders_video_unet_sign"]
    with pytest.raises(ValueError):
        chosen_steps(dataclasses.replace(run, start="decoders_video_unet_sign"))  # --from takes top-level steps
    with pytest.raises(ValueError):
        chosen_steps(dataclasses.replace(run, only="nope"))
    state = RecipeState(run)
    assert state.read()["steps"] == {}


def test_a_lanes_step_run_alone_keeps_its_lanes_one_thread():
    assert _in_lane("nano", "decoders_video_unet_1") and _in_lane("nano", "encoder")
    assert _in_lane("nano", "stage1") and not _in_lane("nano", "decoders_eval") and not _in_lane("nano", "train")


def test_the_eta_counts_what_is_left_of_a_lanes_step(tmp_path):
    run = RecipeRun(runs=tmp_path / "runs", out=tmp_path / "out")
    state = RecipeState(run)
    train = next(s for s in NANO if s.lanes)
    assert _left(train, state) == pytest.approx(train.minutes)
    for leaf in train.lanes[0]:  # one lane done: the other lane is what is left
        state.record(leaf.name, {"settings": leaf.settings})
    assert _left(train, state) == pytest.approx(sum(s.minutes for s in train.lanes[1]))
    state.record(train.name, {"settings": {}})
    assert _left(train, state) == 0.0


def test_the_cli_lists_the_recipe():
    listed, stderr = run_nextgpt("train", "--recipe", "nano", "--list")
    assert [s["name"] for s in listed["steps"]] == [s.name for s in NANO]
    assert listed["minutes"] == pytest.approx(R.total_minutes(NANO), abs=0.05)
    video_sign = next(leaf for s in listed["steps"] for lane in s.get("lanes", []) for leaf in lane
                      if leaf["name"] == "decoders_video_unet_sign")
    assert video_sign["settings"]["part_settings"]["sign_contrast"] == 4.0  # the override, in the resolved settings
    line = next(line for line in stderr.splitlines() if line.startswith("in all:"))
    over = listed["minutes"] - R.GOAL_MINUTES
    assert (f"{over:.0f} min over the 4 h goal" if over > 0 else "within the 4 h goal") in line, line
