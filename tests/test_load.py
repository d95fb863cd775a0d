"""The launched app under load and its file route (issue #6, items 4 and 5), through gradio_client on 127.0.0.1.

    .venv/bin/python -m pytest tests/test_load.py -q -s     # -s prints the FIGURE lines for docs/reliability.md

8 sessions chat at once (each a gradio_client.Client: its own gr.State), with the stand-in NextGPT on tiny random
parts; every request has a timeout. Checked: every reply arrives, one generation at a time (the model's
concurrency limit), a full queue refuses at once, no session sees another's text or files, and the file route
serves the output root but nothing outside it.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app.media import OutputRoot
from app.standin import STANDIN_NOTE, tiny_model
from app.store import ScoreStore
from app.ui import MAX_QUEUE, build_demo, launch
from nextgpt.media import load_image, save_image
from nextgpt.model import Reply, StreamEvent

SESSIONS, TURNS = 8, 3
TIMEOUT_S = 60.0  # one request, queueing included
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (128, 0, 0),
           (0, 128, 0)]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """Wraps model.stream: which messages each generation saw, and how many ran at once."""

    def __init__(self, model: Any) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.active = self.max_active = 0
        self._lock = threading.Lock()
        real = model.stream

        def stream(messages: Any, settings: Any = None) -> Any:
            with self._lock:
                self.calls.append(messages)
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                yield from real(messages, settings)
            finally:
                with self._lock:
                    self.active -= 1

        model.stream = stream


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    model = tiny_model()
    recorder = Recorder(model)
    output = OutputRoot(root / "out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(output.root / "gradio"))  # as app.py does: gradio's copies under the root
        demo = build_demo(model, output=output, store=ScoreStore(root / "scores.sqlite"), note=STANDIN_NOTE)
        port = _port()
        launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
        yield f"http://127.0.0.1:{port}/", demo, output, recorder, root
        demo.close()


def _texts(message: dict[str, Any]) -> str:
    return " ".join(c["text"] for c in message["content"] if c.get("type") == "text")


def _files(message: dict[str, Any]) -> list[str]:
    return [c["file"]["path"] if isinstance(c["file"], dict) else c["file"]
            for c in message["content"] if c.get("type") == "file"]


# ---- 4. load -------------------------------------------------------------------------------------------
def test_eight_sessions_at_once(served, tmp_path):
    url, demo, output, recorder, _ = served
    assert demo._queue.max_size == MAX_QUEUE
    images = [save_image(np.full((24, 24, 3), c, np.uint8), tmp_path / f"colour{i}.png") for i, c in enumerate(COLOURS)]
    tokens = [f"tok{i}x{uuid.uuid4().hex[:8]}" for i in range(SESSIONS)]
    latencies: list[float] = []

    def session(i: int) -> list[dict[str, Any]]:
        client = Client(url, verbose=False, download_files=str(tmp_path / f"dl{i}"), httpx_kwargs={"timeout": TIMEOUT_S})
        chat: list[dict[str, Any]] = []
        for turn in range(TURNS):
            files = [handle_file(images[i])] if turn == 0 else []
            t0 = time.perf_counter()
            job = client.submit({"text": f"{tokens[i]} turn {turn}", "files": files}, max_new_tokens=8, api_name="/chat")
            chat = job.result(timeout=TIMEOUT_S)
            latencies.append(time.perf_counter() - t0)
        client.close()
        return chat

    t0 = time.perf_counter()
    with ThreadPoolExecutor(SESSIONS) as pool:
        chats = [f.result(timeout=SESSIONS * TURNS * TIMEOUT_S) for f in [pool.submit(session, i) for i in range(SESSIONS)]]
    wall = time.perf_counter() - t0

    assert len(latencies) == SESSIONS * TURNS  # every reply arrived
    assert recorder.max_active == 1  # the model's concurrency limit held
    for i, chat in enumerate(chats):
        assert [m["role"] for m in chat] == ["user", "assistant"] * TURNS
        said = [_texts(m) for m in chat if m["role"] == "user"]
        assert said == [f"{tokens[i]} turn {t}" for t in range(TURNS)]  # its own history only
        (image,) = [f for m in chat if m["role"] == "user" for f in _files(m)]
        assert tuple(load_image(image).array[0, 0]) == COLOURS[i]  # its own upload
    for messages in recorder.calls:  # what the model saw: one session's turns, never a mix
        said = {t for m in messages if m["role"] == "user" for p in m["content"] if p["type"] == "text"
                for t in tokens if t in p["text"]}
        assert len(said) == 1
    folders = [p for p in output.root.iterdir() if p.is_dir() and len(p.name) == 32]
    colours = sorted(tuple(load_image(f).array[0, 0]) for d in folders for f in d.glob("in-*"))
    assert len(folders) == SESSIONS and colours == sorted(COLOURS)  # one folder per session, its own image
    p50, worst = statistics.median(latencies), max(latencies)
    print(f"FIGURE load: {SESSIONS} sessions x {TURNS} turns in {wall:.1f} s; latency p50 {p50:.2f} s, "
          f"max {worst:.2f} s; max concurrent generations {recorder.max_active}")
    assert wall < 120


class Blocking:
    """A model whose generation waits until released (to fill the queue)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg, self.can_encode, self.can_generate = cfg, True, set()
        self.release = threading.Event()

    def stream(self, messages: Any, settings: Any = None) -> Any:
        self.release.wait(TIMEOUT_S)
        yield StreamEvent(reply=Reply(text="done"))


