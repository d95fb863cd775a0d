"""The model options shared by `python -m nextgpt` and `app.py`: one definition, one mapping to `load_model`;
and `quiet_libraries`, which keeps the libraries' warnings out of the app's log and of install steps.

    parser = argparse.ArgumentParser()
    add_model_args(parser)
    model = NextGPT.from_preset(**model_kwargs(parser.parse_args()))
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from nextgpt.config import MODEL_PRESETS, QUANTIZATIONS, Modality
from nextgpt.llm import DTYPES


def add_model_args(p: argparse.ArgumentParser, *, env_defaults: bool = False) -> None:
    """Preset, checkpoint, precision, placement and the nextgpt-7b weight paths.

    env_defaults: read defaults from NEXTGPT_PRESET, NEXTGPT_CHECKPOINT, NEXTGPT_DEVICE, ... (the app on a
    Space, where no flags are given)."""

    def env(name: str, default: Any = None) -> Any:
        return os.environ.get(f"NEXTGPT_{name}", default) if env_defaults else default

    p.add_argument("--preset", default=env("PRESET", "nano"), choices=MODEL_PRESETS, help="model preset (default nano)")
    p.add_argument("--checkpoint", type=Path, default=env("CHECKPOINT"), help="checkpoint folder (default: the preset's)")
    p.add_argument("--quantization", default=env("QUANTIZATION", "none"), choices=QUANTIZATIONS,
                   help="LLM only: 8bit (CPU or CUDA), 4bit (CUDA)")
    p.add_argument("--device", default=env("DEVICE", "cpu"), help="cpu or cuda[:N]")
    p.add_argument("--dtype", default=env("DTYPE", "auto"), choices=["auto", *DTYPES],
                   help="compute dtype (auto: bfloat16/float16 on CUDA, float32 on the CPU)")
    p.add_argument("--offload", action="store_true", default=bool(env("OFFLOAD", "")),
                   help="decoders and encoder wait on the CPU and move to the GPU only while they run (CUDA)")
    p.add_argument("--llm-path", default=env("LLM_PATH"), help="nextgpt-7b: local Vicuna-7B v0 folder")
    p.add_argument("--imagebind", default=env("IMAGEBIND"),
                   help="nextgpt-7b: local imagebind_huge.pth (converted once into the cache)")
    for m in Modality:
        p.add_argument(f"--{m.value}-decoder", default=env(f"{m.name}_DECODER"),
                       help=f"nextgpt-7b: local diffusers folder of the {m.value} decoder")


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """`load_model` keyword arguments from parsed `add_model_args` options."""
    decoders = {m.value: getattr(args, f"{m.value}_decoder") for m in Modality if getattr(args, f"{m.value}_decoder")}
    return {
        "name": args.preset, "folder": args.checkpoint, "quantization": args.quantization, "device": args.device,
        "dtype": args.dtype, "offload": args.offload, "llm_path": args.llm_path, "encoder_path": args.imagebind,
        "decoder_paths": decoders or None,
    }


def quiet_libraries(*, import_them: bool = True) -> None:
    """Keep the libraries' start-up chatter out of a server log or an install step: progress bars,
    deprecation notices, the optional-kernel and text-encoder-type warnings (none of which a user can act
    on), per-request lines.

    import_them=False does what costs nothing (warning filters, log levels, the environment that transformers
    reads when it is imported) and leaves diffusers' progress bars to a later call: switching them off imports
    diffusers (seconds), which the app does in the background while the page is already served."""
    import logging
    import warnings

    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message="enable_nested_tensor", category=UserWarning)
    for name in ("bitsandbytes", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    if not import_them:
        return
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for library in (transformers_logging, diffusers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()
