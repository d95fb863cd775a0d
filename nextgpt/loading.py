"""Loading and saving checkpoints, and converting the official release. Safetensors only.

    model = load_model(NextGPT, "nano")          # what NextGPT.from_preset("nano") runs
    default_checkpoint_dir("nano")               # checkpoints/nano, or $NEXTGPT_CHECKPOINTS/nano

This module sits below the model (nextgpt/model.py imports it, never the other way): `load_model` builds the
class it is given, and reads and writes only what `LoadableModel` describes.

Our checkpoint folder (every stage writes only what it trained; a missing part switches that ability off):

    config.json                      NextGPTConfig
    encoder/                         MediaEncoder (ImageBind weights)
    input_projection.safetensors     weight, bias
    output_projectors.safetensors    <modality>.fc.weight, <modality>.tfm.*, <modality>.model.*, <modality>.query_embs
    token_rows.safetensors           embed_tokens [, lm_head]: rows of the added tokens (or whole matrices)
    lora/                            peft adapter (adapter_config.json + adapter_model.safetensors)
    decoders/<modality>/             diffusers components
    world.json                       the closed world it was trained on, if any (world_profile.py)

The official `pytorch_model.pt` is a pickle: it is read once with `torch.load(weights_only=True)` (no code
runs) and written out in the layout above by `convert_official_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from nextgpt.config import MODEL_PRESETS, PRESETS, Modality, NextGPTConfig
from nextgpt.llm import load_llm, load_token_rows, quantize_loaded, resolve_dtype, save_safetensors, token_rows
from nextgpt.world_profile import WorldProfile

if TYPE_CHECKING:
    from nextgpt.decode import Decoders
    from nextgpt.encode import MediaEncoder

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent

INPUT_PROJECTION = "input_projection.safetensors"
OUTPUT_PROJECTORS = "output_projectors.safetensors"
TOKEN_ROWS = "token_rows.safetensors"
LORA_DIR = "lora"


class CheckpointError(ValueError):
    """A checkpoint file that does not fit the model: names the file and the first offending key."""


class LoadableModel(Protocol):
    """What loading builds and fills: the composed model (`nextgpt.model.NextGPT`) as seen from below it."""

    cfg: NextGPTConfig
    llm: Any  # a transformers causal LM, possibly wrapped by peft
    input_proj: nn.Module
    output_projectors: nn.ModuleDict  # one projector per modality, keyed by its value
    can_encode: bool
    can_generate: set[Modality]

    def __init__(self, cfg: NextGPTConfig, llm: Any, tokenizer: Any, *, encoder: MediaEncoder | None = None,
                 decoders: Decoders | None = None) -> None: ...

    def eval(self) -> Any: ...


ModelT = TypeVar("ModelT", bound=LoadableModel)


def default_checkpoint_dir(name: str) -> Path:
    """Where a preset's checkpoint lives: $NEXTGPT_CHECKPOINTS/<name>, else checkpoints/<name> in the repository."""
    root = os.environ.get("NEXTGPT_CHECKPOINTS")
    return Path(root) / name if root else REPO_ROOT / "checkpoints" / name


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from None


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: Path | str, *, strict: bool = True) -> None:
    """load_state_dict with an error that names the file and the key instead of a shape dump."""
    own = module.state_dict()
    for key, value in state.items():
        if key not in own:
            if strict:
                raise CheckpointError(f"{source}: unexpected key {key!r} (does this file belong to this model?)")
            continue
        if tuple(own[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: key {key!r} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}"
            )
    missing = [k for k in own if k not in state]
    if strict and missing:
        raise CheckpointError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing in all)")
    # weights stored in fp16 (scripts/checkpoint_fp16.py) compute in the module's own dtype
    module.load_state_dict({k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v
                            for k, v in state.items()}, strict=False)


def load_token_rows_file(model: LoadableModel, path: Path) -> None:
    """token_rows.safetensors into the model's embeddings; a wrong file names itself and the key."""
    rows = read_safetensors(path)
    if "embed_tokens" not in rows:
        raise CheckpointError(f"{path}: missing key 'embed_tokens'")
    try:
        load_token_rows(model.llm, model.cfg.llm.base_vocab_size, rows)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None


