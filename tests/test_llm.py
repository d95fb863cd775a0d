"""Tests for nextgpt/llm.py: the bundled GGUF, the added tokens and their rows, LoRA, dtypes and quantization.

    .venv/bin/python -m pytest tests/test_llm.py -q

The tests marked `gpu` need a CUDA GPU and those marked `weights7b` the real weights in NEXTGPT_7B_DIR (the
folder of the README's 7B section: vicuna-7b-v0/, ...); both are skipped, with the reason, where they are missing.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from nextgpt.config import QUANTIZATIONS, NextGPTConfig
from nextgpt.llm import (
    add_tokens,
    gguf_cache,
    load_llm,
    load_token_rows,
    lora_config,
    quantization_config,
    quantize_loaded,
    resolve_dtype,
    token_rows,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the bundled GGUF (nano) ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nano_llm():
    return load_llm(NextGPTConfig.from_name("nano"))


def test_the_bundled_gguf_loads_as_smollm2_with_the_added_tokens(nano_llm):
    cfg = NextGPTConfig.from_name("nano")
    llm, tok = nano_llm
    config = llm.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size) == (cfg.llm.hidden_size, cfg.llm.num_layers, cfg.llm.num_heads,
                                          cfg.llm.num_kv_heads, cfg.llm.intermediate_size)
    vocab = cfg.llm.base_vocab_size + len(cfg.added_tokens)
    assert len(tok) == vocab and llm.get_input_embeddings().weight.shape == (vocab, cfg.llm.hidden_size)
    assert llm.get_output_embeddings().weight is llm.get_input_embeddings().weight  # tied, as SmolLM2's
    for i, token in enumerate(cfg.added_tokens):  # each added token is one id, in the config's order
        assert tok(token, add_special_tokens=False)["input_ids"] == [cfg.llm.base_vocab_size + i]
    assert not llm.training and llm.dtype == torch.float32
    # the dequantised weights are cached as safetensors beside the tokenizer
    cached = gguf_cache(cfg.llm)
    assert (cached / "model.safetensors").is_file() and (cached / "tokenizer.json").is_file()


def test_the_bundled_llm_answers_greedily_and_the_new_rows_are_distinct(nano_llm):
    llm, tok = nano_llm
    base = NextGPTConfig.from_name("nano").llm.base_vocab_size
    rows = llm.get_input_embeddings().weight[base:]
    assert torch.cdist(rows, rows).fill_diagonal_(1.0).min() > 0  # mean + noise: no two added rows alike
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = llm.generate(ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


# ---- added tokens and their rows --------------------------------------------------------------------
def test_token_rows_round_trip_the_added_rows_only(tiny_llm):
    cfg, llm, _ = tiny_llm
    base = cfg.llm.base_vocab_size
    before = llm.get_input_embeddings().weight[:base].clone()
    rows = token_rows(llm, base)
    assert set(rows) == {"embed_tokens"}  # tied: no separate lm_head rows
    assert rows["embed_tokens"].shape == (len(cfg.added_tokens), cfg.llm.hidden_size)
    trained = {"embed_tokens": torch.randn_like(rows["embed_tokens"])}
    load_token_rows(llm, base, trained)
    weight = llm.get_input_embeddings().weight
    assert torch.equal(weight[base:], trained["embed_tokens"]) and torch.equal(weight[:base], before)


def test_token_rows_take_whole_matrices_and_refuse_other_shapes(tiny_llm):
    cfg, llm, _ = tiny_llm
    base = cfg.llm.base_vocab_size
    whole = torch.randn_like(llm.get_input_embeddings().weight)  # the official release stores whole matrices
    load_token_rows(llm, base, {"embed_tokens": whole})
    assert torch.equal(llm.get_input_embeddings().weight, whole)
    with pytest.raises(ValueError, match="token rows embed_tokens: shape .* fits neither"):
        load_token_rows(llm, base, {"embed_tokens": torch.zeros(3, cfg.llm.hidden_size)})


def test_untied_output_rows_are_saved_and_loaded_too(tiny_llm):
    cfg, llm, _ = tiny_llm
    base = cfg.llm.base_vocab_size
    llm.config.tie_word_embeddings = False
    llm.lm_head.weight = torch.nn.Parameter(llm.get_input_embeddings().weight.detach().clone())
    rows = token_rows(llm, base)
    assert set(rows) == {"embed_tokens", "lm_head"}
    load_token_rows(llm, base, {"embed_tokens": rows["embed_tokens"], "lm_head": torch.zeros_like(rows["lm_head"])})
    assert not llm.lm_head.weight[base:].any() and llm.get_input_embeddings().weight[base:].any()


def test_adding_tokens_to_the_wrong_base_model_is_refused(tiny_llm, smol_tokenizer):
    import copy

    cfg, llm, _ = tiny_llm
    wrong = cfg.replace(llm=dataclasses.replace(cfg.llm, base_vocab_size=32000))
    with pytest.raises(ValueError, match="expected 32014 .*wrong base model version"):
        add_tokens(llm, copy.deepcopy(smol_tokenizer), wrong)


# ---- LoRA -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["nano", "nextgpt-7b"])
def test_lora_config_is_the_presets(preset):
    llm = NextGPTConfig.from_name(preset).llm
    lora = lora_config(llm)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (llm.lora_r, llm.lora_alpha, llm.lora_dropout)
    assert set(lora.target_modules) == set(llm.lora_targets) and lora.task_type == "CAUSAL_LM" and lora.bias == "none"


def test_lora_wraps_only_the_attention_projections(tiny_llm):
    from peft import get_peft_model

    cfg, llm, _ = tiny_llm
    peft = get_peft_model(llm, lora_config(cfg.llm))
    trainable = {n for n, p in peft.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    wrapped = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert wrapped == set(cfg.llm.lora_targets)
    # r x (in + out) per wrapped projection: q/o are hidden x hidden, k/v hidden x kv width (grouped queries)
    h, r = cfg.llm.hidden_size, cfg.llm.lora_r
    kv = h // cfg.llm.num_heads * cfg.llm.num_kv_heads
    per_layer = r * ((h + h) * 2 + (h + kv) * 2)
    assert sum(p.numel() for n, p in peft.named_parameters() if n in trainable) == cfg.llm.num_layers * per_layer


# ---- dtypes and quantization --------------------------------------------------------------------------
def test_dtype_auto_is_half_on_cuda_and_float32_on_cpu():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") in (torch.float16, torch.bfloat16)
    assert resolve_dtype("float16", "cpu") == torch.float16 and resolve_dtype(torch.bfloat16, "cuda") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be auto or one of"):
        resolve_dtype("half", "cpu")


def test_quantization_configs_per_device():
    assert QUANTIZATIONS == ("none", "8bit", "4bit")
    assert quantization_config("none", device="cpu") is None
    assert type(quantization_config("8bit", device="cpu")).__name__ == "QuantoConfig"
    with pytest.raises(ValueError, match="4-bit quantization needs a CUDA GPU"):
        quantization_config("4bit", device="cpu")
    with pytest.raises(ValueError, match="quantization must be one of"):
        quantization_config("2bit", device="cpu")
    nf4 = quantization_config("4bit", device="cuda", compute_dtype=torch.bfloat16)
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("8bit", device="cuda").load_in_8bit


def test_8bit_on_the_cpu_quantizes_the_layers_and_keeps_the_head(tiny_llm):
    cfg, llm, tok = tiny_llm
    ids = tok("Hello there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full = llm(ids).logits
    quantize_loaded(llm, "8bit", "cpu")
    assert type(llm.model.layers[0].self_attn.q_proj).__name__ == "QLinear"
    assert type(llm.lm_head).__name__ == "Linear"
    with torch.no_grad():
        quantized = llm(ids).logits
    assert torch.isfinite(quantized).all() and torch.nn.functional.cosine_similarity(
        quantized.flatten(), full.flatten(), dim=0) > 0.99
    with pytest.raises(ValueError, match="only supported as 8bit on the CPU"):
        quantize_loaded(llm, "4bit", "cpu")


def _save_as_transformers_folder(llm, tok, folder: Path) -> None:
    """A tiny LLM in the layout of the 7B preset's LLM (a transformers folder), without the added rows."""
    base = llm.config.vocab_size - len(NextGPTConfig.from_name("tiny").added_tokens)
    llm.resize_token_embeddings(base)
    llm.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)


