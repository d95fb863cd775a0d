"""The nextgpt-7b prompt with LLaMA's real tokenizer: the official training format token for token, replies
that stop at the official end marker, and no media from an invented next turn.

The reference below re-implements the official format from its definition (model/common/utils.py
build_one_instance_stage_3 and anyToImageVideoAudio.prompt_wrap: string concatenation, then transformers
4.29's slow tokenizer, which split text on added tokens and stripped the whitespace on both sides of each);
the builder under test works from segments, so the two agree only if the builder is exact.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from nextgpt.config import Modality
from nextgpt.conversation import ConversationBuilder
from tests.conftest import tiny_7b_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok7b(llama_tokenizer):
    from nextgpt.llm import add_tokens

    tok = copy.deepcopy(llama_tokenizer)

    class _NoResize:  # add_tokens checks the vocabulary; the embeddings are not needed here
        def get_input_embeddings(self):
            return torch.nn.Embedding(32038, 1)

    add_tokens(_NoResize(), tok, tiny_7b_config())
    return tok


@pytest.fixture(scope="module")
def builder(tok7b):
    return ConversationBuilder(tiny_7b_config(), tok7b)


def legacy_tokenize(tok, text: str) -> list[int]:
    """transformers 4.29's slow LLaMA tokenizer with non-special added tokens (the official tokenizer)."""
    added = {t: tok.convert_tokens_to_ids(t) for t in tiny_7b_config().added_tokens}
    chunks = re.split("(" + "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)) + ")", text)
    for i, chunk in enumerate(chunks):
        if chunk in added:
            if i + 1 < len(chunks):
                chunks[i + 1] = chunks[i + 1].lstrip()
            if i > 0:
                chunks[i - 1] = chunks[i - 1].rstrip()
    ids: list[int] = []
    for chunk in chunks:
        if chunk:
            ids += [added[chunk]] if chunk in added else tok(chunk, add_special_tokens=False)["input_ids"]
    return ids


SIGNALS = {"image": " ".join(f"[IMG{i}]" for i in range(4)), "video": " ".join(f"[VID{i}]" for i in range(24)),
           "audio": " ".join(f"[AUD{i}]" for i in range(8))}


def official_ids(tok, conversation: list[dict], slot: int) -> list[int]:
    """<s> + prompt_wrap's "### Human: " [<Img> media] + build_one_instance_stage_3's turns."""
    first = conversation[0]
    ids = [tok.bos_token_id]
    if first.get("media"):
        ids += legacy_tokenize(tok, "### Human: <Img>") + [slot]
        ids += legacy_tokenize(tok, "</Img> " + first["value"] + "\n### Assistant: ")
    else:
        ids += legacy_tokenize(tok, "### Human: ")
        ids += legacy_tokenize(tok, first["value"] + "\n### Assistant: ")
    for turn in conversation[1:]:
        if turn["from"] == "human":
            ids += legacy_tokenize(tok, "Human: " + turn["value"] + "\n### Assistant: ")
        else:
            ids += legacy_tokenize(tok, turn["value"] + SIGNALS.get(turn.get("output_modality"), "") + "\n###")
    return ids


def our_messages(conversation: list[dict]) -> list[dict]:
    msgs = []
    for turn in conversation:
        content = []
        if turn.get("media"):
            content.append({"type": turn["media"], "path": f"upload.{turn['media']}"})
        content.append({"type": "text", "text": turn["value"]})
        if turn.get("output_modality"):
            content.append({"type": turn["output_modality"], "path": "generated"})
        msgs.append({"role": "user" if turn["from"] == "human" else "assistant", "content": content})
    return msgs


def test_tokenizer_is_llamas_own(llama_tokenizer):
    """llama.cpp's test vectors beside the vocabulary file: every one tokenizes as LLaMA's SentencePiece does."""
    from nextgpt.llm import LLAMA_VOCAB_FILE, llama_vocab_dir

    folder = llama_vocab_dir()
    inputs = (folder / f"{LLAMA_VOCAB_FILE}.inp").read_text().split("\n__ggml_vocab_test__\n")
    outputs = (folder / f"{LLAMA_VOCAB_FILE}.out").read_text().strip("\n").split("\n")
    assert len(inputs) >= len(outputs) >= 30
    for text, expected in zip(inputs, outputs):
        assert llama_tokenizer(text, add_special_tokens=False)["input_ids"] == [int(x) for x in expected.split()], text
    assert (len(llama_tokenizer), llama_tokenizer.bos_token_id, llama_tokenizer.eos_token_id) == (32000, 1, 2)


