"""The committed figures (benchmarks/) belong to the shipped checkpoint and can be audited line by line.

A figure measured on other weights fails here: the report and the bench record the weight hash of the
checkpoint they measured, and it must be the hash of checkpoints/nano as committed. The report's rates are
recounted from its items.jsonl.gz, and the README and the model card must quote the committed report (their
results block is written by scripts/model_card.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from nextgpt.eval.provenance import weight_hash

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def shipped_hash() -> str:
    return weight_hash(ROOT / "checkpoints" / "nano")


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads((BENCH / "report.json").read_text())


@pytest.fixture(scope="module")
def items() -> list[dict]:
    from nextgpt.eval.report import read_items

    return read_items(BENCH)


def test_the_report_measured_the_shipped_weights_on_the_test_split(report, shipped_hash):
    meta = report["meta"]
    assert meta["weight_hash"] == shipped_hash, "benchmarks/report.json was measured on other weights: rerun eval"
    assert meta["split"] == "test" and meta["world"]["phrasings"] == "test-only"
    # measured on the world the weights were trained on (its test split holds out what its train split left out)
    trained = json.loads((ROOT / "checkpoints" / "nano" / "training_world.json").read_text())
    assert meta["world"]["version"] == trained["world_version"]
    assert meta["world"]["held_out_pairs"] == trained["held_out_pairs"]
    assert meta["git_commit"] and meta["errors"] == []


def test_the_bench_measured_the_shipped_weights(shipped_hash):
    bench = json.loads((BENCH / "bench.json").read_text())
    assert bench.get("weight_hash") == shipped_hash, "benchmarks/bench.json was measured on other weights: rerun bench"


def test_every_rate_recounts_from_items_jsonl(report, items):
    # 1. captioning: every attribute word right
    for m, row in report["captioning"]["rows"].items():
        mine = [i for i in items if i["table"] == "captioning" and i["modality"] == m]
        right = sum(all(i["parsed"].get(k) == v for k, v in _words(i["caption"], m).items()) for i in mine)
        assert (row["attributes"]["all"]["k"], row["attributes"]["all"]["n"]) == (right, len(mine)), m
    # 2. generation: the modality switch and the judged attributes
    for asked, row in report["generation"]["rows"].items():
        mine = [i for i in items if i["table"] == "generation" and i["asked"] == asked]
        want = [] if asked == "text" else [asked]
        assert row["switch_accuracy"]["k"] == sum(sorted(i["produced"]) == want for i in mine), asked
        assert row["switch_accuracy"]["n"] == len(mine)
        if asked != "text":
            right = sum(bool(i["judged"]) and all(i["judged"].get(k) == v for k, v in _words(i["caption"], asked).items())
                        for i in mine)
            assert row["attributes"]["all"]["k"] == right, asked
    # 3. editing and 4. dialogues
    edits = [i for i in items if i["table"] == "editing"]
    assert report["editing"]["n"] == len(edits)
    right = 0
    for i in edits:
        m = "video" if " moving " in i["target"] else "audio" if i["target"].endswith(("tone", "buzz")) else "image"
        right += m in i["produced"] and bool(i["judged"]) and all(
            i["judged"].get(k) == v for k, v in _words(i["target"], m).items())
    assert report["editing"]["accuracy"]["k"] == right
    turns = [i for i in items if i["table"] == "dialogue"]
    assert report["dialogue"]["turn_accuracy"]["k"] == sum(i["right"] for i in turns)
    by_dialogue = Counter()
    for i in turns:
        by_dialogue[i["dialogue"]] += not i["right"]
    assert report["dialogue"]["success_rate"]["k"] == sum(v == 0 for v in by_dialogue.values())
    assert report["dialogue"]["success_rate"]["n"] == len(by_dialogue)


def _model_card():
    spec = importlib.util.spec_from_file_location("model_card", ROOT / "scripts" / "model_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_and_the_model_card_quote_the_committed_report(report):
    card = _model_card()
    block = "\n".join(card.results_section(BENCH))
    readme = (ROOT / "README.md").read_text()
    fix = "rerun: python scripts/model_card.py --eval benchmarks --readme README.md"
    assert f"{card.README_BEGIN}\n{block}\n{card.README_END}" in readme, f"README.md quotes another report: {fix}"
    assert block in (ROOT / "checkpoints" / "nano" / "README.md").read_text(), (
        "checkpoints/nano/README.md quotes another report: rerun python scripts/model_card.py "
        "--checkpoint checkpoints/nano --eval benchmarks")
    # every test-split eval command the README shows is the one that made the committed report
    command = card.eval_command(report["meta"])
    shown = [m.strip() for m in re.findall(r"python -m nextgpt eval [^`#\n]*--split test[^`#\n]*", readme)]
    assert shown and all(c == command for c in shown), (shown, command)


def _words(caption: str, modality: str) -> dict:
    from nextgpt.world import parse_caption

    return parse_caption(caption, modality)