@pytest.mark.gpu
@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_a_transformers_llm_loads_quantized_on_cuda(tiny_llm, smol_tokenizer, tmp_path, quantization):
    """bitsandbytes nf4 / int8 on the GPU for a transformers-folder LLM; embeddings and head stay in the dtype."""
    cfg, llm, _ = tiny_llm
    _save_as_transformers_folder(llm, smol_tokenizer, tmp_path)
    hf = cfg.replace(llm=dataclasses.replace(cfg.llm, source="hf", path=str(tmp_path)))
    model, tok = load_llm(hf, dtype=torch.float16, quantization=quantization, device_map={"": "cuda"}, device="cuda")
    layer = type(model.model.layers[0].self_attn.q_proj).__name__
    assert layer == {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}[quantization]
    assert model.get_input_embeddings().weight.dtype == torch.float16 and len(tok) == model.config.vocab_size
    ids = tok("Hello there", return_tensors="pt")["input_ids"].cuda()
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


@pytest.mark.gpu
@pytest.mark.weights7b
def test_vicuna_7b_v0_loads_in_4bit_with_the_official_vocabulary():
    """The real LLM of the 7B preset: LLaMA's v0 tokenizer is accepted, 32000 + 38 rows, nf4 layers on the GPU."""
    folder = Path(os.environ["NEXTGPT_7B_DIR"]) / "vicuna-7b-v0"
    cfg = NextGPTConfig.from_name("nextgpt-7b")
    cfg = cfg.replace(llm=dataclasses.replace(cfg.llm, path=str(folder)))
    model, tok = load_llm(cfg, dtype=torch.float16, quantization="4bit", device_map={"": "cuda"}, device="cuda")
    assert len(tok) == model.get_input_embeddings().weight.shape[0] == 32038
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    ids = tok("### Human: Hello\n### Assistant:", return_tensors="pt")["input_ids"].cuda()
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
