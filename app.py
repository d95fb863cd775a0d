"""NExT-GPT web app: any-to-any chat (text, images, audio, video) with an evaluation tab.

    python app.py                                  # nano preset, http://127.0.0.1:7860
    python app.py --preset nextgpt-7b --checkpoint /models/nextgpt-7b --llm-path /models/vicuna-7b-v0 \\
        --quantization 4bit
    python app.py --port 7861 --scores-db scores.sqlite --output-dir /tmp/nextgpt-out --output-ttl 1800

The model options (--preset, --checkpoint, --quantization, --device, --dtype, --offload, --llm-path,
--imagebind, --image/audio/video-decoder) are those of `python -m nextgpt` (nextgpt/options.py).

Also the Hugging Face Spaces entry point: `app.demo` is the gradio Blocks (built on first access, from the
same flags' environment defaults). Environment: NEXTGPT_PRESET, NEXTGPT_CHECKPOINT, NEXTGPT_DEVICE, NEXTGPT_DTYPE, ... (each model option),
NEXTGPT_SCORES_DB, NEXTGPT_OUTPUT_DIR, NEXTGPT_OUTPUT_TTL, GRADIO_SERVER_NAME, GRADIO_SERVER_PORT.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("app")

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from nextgpt.options import add_model_args

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p, env_defaults=True)  # the same model options as `python -m nextgpt`
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--scores-db", type=Path, default=None,
                   help="SQLite file (default: $NEXTGPT_SCORES_DB or the cache)")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="root of the per-session media folders (default: $NEXTGPT_OUTPUT_DIR or a temp folder)")
    p.add_argument("--output-ttl", type=float, default=float(os.environ.get("NEXTGPT_OUTPUT_TTL", "3600")),
                   help="seconds an idle session's media are kept")
    return p.parse_args(argv)


def create_demo(args: argparse.Namespace) -> Any:
    """Load the model the flags name and build the app around it."""
    from app.handlers import model_version
    from app.media import OutputRoot
    from app.store import ScoreStore

    output = OutputRoot(args.output_dir, ttl_seconds=args.output_ttl)
    # gradio's own cache (uploads, copies of what it serves) under the same root; read when gradio is imported
    os.environ.setdefault("GRADIO_TEMP_DIR", str(output.root / "gradio"))
    from app.ui import build_demo
    from nextgpt.loading import default_checkpoint_dir
    from nextgpt.model import NextGPT

    from nextgpt.options import model_kwargs

    folder = args.checkpoint or default_checkpoint_dir(args.preset)
    kwargs = model_kwargs(args) | {"folder": folder}
    model = NextGPT.from_preset(kwargs.pop("name"), **kwargs)
    note = ""
    if not (Path(folder) / "config.json").is_file():
        note = (f"No trained checkpoint in {folder} yet: this is the plain base LLM, without any NExT-GPT "
                "training; expect generic text answers.")
    return build_demo(model, output=output, store=ScoreStore(args.scores_db), note=note,
                      version=model_version(model, folder))


def quiet_libraries() -> None:
    """Keep the libraries' start-up chatter out of the server log: progress bars, deprecation notices, the
    optional-kernel and text-encoder-type warnings (none of which a user can act on), per-request lines."""
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message="enable_nested_tensor", category=UserWarning)
    for name in ("bitsandbytes", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for library in (transformers_logging, diffusers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    args = parse_args(argv)
    try:
        demo = create_demo(args)
    except (OSError, ValueError) as err:  # missing package/weights, a checkpoint that does not fit
        sys.exit(f"cannot start the app: {err}")
    globals()["demo"] = demo
    from app.ui import launch

    launch(demo, host=args.host, port=args.port, share=args.share)


def __getattr__(name: str) -> Any:
    """`app.demo` for Hugging Face Spaces / `gradio app.py`: built on first access with the default flags."""
    if name == "demo":
        demo = create_demo(parse_args([]))
        globals()["demo"] = demo
        return demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