def save_checkpoint(model: LoadableModel, folder: str | Path, *,
                    parts: tuple[str, ...] = ("input", "output", "rows", "lora")) -> Path:
    """Write the trained parts of `model` to `folder` (each stage names the parts it trained)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.cfg.save(folder)
    if "input" in parts:
        save_safetensors(model.input_proj.state_dict(), folder / INPUT_PROJECTION)
    if "output" in parts:
        save_safetensors(model.output_projectors.state_dict(), folder / OUTPUT_PROJECTORS)
    if "rows" in parts:
        save_safetensors(token_rows(model.llm, model.cfg.llm.base_vocab_size), folder / TOKEN_ROWS)
    if "lora" in parts and hasattr(model.llm, "peft_config"):
        # the added rows are in token_rows.safetensors: never a second full copy of the embeddings
        model.llm.save_pretrained(folder / LORA_DIR, safe_serialization=True, save_embedding_layers=False)
        # peft writes a template model card (with this machine's cache path) beside the adapter: the checkpoint's
        # own card is <folder>/README.md
        (folder / LORA_DIR / "README.md").unlink(missing_ok=True)
    return folder


def resolve_config(
    name: str | None = "nano",
    *,
    folder: Path | None = None,
    llm_path: str | None = None,
    encoder_path: str | None = None,
    decoder_paths: dict[str, str] | None = None,
) -> tuple[NextGPTConfig, Path]:
    """(config, checkpoint folder) that `load_model` builds from the same arguments; reads config.json only.

    The folder's config.json wins over the preset; the weight paths given replace the config's."""
    folder = Path(folder) if folder is not None else (default_checkpoint_dir(name) if name else None)
    if folder is not None and (folder / "config.json").is_file():
        cfg = NextGPTConfig.load(folder)
        if name and cfg.name != name:
            raise ValueError(f"{folder} holds a {cfg.name!r} checkpoint, not {name!r}")
    elif name in PRESETS and name not in MODEL_PRESETS:
        raise ValueError(f"the {name!r} preset has no weights to load; build it with random ones (nextgpt/tiny.py)")
    elif name:
        cfg = NextGPTConfig.from_name(name)
    else:
        raise FileNotFoundError(f"no config.json in {folder}")
    if llm_path:
        cfg = cfg.replace(llm=dataclasses.replace(cfg.llm, path=llm_path))
    if encoder_path:
        cfg = cfg.replace(encoder=dataclasses.replace(cfg.encoder, path=encoder_path))
    if decoder_paths:
        specs = [dataclasses.replace(spec, path=decoder_paths.get(spec.modality.value, spec.path)) for spec in cfg.decoders]
        cfg = cfg.replace(decoders=tuple(specs))
    return cfg, folder if folder is not None else Path(".")


def checkpoint_abilities(cfg: NextGPTConfig, folder: Path, *, load_encoder: bool = True,
                         load_decoders: bool = True) -> tuple[bool, set[Modality]]:
    """(reads media, modalities it writes) of `load_model` on this folder, from which files are there: no
    weights are read (the app shows them while the model is still loading).

    The rules are load_model's: media are read with an encoder (folder/encoder or cfg.encoder.path) and the
    input projection; a modality is written when its output projector is in the file (beside the token rows)
    and its decoder folder holds a diffusers pipeline."""
    from safetensors import safe_open

    reads = load_encoder and ((folder / "encoder").is_dir() or bool(cfg.encoder.path)) \
        and (folder / INPUT_PROJECTION).is_file()
    writes: set[Modality] = set()
    projectors = folder / OUTPUT_PROJECTORS
    if load_decoders and projectors.is_file() and (folder / TOKEN_ROWS).is_file():
        try:
            with safe_open(projectors, framework="pt") as f:
                keys = list(f.keys())
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{projectors}: not a readable safetensors file (truncated or corrupt?): {err}") \
                from None
        for spec in cfg.decoders:
            source = Path(spec.path).expanduser() if spec.path else folder / "decoders" / spec.modality.value
            if any(k.startswith(spec.modality.value + ".") for k in keys) and (source / "model_index.json").is_file():
                writes.add(spec.modality)
    return reads, writes


def load_model(
    model_class: type[ModelT],
    name: str | None = "nano",
    *,
    folder: Path | None = None,
    dtype: torch.dtype | str | None = "auto",
    device: str = "cpu",
    quantization: str = "none",
    offload: bool = False,
    llm_path: str | None = None,
    encoder_path: str | None = None,
    decoder_paths: dict[str, str] | None = None,
    load_encoder: bool = True,
    load_decoders: bool = True,
    merge_lora: bool = True,
) -> ModelT:
    """Build a `model_class` (NextGPT) from a preset name and/or a checkpoint folder (see the module docstring).

    dtype: the compute dtype of every part ("auto": half precision on CUDA, float32 on the CPU).
    offload: the decoders and the encoder wait on the CPU and move to the GPU only while they run.
    """
    dtype = resolve_dtype(dtype, device)

    # 1. config: the folder's config.json wins; the preset is the fallback
    cfg, folder = resolve_config(name, folder=folder, llm_path=llm_path, encoder_path=encoder_path,
                                 decoder_paths=decoder_paths)

    # 2. LLM (+ token rows, + LoRA)
    device_map = {"": device} if device.startswith("cuda") else None
    llm, tok = load_llm(cfg, dtype=dtype, quantization=quantization, device_map=device_map, device=device)
    if (folder / LORA_DIR / "adapter_config.json").is_file():
        from peft import PeftModel

        llm = PeftModel.from_pretrained(llm, folder / LORA_DIR, is_trainable=not merge_lora)
        if merge_lora and quantization == "none":
            llm = llm.merge_and_unload()
    # 3. encoder
    encoder = None
    encoder_device = "cpu" if offload and device.startswith("cuda") else device
    if load_encoder and (folder / "encoder").is_dir():
        from nextgpt.encode import MediaEncoder

        encoder = MediaEncoder.load(folder / "encoder", cfg.encoder, device=encoder_device, dtype=dtype)
    elif load_encoder and cfg.encoder.path:
        from nextgpt.encode import load_official_imagebind

        encoder = load_official_imagebind(cfg.encoder.path, cfg.encoder, device=encoder_device, dtype=dtype)
    if encoder is not None and encoder_device != device:
        encoder.enable_offload(device)
    # 4. decoders (loaded lazily, once, per modality)
    decoders = None
    if load_decoders:
        from nextgpt.decode import Decoders

        decoders = Decoders.from_folder(cfg, folder, dtype=dtype, device=device, offload=offload)
    model = model_class(cfg, llm, tok, encoder=encoder, decoders=decoders)
    # rows after LoRA merge: the rows live in the base embeddings
    if (folder / TOKEN_ROWS).is_file():
        load_token_rows_file(model, folder / TOKEN_ROWS)
    if (folder / INPUT_PROJECTION).is_file():
        load_into(model.input_proj, read_safetensors(folder / INPUT_PROJECTION), folder / INPUT_PROJECTION)
    else:
        model.can_encode = False
    if (folder / OUTPUT_PROJECTORS).is_file() and (folder / TOKEN_ROWS).is_file():
        for modality in load_output_projectors(model, folder / OUTPUT_PROJECTORS):
            if decoders is not None and decoder_available(decoders, modality):
                model.can_generate.add(modality)
    if cfg.llm.source == "gguf" and quantization != "none":
        quantize_loaded(model.llm, quantization, device)
    model.input_proj.to(device, dtype)
    model.output_projectors.to(device, dtype)
    model.eval()
    # 5. the closed world it was trained on, if it says so: notices on uploads from outside it, its own abilities
    model.world = WorldProfile.load(folder)
    log.info("loaded %s from %s: reads media=%s, writes %s, world: %s", cfg.name, folder, model.can_encode,
             sorted(m.value for m in model.can_generate) or "text only",
             model.world.name if model.world else "open (no world.json)")
    return model


def load_output_projectors(model: LoadableModel, path: Path) -> list[Modality]:
    """Each modality's projector is loaded whole or not at all: a modality with no keys in the file stays
    off; one with some of its keys missing, or a key of no modality, is an error naming the key (a partial
    file must never switch generation on with random weights)."""
    state = read_safetensors(path)
    found = []
    for spec in model.cfg.decoders:
        prefix = spec.modality.value + "."
        part = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if part:
            load_into(model.output_projectors[spec.modality.value], part, f"{path} ({spec.modality.value} projector)")
            found.append(spec.modality)
    known = tuple(spec.modality.value + "." for spec in model.cfg.decoders)
    stray = [k for k in state if not k.startswith(known)]
    if stray:
        raise CheckpointError(f"{path}: unexpected key {stray[0]!r} (does this file belong to this model?)")
    return found


def decoder_available(decoders: Decoders, modality: Modality) -> bool:
    """A decoder is usable when it is in memory or its folder holds a diffusers pipeline."""
    if decoders.is_loaded(modality):
        return True
    try:
        return (decoders.source(modality) / "model_index.json").is_file()
    except FileNotFoundError:
        return False


# ---- the official release -----------------------------------------------------------------------
_OFFICIAL_PROJECTORS = {
    "gen_text_hidden_fcs.0.": Modality.IMAGE,
    "gen_text_hidden_fcs_video.0.": Modality.VIDEO,
    "gen_text_hidden_fcs_audio.0.": Modality.AUDIO,
}
_LORA_RE = re.compile(
    r"^llama_model\.base_model\.model\.model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.lora_([AB])(?:\.default)?\.weight$"
)
_EMBED = "llama_model.base_model.model.model.embed_tokens.weight"
_LM_HEAD = "llama_model.base_model.model.lm_head.weight"


def map_official_state(state: dict[str, torch.Tensor], cfg: NextGPTConfig) -> dict[str, dict[str, torch.Tensor]]:
    """Official key -> (our file, our key). Unknown keys are an error naming the key."""
    out: dict[str, dict[str, torch.Tensor]] = {"input": {}, "output": {}, "rows": {}, "lora": {}}
    for key, value in state.items():
        if key.startswith("llama_proj."):
            out["input"][key.removeprefix("llama_proj.")] = value
        elif any(key.startswith(p) for p in _OFFICIAL_PROJECTORS):
            prefix = next(p for p in _OFFICIAL_PROJECTORS if key.startswith(p))
            out["output"][f"{_OFFICIAL_PROJECTORS[prefix].value}.{key.removeprefix(prefix)}"] = value
        elif key == _EMBED:
            out["rows"]["embed_tokens"] = value
        elif key == _LM_HEAD:
            out["rows"]["lm_head"] = value
        elif m := _LORA_RE.match(key):
            layer, proj, ab = m.groups()
            out["lora"][f"base_model.model.model.layers.{layer}.self_attn.{proj}_proj.lora_{ab}.weight"] = value
        else:
            raise CheckpointError(f"official checkpoint: unexpected key {key!r}")
    expected_vocab = cfg.llm.base_vocab_size + len(cfg.added_tokens)
    for name, rows in out["rows"].items():
        if rows.shape[0] != expected_vocab:
            raise CheckpointError(
                f"official checkpoint: {name} has {rows.shape[0]} rows, expected {expected_vocab} "
                f"(a LLaMA-2 Vicuna gives 32042: use Vicuna-7B v0)"
            )
    for part in ("input", "output", "rows"):
        if not out[part]:
            raise CheckpointError(f"official checkpoint: no {part} weights found (is this pytorch_model.pt?)")
    return out


def convert_official_checkpoint(pt_path: str | Path, out_dir: str | Path, cfg: NextGPTConfig | None = None) -> Path:
    """Convert the released `pytorch_model.pt` (pickle) to our safetensors layout, once.

    `torch.load(weights_only=True)` refuses to run any code a pickle may carry.
    """
    cfg = cfg or NextGPTConfig.from_name("nextgpt-7b")
    pt_path, out_dir = Path(pt_path), Path(out_dir)
    if not pt_path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {pt_path}")
    try:
        state = torch.load(pt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is reported the same way
        raise CheckpointError(f"{pt_path}: cannot be read safely as a weights-only checkpoint: {err}") from None
    parts = map_official_state(dict(state), cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(out_dir)
    save_safetensors(parts["input"], out_dir / INPUT_PROJECTION)
    save_safetensors(parts["output"], out_dir / OUTPUT_PROJECTORS)
    save_safetensors(parts["rows"], out_dir / TOKEN_ROWS)
    if parts["lora"]:
        lora_dir = out_dir / LORA_DIR
        save_safetensors(parts["lora"], lora_dir / "adapter_model.safetensors")
        from nextgpt.llm import lora_config

        adapter = lora_config(cfg.llm).to_dict()
        adapter["target_modules"] = sorted(adapter["target_modules"])
        (lora_dir / "adapter_config.json").write_text(json.dumps(adapter, indent=2, default=str))
    log.info("converted %s -> %s (%d tensors)", pt_path, out_dir, len(state))
    return out_dir
