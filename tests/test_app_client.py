"""The app's named API endpoints through gradio_client, against the launched app on 127.0.0.1.

    .venv/bin/python -m pytest tests/test_app_client.py -q
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from app.examples import EXAMPLES_DIR
from app.media import OutputRoot
from app.standin import STANDIN_NOTE, tiny_model
from app.store import ScoreStore
from app.ui import build_demo, launch


ADMIN = "admin-token-of-this-test"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("client")
    model = tiny_model()
    store = ScoreStore(root / "scores.sqlite")
    output = OutputRoot(root / "out")
    demo = build_demo(model, output=output, store=store, note=STANDIN_NOTE, admin_token=ADMIN)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", model, store, output
    demo.close()


def parts(message: dict) -> tuple[str, list[dict]]:
    text = " ".join(c["text"] for c in message["content"] if c.get("type") == "text")
    return text, [c["file"] for c in message["content"] if c.get("type") == "file"]


def test_two_turns_with_media(served, tmp_path):
    url, model, store, output = served
    client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/chat", "/regenerate", "/undo", "/clear", "/example", "/score", "/summary", "/export_csv",
            "/info"} <= set(api)
    assert "Random-weight" in client.predict(api_name="/info")

    # 1. an uploaded sound and a question
    model.llm.queue_reply("A high steady buzz.")
    sound = handle_file(EXAMPLES_DIR / "high_steady_buzz.wav")
    chat = client.predict({"text": "Describe the sound.", "files": [sound]}, api_name="/chat")
    assert [m["role"] for m in chat] == ["user", "assistant"]
    text, files = parts(chat[0])
    assert text == "Describe the sound." and Path(files[0]).suffix == ".wav"
    assert parts(chat[1])[0] == "A high steady buzz."

    # 2. the same session remembers turn 1 and produces an image and a video
    model.llm.queue_reply("Here. [IMG0][IMG1][IMG2][IMG3] [VID0][VID1][VID2][VID3]")
    chat = client.predict({"text": "Draw it, then make a video.", "files": []}, num_frames=2, api_name="/chat")
    assert len(chat) == 4
    text, files = parts(chat[3])
    assert text == "Here." and [Path(f).suffix for f in files] == [".png", ".mp4"]
    assert all(Path(f).is_file() and Path(f).is_relative_to(tmp_path / "downloads") for f in files)  # downloaded

    # 3. score turn 2; the store and the summary see it
    assert client.predict("client", 2, 7, "ok", api_name="/score").startswith("Saved score 7 for turn 2 (multi-turn)")
    (row,) = store.rows()
    assert (row["evaluator"], row["score"], row["conversion"]) == ("client", 7, "T->I+V")
    _, table = client.predict(ADMIN, api_name="/summary")  # the summary and export: the admin only
    assert table["data"] == [["multi-turn", 1, 7.0, None, None]]
    assert Path(client.predict(ADMIN, api_name="/export_csv")).read_text().count("\n") == 2
    for endpoint in ("/summary", "/export_csv"):
        with pytest.raises(Exception, match="admin"):
            client.predict("not-the-token", api_name=endpoint)

    # 4. another client is another session; undo and clear act on this one only
    other = Client(url, verbose=False, download_files=False)
    model.llm.queue_reply("Hi.")
    assert len(other.predict({"text": "Hello", "files": []}, api_name="/chat")) == 2
    assert len(client.predict(api_name="/undo")) == 2
    assert client.predict(api_name="/clear") == []
    assert len(list(output.root.glob("*/out-*"))) == 0  # clear removed this session's generated files
