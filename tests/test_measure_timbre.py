"""Smoke test of scripts/measure_timbre.py on the shipped audio decoder (a few sounds, every step)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from nextgpt.world.render import synth_sound

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("measure_timbre", ROOT / "scripts" / "measure_timbre.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_buzz_ratio_reads_the_judges_feature():
    script = _script()
    tone, buzz = (synth_sound(600.0, b, None) for b in (False, True))
    assert script.buzz_ratio(tone) < 1e-3
    assert script.buzz_ratio(buzz) == pytest.approx(1 / 9 + 1 / 25 + 1 / 49, rel=0.1)
    assert script.best_threshold_accuracy([0.0, 0.1, 0.2, 0.3], [False, False, True, True]) == 1.0
    assert script.best_threshold_accuracy([0.3, 0.1], [False, True]) == 0.5


def test_every_step_on_the_shipped_decoder(tmp_path):
    out = tmp_path / "timbre.json"
    report = _script().main(["--checkpoint", str(ROOT / "checkpoints" / "nano"), "--n", "8", "--noise-db", "20",
                             "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["a"]["sound"]["rate"] == 1.0 and report["a"]["sound"]["n"] == 8  # the judge reads world audio
    assert report["mel"]["best_threshold_accuracy"] == 1.0  # the log-mel keeps tone vs buzz
    for step in ("a_noise", "b", "c", "d"):
        rates = report[step]
        assert rates["sound"]["n"] == 8 and 0.0 <= rates["sound"]["rate"] <= 1.0
        lo, hi = rates["all"]["ci95"]
        assert lo <= rates["all"]["rate"] <= hi
    assert np.isfinite(report["c"]["mel_l1"])
