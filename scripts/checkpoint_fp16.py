"""Store a checkpoint's trained projections and LoRA in fp16 safetensors, in place (idempotent).

    python scripts/checkpoint_fp16.py checkpoints/nano            # convert, then list every weight file's dtype
    python scripts/checkpoint_fp16.py checkpoints/nano --check    # list only; exit 1 if a part below is not fp16

The training stages write `input_projection`, `output_projectors` and `lora/` in fp32 (`save_checkpoint`), since
the next stage starts from them; `train_nano.sh` runs this script once the recipe is done. The other parts are
written in fp16 by their own trainers: the decoders' components always (`save_component`), the encoder when fp16
weights score the same zero-shot as fp32 (`save_encoder`). Left in fp32: `token_rows.safetensors` (the signal
tokens' rows of the LLM's embeddings) and the decoders' `null_cond.safetensors`, a few KB each.

Loading upcasts: `load_into` casts to the module's dtype, peft's `PeftModel.from_pretrained` copies into adapter
layers built in the LLM's dtype, and diffusers' `from_pretrained(torch_dtype=...)` casts to the decoders' dtype,
so a CPU run computes in fp32 with weights rounded to fp16.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nextgpt import files  # noqa: E402

log = logging.getLogger("checkpoint_fp16")

CONVERTED = ("input_projection.safetensors", "output_projectors.safetensors", "lora/adapter_model.safetensors")
WRITTEN_FP16 = ("encoder/encoder.safetensors", "decoders/*/*/*.safetensors")  # fp16 from their trainers
FP16_MAX = torch.finfo(torch.float16).max


def half_files(folder: Path) -> list[Path]:
    """The weight files of `folder` that a shipped checkpoint stores in fp16."""
    return sorted(p for pattern in CONVERTED + WRITTEN_FP16 for p in folder.glob(pattern))


def float_dtypes(path: Path) -> set[str]:
    """The safetensors dtypes ("F32", "F16", ...) of the file's floating-point tensors, read from its header."""
    with safe_open(str(path), "pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys()} & {"F64", "F32", "F16", "BF16"}


def to_fp16(path: Path) -> bool:
    """Rewrite `path` with its fp32 tensors in fp16 (atomically, metadata kept). False if there was nothing to do."""
    if float_dtypes(path) <= {"F16"}:
        return False
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    state = load_file(str(path))
    for key, value in state.items():
        if value.dtype == torch.float32:
            peak = value.abs().max().item() if value.numel() else 0.0
            if peak > FP16_MAX:
                raise ValueError(f"{path}: {key} reaches {peak:g}, beyond fp16's range")
            state[key] = value.to(torch.float16)
    files.save_tensors(state, path, metadata=metadata)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", default=Path("checkpoints/nano"), help="checkpoint folder")
    parser.add_argument("--check", action="store_true", help="convert nothing; exit 1 if a part is not fp16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    for name in CONVERTED:
        path = args.folder / name
        if path.is_file() and not args.check:
            before = path.stat().st_size
            if to_fp16(path):
                log.info("%s: fp32 -> fp16, %.2f -> %.2f MB", name, before / 1e6, path.stat().st_size / 1e6)
    not_half = []
    for path in half_files(args.folder):
        dtypes = float_dtypes(path)
        log.info("%-60s %s %.2f MB", path.relative_to(args.folder), "/".join(sorted(dtypes)), path.stat().st_size / 1e6)
        if not dtypes <= {"F16"}:
            not_half.append(path)
    for path in not_half:
        log.error("not fp16: %s", path)
    return 1 if not_half else 0


if __name__ == "__main__":
    sys.exit(main())
