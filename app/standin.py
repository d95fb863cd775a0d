"""A tiny NExT-GPT with random weights, for the app's tests and for working on the UI without a checkpoint.

    model = tiny_model()                                  # the real NextGPT class, toy sizes, 2 CPU cores
    model.llm.queue_reply("Here it is. [IMG0][IMG1][IMG2][IMG3]")   # steer the next reply (signal tokens work)
    model.chat([{"role": "user", "content": "Draw a red circle."}])  # -> Reply with one 32x32 image

Everything is the stock pipeline (prompt building, ImageBind encoder, input projection, Llama, signal
parsing, output projectors, diffusers decoders) at toy widths. Its answers mean nothing: the app labels
it as a random-weight model (`STANDIN_NOTE`) and never as a working one.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from typing import Any

import torch
from torch import nn

from nextgpt.config import DecoderSpec, EncoderConfig, Modality, NextGPTConfig, ProjectorConfig

STANDIN_NOTE = "Random-weight stand-in model (tests / UI development): its answers and media mean nothing."

_COND_DIM = 32
_ENCODER = EncoderConfig(
    out_embed_dim=16, vision_embed_dim=32, vision_num_blocks=1, vision_num_heads=2,
    audio_embed_dim=32, audio_num_blocks=1, audio_num_heads=2,
    text_embed_dim=32, text_num_blocks=1, text_num_heads=2,
    image_size=56, patch_size=28, video_clips=2, audio_clips=1, audio_clip_seconds=1.0,
    audio_num_mel_bins=64, audio_target_len=100,
)  # fmt: skip
_DECODERS = (
    DecoderSpec(Modality.IMAGE, "IMG", 4, "StableDiffusionPipeline", cond_len=16, cond_dim=_COND_DIM,
                height=32, width=32, num_inference_steps=2, guidance_scale=3.0),
    DecoderSpec(Modality.AUDIO, "AUD", 4, "AudioLDMPipeline", cond_len=1, cond_dim=_COND_DIM,
                audio_seconds=0.5, num_inference_steps=2, guidance_scale=3.0),
    DecoderSpec(Modality.VIDEO, "VID", 4, "TextToVideoSDPipeline", cond_len=16, cond_dim=_COND_DIM,
                height=32, width=32, num_frames=3, num_inference_steps=2, guidance_scale=3.0),
)


def tiny_config() -> NextGPTConfig:
    """The nano layout (same tokenizer, template and signal tokens) at toy widths."""
    nano = NextGPTConfig.from_name("nano")
    llm = dataclasses.replace(nano.llm, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                              intermediate_size=128, max_context=512)
    proj = ProjectorConfig(d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64)
    return nano.replace(llm=llm, encoder=_ENCODER, projector=proj, decoders=_DECODERS,
                        default_system="")


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


def tiny_pipeline(spec: DecoderSpec, tokenizer: Any, seed: int = 0) -> Any:
    """A stock pipeline of `spec` with random 8/16-channel parts and a 1-layer random BERT text encoder of
    width `spec.cond_dim` (the tests' decoders are built here too)."""
    from transformers import BertConfig, BertModel

    from nextgpt.decode import build_nano_pipeline

    torch.manual_seed(seed)
    text = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=spec.cond_dim, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    return build_nano_pipeline(spec, seed=seed, unet_channels=(8, 16), vae_channels=(8, 16), vocoder_channels=16,
                               text_encoder=text, tokenizer=tokenizer)


def tiny_model(*, encoder: bool = True, generate: tuple[Modality, ...] = tuple(Modality), seed: int = 0) -> Any:
    """A random-weight `NextGPT` on the CPU. `encoder=False` / `generate=()` give a text-only model, like a
    checkpoint whose media parts are not trained yet."""
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    from nextgpt.decode import NANO_CAPTION_TOKENS, Decoders, load_caption_encoder
    from nextgpt.encode import MediaEncoder
    from nextgpt.llm import _load_gguf, add_tokens
    from nextgpt.model import NextGPT

    cfg = tiny_config()
    # 1. LLM: the real SmolLM2 tokenizer (+ added tokens) on a 2-layer random Llama
    _, base_tok = _load_gguf(NextGPTConfig.from_name("nano").llm, torch.float32)
    tok = copy.deepcopy(base_tok)
    torch.manual_seed(seed)
    lc = LlamaConfig(vocab_size=cfg.llm.base_vocab_size, hidden_size=cfg.llm.hidden_size,
                     intermediate_size=cfg.llm.intermediate_size, num_hidden_layers=cfg.llm.num_layers,
                     num_attention_heads=cfg.llm.num_heads, num_key_value_heads=cfg.llm.num_kv_heads,
                     tie_word_embeddings=True, max_position_embeddings=cfg.llm.max_context,
                     bos_token_id=1, eos_token_id=2, pad_token_id=2)
    llm = LlamaForCausalLM(lc).eval()
    add_tokens(llm, tok, cfg)
    # 2. encoder and decoders
    media_encoder = MediaEncoder(cfg.encoder) if encoder else None
    caption_tok = load_caption_encoder(max_length=NANO_CAPTION_TOKENS)[1]
    pipelines = {m: tiny_pipeline(cfg.decoder(m), caption_tok, seed) for m in generate}
    decoders = Decoders(cfg, pipelines) if generate else None
    model = NextGPT(cfg, ScriptedLLM(llm, tok), tok, encoder=media_encoder, decoders=decoders)
    model.can_generate = set(generate)
    return model.eval()
