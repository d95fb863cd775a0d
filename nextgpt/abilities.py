"""Questions about the model itself ("What can you do?", "help") and the answer built from what it can do.

    asks = AbilityQuestions()
    asks("What are you able to do?")       # True
    asks("Draw a red circle.")             # False
    describe_abilities("nano", reads_media=True, writes={Modality.IMAGE}, world=profile)   # Markdown text

A model trained on a closed world cannot say what it knows: nano's LLM answers "What can you do?" with
SmolLM2's "I'm here to help with a wide range of tasks". So the engine answers such questions itself, from
the checkpoint's parts (what it reads, what it writes) and its world (`world_profile.py`), never from a
string per preset.

A question is recognised by sentence-embedding similarity (all-MiniLM-L6-v2, the nano decoders' own text
encoder): a sentence is about the model's abilities when its nearest anchor among `ABILITY_ANCHORS` is at
least `threshold` similar and closer, by `margin`, than its nearest anchor among the things people ask a
world model to do (the world's training phrasings: describe, draw, play, animate, edit, ask about an item) and
a few general requests. Each sentence of a message counts on its own ("Is this a real photograph? What do you
actually know about?" is caught by its second sentence). It never raises: without the encoder nothing is caught.
"""

from __future__ import annotations

import logging
import re
from typing import Callable, Collection, Sequence

import numpy as np

from nextgpt.config import MODALITY_INFO, Modality
from nextgpt.world_profile import WorldProfile, either

log = logging.getLogger(__name__)


# Questions about what the model can do, know or take (the nearest one decides with the margin below)
ABILITY_ANCHORS: tuple[str, ...] = (
    "What can you do?", "What are your abilities?", "What are you capable of?", "What do you know about?",
    "What do you know?", "Help", "How can you help me?", "How do I use you?", "What can I ask you?",
    "What can you make?", "What can you draw?", "What kinds of sounds can you make?",
    "Which colours and shapes do you know?", "What do you understand?", "Which things can you recognise?",
    "What are your limits?", "What are you good at?", "Tell me about your abilities.", "What were you trained on?",
    "Which kinds of input do you understand?", "What kinds of pictures do you know?", "What is this app for?",
    "Show me what you can do.", "What are your skills?", "What media can you read and write?",
    "What can this assistant do?", "What words do you know?",
)
# Requests that are not about the model, besides the world's training phrasings (`other_anchors`)
GENERAL_ANCHORS: tuple[str, ...] = (
    "What do you know about France?", "Tell me about photosynthesis.", "Help me write a poem.",
    "Can you help me with my homework?", "What can you tell me about this image?", "Is this a real photograph?",
    "Who are you?", "What is your name?", "How are you?", "Write a short story.", "Explain gravity.",
    "What is a circle?", "What colour is the sky?", "Thanks!", "Hello!", "Cool.",
    # requests with no world caption, and how-to questions
    "Draw something.", "Make a sound.", "Can you make a picture?", "Play something for me.", "Show me a video.",
    "How do I cook rice?", "How do I paint a wall?", "Name an animal.",
)


def other_anchors() -> list[str]:
    """What people ask a world model to do: every user phrasing of the world's training split (T2M requests
    filled with one caption per modality, requests about uploaded media) and `GENERAL_ANCHORS`."""
    from nextgpt.world.prompts import TRAIN_BOOK, question_senses
    from nextgpt.world.vocab import ATTRIBUTES, CAPTION_TEMPLATES

    book = TRAIN_BOOK
    out = [p for prompts in book.comprehension.values() for p in prompts]
    for modality, templates in book.t2m.items():
        caption = CAPTION_TEMPLATES[modality].format(**{k: v[0] for k, v in ATTRIBUTES[modality].items()})
        out += [t.format(caption=caption) for t in templates]
    out += [p for values in book.edits.values() for prompts in values.values() for p in prompts]
    out += [q for questions in book.questions.values() for q in questions]
    out += [t.format(value="left") for t in book.animate] + list(book.still)
    uploads = book.uploads  # requests about uploaded media: edits, conversions, questions about one or two
    out += [p for values in uploads.edits.values() for prompts in values.values() for p in prompts]
    out += list(uploads.reverse) + [t.format(value="left") for t in uploads.animate] + list(uploads.still)
    out += list(question_senses(uploads))  # yes/no, which of two, the same in both: with every media noun
    return list(dict.fromkeys(out + list(GENERAL_ANCHORS)))


