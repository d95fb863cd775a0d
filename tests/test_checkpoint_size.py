"""The tracked tree stays small enough to travel, and the shipped checkpoint's weights are fp16 on disk and fp32
on the CPU (scripts/checkpoint_fp16.py)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from nextgpt.loading import INPUT_PROJECTION, OUTPUT_PROJECTORS, load_into, read_safetensors
from nextgpt.model import NextGPT

ROOT = Path(__file__).resolve().parent.parent
NANO = ROOT / "checkpoints" / "nano"
TREE_LIMIT_MIB = 56  # a copy of the project taken to a GPU machine may hold at most 64 MiB

spec = importlib.util.spec_from_file_location("checkpoint_fp16", ROOT / "scripts" / "checkpoint_fp16.py")
checkpoint_fp16 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checkpoint_fp16)


def tracked_bytes(root: Path) -> dict[str, int]:
    """{path: size on disk} of every file git tracks under `root`."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    paths = [p for p in listing.decode().split("\0") if p]
    return {p: (root / p).stat().st_size for p in paths if (root / p).is_file()}


def test_tracked_tree_is_under_56_mib():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no list of tracked files")
    sizes = tracked_bytes(ROOT)
    total = sum(sizes.values()) / 2**20
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    assert total <= TREE_LIMIT_MIB, f"tracked tree {total:.2f} MiB > {TREE_LIMIT_MIB} MiB; largest: {largest}"


def test_shipped_weights_are_fp16():
    files = {p.relative_to(NANO).as_posix() for p in checkpoint_fp16.half_files(NANO)}
    assert files == {
        INPUT_PROJECTION, OUTPUT_PROJECTORS, "lora/adapter_model.safetensors", "encoder/encoder.safetensors",
        *(f"decoders/{m}/{part}/diffusion_pytorch_model.safetensors" for m in ("image", "audio", "video")
          for part in ("unet", "vae")),
        "decoders/audio/vocoder/model.safetensors",
    }
    for name in files:
        assert checkpoint_fp16.float_dtypes(NANO / name) == {"F16"}, name
    assert checkpoint_fp16.main([str(NANO), "--check"]) == 0


def test_shipped_fp16_weights_load_to_fp32_on_the_cpu():
    model = NextGPT.from_preset("nano", merge_lora=False, load_encoder=False)
    for module, name in ((model.input_proj, INPUT_PROJECTION), (model.output_projectors, OUTPUT_PROJECTORS)):
        loaded = module.state_dict()
        for key, value in read_safetensors(NANO / name).items():
            assert loaded[key].dtype == torch.float32 and torch.equal(loaded[key], value.float()), (name, key)
    lora = {n.replace(".default.", "."): p for n, p in model.llm.named_parameters() if "lora_" in n}
    stored = load_file(str(NANO / "lora" / "adapter_model.safetensors"))
    assert stored and set(stored) == set(lora)
    for key, value in stored.items():
        assert lora[key].dtype == torch.float32 and torch.equal(lora[key], value.float()), key
    for spec in model.cfg.decoders:
        pipe = model.decoders.pipeline(spec.modality)
        for part, module in pipe.components.items():
            if isinstance(module, nn.Module):
                assert {p.dtype for p in module.parameters()} == {torch.float32}, (spec.modality.value, part)


def test_to_fp16_rounds_once_and_load_into_upcasts(tmp_path):
    layer = nn.Linear(4, 3)
    path = tmp_path / INPUT_PROJECTION
    save_file({k: v.contiguous() for k, v in layer.state_dict().items()}, str(path), metadata={"format": "pt"})
    assert checkpoint_fp16.to_fp16(path) is True
    first = path.read_bytes()
    assert checkpoint_fp16.to_fp16(path) is False and path.read_bytes() == first  # idempotent
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"format": "pt"}
    state = read_safetensors(path)
    assert {v.dtype for v in state.values()} == {torch.float16}
    fresh = nn.Linear(4, 3)
    load_into(fresh, state, path)
    assert fresh.weight.dtype == torch.float32
    assert torch.equal(fresh.weight, layer.weight.half().float())
    assert not torch.equal(fresh.weight, layer.weight)  # rounded: the file really is fp16


def test_to_fp16_refuses_values_beyond_fp16(tmp_path):
    path = tmp_path / OUTPUT_PROJECTORS
    save_file({"w": torch.tensor([1.0, 1e6])}, str(path))
    with pytest.raises(ValueError, match="beyond fp16"):
        checkpoint_fp16.to_fp16(path)
    assert checkpoint_fp16.float_dtypes(path) == {"F32"}
