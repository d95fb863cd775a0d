"""A random-weight stand-in for the official NExT-GPT release, at full or toy size, in the release's own formats.

    release = build_release(Path("/tmp/release"), scale="tiny")         # or scale="full", device="cuda"
    release.llm_dir          # transformers folder: LLaMA architecture, random weights, the real LLaMA tokenizer
    release.official_pt      # pytorch_model.pt: the released delta's layout and key names (pickle, fp16)
    release.imagebind_pth    # imagebind_huge.pth: an ImageBindModel state dict
    release.decoder_dirs     # {"image": ..., "video": ..., "audio": ...}: diffusers pipeline folders
    release.config_file      # the NextGPTConfig at this scale (give it to `python -m nextgpt convert --config`)

    model = ScriptedNextGPT.adopt(NextGPT.from_preset("nextgpt-7b", folder=converted, llm_path=..., ...))
    model.queue_reply("Here it is. [IMG0][IMG1][IMG2][IMG3]\\n###")   # the next reply, token by token

Scales: "full" builds every component exactly as `nextgpt/configs/official/*.json` describe it (Vicuna-7B v0,
ImageBind-huge, SD v1.5, Zeroscope v2 576w, AudioLDM-l-full); "tiny" shrinks widths, depths and media sizes
(`TINY`) and keeps every interface the code depends on: the LLaMA tokenizer's 32000 tokens + the 38 added ones
(32038 rows), ImageBind's 1024-d embedding and preprocessing, and the conditions 77x768 / 77x1024 / 512.

Random weights make time and memory real and every output meaningless; a random LLM never chooses signal
tokens, so `ScriptedNextGPT` dictates its replies (the forward passes, the hidden states at the signal tokens,
the projectors and the decoders all run for real). Safety checkers are left out of the Stable Diffusion folder
(the stock pipeline runs without one); the decoders' tokenizers are made offline (`decoder_tokenizer`).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from nextgpt.config import EncoderConfig, GenerationSettings, Modality, NextGPTConfig
from nextgpt.model import NextGPT, StreamEvent

log = logging.getLogger(__name__)

OFFICIAL_CONFIGS = Path(__file__).resolve().parent / "configs" / "official"
SCALES = ("tiny", "full")
INIT_STD = 0.02  # std of every random matrix (LLaMA's initializer_range)

_TINY_PRESET = NextGPTConfig.from_name("tiny")  # the toy widths every random-weight model shares (config.py)
_TINY_TOWERS = ("vision_embed_dim", "vision_num_blocks", "vision_num_heads", "audio_embed_dim", "audio_num_blocks",
                "audio_num_heads", "text_embed_dim", "text_num_blocks", "text_num_heads")
# The toy version: every override of an official config at scale "tiny" (interfaces kept, see the docstring).
TINY: dict[str, dict[str, Any]] = {
    # the tiny preset's LLM widths, with LLaMA's full multi-head attention (SmolLM2's has grouped queries)
    "llm": dict(hidden_size=_TINY_PRESET.llm.hidden_size, intermediate_size=_TINY_PRESET.llm.intermediate_size,
                num_hidden_layers=_TINY_PRESET.llm.num_layers, num_attention_heads=2, num_key_value_heads=2),
    # the tiny preset's towers; ImageBind-huge's output width and input sizes are kept
    "encoder": {name: getattr(_TINY_PRESET.encoder, name) for name in _TINY_TOWERS},
    "projector": asdict(_TINY_PRESET.projector),
    # media sizes and steps of the toy decoders
    "image": dict(height=64, width=64, num_inference_steps=2),
    "video": dict(height=64, width=64, num_frames=4, num_inference_steps=2),
    "audio": dict(audio_seconds=1.0, num_inference_steps=2),
    # component overrides (UNets 2 levels, VAEs factor 8 / 4, 1-layer text encoders of the official width)
    "unet2d": dict(block_out_channels=[32, 64], layers_per_block=1, attention_head_dim=2, norm_num_groups=16,
                   down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                   up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"]),
    "unet3d": dict(block_out_channels=[32, 64], layers_per_block=1, attention_head_dim=4, norm_num_groups=16,
                   down_block_types=["CrossAttnDownBlock3D", "DownBlock3D"],
                   up_block_types=["UpBlock3D", "CrossAttnUpBlock3D"]),
    "audio_unet": dict(block_out_channels=[32, 64], cross_attention_dim=[32, 64], layers_per_block=1,
                       attention_head_dim=2, norm_num_groups=16, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                       up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"]),
    "vae": dict(block_out_channels=[16, 32, 32, 32], layers_per_block=1, norm_num_groups=16),
    "audio_vae": dict(block_out_channels=[16, 32, 32], layers_per_block=1, norm_num_groups=16),
    "clip_text": dict(vocab_size=1000, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      bos_token_id=998, eos_token_id=999, pad_token_id=1),
    "clap_text": dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, max_position_embeddings=80),
    "vocoder": dict(upsample_initial_channel=16, upsample_rates=[5, 4, 4, 2], upsample_kernel_sizes=[10, 8, 8, 4],
                    resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]]),
}
_TINY_COMPONENT = {  # (pipeline, component) -> TINY key
    ("StableDiffusionPipeline", "unet"): "unet2d", ("StableDiffusionPipeline", "vae"): "vae",
    ("StableDiffusionPipeline", "text_encoder"): "clip_text",
    ("TextToVideoSDPipeline", "unet"): "unet3d", ("TextToVideoSDPipeline", "vae"): "vae",
    ("TextToVideoSDPipeline", "text_encoder"): "clip_text",
    ("AudioLDMPipeline", "unet"): "audio_unet", ("AudioLDMPipeline", "vae"): "audio_vae",
    ("AudioLDMPipeline", "text_encoder"): "clap_text", ("AudioLDMPipeline", "vocoder"): "vocoder",
}
_LEFT_OUT = ("safety_checker",)  # see the module docstring


def official_json(name: str) -> dict[str, Any]:
    """One file of nextgpt/configs/official (name without .json)."""
    return json.loads((OFFICIAL_CONFIGS / f"{name}.json").read_text())


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, not {scale!r}")


# ---- the configs at a scale -------------------------------------------------------------------------
def llama_config(scale: str) -> Any:
    """Vicuna-7B v0's LlamaConfig (32000 tokens: the added rows come from `add_tokens` at load time)."""
    from transformers import LlamaConfig

    _check_scale(scale)
    config = {k: v for k, v in official_json("vicuna-7b-v0")["config"].items()
              if k not in ("architectures", "model_type", "torch_dtype")}  # not LlamaConfig arguments
    return LlamaConfig(**(config | (TINY["llm"] if scale == "tiny" else {})))


