"""Random-weight NExT-GPT parts at the `tiny` preset's widths, built on the CPU in a second or two.

    model = tiny_model()                                       # NextGPT: ImageBind, 2-layer Llama, projectors, decoders
    model.chat([{"role": "user", "content": "Draw a red circle."}])   # runs every step; the answer means nothing
    pipe = tiny_pipeline(cfg.decoder("image"), caption_tokenizer())   # one stock diffusers pipeline, 8/16 channels

Everything is the stock pipeline (prompt building, ImageBind encoder, input projection, Llama, signal parsing,
output projectors, diffusers decoders) at toy widths, with SmolLM2's real tokenizer so prompts and signal tokens
are those of nano. The tests build their fixtures here, and the app's stand-in (app/standin.py) wraps this model.
"""

from __future__ import annotations

import copy
import functools
from typing import Callable, Sequence

import torch
from diffusers import DiffusionPipeline
from torch import nn
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from nextgpt.config import DecoderSpec, Modality, NextGPTConfig
from nextgpt.decode import NANO_CAPTION_TOKENS, Decoders, build_nano_pipeline, load_caption_encoder
from nextgpt.encode import MediaEncoder
from nextgpt.llm import add_tokens, load_gguf_tokenizer
from nextgpt.model import NextGPT

__all__ = ["caption_tokenizer", "smol_tokenizer", "tiny_config", "tiny_decoders", "tiny_llm", "tiny_model",
           "tiny_pipeline"]


def tiny_config() -> NextGPTConfig:
    return NextGPTConfig.from_name("tiny")


@functools.cache
def _smol_tokenizer() -> PreTrainedTokenizerBase:
    return load_gguf_tokenizer(NextGPTConfig.from_name("nano").llm)


def smol_tokenizer() -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer without the added tokens: a fresh copy each call (`add_tokens` changes it)."""
    return copy.deepcopy(_smol_tokenizer())


@functools.cache
def caption_tokenizer() -> PreTrainedTokenizerBase:
    """all-MiniLM-L6-v2's tokenizer (the nano decoders'), for the tiny pipelines' text encoders."""
    return load_caption_encoder(max_length=NANO_CAPTION_TOKENS)[1]


def tiny_llm(cfg: NextGPTConfig | None = None, *, seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """A random Llama of `cfg.llm`'s widths (default: the tiny preset) and its tokenizer, added tokens included."""
    from transformers import LlamaConfig

    cfg = cfg or tiny_config()
    tok = smol_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=cfg.llm.base_vocab_size, hidden_size=cfg.llm.hidden_size,
                         intermediate_size=cfg.llm.intermediate_size, num_hidden_layers=cfg.llm.num_layers,
                         num_attention_heads=cfg.llm.num_heads, num_key_value_heads=cfg.llm.num_kv_heads,
                         tie_word_embeddings=True, max_position_embeddings=cfg.llm.max_context,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
    llm = LlamaForCausalLM(config).eval()
    add_tokens(llm, tok, cfg)
    return llm, tok


def tiny_pipeline(spec: DecoderSpec, tokenizer: PreTrainedTokenizerBase | None = None,
                  seed: int = 0) -> DiffusionPipeline:
    """A stock pipeline of `spec` with random 8/16-channel parts and a 1-layer random BERT text encoder of
    width `spec.cond_dim` (default tokenizer: `caption_tokenizer()`)."""
    from transformers import BertConfig, BertModel

    tokenizer = tokenizer or caption_tokenizer()
    torch.manual_seed(seed)
    text = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=spec.cond_dim, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    return build_nano_pipeline(spec, seed=seed, unet_channels=(8, 16), vae_channels=(8, 16), vocoder_channels=16,
                               text_encoder=text, tokenizer=tokenizer)


def tiny_decoders(cfg: NextGPTConfig | None = None, modalities: Sequence[Modality] | None = None, *,
                  seed: int = 0) -> Decoders:
    """`Decoders` over tiny pipelines, one per modality of `cfg` (or of `modalities`)."""
    cfg = cfg or tiny_config()
    wanted = [spec for spec in cfg.decoders if modalities is None or spec.modality in modalities]
    return Decoders(cfg, {spec.modality: tiny_pipeline(spec, seed=seed) for spec in wanted})


def tiny_model(cfg: NextGPTConfig | None = None, *, encoder: bool = True,
               generate: Sequence[Modality] | None = None, seed: int = 0,
               wrap_llm: Callable[[LlamaForCausalLM, PreTrainedTokenizerBase], nn.Module] | None = None) -> NextGPT:
    """A random-weight `NextGPT` on the CPU (default: the tiny preset), generating every modality of `cfg.decoders`
    unless `generate` names fewer. `encoder=False` / `generate=()` give a text-only model, like a checkpoint whose
    media parts are not trained yet; `wrap_llm(llm, tokenizer)` may replace the LLM by a module around it (the
    app's stand-in steers its replies this way)."""
    cfg = cfg or tiny_config()
    generate = tuple(spec.modality for spec in cfg.decoders) if generate is None else tuple(generate)
    # 1. LLM: SmolLM2's tokenizer (+ the added tokens) on a small random Llama
    llm, tok = tiny_llm(cfg, seed=seed)
    # 2. encoder and decoders
    torch.manual_seed(seed)
    media_encoder = MediaEncoder(cfg.encoder) if encoder else None
    decoders = tiny_decoders(cfg, generate, seed=seed) if generate else None
    model = NextGPT(cfg, wrap_llm(llm, tok) if wrap_llm else llm, tok, encoder=media_encoder, decoders=decoders)
    model.can_generate = set(generate)
    return model.eval()
