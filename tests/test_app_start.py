"""`python app.py` as a user starts it: the shipped nano checkpoint, in its own process, until the page is served
and the model (loaded in the background after that) is ready.

    .venv/bin/python -m pytest tests/test_app_start.py -q
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVED, LOADED = "Running on local URL", "model ready in"


@pytest.mark.parametrize("flags", [[], ["--mcp"]], ids=["chat", "mcp"])
def test_a_normal_start_prints_no_warnings(tmp_path, flags):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "app.py", "--port", str(port), "--output-dir", str(tmp_path / "out"),
               "--scores-db", str(tmp_path / "scores.sqlite"), *flags]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not any(LOADED in line for line in lines):
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=10)
    log = "".join(lines)
    assert SERVED in log and LOADED in log, log
    assert not re.search(r"warn|deprecat|it/s\]", log, re.IGNORECASE), log  # no warnings, no progress bars