def release_config(scale: str) -> NextGPTConfig:
    """The `nextgpt-7b` preset with the official architectures' sizes (full) or the toy ones (tiny)."""
    _check_scale(scale)
    cfg = NextGPTConfig.from_name("nextgpt-7b")
    lc = llama_config(scale)
    encoder = replace(cfg.encoder, **official_json("imagebind-huge")["config"])
    llm = replace(cfg.llm, hidden_size=lc.hidden_size, num_layers=lc.num_hidden_layers, num_heads=lc.num_attention_heads,
                  num_kv_heads=lc.num_key_value_heads, intermediate_size=lc.intermediate_size,
                  base_vocab_size=lc.vocab_size)
    if scale == "full":
        return cfg.replace(llm=llm, encoder=encoder)
    decoders = tuple(replace(spec, **TINY[spec.modality.value]) for spec in cfg.decoders)
    return cfg.replace(llm=llm, encoder=replace(encoder, **TINY["encoder"]),
                       projector=replace(cfg.projector, **TINY["projector"]), decoders=decoders)


def decoder_components(pipeline: str, scale: str) -> tuple[dict[str, tuple[str, dict[str, Any]]], dict[str, Any]]:
    """({component: (class name, config)}, scheduler {class, config}) of an official decoder at a scale."""
    from nextgpt.decoder_configs import reference_pipeline

    _check_scale(scale)
    ref = reference_pipeline(pipeline)
    table = {}
    for name, comp in ref["components"].items():
        if name in _LEFT_OUT:
            continue
        config = json.loads(json.dumps(comp["config"]))
        if scale == "tiny":
            config |= TINY[_TINY_COMPONENT[(pipeline, name)]]
        table[name] = (comp["class"], config)
    return table, ref["scheduler"]