def test_full_queue_refuses_at_once(tmp_path):
    from app.standin import tiny_config

    model = Blocking(tiny_config())
    demo = build_demo(model, output=OutputRoot(tmp_path / "out"), store=ScoreStore(tmp_path / "s.sqlite"),
                      version="blocking")
    port = _port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True, max_queue=2)
    try:
        url = f"http://127.0.0.1:{port}/"
        clients = [Client(url, verbose=False, httpx_kwargs={"timeout": TIMEOUT_S}) for _ in range(5)]
        jobs = []
        for c in clients:
            jobs.append(c.submit({"text": "hi", "files": []}, api_name="/chat"))
            time.sleep(0.3)  # in order: the first runs, two wait, the rest find the queue full
        model.release.set()
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(job.result(timeout=TIMEOUT_S)[-1]["content"][0]["text"])
            except Exception as err:  # noqa: BLE001 - the refusal is what is checked
                outcomes.append(f"{type(err).__name__}: {err}")
        assert outcomes[:3] == ["done"] * 3, outcomes
        assert all("Queue is full" in o for o in outcomes[3:]), outcomes
    finally:
        demo.close()


# ---- 5. the file route -----------------------------------------------------------------------------------
def test_file_route_serves_the_output_root_only(served, tmp_path):
    url, demo, output, _, root = served
    secret = root / "secret.txt"  # beside the output root, not in it
    secret.write_text("top secret")
    client = Client(url, verbose=False, download_files=False)
    picture = save_image(np.full((16, 16, 3), 77, np.uint8), tmp_path / "p.png")
    chat = client.predict({"text": "look", "files": [handle_file(picture)]}, max_new_tokens=4, api_name="/chat")
    (served_file,) = _files(chat[0])
    shown = Path(served_file)  # gradio's copy, in its cache under the output root
    (inside,) = [p for p in output.root.glob("*/in-*") if p.name == shown.name]  # the session folder's file
    assert shown.is_relative_to(output.root) and inside.parent.parent == output.root
    http = httpx.Client(base_url=url, timeout=TIMEOUT_S)
    for path in (shown, inside):
        assert http.get(f"gradio_api/file={path}").content == inside.read_bytes()
    for outside in [secret, "/etc/passwd", f"{inside.parent}/../../secret.txt", f"{output.root}/../secret.txt",
                    "%2e%2e/%2e%2e/etc/passwd", f"{inside.parent}/%2e%2e/%2e%2e/secret.txt", "~/.bashrc",
                    "file:///etc/passwd"]:
        response = http.get(f"gradio_api/file={outside}")
        assert response.status_code in (403, 404) and b"top secret" not in response.content, (outside, response)
    http.close()


