"""One question, one answer: the app's stateless tool (API endpoint `/ask`, MCP tool `ask` with `app.py --mcp`).

    ask = make_ask(ChatHandlers(model, OutputRoot(), ScoreStore()))
    text, image, audio, video = ask("Draw a red circle.")          # file paths, None where nothing came back
    text, *_ = ask("What is this?", image="photo.png")

Each call is a new one-turn conversation through the chat handlers (the same upload checks, notices and
errors as the chat); a turn that fails raises gr.Error with the chat's message, which MCP clients receive as a
tool error. Its docstring is what MCP clients read: gradio turns "Args:" into the tool's parameter
descriptions, so each argument stays on one line.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from app.handlers import DEFAULT_SETTINGS, ChatHandlers
from nextgpt.config import Modality

Answer = tuple[str, str | None, str | None, str | None]


def make_ask(handlers: ChatHandlers) -> Callable[..., Answer]:
    """`ask` for the model behind `handlers`."""

    def ask(text: str, image: str | None = None, audio: str | None = None, video: str | None = None) -> Answer:
        """Ask NExT-GPT, an any-to-any model, with text and optional media; get text and media back.
        It describes an image, a sound or a video it is given; asked to, it draws an image, makes a sound or a
        video, or edits the one it is given.

        Args:
            text: the question or instruction, e.g. "What is in this picture?" or "Draw a red circle."
            image: optional image to ask about (PNG or JPEG)
            audio: optional sound to ask about (WAV)
            video: optional video to ask about (MP4)
        Returns:
            the reply's text, then the image (PNG), sound (16 kHz WAV) and video (MP4) produced, or none
        """
        files = [path for path in (image, audio, video) if path]
        session = None
        for _, session in handlers.chat({"text": text or "", "files": files}, None, *DEFAULT_SETTINGS):
            pass
        if session is None or not session.turns:
            raise gr.Error("Nothing to answer: send a text, an image, a sound or a video.")
        turn = session.turns[-1]
        if turn.error is not None:
            raise gr.Error(turn.error)
        reply = "\n\n".join([turn.text, *turn.notices]) if turn.notices else turn.text
        first = {m: next((p["path"] for p in turn.media if p["type"] == m.value), None) for m in Modality}
        return reply, first[Modality.IMAGE], first[Modality.AUDIO], first[Modality.VIDEO]

    return ask
