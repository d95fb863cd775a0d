"""NExT-GPT web app: any-to-any chat (text, images, audio, video) with an evaluation tab.

    python app.py                                  # nano preset, http://127.0.0.1:7860
    python app.py --preset nextgpt-7b --checkpoint /models/nextgpt-7b --llm-path /models/vicuna-7b-v0 \\
        --quantization 4bit
    python app.py --port 7861 --scores-db scores.sqlite --output-dir /tmp/nextgpt-out --output-ttl 1800
    python app.py --mcp                            # also an MCP server: one tool, `ask`, at /gradio_api/mcp/

The model options (--preset, --checkpoint, --quantization, --device, --dtype, --offload, --llm-path,
--imagebind, --image/audio/video-decoder) are those of `python -m nextgpt` (nextgpt/options.py).

Also the Hugging Face Spaces entry point: `app.demo` is the gradio Blocks (built on first access, from the
same flags' environment defaults). Environment: NEXTGPT_PRESET, NEXTGPT_CHECKPOINT, NEXTGPT_DEVICE, NEXTGPT_DTYPE, ... (each model option),
NEXTGPT_SCORES_DB, NEXTGPT_OUTPUT_DIR, NEXTGPT_OUTPUT_TTL, NEXTGPT_ADMIN_TOKEN, GRADIO_SERVER_NAME, GRADIO_SERVER_PORT,
GRADIO_MCP_SERVER. On a ZeroGPU Space (the `spaces` package installed) each turn runs under `spaces.GPU`
(app/zerogpu.py). Evaluation studies (docs/study.md): `--admin-token` unlocks results and exports; `--study`
picks the studies.

The page is served while the model loads in the background; the first turn waits for it (app/background.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
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
    p.add_argument("--mcp", action="store_true",
                   default=os.environ.get("GRADIO_MCP_SERVER", "").lower() == "true",
                   help="also serve the model as an MCP tool (`ask`) at /gradio_api/mcp/ (default: $GRADIO_MCP_SERVER)")
    p.add_argument("--output-ttl", type=float, default=float(os.environ.get("NEXTGPT_OUTPUT_TTL", "3600")),
                   help="seconds an idle session's media are kept")
    p.add_argument("--admin-token", default=os.environ.get("NEXTGPT_ADMIN_TOKEN"),
                   help="unlocks evaluation results and exports in the Evaluation tab (default: $NEXTGPT_ADMIN_TOKEN; "
                        "without one they are not served)")
    p.add_argument("--study", action="append", default=None,
                   help="evaluation study to offer raters (repeatable; default: every bundled prepared study)")
    return p.parse_args(argv)


def create_demo(args: argparse.Namespace, *, load: bool = True) -> Any:
    """The app around the model the flags name, served before the model has loaded: the page needs only the
    config and which parts the checkpoint has, read from its files; the weights load in a background thread
    (app/background.py) and the first turn waits for them.

    load: start loading now; False leaves it to `demo.nextgpt_model.start()` (`main`, once the page is served)."""
    from app.background import BackgroundModel
    from app.handlers import model_version
    from app.media import OutputRoot
    from app.store import ScoreStore
    from nextgpt.loading import checkpoint_abilities, resolve_config
    from nextgpt.options import model_kwargs

    output = OutputRoot(args.output_dir, ttl_seconds=args.output_ttl)
    # gradio's own cache (uploads, copies of what it serves) under the same root; read when gradio is imported
    os.environ.setdefault("GRADIO_TEMP_DIR", str(output.root / "gradio"))
    from app.study_tab import available_studies
    from app.ui import build_demo

    kwargs = model_kwargs(args)
    cfg, folder = resolve_config(kwargs["name"], folder=kwargs["folder"], llm_path=kwargs["llm_path"],
                                 encoder_path=kwargs["encoder_path"], decoder_paths=kwargs["decoder_paths"])
    reads, writes = checkpoint_abilities(cfg, folder)
    name = kwargs.pop("name")
    kwargs["folder"] = folder

    def load_model() -> Any:
        from nextgpt.model import NextGPT
        from nextgpt.options import quiet_libraries

        quiet_libraries()  # the part that imports diffusers (seconds), here rather than before the page
        return NextGPT.from_preset(name, **kwargs)

    model = BackgroundModel(load_model, cfg=cfg, can_encode=reads, can_generate=writes)
    note = ""
    if not (folder / "config.json").is_file():
        note = (f"No trained checkpoint in {folder} yet: this is the plain base LLM, without any NExT-GPT "
                "training; expect generic text answers.")
    demo = build_demo(model, output=output, store=ScoreStore(args.scores_db), note=note,
                      version=model_version(model, folder), studies=available_studies(args.study),
                      admin_token=args.admin_token)
    demo.nextgpt_model = model
    if load:
        model.start()
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    from nextgpt.options import quiet_libraries

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries(import_them=False)  # the rest when the model loads
    args = parse_args(argv)
    try:
        demo = create_demo(args, load=False)
    except (OSError, ValueError) as err:  # missing package/weights, a checkpoint that does not fit
        sys.exit(f"cannot start the app: {err}")
    globals()["demo"] = demo
    from app.ui import launch

    launch(demo, host=args.host, port=args.port, share=args.share, mcp=args.mcp, prevent_thread_lock=True)
    demo.nextgpt_model.start()  # now: the load's imports would have slowed the server's start down
    demo.block_thread()


def __getattr__(name: str) -> Any:
    """`app.demo` for Hugging Face Spaces / `gradio app.py`: built on first access with the default flags."""
    if name == "demo":
        demo = create_demo(parse_args([]))
        globals()["demo"] = demo
        return demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