def sentences(text: str) -> list[str]:
    """The text itself, then its sentences when it has more than one."""
    text = " ".join(text.split())
    parts = [s for s in re.split(r"(?<=[.?!;])\s+", text) if s]
    return [text] + (parts if len(parts) > 1 else [])


def minilm_embedder() -> Callable[[Sequence[str]], np.ndarray]:
    """all-MiniLM-L6-v2 from its bundled folder: texts -> (N, 384) unit sentence embeddings (mean pooling)."""
    import torch
    from transformers import BertModel, BertTokenizerFast

    from nextgpt.decoder_configs import caption_encoder_path

    path = caption_encoder_path()
    tokenizer = BertTokenizerFast.from_pretrained(path, local_files_only=True)
    model = BertModel.from_pretrained(path, local_files_only=True).eval()

    def embed(texts: Sequence[str]) -> np.ndarray:
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state  # (N, L, 384)
        mask = batch["attention_mask"][..., None].float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    return embed


class AbilityQuestions:
    """Whether a message asks what the model can do (see the module docstring); the encoder loads on first use."""

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray] | None = None, *, threshold: float = 0.55,
                 margin: float = 0.05) -> None:
        self._embed = embed
        self.threshold = threshold
        self.margin = margin
        self._anchors: tuple[np.ndarray, np.ndarray] | None = None
        self._broken = False

    def _ready(self) -> bool:
        if self._anchors is not None:
            return True
        if self._broken:
            return False
        try:
            if self._embed is None:
                self._embed = minilm_embedder()
            self._anchors = (self._embed(list(ABILITY_ANCHORS)), self._embed(other_anchors()))
        except Exception as err:  # noqa: BLE001 - a missing or broken encoder switches the check off
            log.warning("questions about abilities are left to the LLM: no sentence encoder (%s)", err)
            self._broken = True
            return False
        return True

    def scores(self, text: str) -> tuple[float, float]:
        """(similarity to the nearest ability anchor, to the nearest other anchor) of the text's best sentence."""
        if not text.strip() or not self._ready():
            return 0.0, 0.0
        assert self._anchors is not None and self._embed is not None
        ability, other = self._anchors
        emb = self._embed(sentences(text))  # (S, 384)
        near_ability, near_other = (emb @ ability.T).max(1), (emb @ other.T).max(1)
        best = int(np.argmax(near_ability - near_other))
        return float(near_ability[best]), float(near_other[best])

    def __call__(self, text: str) -> bool:
        try:
            near_ability, near_other = self.scores(text)
        except Exception:  # noqa: BLE001 - never let this check fail a turn
            log.exception("ability-question check failed; the LLM answers")
            return False
        return near_ability >= self.threshold and near_ability - near_other >= self.margin


def describe_abilities(name: str, *, reads_media: bool, writes: Collection[Modality],
                       world: WorldProfile | None) -> str:
    """The answer to "What can you do?": what this checkpoint reads and writes and the world it knows."""
    made = [m for m in Modality if m in writes]
    reads = either(["text"] + [spec.spoken_plural for spec in MODALITY_INFO.values()], "and") if reads_media else "text only"
    lines = [f"I am {name}. I read {reads} and answer with {either(['text'] + [MODALITY_INFO[m].spoken_plural for m in made], 'and')}."]
    if not reads_media:
        lines[0] += " This checkpoint's media encoder is not trained, so I cannot look at uploads yet."
    if world is None:
        return lines[0]
    known = [m for m in Modality if m in world.modalities]
    lines.append("I know one small world and nothing outside it:\n" + "\n".join(
        f"- {MODALITY_INFO[m].spoken_plural}: {world.describe(m)};" for m in known).rstrip(";") + ".")
    tries = [MODALITY_INFO[m].request.format(caption=world.example(m)) for m in known if m in made]
    asks = []
    if tries:
        asks.append("ask for one, e.g. " + either([f'"{t}"' for t in tries]))
    if reads_media:
        asks.append(f"send me such a {either([MODALITY_INFO[m].spoken for m in known])} and ask what it is")
    if tries:
        asks.append("ask me to change one thing about what I made")
    if asks:
        lines.append("You can " + "; ".join(asks) + ".")
    limits = "Anything else (a photograph, speech, music) I cannot recognise"
    if reads_media and any(world.calibrated(m) for m in known):
        limits += ", and I say so when an upload looks unfamiliar"
    lines.append(limits + ". Other questions get my language model's answers, which may be wrong.")
    return "\n\n".join(lines)