def test_added_tokens_take_the_official_ids(tok7b):
    assert tok7b.convert_tokens_to_ids(["<Img>", "</Img>", "[IMG0]", "[IMG3]", "[VID0]", "[VID23]", "[AUD0]", "[AUD7]"]) \
        == [32000, 32001, 32002, 32005, 32006, 32029, 32030, 32037]


def test_one_text_turn_literal_ids(builder, tok7b):
    prompt = builder.build([{"role": "user", "content": "Hi"}], max_prompt_tokens=400)
    question = tok7b("Hi\n### Assistant: ", add_special_tokens=False)["input_ids"]
    assert prompt.ids == [1, 835, 12968, 29901, 29871] + question  # <s> "### Human: " (its own call)
    assert question[-7:] == [13, 2277, 29937, 4007, 22137, 29901, 29871]  # "\n### Assistant: "


CONVERSATIONS = {
    "one turn": [{"from": "human", "value": "Tell me a joke about a cat."}],
    "several turns": [
        {"from": "human", "value": "Hello, who are you?"},
        {"from": "gpt", "value": "I am an assistant."},
        {"from": "human", "value": "What can you do?"},
        {"from": "gpt", "value": "Many things:\n1. answer\n2. draw"},
        {"from": "human", "value": "  Thanks!  "},
    ],
    "image in": [{"from": "human", "media": "image", "value": "What is in this picture?"}],
    "audio in": [{"from": "human", "media": "audio", "value": "Describe this sound."},
                 {"from": "gpt", "value": "A dog barking."}, {"from": "human", "value": "Is it loud?"}],
    "video in": [{"from": "human", "media": "video", "value": ""}],
    "after media out": [
        {"from": "human", "value": "Show me a red car."},
        {"from": "gpt", "value": "Sure, here it is.", "output_modality": "image"},
        {"from": "human", "value": "Now make a video of it driving."},
        {"from": "gpt", "value": "", "output_modality": "video"},
        {"from": "human", "value": "And its engine sound?"},
        {"from": "gpt", "value": "Here you go: ", "output_modality": "audio"},
        {"from": "human", "value": "Great."},
    ],
}


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_prompt_equals_the_official_training_format(builder, tok7b, name):
    conversation = CONVERSATIONS[name]
    prompt = builder.build(our_messages(conversation), max_prompt_tokens=1500)
    expected = official_ids(tok7b, conversation, slot=builder.media_start)
    assert prompt.ids == expected
    media_first = bool(conversation[0].get("media"))
    assert [pos for pos, _ in prompt.media] == ([5] if media_first else [])  # <s> "###" "Human" ":" <Img> [slot]


def test_training_labels_cover_each_reply_and_its_end_marker(builder, tok7b):
    conversation = CONVERSATIONS["after media out"]
    ex = builder.build_training(our_messages(conversation), max_tokens=1500)
    assert ex.ids == official_ids(tok7b, conversation, slot=builder.media_start)
    supervised = [i for i, label in zip(ex.ids, ex.labels) if label != -100]
    replies = [legacy_tokenize(tok7b, t["value"] + SIGNALS.get(t.get("output_modality"), "") + "\n###")
               for t in conversation if t["from"] == "gpt"]
    assert supervised == [i for r in replies for i in r]
    assert replies[0][-5:] == [32002, 32003, 32004, 32005, 835]  # "[IMG3]\n###": the newline stripped, "▁###"
    assert [b.modality for b in ex.blocks] == [Modality.IMAGE, Modality.VIDEO, Modality.AUDIO]


# ---- generation: stop, trim, run-on ------------------------------------------------------------------------
class _StubDecoders:
    """Counts requests; returns a black medium of the right rank."""

    def __init__(self):
        self.calls = []

    def generate(self, modality, cond, **kwargs):
        self.calls.append(modality)
        return np.zeros((1, 4, 4, 3), np.uint8) if modality != Modality.AUDIO else np.zeros((1, 16), np.float32)


