"""`python -m nextgpt`: one JSON line out, {"error"} with exit status 2 on bad input, never a traceback."""

from __future__ import annotations

import json

import pytest

from conftest import run_nextgpt
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
