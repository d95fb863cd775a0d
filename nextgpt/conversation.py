"""Prompt templates and the conversation builder: chat messages -> token ids + media slots.

Messages follow the Hugging Face chat convention::

    [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                  {"type": "image", "path": "cat.png"}]},
     {"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]}]

`content` may also be a plain string. A media part carries `path` (a file) or `array` (an already
loaded numpy array). Everything a user typed is tokenized as plain text (`split_special_tokens=True`):
signal tokens, `<Img>`, `### Human:` or `<|im_start|>` typed by a user can never become the special ids.

User media become `<Img> [slot] </Img>`; the slot's embedding is filled in by the model. Media an
assistant produced earlier become that modality's signal tokens, which is what the model wrote then.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from nextgpt.config import Modality, NextGPTConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Template:
    """A chat prompt format. Strings are template structure, tokenized with special tokens allowed."""

    system: str  # "{}" is replaced with the system text
    user: tuple[str, str]  # before, after a user turn's content
    assistant: tuple[str, str]  # before, after an assistant turn's content
    stop: tuple[str, ...]  # generation stops when the reply ends with any of these strings
    first_user: str = ""  # "" = `user[0]`; else the head of the first user turn (its own tokenizer call)
    bos: bool = False  # the sequence starts with the tokenizer's BOS id
    strip_around_added: bool = False  # text next to an added token loses its whitespace on that side
    run_on: tuple[str, ...] = ()  # text that starts an invented next turn: the reply is cut there


TEMPLATES: dict[str, Template] = {
    "chatml": Template(
        system="<|im_start|>system\n{}<|im_end|>\n",
        user=("<|im_start|>user\n", "<|im_end|>\n"),
        assistant=("<|im_start|>assistant\n", "<|im_end|>\n"),
        stop=("<|im_end|>",),
    ),
    # The official release's training format (model/common/utils.py build_one_instance_stage_3 with
    # anyToImageVideoAudio.prompt_wrap): <s> "### Human: " [<Img> media </Img>] question "\n### Assistant: "
    # reply [signal tokens] "\n###" "Human: " question "\n### Assistant: " ... Each turn is its own tokenizer
    # call, and the first turn's "### Human: " another. Its tokenizer (transformers 4.29, slow LLaMA) stripped
    # the whitespace on both sides of an added token, so "[IMG3]\n###" ends on "###" (835), while a text reply
    # ends on "\n###" ([13, 2277, 29937]). No system text.
    "vicuna_v0": Template(
        system="{}\n\n",
        user=("Human: ", "\n### Assistant: "),
        assistant=("", "\n###"),
        stop=("\n###", "###"),
        first_user="### Human: ",
        bos=True,
        strip_around_added=True,
        run_on=("\nHuman:", "### Human:", "\n### Assistant:"),
    ),
}


@dataclass(frozen=True)
class MediaItem:
    """A user-supplied item to encode: from a file path or an array already in memory."""

    modality: Modality
    path: str | None = None
    array: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass
class Prompt:
    """Token ids with the positions whose embeddings are replaced by projected media."""

    ids: list[int]
    media: list[tuple[int, MediaItem]]  # (position in ids, item)
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SignalBlock:
    """Where an assistant turn produced a modality: its signal tokens start at `start`."""

    start: int
    modality: Modality
    caption: str | None = None  # what was produced, when known (training targets)


@dataclass
class TrainingExample:
    ids: list[int]
    labels: list[int]  # -100 where no loss is taken
    media: list[tuple[int, MediaItem]]
    blocks: list[SignalBlock]


_CALL_BREAK = object()  # marks where the official format tokenized in two calls


class ConversationError(ValueError):
    """A message list that cannot be turned into a prompt (user-facing message)."""


def normalize_messages(messages: Sequence[dict[str, Any]], *, user_last: bool = True) -> list[dict[str, Any]]:
    """Validate messages and return them with `content` always a list of typed parts."""
    if not messages:
        raise ConversationError("the conversation is empty")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("system", "user", "assistant"):
            raise ConversationError(f"message {i}: role must be system, user or assistant")
        content = msg.get("content", "")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise ConversationError(f"message {i}: content must be a string or a list of parts")
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                parts.append({"type": "text", "text": str(part.get("text", ""))})
            elif kind in {m.value for m in Modality}:
                if part.get("path") is None and part.get("array") is None:
                    raise ConversationError(f"message {i}: a {kind} part needs a 'path' or an 'array'")
                parts.append(dict(part))
            else:
                raise ConversationError(f"message {i}: unknown content part type {kind!r}")
        out.append({"role": msg["role"], "content": parts})
    if user_last and out[-1]["role"] != "user":
        raise ConversationError("the last message must be from the user")
    return out


class ConversationBuilder:
    """Turns normalized messages into a `Prompt` for one preset's tokenizer and template."""

    def __init__(self, cfg: NextGPTConfig, tokenizer: Any) -> None:
        self.cfg = cfg
        self.tok = tokenizer
        self.template = TEMPLATES[cfg.llm.template]
        ids = tokenizer.convert_tokens_to_ids
        self.media_start = ids(cfg.media_start)
        self.media_end = ids(cfg.media_end)
        self.signal_ids = {spec.modality: [ids(t) for t in spec.signal_tokens] for spec in cfg.decoders}
        # token sequences that end a reply, as the model writes them (a string after a newline is tokenized
        # mid-text, without the tokenizer's leading-space marker)
        self.stop_sequences = [self._stop_ids(s) for s in self.template.stop]
        self.stop_ids = [seq[0] for seq in self.stop_sequences if len(seq) == 1]
        self.bos = [tokenizer.bos_token_id] if self.template.bos and tokenizer.bos_token_id is not None else []

    # ---- tokenization helpers -----------------------------------------------------------------
    def _stop_ids(self, s: str) -> list[int]:
        if not s[:1].isspace():
            return self.structure(s)
        anchor = self.structure("a")
        ids = self.structure("a" + s)
        return ids[len(anchor):] if ids[:len(anchor)] == anchor else ids

    def structure(self, s: str) -> list[int]:
        """Template text: our own strings, so special tokens in it are real."""
        return self.tok(s, add_special_tokens=False)["input_ids"] if s else []

    def text(self, s: str) -> list[int]:
        """Anything a person typed: special tokens are split into ordinary pieces."""
        return self.tok(s, add_special_tokens=False, split_special_tokens=True)["input_ids"] if s else []

    # ---- turns --------------------------------------------------------------------------------
    def _content(self, parts: list[dict[str, Any]], role: str) -> tuple[list[int], list[tuple[int, MediaItem]], list[SignalBlock]]:
        ids: list[int] = []
        media: list[tuple[int, MediaItem]] = []
        blocks: list[SignalBlock] = []
        for part in parts:
            if part["type"] == "text":
                ids += self.text(part["text"])
                continue
            modality = Modality(part["type"])
            if role == "assistant":
                blocks.append(SignalBlock(len(ids), modality, part.get("caption")))
                ids += self.signal_ids[modality]  # what the model wrote when it produced this item
            else:
                item = MediaItem(modality, path=part.get("path"), array=part.get("array"))
                ids.append(self.media_start)
                media.append((len(ids), item))
                ids += [self.media_start, self.media_end]  # the slot's id is replaced by the embedding
        return ids, media, blocks

    def turn(self, msg: dict[str, Any], *, first: bool = False) -> tuple[list[int], list[tuple[int, MediaItem]]]:
        ids, media, _, _ = self._turn(msg, first=first)
        return ids, media

    def _turn(self, msg: dict[str, Any], *, first: bool = False) -> tuple[list[int], list[tuple[int, MediaItem]], list[SignalBlock], int]:
        """ids, media slots, assistant signal blocks (positions within the turn), head length."""
        if self.template.strip_around_added:
            return self._official_turn(msg, first=first)
        before, after = self.template.user if msg["role"] == "user" else self.template.assistant
        head = self.structure(before)
        body, media, blocks = self._content(msg["content"], msg["role"])
        media = [(pos + len(head), item) for pos, item in media]
        blocks = [SignalBlock(b.start + len(head), b.modality, b.caption) for b in blocks]
        return head + body + self.structure(after), media, blocks, len(head)

    def build_training(self, messages: Sequence[dict[str, Any]], *, max_tokens: int, system: str | None = None) -> TrainingExample:
        """Ids with labels on every assistant turn (its text, signal tokens and end marker), for teacher forcing.

        Assistant media parts may carry a "caption": the stage-2/3 L2 target is the decoder's encoding of it.
        """
        msgs = normalize_messages(messages, user_last=False)
        system_texts = [p["text"] for m in msgs if m["role"] == "system" for p in m["content"] if p["type"] == "text"]
        ids = self.bos + self._system_ids("\n".join(system_texts) if system_texts else (system if system is not None else self.cfg.default_system))
        labels = [-100] * len(ids)
        media: list[tuple[int, MediaItem]] = []
        blocks: list[SignalBlock] = []
        first = True
        for msg in msgs:
            if msg["role"] == "system":
                continue
            turn_ids, turn_media, turn_blocks, head = self._turn(msg, first=first)
            first = False
            media += [(p + len(ids), it) for p, it in turn_media]
            blocks += [SignalBlock(b.start + len(ids), b.modality, b.caption) for b in turn_blocks]
            supervised = msg["role"] == "assistant"
            labels += [-100] * head + (turn_ids[head:] if supervised else [-100] * (len(turn_ids) - head))
            ids += turn_ids
        if len(ids) > max_tokens:  # keep whole media groups and blocks only
            media = [(p, it) for p, it in media if p + 1 < max_tokens]
            blocks = [b for b in blocks if b.start + len(self.signal_ids[b.modality]) <= max_tokens]
            ids, labels = ids[:max_tokens], labels[:max_tokens]
        return TrainingExample(ids=ids, labels=labels, media=media, blocks=blocks)

    def build(self, messages: Sequence[dict[str, Any]], *, max_prompt_tokens: int, system: str | None = None) -> Prompt:
        """Prompt for the next assistant reply, dropping the oldest turns when it does not fit."""
        msgs = normalize_messages(messages)
        notices: list[str] = []
        system_texts = [p["text"] for m in msgs if m["role"] == "system" for p in m["content"] if p["type"] == "text"]
        system_text = "\n".join(system_texts) if system_texts else (system if system is not None else self.cfg.default_system)
        sys_ids = self.bos + self._system_ids(system_text)
        chat = [m for m in msgs if m["role"] != "system"]
        turns = [self.turn(m, first=i == 0) for i, m in enumerate(chat)]
        gen_head = self.structure(self.template.assistant[0])
        budget = max_prompt_tokens - len(sys_ids) - len(gen_head)
        if budget < 16:
            raise ConversationError("the context window is too small for any message")

        # 1. a single over-long last message is truncated (its text, keeping the start)
        last_ids, last_media = turns[-1]
        if len(last_ids) > budget:
            turns[-1] = self._truncate(last_ids, last_media, budget)
            notices.append(f"Your message was too long and was cut to {budget} tokens.")
        # 2. the oldest turns go (user and assistant alike, with their media) until the rest fits
        dropped = 0
        while sum(len(t[0]) for t in turns) > budget and len(turns) > 1:
            turns.pop(0)
            chat.pop(0)
            dropped += 1
            if self.template.first_user:  # the kept conversation starts with a user turn in the first-turn format
                while len(turns) > 1 and chat[0]["role"] != "user":
                    turns.pop(0)
                    chat.pop(0)
                    dropped += 1
                if len(turns) > 1:
                    turns[0] = self.turn(chat[0], first=True)
        if dropped:
            notices.append(f"The conversation is longer than the model's window: the oldest {dropped} message(s) were left out.")
            log.info("dropped %d oldest messages to fit %d tokens", dropped, max_prompt_tokens)

        ids = list(sys_ids)
        media: list[tuple[int, MediaItem]] = []
        for turn_ids, turn_media in turns:
            media += [(pos + len(ids), item) for pos, item in turn_media]
            ids += turn_ids
        ids += gen_head
        return Prompt(ids=ids, media=media, notices=notices)

    def _official_turn(self, msg: dict[str, Any], *, first: bool) -> tuple[list[int], list[tuple[int, MediaItem]], list[SignalBlock], int]:
        """A turn as the official release tokenized it (see TEMPLATES["vicuna_v0"]).

        The turn is a list of segments: text, added-token ids, media slots and call breaks. Text beside an
        added token or a slot loses its whitespace on that side, and each call's text runs are tokenized on
        their own (the tokenizer's leading-space marker starts each run), as transformers 4.29 did.
        """
        user = msg["role"] == "user"
        head = (self.template.first_user or self.template.user[0]) if user and first else (
            self.template.user[0] if user else self.template.assistant[0])
        tail = self.template.user[1] if user else self.template.assistant[1]
        body: list[Any] = []
        for part in msg["content"]:
            if part["type"] == "text":
                if body and isinstance(body[-1], str) and body[-1] and part["text"]:
                    body[-1] += " " + part["text"]
                else:
                    body.append(part["text"])
                continue
            modality = Modality(part["type"])
            if user:
                body += [self.media_start, MediaItem(modality, path=part.get("path"), array=part.get("array")),
                         self.media_end]
            else:
                body.append((modality, part.get("caption")))  # signal tokens
        starts_with_media = bool(body) and not isinstance(body[0], str)
        segments: list[Any] = [head]
        if user and first and self.template.first_user and not starts_with_media:
            segments.append(_CALL_BREAK)  # "### Human: " was its own tokenizer call
        segments += body + [tail]

        ids: list[int] = []
        media: list[tuple[int, MediaItem]] = []
        blocks: list[SignalBlock] = []
        run = ""

        def flush(before_token: bool) -> None:
            nonlocal run
            text = run.rstrip() if before_token else run
            if text:
                ids.extend(self.text(text))
            run = ""

        after_token = False
        for seg in segments:
            if isinstance(seg, str):
                run += seg.lstrip() if after_token and not run else seg
                after_token = after_token and not run
                continue
            if seg is _CALL_BREAK:
                flush(False)
                after_token = False
                continue
            flush(True)
            after_token = True
            if isinstance(seg, int):
                ids.append(seg)
            elif isinstance(seg, MediaItem):
                media.append((len(ids), seg))
                ids.append(self.media_start)  # the slot's id is replaced by the embedding
            else:
                modality, caption = seg
                blocks.append(SignalBlock(len(ids), modality, caption))
                ids += self.signal_ids[modality]
        flush(False)
        return ids, media, blocks, 0

    def _system_ids(self, text: str) -> list[int]:
        if not text:
            return []
        head, _, tail = self.template.system.partition("{}")
        return self.structure(head) + self.text(text) + self.structure(tail)

    def _truncate(self, ids: list[int], media: list[tuple[int, MediaItem]], budget: int) -> tuple[list[int], list[tuple[int, MediaItem]]]:
        """Cut a turn's body to `budget` tokens, keeping its head, its end marker and media that still fit."""
        tail = self.structure(self.template.user[1])
        keep = budget - len(tail)
        kept_media = [(p, it) for p, it in media if p + 1 < keep]  # slot and its </Img> both fit
        dropped = [p for p, _ in media if p + 1 >= keep]
        if dropped:
            keep = min(keep, dropped[0] - 1)  # never cut through a media group: end before its <Img>
        return ids[:keep] + tail, kept_media
