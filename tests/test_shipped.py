"""`eval --limit 4` and `bench --quick` end to end on the shipped nano checkpoint, as a user runs them.

Each command runs in its own process through the CLI (what the README shows), on a freshly made test split of
the world (test-only phrasings and media). The figures themselves are the committed benchmarks/ ones
(tests/test_figures.py ties them to these weights); here the shipped weights only have to clearly work: greedy
decoding and seeded diffusion make the outputs repeatable, and the bounds sit far below what the test-split
evaluation measured (image captioning 94 %, switching 100 %).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_world, run_nextgpt


@pytest.fixture(scope="module")
def test_world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world"), ("test",), n=4, n_dialogues=4)


def test_eval_limit_4_on_the_shipped_checkpoint(test_world, tmp_path):
    out = tmp_path / "eval"
    result, _ = run_nextgpt("eval", "--preset", "nano", "--data", str(test_world), "--split", "test", "--limit", "4",
                     "--no-meteor", "--out", str(out))
    for name in ("report.md", "report.json", "items.jsonl.gz", "generation.png", "samples.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["errors"] == [] and report["meta"]["skipped"] == []
    assert report["meta"]["capabilities"]["reads_media"] is True
    assert sorted(report["meta"]["capabilities"]["generates"]) == ["audio", "image", "video"]
    summary = result["summary"]
    assert summary["caption_attribute_all"]["image"] >= 0.5 and summary["caption_attribute_all"]["audio"] >= 0.5
    for asked in ("image", "audio", "video", "text"):
        assert summary["switch_accuracy"][asked] >= 0.75, (asked, summary["switch_accuracy"])


def test_bench_quick_on_the_shipped_checkpoint(tmp_path):
    out = tmp_path / "bench"
    result, _ = run_nextgpt("bench", "--preset", "nano", "--quick", "--skip-cold-start", "--out", str(out))
    bench = json.loads((out / "bench.json").read_text())
    m = bench["measurements"]
    for key in ("first_token_s", "tokens_per_s", "image_s", "audio_s", "video_s", "any_to_any_s", "conversation_s",
                "official_conversation_s", "speedup", "peak_rss_gb"):
        assert m[key]["value"] is not None and m[key]["value"] > 0, (key, m[key])
    assert m["conversation_s"]["detail"]["produced"] == [[], ["image"], ["video"], ["audio"], []]
    assert result["speedup_vs_official"] == pytest.approx(m["speedup"]["value"])
    assert "Where the time goes" in (out / "bench.md").read_text()