# ---- random weights ---------------------------------------------------------------------------------
def random_module(factory: Callable[[], nn.Module], *, device: str | torch.device, dtype: torch.dtype,
                  seed: int) -> nn.Module:
    """`factory()` with random weights made directly on `device` in `dtype` (a 7B model never exists in fp32 or
    on the CPU): parameters are built empty, then matrices ~ N(0, 0.02), 1-d weights (norm scales) = 1, the
    rest 0. Buffers keep the values the constructor gave them."""
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device

    with torch.device("cpu"), init_empty_weights(include_buffers=False):
        module = factory()
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, param in list(module.named_parameters()):
        value = torch.empty(param.shape, device=device, dtype=dtype)
        if param.ndim >= 2:
            value.normal_(0.0, INIT_STD, generator=gen)
        elif name.endswith("weight"):
            value.fill_(1.0)
        else:
            value.zero_()
        set_module_tensor_to_device(module, name, device, value=value, dtype=dtype)
    return module.to(device).eval()


# ---- the LLaMA tokenizer ----------------------------------------------------------------------------
def llama_tokenizer() -> Any:
    """The LLaMA (Vicuna v0) tokenizer from `make llama-vocab`'s cache (see `nextgpt.llm.load_llama_v0_tokenizer`)."""
    from nextgpt.llm import load_llama_v0_tokenizer

    return load_llama_v0_tokenizer()


# ---- the release --------------------------------------------------------------------------------------
@dataclass
class Release:
    """Paths of a built stand-in release (see the module docstring) and what building it took."""

    root: Path
    scale: str
    config: NextGPTConfig
    config_file: Path
    llm_dir: Path
    official_pt: Path
    imagebind_pth: Path
    decoder_dirs: dict[str, Path]
    seconds: dict[str, float] = field(default_factory=dict)  # per part

    @property
    def decoder_paths(self) -> dict[str, str]:
        return {m: str(p) for m, p in self.decoder_dirs.items()}


