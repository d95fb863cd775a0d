"""How fast the app starts, as a user meets it: seconds from launching `app.py` to

    http     the first HTTP 200 on /
    page     the page ready in headless Chromium (message box, example buttons and model line shown)
    model    the model loaded (the app's "loaded <preset>" log line)
    reply    a first chat reply through the /chat API (a short text question), when --reply is given

    python scripts/measure_start.py                          # nano, 3 runs: one JSON line each, then the medians
    python scripts/measure_start.py --runs 5 --reply         # also time a first answer
    python scripts/measure_start.py --no-browser             # http / model only (no Chromium here)
    python scripts/measure_start.py -- --mcp                 # extra app.py flags after --
    python scripts/measure_start.py --root ../other-checkout --root .   # runs alternate between checkouts

Chromium is started before the app, so its own start-up is not counted: the clock starts when the app's
process does. The browser is Debian's chromium + chromedriver driven by selenium, as in
tests/test_app_browser.py. Every run uses a fresh output folder and scores database; the model caches
($NEXTGPT_CACHE) are left as they are, so a "warm" run is one after `make install` on a machine whose disk
cache holds the files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000")
READY_JS = """
const box = document.querySelector("#message textarea");
const examples = document.querySelectorAll("#chat .example");
const info = document.querySelector("#model-info");
return Boolean(box && box.offsetParent && examples.length >= 4 && info && info.innerText.trim());
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium(profile: Path) -> Any:
    """A headless Chromium driven by selenium, or None where chromium / chromedriver are not installed."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (binary and driver_path):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    return driver


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def first_reply(url: str) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    client.predict({"text": "Hello, who are you?", "files": []}, max_new_tokens=16, api_name="/chat")


def one_run(command: list[str], *, root: Path, browser: bool, reply: bool, timeout: float) -> dict[str, float | None]:
    """Start the app once and time each milestone (seconds from the process start; None = not reached)."""
    work = Path(tempfile.mkdtemp(prefix="nextgpt-start-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    driver = chromium(work / "profile") if browser else None
    times: dict[str, float | None] = {"http": None, "page": None, "model": None}
    if reply:
        times["reply"] = None
    full = [*command, "--port", str(port), "--output-dir", str(work / "out"), "--scores-db", str(work / "s.sqlite")]
    t0 = time.monotonic()
    proc = subprocess.Popen(full, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            log.append(line)
            if times["model"] is None and " loaded " in line:
                times["model"] = time.monotonic() - t0

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = t0 + timeout
        while not http_ok(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the app did not answer:\n" + "".join(log[-30:]))
            time.sleep(0.05)
        times["http"] = time.monotonic() - t0
        if driver is not None:
            driver.get(url)
            while not driver.execute_script(READY_JS):
                if time.monotonic() > deadline:
                    raise RuntimeError("the page never became ready")
                time.sleep(0.05)
            times["page"] = time.monotonic() - t0
        if reply:
            first_reply(url)
            times["reply"] = time.monotonic() - t0
        while times["model"] is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return {k: None if v is None else round(v, 2) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--preset", default="nano")
    p.add_argument("--no-browser", action="store_true", help="skip the page-ready measurement")
    p.add_argument("--reply", action="store_true", help="also time a first chat reply through the API")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take")
    p.add_argument("--root", type=Path, action="append", default=None,
                   help="checkout whose app.py runs (repeatable: runs alternate, so that every checkout meets the "
                        "same machine load; default: this one)")
    p.add_argument("app_args", nargs="*", help="extra app.py flags (after --)")
    args = p.parse_args(argv)

    command = [sys.executable, "app.py", "--preset", args.preset, *args.app_args]
    browser = not args.no_browser
    found = (shutil.which("chromium") or shutil.which("chromium-browser")) and shutil.which("chromedriver")
    if browser and not found:
        print("no chromium + chromedriver here: page-ready times are not measured", file=sys.stderr)
        browser = False
    roots = [root.resolve() for root in args.root or [ROOT]]
    runs: dict[Path, list[dict[str, float | None]]] = {root: [] for root in roots}
    for i in range(args.runs):
        for root in roots:
            times = one_run(command, root=root, browser=browser, reply=args.reply, timeout=args.timeout)
            runs[root].append(times)
            print(json.dumps({"root": str(root), "run": i + 1, **times}), flush=True)
    for root, done in runs.items():
        medians = {k: round(statistics.median(r[k] for r in done), 2) if all(r[k] is not None for r in done)
                   else None for k in done[0]}
        print(json.dumps({"root": str(root), "median_of": len(done), **medians}))


if __name__ == "__main__":
    main()
