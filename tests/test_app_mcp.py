"""The app as an MCP server (`launch(mcp=True)`, i.e. `app.py --mcp`), called by the `mcp` package's own client
over streamable HTTP and over SSE, and its tool as the plain API endpoint /ask through gradio_client.

    .venv/bin/python -m pytest tests/test_app_mcp.py -q

The app runs on 127.0.0.1 around the random-weight stand-in model (app/standin.py) whose replies the test
dictates, so that the answer's text and media are known.
"""

from __future__ import annotations

import asyncio
import base64
import warnings
from typing import Any

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from conftest import free_port
from app.examples import EXAMPLES_DIR
from app.media import OutputRoot
from app.standin import STANDIN_NOTE, tiny_model
from app.store import ScoreStore
from app.ui import build_demo, launch

pytestmark = pytest.mark.usefixtures("one_thread")
SIGNALS = {"image": "[IMG0][IMG1][IMG2][IMG3]", "audio": "[AUD0][AUD1][AUD2][AUD3]"}


class Recorder:
    """Wraps model.stream: the messages of every turn."""

    def __init__(self, model: Any) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        real = model.stream

        def stream(messages: Any, settings: Any = None) -> Any:
            self.calls.append(list(messages))
            yield from real(messages, settings)

        model.stream = stream


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcp")
    model = tiny_model()
    recorder = Recorder(model)
    demo = build_demo(model, output=OutputRoot(root / "out"), store=ScoreStore(root / "s.sqlite"), note=STANDIN_NOTE)
    port = free_port()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True, mcp=True)
    assert not [w for w in caught if "MCP" in str(w.message)], [str(w.message) for w in caught]
    yield f"http://127.0.0.1:{port}", model, recorder
    demo.close()


async def _call(transport: Any, url: str, arguments: dict[str, Any], progress: bool) -> tuple[list, Any]:
    """(the server's tools, the result of one `ask` call) through one MCP client connection."""
    seen: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(value)

    async with transport(url) as (read, write, *_):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            result = await session.call_tool("ask", arguments, progress_callback=on_progress if progress else None)
    return tools, result


def mcp_call(transport: Any, url: str, arguments: dict[str, Any], progress: bool = False) -> tuple[list, Any]:
    return asyncio.run(asyncio.wait_for(_call(transport, url, arguments, progress), timeout=120))


def data_url(path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def test_one_tool_ask_with_its_typed_docstring(served):
    url, model, _ = served
    model.llm.queue_reply("Hello.")
    tools, _ = mcp_call(streamable_http_client, f"{url}/gradio_api/mcp/", {"text": "Hi"})
    assert [t.name for t in tools] == ["ask"]  # the chat's stateful endpoints are not MCP tools
    (ask,) = tools
    assert ask.description.startswith("Ask NExT-GPT, an any-to-any model, with text and optional media; get text "
                                      "and media back.")
    schema = ask.inputSchema
    assert schema["required"] == ["text"] and set(schema["properties"]) == {"text", "image", "audio", "video"}
    assert schema["properties"]["text"]["type"] == "string"
    assert schema["properties"]["image"]["description"] == "optional image to ask about (PNG or JPEG)"


def test_ask_with_an_image_over_streamable_http_gets_text_image_and_sound(served):
    url, model, recorder = served
    model.llm.queue_reply(f"Here it is. {SIGNALS['image']} {SIGNALS['audio']}")
    image = data_url(EXAMPLES_DIR / "green_triangle.png", "image/png")
    _, result = mcp_call(streamable_http_client, f"{url}/gradio_api/mcp/", {"text": "Draw it, with a sound.",
                                                                             "image": image})
    assert not result.isError, result.content
    kinds = [c.type for c in result.content]
    assert kinds == ["text", "image", "text", "text"], result.content  # reply, the image inline + its URL, the sound
    assert result.content[0].text == "Here it is."
    assert result.content[1].mimeType == "image/png" and base64.b64decode(result.content[1].data)[:4] == b"\x89PNG"
    image_url = result.content[2].text.removeprefix("Image URL: ")
    sound_url = result.content[3].text
    assert httpx.get(image_url).content[:4] == b"\x89PNG"
    assert sound_url.endswith(".wav") and httpx.get(sound_url).content[:4] == b"RIFF"
    user = recorder.calls[-1][-1]["content"]  # the model saw the uploaded image and the text
    assert [p["type"] for p in user] == ["image", "text"] and user[1]["text"] == "Draw it, with a sound."


def test_ask_over_sse_with_progress_and_a_sound_to_describe(served):
    url, model, recorder = served
    model.llm.queue_reply("A high steady buzz.")
    sound = data_url(EXAMPLES_DIR / "high_steady_buzz.wav", "audio/wav")
    _, result = mcp_call(sse_client, f"{url}/gradio_api/mcp/sse", {"text": "What is this sound?", "audio": sound},
                         progress=True)
    assert not result.isError and [(c.type, c.text) for c in result.content] == [("text", "A high steady buzz.")]
    assert [p["type"] for p in recorder.calls[-1][-1]["content"]] == ["audio", "text"]


def test_a_turn_that_fails_is_a_tool_error_with_the_chats_message(served):
    url, _, _ = served
    _, result = mcp_call(streamable_http_client, f"{url}/gradio_api/mcp/", {"text": "  "})
    assert result.isError and "Nothing to answer" in result.content[0].text


def test_ask_is_also_the_api_endpoint_ask(served, tmp_path):
    url, model, _ = served
    client = Client(url + "/", verbose=False, download_files=str(tmp_path))
    model.llm.queue_reply(f"A picture. {SIGNALS['image']}")
    text, image, audio, video = client.predict("Draw a red circle.", api_name="/ask")
    assert text == "A picture." and image.endswith(".png") and audio is None and video is None
    model.llm.queue_reply("It is a green triangle.")
    text, *media = client.predict("What is this?", image=handle_file(EXAMPLES_DIR / "green_triangle.png"),
                                  api_name="/ask")
    assert text == "It is a green triangle." and media == [None, None, None]
    with pytest.raises(AppError, match="Nothing to answer"):
        client.predict("", api_name="/ask")