@pytest.fixture()
def model7b(tok7b):
    from transformers import LlamaConfig, LlamaForCausalLM

    from nextgpt.llm import add_tokens
    from nextgpt.model import NextGPT

    cfg = tiny_7b_config()
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                                       bos_token_id=1, eos_token_id=2, pad_token_id=0)).eval()
    tok = copy.deepcopy(tok7b)
    add_tokens(llm, tok, cfg)
    model = NextGPT(cfg, llm, tok, decoders=_StubDecoders()).eval()
    model.can_generate = {Modality.IMAGE, Modality.VIDEO, Modality.AUDIO}
    return model


def write(model, tokens: list[int]) -> list[int]:
    """The model writes `tokens` whatever its random weights prefer; returns what it did not get to write."""
    rest = list(tokens)
    model._sample = lambda logits, settings, gen: rest.pop(0) if rest else model.tokenizer.eos_token_id
    return rest


def mid(tok, text: str) -> list[int]:
    """Tokens of `text` written mid-reply (no leading-space marker)."""
    anchor = tok("a", add_special_tokens=False)["input_ids"]
    return tok("a" + text, add_special_tokens=False)["input_ids"][len(anchor):]


ASK = [{"role": "user", "content": "Hello"}]


def test_text_reply_stops_at_newline_hashes_and_is_trimmed(model7b):
    tok = model7b.tokenizer
    hello = tok("Hello there, I am fine.", add_special_tokens=False)["input_ids"]
    assert mid(tok, "\n###") == [13, 2277, 29937]
    rest = write(model7b, hello + [13, 2277, 29937] + mid(tok, "Human: draw a cat [IMG0]"))
    reply = model7b.chat(ASK)
    assert reply.text == "Hello there, I am fine."
    assert len(rest) == len(mid(tok, "Human: draw a cat [IMG0]"))  # nothing written after the end marker
    assert reply.timings["tokens"] == len(hello) and not reply.notices
    assert model7b.decoders.calls == []


def test_media_reply_stops_at_hashes_after_the_signal_tokens(model7b):
    tok = model7b.tokenizer
    sure = tok("Sure, here it is.", add_special_tokens=False)["input_ids"]
    img = tok.convert_tokens_to_ids([f"[IMG{i}]" for i in range(4)])
    write(model7b, sure + img + [835] + tok("Human: more", add_special_tokens=False)["input_ids"])
    reply = model7b.chat(ASK)
    assert reply.text == "Sure, here it is." and len(reply.images) == 1
    assert model7b.decoders.calls == [Modality.IMAGE]


def test_streamed_text_never_shows_the_end_marker(model7b):
    tok = model7b.tokenizer
    write(model7b, tok("Fine", add_special_tokens=False)["input_ids"] + [13, 2277, 29937])
    deltas = [e.delta for e in model7b.stream(ASK) if e.delta]
    assert "".join(deltas) == "Fine" and "#" not in "".join(deltas)


def test_invented_next_turn_produces_no_media(model7b):
    tok = model7b.tokenizer
    img = tok.convert_tokens_to_ids([f"[IMG{i}]" for i in range(4)])
    write(model7b, tok("Sure.", add_special_tokens=False)["input_ids"] + mid(tok, "\nHuman: now draw a dog ") + img)
    reply = model7b.chat(ASK)
    assert reply.text == "Sure." and reply.images == [] and model7b.decoders.calls == []
    # and the cut itself, on a stream that already holds the invented turn's signal tokens
    ids = tok("Okay.", add_special_tokens=False)["input_ids"] + mid(tok, "\n### Human: draw ") + img
    cut = model7b._cut_run_on(ids)
    assert not set(cut) & set(img) and tok.decode(cut).strip() == "Okay."


def test_load_refuses_a_tokenizer_that_is_not_llama_v0(smol_tokenizer, llama_tokenizer):
    from nextgpt.llm import check_llama_v0_tokenizer

    cfg = tiny_7b_config().llm
    check_llama_v0_tokenizer(llama_tokenizer, cfg, "vicuna")
    with pytest.raises(ValueError, match="not LLaMA's v0 tokenizer.*49152 tokens, not 32000"):
        check_llama_v0_tokenizer(smol_tokenizer, cfg, Path("/models/other"))
