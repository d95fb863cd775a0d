"""`python -m nextgpt`: one JSON line out, {"error"} with exit status 2 on bad input, never a traceback."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, run_nextgpt
from nextgpt.cli import main


def run_main(capsys, *argv: str) -> tuple[int, dict]:
    code = main(list(argv))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return code, json.loads(out[0])


def test_missing_file_is_a_clear_error(capsys, tmp_path):
    code, out = run_main(capsys, "generate", "--prompt", "hi", "--image", str(tmp_path / "nope.png"))
    assert code == 2 and "not found" in out["error"]


def test_bad_messages_file(capsys, tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    code, out = run_main(capsys, "generate", "--messages", str(bad))
    assert code == 2 and "--messages" in out["error"]
    bad.write_text(json.dumps([{"role": "assistant", "content": "hi"}]))
    code, out = run_main(capsys, "generate", "--messages", str(bad))
    assert code == 2 and "last message" in out["error"]


def test_nothing_to_say(capsys):
    code, out = run_main(capsys, "generate")
    assert code == 2 and "--prompt" in out["error"]


def test_bad_settings(capsys):
    code, out = run_main(capsys, "generate", "--prompt", "x", "--max-new-tokens", "0")
    assert code == 2 and "max_new_tokens" in out["error"]


def test_memory_plan_json(capsys, tmp_path):
    code, out = run_main(capsys, "memory", "--preset", "nextgpt-7b", "--quantization", "8bit", "--json", str(tmp_path / "m.json"))
    assert code == 0 and out["quantization"] == "8bit" and out["peak_gb"] > 5
    assert json.loads((tmp_path / "m.json").read_text())["peak_gb"] == out["peak_gb"]


def test_real_nano_answers_from_smollm2(tmp_path):
    """The bundled preset answers with the real SmolLM2 weights, as a user runs it."""
    out, stderr = run_nextgpt("generate", "--preset", "nano", "--prompt", "What is the capital of France?",
                              "--max-new-tokens", "24", "--out", str(tmp_path), cwd=tmp_path, timeout=300)
    assert "Paris" in out["text"]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("argv", [["generate", "--preset", "gpt-9", "--prompt", "x"]])
def test_argparse_errors_exit_2(argv):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2


def test_prepare_converts_the_bundled_gguf_at_install_time(tmp_path, monkeypatch, caplog):
    """`make install` runs `python -m nextgpt prepare`: it writes nano's safetensors cache, quietly, and a later
    load reads that cache instead of converting the GGUF (~20 s) on the app's start or a first message."""
    import torch

    from nextgpt.config import NextGPTConfig
    from nextgpt.llm import _load_gguf

    cfg = NextGPTConfig.from_name("nano").llm
    cache = tmp_path / "cache"
    monkeypatch.setenv("NEXTGPT_CACHE", str(cache))
    out, stderr = run_nextgpt("prepare", "--preset", "nano")
    assert out["prepared"] == "nano" and out["cache"] == str(cache) and out["seconds"] > 0
    assert (cache / Path(cfg.gguf_file).stem / "model.safetensors").is_file()
    assert not re.search(r"warn|deprecat", stderr, re.IGNORECASE), stderr  # the conversion's progress bar stays
    with caplog.at_level(logging.INFO, logger="nextgpt.llm"):
        _load_gguf(cfg, torch.float32)
    assert "converting" not in caplog.text
    dry_run = subprocess.run(["make", "-n", "-B", "install", "VENV=/no/venv"], cwd=ROOT, capture_output=True,
                             text=True, check=True)
    assert "/no/venv/bin/python -m nextgpt prepare --preset nano" in dry_run.stdout