def write_llm(folder: Path, scale: str, *, device: str, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random LLaMA-architecture LLM (safetensors) with the real tokenizer beside it; returns its
    (embed_tokens, lm_head) weights, (32000, H) each, for the checkpoint's resized rows."""
    from transformers import LlamaForCausalLM

    config = llama_config(scale)
    model = random_module(lambda: LlamaForCausalLM(config), device=device, dtype=dtype, seed=seed)
    model.save_pretrained(folder)  # safetensors
    llama_tokenizer().save_pretrained(folder)
    rows = model.get_input_embeddings().weight.detach(), model.get_output_embeddings().weight.detach()
    del model
    return rows


def official_state(cfg: NextGPTConfig, embed: torch.Tensor, lm_head: torch.Tensor, *, device: str,
                   dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    """The released pytorch_model.pt's tensors and key names (peft's named_parameters of the LLM, the
    projections under their official module names), random, on the CPU."""
    from nextgpt.project import InputProjection, build_output_projectors

    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int, std: float = INIT_STD) -> torch.Tensor:
        return torch.empty(shape, device=device, dtype=dtype).normal_(0.0, std, generator=gen).cpu()

    h, r = cfg.llm.hidden_size, cfg.llm.lora_r
    inp = random_module(lambda: InputProjection(cfg.encoder.out_embed_dim, h), device=device, dtype=dtype, seed=seed)
    state = {f"llama_proj.{k}": v.cpu() for k, v in inp.state_dict().items()}
    names = {Modality.IMAGE: "gen_text_hidden_fcs", Modality.VIDEO: "gen_text_hidden_fcs_video",
             Modality.AUDIO: "gen_text_hidden_fcs_audio"}
    outs = random_module(lambda: build_output_projectors(h, cfg.decoders, cfg.projector), device=device, dtype=dtype,
                         seed=seed + 1)
    for spec in cfg.decoders:
        for k, v in outs[spec.modality.value].state_dict().items():
            state[f"{names[spec.modality]}.0.{k}"] = v.cpu()
    for layer in range(cfg.llm.num_layers):
        for p in "qkvo":
            base = f"llama_model.base_model.model.model.layers.{layer}.self_attn.{p}_proj"
            state[f"{base}.lora_A.default.weight"] = randn(r, h)
            state[f"{base}.lora_B.default.weight"] = randn(h, r)
    added = len(cfg.added_tokens)
    for key, base in (("embed_tokens", embed), ("lm_head", lm_head)):
        full = torch.cat([base.to(dtype), torch.empty(added, h, device=base.device, dtype=dtype).normal_(
            0.0, INIT_STD, generator=torch.Generator(device=base.device).manual_seed(seed + 2))])
        name = "model.embed_tokens" if key == "embed_tokens" else "lm_head"
        state[f"llama_model.base_model.model.{name}.weight"] = full.cpu()
    return state


def write_imagebind(path: Path, cfg: EncoderConfig, *, device: str, dtype: torch.dtype, seed: int) -> None:
    """imagebind_huge.pth's layout: ImageBindModel's state dict (vision, audio and text towers; the depth, thermal
    and IMU towers that NExT-GPT never uses are left out), pickled with torch.save."""
    from nextgpt.encode import _construct

    model = random_module(lambda: _construct(cfg), device=device, dtype=dtype, seed=seed)
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype) for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def write_decoder(folder: Path, cfg: NextGPTConfig, modality: Modality, scale: str, *, device: str,
                  dtype: torch.dtype, seed: int) -> None:
    """A diffusers folder of the official decoder: random weights, the scheduler of the release, and a tokenizer
    that fits the text encoder (`decoder_tokenizer`)."""
    import diffusers
    import transformers

    from nextgpt.decode import _KINDS

    spec = cfg.decoder(modality)
    table, scheduler = decoder_components(spec.pipeline, scale)
    modules = {}
    for i, (name, (cls_name, config)) in enumerate(table.items()):
        cls = getattr(diffusers, cls_name, None) or getattr(transformers, cls_name)
        if issubclass(cls, transformers.PreTrainedModel):
            factory = lambda cls=cls, config=config: cls(cls.config_class(**config))  # noqa: E731
        else:
            factory = lambda cls=cls, config=config: cls(**config)  # noqa: E731
        modules[name] = random_module(factory, device=device, dtype=dtype, seed=seed + i)
    sched = getattr(diffusers, scheduler["class"]).from_config(scheduler["config"])
    tokenizer = decoder_tokenizer(spec, modules["text_encoder"].config)
    pipe = getattr(diffusers, spec.pipeline)(**modules, tokenizer=tokenizer, scheduler=sched,
                                             **_KINDS[spec.pipeline].init_kwargs)
    pipe.save_pretrained(folder, safe_serialization=True)
    del pipe, modules


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (CLIP and RoBERTa BPE vocabularies start with them)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(rest))]


def decoder_tokenizer(spec: Any, text_config: Any) -> Any:
    """A tokenizer for a decoder's text encoder, made offline.

    CLIP (SD v1.5, Zeroscope): CLIP's own BPE, read from the merges file inside the imagebind package; with all
    48894 merges it is the real 49408-token CLIP tokenizer, at toy scale the first merges that fit the toy
    vocabulary. CLAP (AudioLDM): a byte-level RoBERTa-style tokenizer without merges (261 tokens; the real one
    has 50265), enough for the pipeline's own text path.
    """
    import gzip

    from transformers import CLIPTokenizer, RobertaTokenizer

    from nextgpt.encode import _bpe_path

    chars = _byte_chars()
    if spec.pooled:
        vocab = ["<s>", "<pad>", "</s>", "<unk>", *chars, "<mask>"]
        return _bpe_tokenizer(RobertaTokenizer, vocab, [], model_max_length=text_config.max_position_embeddings - 2)
    lines = gzip.open(_bpe_path()).read().decode("utf-8").split("\n")[1:]
    merges = [tuple(line.split()) for line in lines[: text_config.vocab_size - 2 * len(chars) - 2]]
    vocab = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), "<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != text_config.vocab_size:
        raise ValueError(f"a CLIP tokenizer of {len(vocab)} tokens cannot serve a text encoder of {text_config.vocab_size}")
    return _bpe_tokenizer(CLIPTokenizer, vocab, merges, model_max_length=spec.cond_len)


