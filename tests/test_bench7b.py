"""`python -m nextgpt bench --preset nextgpt-7b --random-weights --scale tiny`: the 7B benchmark's whole path at toy
size on the CPU, in a process where the packages a GPU machine lacks (gradio, gguf, optimum-quanto, moviepy,
soundfile, imageio-ffmpeg, scipy, matplotlib) cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nextgpt.eval.bench7b import ALL_SETTINGS, REFERENCE, Setting, markdown, parse_settings
from tests.conftest import ROOT

ABSENT = ("gradio", "gguf", "optimum", "moviepy", "soundfile", "imageio_ffmpeg", "scipy", "matplotlib", "nextgpt.world")
CONVERSIONS = ["T->T", "I->T", "A->T", "V->T", "T->I", "T->V", "T->A", "I+T->I"]


def test_settings_parse():
    assert parse_settings("4bit+offload,none") == (Setting("4bit", True), REFERENCE)
    assert parse_settings("all") == ALL_SETTINGS and len(set(ALL_SETTINGS)) == 6
    for bad in ("3bit", "none+cpu", "4bit+offload+x"):
        with pytest.raises(ValueError):
            Setting.parse(bad)


def test_tiny_bench_on_the_cpu(tmp_path, llama_tokenizer):
    blocked = f"import sys; sys.modules.update(dict.fromkeys({ABSENT!r})); from nextgpt.cli import main; sys.exit(main())"
    args = ["bench", "--preset", "nextgpt-7b", "--random-weights", "--scale", "tiny", "--device", "cpu",
            "--settings", "none,4bit+offload", "--threads", "1", "--official-steps", "2", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", blocked, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed["settings"] == {"none": "ok", "4bit+offload": "error"}
    assert "[none] T->V" in proc.stderr  # progress, with timestamps
    result = json.loads((tmp_path / "bench.json").read_text())
    none, four = result["settings"]["none"], result["settings"]["4bit+offload"]
    # a failed setting is a row with its error, and the run goes on
    assert "4-bit quantization needs a CUDA GPU" in four["error"]
    assert list(none["turns"]) == CONVERSIONS
    outputs = {name: t["outputs"] for name, t in none["turns"].items()}
    assert outputs["T->V"] == {"video": [[4, 64, 64, 3]]} and outputs["T->A"] == {"audio": [[16000]]}
    assert outputs["T->I"] == outputs["I+T->I"] == {"image": [[64, 64, 3]]} and outputs["T->T"] == {}
    for name, t in none["turns"].items():
        assert t["latency_s"] > 0 and t["tokens"] > 0 and t["tokens_per_s"] > 0, name
        assert t["peak_gb"] is None  # no CUDA: no GPU figures, never invented ones
    official = none["official"]
    assert list(official["turns"]) == CONVERSIONS and official["decoder_steps"] == 2
    assert official["decoder_loads"] == 4 + 3  # one load per generated item: 4 single turns + 3 in the conversation
    assert [t["produced"] for t in none["conversation"]["turns"]] == [[], ["image"], ["video"], ["audio"], []]
    assert none["speedup"] == pytest.approx(official["conversation"]["total_s"] / none["conversation"]["total_s"], rel=1e-2)
    md = (tmp_path / "bench.md").read_text()
    assert md == markdown(result) and "Random weights" in md and "meaningless" in md
    assert "| 4bit+offload | error: ValueError" in md and "official way" in md


def test_a_failed_turn_is_recorded_and_the_report_still_renders():
    from nextgpt.eval.bench7b import _guarded

    def oom() -> dict:
        raise RuntimeError("CUDA out of memory")

    turn = _guarded("T->V", "cpu", oom)
    assert turn == {"error": "RuntimeError: CUDA out of memory"}
    ok = {"latency_s": 1.0, "first_token_s": 0.1, "tokens": 5, "tokens_per_s": 40.0, "encode_s": 0.0, "decode_s": 0.5,
          "peak_gb": 3.0, "peak_phase": "decode:image", "phases_gb": {"decode:image": 3.0}}
    result = {"note": "Random weights", "config": {"scale": "full", "device": "cuda", "steps": 4, "official_steps": 50},
              "machine": {"torch": "x", "transformers": "x", "diffusers": "x", "cpu_cores": 16, "gpu": "H200",
                          "gpu_memory_gb": 139, "cuda": "13"},
              "build": {}, "settings": {"4bit+offload": {"status": "ok", "turns": {"T->I": ok, "T->V": turn},
                                                         "peak_gb": 3.0, "conversation": {"error": "boom"}}}}
    md = markdown(result)
    assert "| T->V | failed: RuntimeError: CUDA out of memory |" in md and "| T->I | 1 |" in md
    assert "| peak GPU memory, 4bit+offload <= 10 GB | 3 | yes |" in md and "conversation, ours: failed: boom" in md
