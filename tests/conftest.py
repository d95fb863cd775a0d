"""Shared tiny fixtures: everything here is small enough for 2 CPU cores and random-weight by design."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nextgpt.config import EncoderConfig, LLMConfig, NextGPTConfig, ProjectorConfig


TINY_COND = 32
ROOT = Path(__file__).resolve().parent.parent


def make_world(root: Path, splits: tuple[str, ...], n: int, n_dialogues: int) -> Path:
    """A small world at `root`: `n` items per modality and `n_dialogues` dialogues in each split (seed 0)."""
    from nextgpt.world.records import make_split

    for split in splits:
        make_split(root, split, n=n, seed=0, n_dialogues=n_dialogues, workers=2)
    return root


def run_nextgpt(*args: str, cwd: Path = ROOT, timeout: int = 900) -> tuple[dict, str]:
    """`python -m nextgpt ...` in a new process, as a user runs it: must exit 0; returns its last JSON line
    and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "nextgpt", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def tiny_decoders(cfg: NextGPTConfig):
    """Random-weight stock pipelines (8/16 channels) with a tiny BERT text encoder, for every modality."""
    from app.standin import tiny_pipeline
    from nextgpt.decode import Decoders, load_caption_encoder

    tokenizer = load_caption_encoder(max_length=4)[1]
    return Decoders(cfg, {spec.modality: tiny_pipeline(spec, tokenizer) for spec in cfg.decoders})


@pytest.fixture
def one_thread():
    """One torch thread: tiny models gain nothing from two, and on a shared 2-core machine two threads contend
    (~10x slower). Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(base_vocab: int = 49152) -> NextGPTConfig:
    """The nano layout at toy widths (the real SmolLM2 tokenizer, a 2-layer LLM)."""
    nano = NextGPTConfig.from_name("nano")
    llm = dataclasses.replace(nano.llm, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                              intermediate_size=128, base_vocab_size=base_vocab, max_context=256)
    enc = dataclasses.replace(nano.encoder, out_embed_dim=32, vision_embed_dim=32, vision_num_blocks=1,
                              vision_num_heads=2, audio_embed_dim=32, audio_num_blocks=1, audio_num_heads=2,
                              text_embed_dim=32, text_num_blocks=1, text_num_heads=2, video_clips=2,
                              image_size=56, patch_size=28)
    proj = ProjectorConfig(d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64)
    sizes = {"image": {"height": 32, "width": 32}, "video": {"height": 32, "width": 32, "num_frames": 3},
             "audio": {"audio_seconds": 0.5}}
    decoders = tuple(dataclasses.replace(s, cond_len=1 if s.pooled else 4, cond_dim=TINY_COND, num_inference_steps=2,
                                         **sizes[s.modality.value]) for s in nano.decoders)
    return nano.replace(llm=llm, encoder=enc, projector=proj, decoders=decoders)


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The real SmolLM2 tokenizer (from the safetensors cache; built from the GGUF on first use)."""
    from nextgpt.llm import _load_gguf

    _, tok = _load_gguf(NextGPTConfig.from_name("nano").llm, torch.float32)
    return tok


@pytest.fixture()
def tiny_llm(smol_tokenizer):
    """A 2-layer random Llama with the real tokenizer and the added tokens."""
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    from nextgpt.llm import add_tokens

    cfg = tiny_config()
    torch.manual_seed(0)
    lc = LlamaConfig(vocab_size=cfg.llm.base_vocab_size, hidden_size=cfg.llm.hidden_size,
                     intermediate_size=cfg.llm.intermediate_size, num_hidden_layers=cfg.llm.num_layers,
                     num_attention_heads=cfg.llm.num_heads, num_key_value_heads=cfg.llm.num_kv_heads,
                     tie_word_embeddings=True, max_position_embeddings=512,
                     bos_token_id=1, eos_token_id=2, pad_token_id=2)
    llm = LlamaForCausalLM(lc).eval()
    tok = copy.deepcopy(smol_tokenizer)
    add_tokens(llm, tok, cfg)
    return cfg, llm, tok


@pytest.fixture()
def tiny_model(tiny_llm):
    """A whole NextGPT on tiny random components: encoder, LLM, projectors, decoders."""
    from nextgpt.encode import MediaEncoder
    from nextgpt.model import NextGPT

    cfg, llm, tok = tiny_llm
    torch.manual_seed(0)
    model = NextGPT(cfg, llm, tok, encoder=MediaEncoder(cfg.encoder), decoders=tiny_decoders(cfg)).eval()
    model.can_generate = {spec.modality for spec in cfg.decoders}
    return model


@pytest.fixture(scope="session")
def llama_tokenizer():
    """LLaMA's own tokenizer (Vicuna v0's), fetched by `make llama-vocab` into the cache; skipped when absent."""
    from nextgpt.llm import LLAMA_VOCAB_FILE, llama_vocab_dir, load_llama_v0_tokenizer

    if not (llama_vocab_dir() / LLAMA_VOCAB_FILE).is_file():
        pytest.skip(f"LLaMA tokenizer not fetched ({llama_vocab_dir() / LLAMA_VOCAB_FILE}): run make llama-vocab")
    return load_llama_v0_tokenizer()


def tiny_7b_config() -> NextGPTConfig:
    """The nextgpt-7b layout (vicuna_v0 prompt, 38 added tokens, 4/24/8 signal tokens) at toy widths."""
    big = NextGPTConfig.from_name("nextgpt-7b")
    llm = dataclasses.replace(big.llm, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2,
                              intermediate_size=64, max_context=512)
    enc = tiny_config().encoder
    proj = ProjectorConfig(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32)
    return big.replace(llm=llm, encoder=dataclasses.replace(enc), projector=proj)