def _bpe_tokenizer(cls: type, vocab: list[str], merges: list[tuple[str, str]], **kwargs: Any) -> Any:
    """A BPE tokenizer from its vocabulary and merges: in memory (transformers 5), or through vocab.json and
    merges.txt files where a version only takes files."""
    import tempfile

    try:
        return cls(vocab={t: i for i, t in enumerate(vocab)}, merges=list(merges), **kwargs)
    except TypeError:
        folder = Path(tempfile.mkdtemp(prefix="nextgpt-bpe-"))
        (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        return cls(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"), **kwargs)


def build_release(root: str | Path, scale: str = "tiny", *, device: str = "cpu", dtype: torch.dtype | None = None,
                  seed: int = 0) -> Release:
    """Write every part of a stand-in release under `root` (see the module docstring); fp16 on CUDA, fp32 on
    the CPU unless `dtype` says otherwise. The checkpoint is written in fp16, as released; ImageBind in `dtype`
    (the released .pth is fp32: fp16 halves the full-size build's 4.8 GB of disk traffic)."""
    _check_scale(scale)
    root = Path(root)
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    cfg = release_config(scale)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    llm_dir = root / "vicuna-7b-v0"
    embed, lm_head = write_llm(llm_dir, scale, device=device, dtype=dtype, seed=seed)
    seconds["llm"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pt = root / "nextgpt_7b_tiva_v0" / "pytorch_model.pt"
    pt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(official_state(cfg, embed, lm_head, device=device, dtype=torch.float16, seed=seed + 10), pt)
    del embed, lm_head
    seconds["checkpoint"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pth = root / "imagebind" / "imagebind_huge.pth"
    write_imagebind(pth, cfg.encoder, device=device, dtype=dtype, seed=seed + 20)
    seconds["imagebind"] = time.perf_counter() - t0
    decoder_dirs = {}
    for i, spec in enumerate(cfg.decoders):
        t0 = time.perf_counter()
        folder = root / "decoders" / spec.modality.value
        write_decoder(folder, cfg, spec.modality, scale, device=device, dtype=dtype, seed=seed + 30 + 10 * i)
        decoder_dirs[spec.modality.value] = folder
        seconds[f"decoder:{spec.modality.value}"] = time.perf_counter() - t0
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
    config_file = root / "config.json"
    cfg.save(root)
    return Release(root=root, scale=scale, config=cfg, config_file=config_file, llm_dir=llm_dir, official_pt=pt,
                   imagebind_pth=pth, decoder_dirs=decoder_dirs, seconds={k: round(v, 2) for k, v in seconds.items()})


# ---- replies dictated token by token --------------------------------------------------------------------
class ScriptedNextGPT(NextGPT):
    """A NextGPT whose sampler writes queued replies: while a reply lasts, `_sample` returns its next token
    (then </s>); with nothing queued it samples as usual. Every forward pass still runs, so timings, memory,
    the hidden states at the signal tokens, the projectors and the decoders are all real.

    `adopt` turns a loaded NextGPT into one in place, so it is loaded by exactly the code users run.
    """

    scripts: deque
    _script: list[int] | None
    _pos: int

    @classmethod
    def adopt(cls, model: NextGPT) -> "ScriptedNextGPT":
        model.__class__ = cls
        model.scripts, model._script, model._pos = deque(), None, 0
        return model  # type: ignore[return-value]

    def script_ids(self, text: str) -> list[int]:
        """Token ids of a reply (signal tokens such as [IMG0] become their ids), ending with </s>."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

    def queue_reply(self, text: str) -> None:
        self.scripts.append(self.script_ids(text))

    def stream(self, messages: Sequence[dict[str, Any]], settings: GenerationSettings | None = None) -> Iterator[StreamEvent]:
        self._script, self._pos = (self.scripts.popleft() if self.scripts else None), 0
        yield from super().stream(messages, settings)

    def _sample(self, logits: torch.Tensor, settings: GenerationSettings, gen: torch.Generator) -> int:
        if self._script is None:
            return super()._sample(logits, settings, gen)
        token = self._script[self._pos] if self._pos < len(self._script) else self.tokenizer.eos_token_id
        self._pos += 1
        return token
