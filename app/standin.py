"""A tiny NExT-GPT with random weights, for the app's tests and for working on the UI without a checkpoint.

    model = tiny_model()                                  # the real NextGPT class, toy sizes, 2 CPU cores
    model.llm.queue_reply("Here it is. [IMG0][IMG1][IMG2][IMG3]")   # steer the next reply (signal tokens work)
    model.chat([{"role": "user", "content": "Draw a red circle."}])  # -> Reply with one 32x32 image

The model is nextgpt/tiny.py's (the `tiny` preset: the stock pipeline at toy widths) with a `ScriptedLLM`
around its LLM. Its answers mean nothing: the app labels it as a random-weight model (`STANDIN_NOTE`) and never
as a working one.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nextgpt.config import Modality, NextGPTConfig

if TYPE_CHECKING:
    from nextgpt.model import NextGPT

STANDIN_NOTE = "Random-weight stand-in model (tests / UI development): its answers and media mean nothing."


def tiny_config() -> NextGPTConfig:
    """The tiny preset, presented to the app as nano (the app's nano hints and examples show with it)."""
    return NextGPTConfig.from_name("tiny").replace(name="nano")


class ScriptedLLM(nn.Module):
    """A causal LM whose next reply can be dictated: while a queued reply lasts, every generation step's
    logits are pushed onto its next token (then the end-of-turn token). With nothing queued it samples freely.

    The prompt pass (`inputs_embeds`) starts the next queued reply; the hidden-state pass over a finished
    reply (`output_hidden_states=True`) is left alone, so the output projectors see the real LM's states.
    `step_seconds` slows every generation step down (tests of what happens while a reply is generating).
    """

    def __init__(self, llm: nn.Module, tokenizer: Any, stop_token: str = "<|im_end|>") -> None:
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer
        self.stop_id = tokenizer.convert_tokens_to_ids(stop_token)
        self.replies: deque[list[int]] = deque()
        self._script: list[int] | None = None
        self._pos = 0
        self.step_seconds = 0.0

    def queue_reply(self, text: str) -> None:
        """The next reply, as text; signal tokens such as [IMG0] in it become their special ids."""
        self.replies.append(self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.stop_id])

    def get_input_embeddings(self) -> nn.Module:
        return self.llm.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.llm.get_output_embeddings()

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **kwargs: Any) -> Any:
        out = self.llm(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)
        if kwargs.get("output_hidden_states"):
            return out
        if self.step_seconds:
            time.sleep(self.step_seconds)
        if inputs_embeds is not None:  # a new prompt: the next queued reply, if any
            self._script = self.replies.popleft() if self.replies else None
            self._pos = 0
        if self._script is not None:
            token = self._script[self._pos] if self._pos < len(self._script) else self.stop_id
            self._pos += 1
            logits = out.logits[:, -1]  # (1, V)
            logits.fill_(-1e4)
            logits[:, token] = 1e4
        return out


def tiny_model(*, encoder: bool = True, generate: tuple[Modality, ...] = tuple(Modality), seed: int = 0) -> NextGPT:
    """A random-weight `NextGPT` on the CPU whose replies `model.llm.queue_reply` steers. `encoder=False` /
    `generate=()` give a text-only model, like a checkpoint whose media parts are not trained yet."""
    from nextgpt import tiny

    return tiny.tiny_model(tiny_config(), encoder=encoder, generate=generate, seed=seed, wrap_llm=ScriptedLLM)