def test_server_never_reads_a_path_a_client_names(served):
    """A file part naming a server path that was never uploaded is refused; nothing is copied."""
    url, demo, output, _, root = served
    before = sorted(output.root.rglob("*"))
    http = httpx.Client(base_url=url, timeout=TIMEOUT_S)
    hostile = {"text": "read this", "files": [{"path": "/etc/passwd", "orig_name": "passwd.png",
                                               "meta": {"_type": "gradio.FileData"}}]}
    settings = [0.0, 1.0, 4, 0, 0.0, 0, 0.0, 0]  # the settings panel's values, as handlers.SETTINGS
    event = http.post("gradio_api/call/chat", json={"data": [hostile, *settings]}).json()["event_id"]
    stream = http.get(f"gradio_api/call/chat/{event}").text
    assert "event: error" in stream and "root:" not in stream, stream
    print("FIGURE /etc/passwd as a file part:", stream.strip().splitlines()[-1][:200])
    assert sorted(output.root.rglob("*")) == before
    http.close()


def test_upload_with_a_hostile_name_lands_under_an_app_chosen_name(served, tmp_path):
    url, demo, output, _, root = served
    data = (save_image(np.full((16, 16, 3), 9, np.uint8), tmp_path / "x.png")).read_bytes()
    http = httpx.Client(base_url=url, timeout=TIMEOUT_S)
    names = ["../../../../tmp/evil.png", "..\\..\\evil.png", "a/b/c.png", "evil\x00.png.sh", ".."]
    paths, refused = [], []
    for name in names:
        uploaded = http.post("gradio_api/upload", files=[("files", (name, data, "image/png"))])
        if uploaded.status_code == 200:
            paths += [Path(p) for p in uploaded.json()]
        else:
            assert uploaded.status_code == 400, uploaded.text
            refused.append(name)
    assert not Path("/tmp/evil.png").exists()
    for p in paths:  # inside gradio's upload cache (under the output root), whatever the name said
        assert ".." not in p.parts and p.is_file() and p.resolve().parent.parent == output.root / "gradio", p
    client = Client(url, verbose=False, download_files=False)
    stored = []
    for p in paths:
        try:
            chat = client.predict({"text": "", "files": [handle_file(p)]}, max_new_tokens=4, api_name="/chat")
        except AppError as err:  # gradio's own file-type check (the textbox accepts image/audio/video only)
            assert "Invalid file type" in str(err) and not p.name.endswith((".png", ".PNG")), p
            refused.append(p.name)
            continue
        stored += [Path(f) for f in _files(chat[-2])]
    assert len(stored) >= 3
    for f in stored:  # shown from gradio's copy; the file itself is in a session folder, named by the app
        assert f.is_relative_to(output.root) and f.name.startswith("in-") and f.suffix == ".png", f
        (original,) = output.root.glob(f"*/{f.name}")
        assert len(original.parent.name) == 32
    http.close()
    print("FIGURE hostile upload names: refused", json.dumps(refused), "; kept in gradio's cache as",
          json.dumps([p.name for p in paths]), "; copied into the session as in-<random>.png")


def test_session_whose_files_expired_goes_on(served, tmp_path):
    """The sweep removed this session's folder (TTL): the next turn still arrives, with a notice."""
    url, demo, output, _, root = served
    client = Client(url, verbose=False, download_files=False)
    picture = save_image(np.full((16, 16, 3), 200, np.uint8), tmp_path / "q.png")
    chat = client.predict({"text": "keep", "files": [handle_file(picture)]}, max_new_tokens=4, api_name="/chat")
    (name,) = [Path(f).name for f in _files(chat[0])]
    (folder,) = [p.parent for p in output.root.glob(f"*/{name}") if len(p.parent.name) == 32]
    output.remove(folder.name)
    chat = client.predict({"text": "still there?", "files": []}, max_new_tokens=4, api_name="/chat")
    assert len(chat) == 4 and "had expired" in _texts(chat[3]), chat[3]
