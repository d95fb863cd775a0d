"""Command line: `python -m nextgpt COMMAND`.

    generate  one turn; prints one JSON line {"text", "images", "audios", "videos", "notices"}
              (media written to --out as PNG / 16 kHz WAV / MP4); bad input prints {"error": ...}, exit 2
    memory    weights per component and peak memory of a preset under a quantization / offload plan,
              computed from the real architectures on the meta device (nothing is downloaded)
    convert   the official pytorch_model.pt (pickle) -> our safetensors layout, weights-only
    prepare   the one-time conversions a first load would do, done now (`make install` runs it): nano's bundled
              GGUF -> a safetensors cache, nextgpt-7b's ImageBind -> the cache; prints {"prepared", "cache",
              "seconds"}
    eval      the paper's tables on a split of the world (default val; written first when missing) through the
              chat API -> --out/report.md, report.json, items.jsonl.gz, *.png; prints {"report", "json", "plots",
              "summary", "skipped"}
    bench     speed and memory on this CPU against the targets and the official demo's way -> --out/bench.json,
              bench.md; prints {"bench", "md", "targets", "speedup_vs_official"}. With --preset nextgpt-7b
              --random-weights --scale tiny|full: the 7B path with random weights (nextgpt/eval/bench7b.py)
    train     a training recipe step by step (`--recipe nano`: the whole nano checkpoint from nothing, resumable;
              nextgpt/training/recipe.py); progress on stderr; prints {"recipe", "state", "checkpoint", "ran",
              "skipped", "seconds"}, with --list {"recipe", "steps", "minutes"}
    study     human evaluation studies (nextgpt/study/): `study prepare` generates every system's answers once
              (progress bar, resumable); `study raters` makes per-rater links; `study results` and
              `study export` read the ratings from the app's scores database (docs/study.md)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from nextgpt.config import MODALITY_INFO, MODEL_PRESETS, QUANTIZATIONS
from nextgpt.options import add_model_args, model_kwargs

log = logging.getLogger("nextgpt")

EXIT_BAD_INPUT = 2
DEFAULT_WORLD = Path(__file__).resolve().parent.parent / "data" / "world"


class UserError(Exception):
    """Something the user can fix; printed as {"error": ...} with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nextgpt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="one chat turn")
    add_model_args(g)
    g.add_argument("--prompt", default=None, help="the user's text")
    for spec in MODALITY_INFO.values():  # --image, --audio, --video
        g.add_argument(f"--{spec.name}", action="append", default=[], help=f"{spec.name} file (repeatable)")
    g.add_argument("--messages", type=Path, default=None, help="JSON file with a whole chat (HF message format)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-new-tokens", type=int, default=None, help="reply length limit (default: the preset's)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--steps", type=int, default=None, help="diffusion steps (default: the preset's)")
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    g.add_argument("--out", type=Path, default=Path("outputs"), help="folder for generated media")

    m = sub.add_parser("memory", help="memory plan from the real architectures on the meta device")
    m.add_argument("--preset", default="nextgpt-7b", choices=MODEL_PRESETS)
    m.add_argument("--quantization", default="none", choices=QUANTIZATIONS)
    m.add_argument("--offload", action="store_true", help="decoders offloaded to the CPU between uses")
    m.add_argument("--json", type=Path, default=None, help="also write the JSON here")

    c = sub.add_parser("convert", help="official pytorch_model.pt -> safetensors (weights only)")
    c.add_argument("checkpoint", type=Path, help="path to the official pytorch_model.pt")
    c.add_argument("--out", type=Path, required=True, help="output folder")
    c.add_argument("--config", type=Path, default=None,
                   help="config.json of the model to convert for (default: the nextgpt-7b preset)")

    pr = sub.add_parser("prepare", help="write the caches a first load would write (the GGUF conversion)")
    add_model_args(pr)

    e = sub.add_parser("eval", help="the paper's tables on a split of the world (default val)")
    add_model_args(e)
    e.add_argument("--data", type=Path, default=DEFAULT_WORLD,
                   help="the world's root folder (default data/world); a missing split is written there first")
    e.add_argument("--split", default="val", choices=["train", "val", "test"],
                   help="val (default) to develop on; test once, for the report a checkpoint ships with")
    e.add_argument("--limit", type=int, default=None,
                   help="items per modality (captioning, generation), edit turns and dialogues (default: all)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--max-new-tokens", type=int, default=64)
    e.add_argument("--steps", type=int, default=None, help="diffusion steps (default: the preset's)")
    e.add_argument("--no-meteor", action="store_true", help="skip METEOR (it starts a Java process)")
    e.add_argument("--no-base", action="store_true",
                   help="do not run the base LLM on the general questions for comparison")
    e.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads in all, shared among the workers (default: torch's choice)")
    e.add_argument("--workers", type=int, default=1,
                   help="processes answering the chat calls, each loading the model (default 1; on 2 cores, 2 "
                        "workers of one thread answer faster than one process with two)")
    e.add_argument("--out", type=Path, default=Path("runs/eval"), help="report folder")

    b = sub.add_parser("bench", help="speed and memory against the targets and the official way")
    add_model_args(b)
    b.add_argument("--quick", action="store_true", help="fewer runs per measurement")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--skip-cold-start", action="store_true", help="do not time a fresh interpreter loading the preset")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    b.add_argument("--out", type=Path, default=Path("runs/bench"), help="folder for bench.json and bench.md")
    r = b.add_argument_group("nextgpt-7b with random weights (--random-weights; nextgpt/eval/bench7b.py)")
    r.add_argument("--random-weights", action="store_true",
                   help="build every component at the official architecture (or toy size) with random weights")
    r.add_argument("--scale", default="tiny", choices=["tiny", "full"], help="full = the official sizes")
    r.add_argument("--settings", default=None,
                   help='"all" or a comma list of none|8bit|4bit[+offload] (default: --quantization/--offload)')
    r.add_argument("--steps", type=int, default=None,
                   help="decoder steps outside the reference setting (default: the preset's)")
    r.add_argument("--official-steps", type=int, default=50,
                   help="the official way's decoder steps (the official demo's 50 unless a CPU test needs fewer)")
    r.add_argument("--max-new-tokens", type=int, default=64)
    r.add_argument("--no-conversation", action="store_true",
                   help="skip the 5-turn conversation and the official way")
    r.add_argument("--time-budget", type=float, default=None,
                   help="seconds after which no further setting starts (its row says so)")
    r.add_argument("--work-dir", type=Path, default=None,
                   help="where to build the stand-in release (default: a temp folder, removed after)")
    t = sub.add_parser("train", help="a training recipe step by step (resumable)")
    t.add_argument("--recipe", default="nano", choices=["nano"], help="the recipe (nextgpt/training/recipe.py)")
    t.add_argument("--out", type=Path, default=Path("checkpoints/nano"), help="checkpoint folder the steps write")
    t.add_argument("--data", type=Path, default=Path("data/world"), help="the world (written by the first step)")
    t.add_argument("--runs", type=Path, default=Path("runs"),
                   help="every step's run folder and the state file recipe.json (default runs)")
    t.add_argument("--from", dest="start", default=None, metavar="STEP", help="start at this step")
    t.add_argument("--only", default=None, metavar="STEP", help="run only this step (a lane's step too)")
    t.add_argument("--smoke", action="store_true", help="every step at toy size, a few steps each")
    t.add_argument("--list", action="store_true", help="print the steps and their settings; run nothing")

    st = sub.add_parser("study", help="human evaluation studies: prepare, raters, results, export")
    study_sub = st.add_subparsers(dest="study_command", required=True)
    sp = study_sub.add_parser("prepare", help="every system's answer to every item, once (resumable)")
    sp.add_argument("--study", default="default", help="a bundled study's name or a study folder (default: default)")
    sp.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    sp.add_argument("--dtype", default="auto", help="compute dtype (auto: float32 on the CPU)")
    sp.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    for name, help_text in (("raters", "per-rater sign-in links (tokens) for named raters"),
                            ("results", "means, intervals, paired differences, agreement and plots"),
                            ("export", "every rating as CSV and JSONL")):
        q = study_sub.add_parser(name, help=help_text)
        q.add_argument("--study", default="default", help="a bundled study's name or a study folder")
        q.add_argument("--scores-db", type=Path, default=None,
                       help="the app's SQLite file (default: $NEXTGPT_SCORES_DB or the cache)")
        if name == "raters":
            q.add_argument("names", nargs="+", help="the raters' names")
            q.add_argument("--url", default="http://127.0.0.1:7860/", help="the app's address, for the links")
        else:
            q.add_argument("--out", type=Path, default=Path("runs/study"), help="folder for the files")
    return parser


def _messages(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.messages is not None:
        try:
            messages = json.loads(args.messages.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"--messages: cannot read {args.messages}: {err}") from None
        if not isinstance(messages, list):
            raise UserError("--messages: the file must hold a JSON list of messages")
    else:
        messages = []
    parts: list[dict[str, Any]] = []
    for kind in (spec.name for spec in MODALITY_INFO.values()):
        for path in getattr(args, kind):
            if not Path(path).is_file():
                raise UserError(f"--{kind}: file not found: {path}")
            parts.append({"type": kind, "path": str(path)})
    if args.prompt is not None or parts:
        parts.append({"type": "text", "text": args.prompt or ""})
        messages.append({"role": "user", "content": parts})
    if not messages:
        flags = "/".join(f"--{spec.name}" for spec in MODALITY_INFO.values())
        raise UserError(f"give --prompt (and optionally {flags}) or --messages")
    return messages


def cmd_generate(args: argparse.Namespace) -> dict[str, Any]:
    from nextgpt.config import GenerationSettings
    from nextgpt.conversation import ConversationError, normalize_messages

    messages = _messages(args)
    try:
        normalize_messages(messages)
        settings = GenerationSettings(
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
            num_inference_steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
        )
    except (ConversationError, ValueError) as err:
        raise UserError(str(err)) from None
    from nextgpt import media
    from nextgpt.model import ModelUnavailableError, NextGPT

    kwargs = model_kwargs(args)
    model = NextGPT.from_preset(kwargs.pop("name"), **kwargs)
    try:
        reply = model.chat(messages, settings)
    except (media.MediaError, ModelUnavailableError, ConversationError) as err:
        raise UserError(str(err)) from None
    out: dict[str, Any] = {"text": reply.text}
    args.out.mkdir(parents=True, exist_ok=True)
    for modality, spec in MODALITY_INFO.items():  # "images": ["outputs/seed0_image0.png", ...]
        out[spec.reply_key] = []
        for i, arr in enumerate(reply.media[modality]):
            path = args.out / f"seed{args.seed}_{spec.name}{i}{spec.extension}"
            media.save(modality, arr, path)
            out[spec.reply_key].append(str(path))
    out["notices"] = reply.notices
    return out


def cmd_memory(args: argparse.Namespace) -> dict[str, Any]:
    from nextgpt.memory import format_table, memory_plan

    plan = memory_plan(args.preset, quantization=args.quantization, offload=args.offload)
    sys.stderr.write(format_table(plan) + "\n")
    if args.json:
        args.json.write_text(json.dumps(plan, indent=2) + "\n")
    return plan


def cmd_convert(args: argparse.Namespace) -> dict[str, Any]:
    from nextgpt.config import NextGPTConfig
    from nextgpt.loading import convert_official_checkpoint

    cfg = None
    if args.config is not None:
        try:
            cfg = NextGPTConfig.from_dict(json.loads(args.config.read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"--config: cannot read {args.config}: {err}") from None
    out = convert_official_checkpoint(args.checkpoint, args.out, cfg)
    return {"converted": str(out)}


def cmd_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Load the preset once without its decoders, so that every cache a load writes is written (those already
    there are read, not rewritten)."""
    import time

    from nextgpt.llm import cache_dir
    from nextgpt.model import NextGPT
    from nextgpt.options import quiet_libraries

    quiet_libraries()  # an install step: no library warnings (the GGUF conversion keeps its progress bar)
    start = time.perf_counter()
    kwargs = model_kwargs(args)
    NextGPT.from_preset(kwargs.pop("name"), **kwargs, load_decoders=False)
    return {"prepared": args.preset, "cache": str(cache_dir()), "seconds": round(time.perf_counter() - start, 1)}


def _load(args: argparse.Namespace) -> Any:
    import torch

    from nextgpt.model import NextGPT

    if getattr(args, "threads", None):
        if args.threads < 1:
            raise UserError("--threads must be at least 1")
        torch.set_num_threads(args.threads)

    kwargs = model_kwargs(args)
    return NextGPT.from_preset(kwargs.pop("name"), **kwargs)


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from nextgpt.eval import EvalConfig, evaluate, write_report

    from nextgpt.loading import default_checkpoint_dir
    from nextgpt.world.records import ensure_split

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    try:
        ensure_split(args.data, args.split)
    except OSError as err:
        raise UserError(f"cannot write the world's {args.split} split in {args.data}: {err}") from None
    checkpoint = args.checkpoint or default_checkpoint_dir(args.preset)
    cfg = EvalConfig(data_dir=args.data, split=args.split, checkpoint=checkpoint, limit=args.limit, seed=args.seed,
                     max_new_tokens=args.max_new_tokens, num_inference_steps=args.steps, use_meteor=not args.no_meteor,
                     workers=args.workers)
    from nextgpt.eval.evaluate import base_llm

    model = _load(args)
    kwargs = model_kwargs(args)
    report = evaluate(model, cfg, base=None if args.no_base else base_llm(model, args.max_new_tokens),
                      load=(kwargs.pop("name"), kwargs))
    paths = write_report(report, args.out)
    t = report.tables
    summary = {
        "split": args.split,
        "weight_hash": report.meta["weight_hash"],
        "caption_bleu4": {m: r.get("BLEU-4") for m, r in t["captioning"]["rows"].items()},
        "caption_attribute_all": {m: (r.get("attributes", {}).get("all") or {}).get("rate")
                                  for m, r in t["captioning"]["rows"].items()},
        "switch_accuracy": {m: (r.get("switch_accuracy") or {}).get("rate") for m, r in t["generation"]["rows"].items()},
        "general_keyword_right": (t["generation"]["rows"].get("text", {}).get("keyword_right") or {}).get("rate"),
        "editing_accuracy": t["editing"]["accuracy"]["rate"],
        "dialogue_success": t["dialogue"]["success_rate"]["rate"],
    }
    return {"report": paths["md"], "json": paths["json"], "plots": paths["plots"], "summary": summary,
            "skipped": report.meta["skipped"]}


def cmd_bench_random(args: argparse.Namespace) -> dict[str, Any]:
    from nextgpt.eval.bench7b import Bench7bConfig, Setting, parse_settings, write

    if args.preset != "nextgpt-7b":
        raise UserError("--random-weights builds the nextgpt-7b architectures: use --preset nextgpt-7b")
    try:
        settings = parse_settings(args.settings) if args.settings else (Setting(args.quantization, args.offload),)
    except ValueError as err:
        raise UserError(str(err)) from None
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {args.device}: no CUDA device is available")
    progress = logging.StreamHandler(sys.stderr)
    progress.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    bench_log = logging.getLogger("nextgpt.eval.bench7b")
    bench_log.addHandler(progress)
    bench_log.setLevel(logging.INFO)
    bench_log.propagate = False
    cfg = Bench7bConfig(scale=args.scale, device=args.device, dtype=args.dtype, settings=settings, steps=args.steps,
                        official_steps=args.official_steps,
                        max_new_tokens=args.max_new_tokens, conversation=not args.no_conversation,
                        time_budget_s=args.time_budget, seed=args.seed,
                        work_dir=str(args.work_dir) if args.work_dir else None)
    from nextgpt.eval.bench7b import run

    result = run(cfg, args.out)
    paths = write(result, args.out)
    return {"bench": paths["json"], "md": paths["md"],
            "settings": {k: v.get("status") for k, v in result["settings"].items()},
            "peak_gb": {k: v.get("peak_gb") for k, v in result["settings"].items()},
            "speedup_vs_official": result["settings"].get("none", {}).get("speedup")}


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    import time

    if args.random_weights:
        return cmd_bench_random(args)
    from nextgpt.eval.bench import BenchConfig, benchmark, cold_start_command, write_bench

    start = time.perf_counter()
    model = _load(args)
    load_s = time.perf_counter() - start
    cold = None if args.skip_cold_start else cold_start_command(
        args.preset, folder=str(args.checkpoint) if args.checkpoint else None,
        quantization=args.quantization if args.quantization != "none" else None,
        device=args.device if args.device != "cpu" else None)
    from nextgpt.loading import default_checkpoint_dir

    result = benchmark(model, BenchConfig(quick=args.quick, seed=args.seed), cold_start_cmd=cold, load_s=load_s,
                       checkpoint=args.checkpoint or default_checkpoint_dir(args.preset))
    paths = write_bench(result, args.out)
    speedup = result["measurements"]["speedup"]
    ratio = f"{speedup['value']:.2f}x" if speedup["value"] else f"not measured: {speedup['skipped']}"
    sys.stderr.write(f"faster than the official way over the 5-turn conversation: {ratio}\n")
    return {"bench": paths["json"], "md": paths["md"],
            "targets": {t["key"]: t["met"] for t in result["targets"]},
            "speedup_vs_official": speedup["value"]}


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from nextgpt.training.run_recipe import RecipeRun, describe, run_recipe

    def progress(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    if args.list:
        return describe(args.recipe, progress)
    if args.start and args.only:
        raise UserError("--from and --only exclude each other")
    run = RecipeRun(recipe=args.recipe, out=args.out, data=args.data, runs=args.runs, start=args.start,
                    only=args.only, smoke=args.smoke)
    return run_recipe(run, progress)


def cmd_study(args: argparse.Namespace) -> dict[str, Any]:
    from nextgpt.study import load_study

    study = load_study(args.study)
    if args.study_command == "prepare":
        from nextgpt.study.prepare import prepare

        return prepare(study, *_study_models(args), progress=not args.no_progress)
    # the ratings live in the evaluation database, the same file the app keeps its chat scores in
    from nextgpt.study.store import StudyStore

    store = StudyStore(args.scores_db)
    if args.study_command == "raters":
        import secrets
        from urllib.parse import urlencode

        links = {}
        for name in args.names:
            token = secrets.token_urlsafe(18)
            store.add_study_rater(study.name, name, token)
            links[name] = f"{args.url.rstrip('/')}/?{urlencode({'study': study.name, 'rater': token})}"
        return {"study": study.name, "links": links}
    from nextgpt.study.results import compute, export, write_results

    ratings = store.study_ratings(study.name)
    if args.study_command == "export":
        return {"study": study.name, "ratings": len(ratings), **export(study, ratings, args.out)}
    results = compute(study, ratings)
    return {"study": study.name, **write_results(results, args.out), "summary": results.summary()}


def _study_models(args: argparse.Namespace) -> tuple[Any, Any]:
    """(load_model, weights_of) for `prepare`: each (preset, checkpoint) is loaded once and shared by its
    systems; a system's weights version is its checkpoint's weight hash."""
    from nextgpt.eval.provenance import weight_hash
    from nextgpt.model import NextGPT, default_checkpoint_dir

    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    loaded: dict[tuple[str, str], Any] = {}

    def folder(system: Any) -> Path:
        return Path(system.checkpoint) if system.checkpoint else default_checkpoint_dir(system.preset)

    def load_model(system: Any) -> Any:
        key = (system.preset, str(folder(system)))
        if key not in loaded:
            loaded[key] = NextGPT.from_preset(system.preset, folder=folder(system), device=args.device,
                                              dtype=args.dtype)
        return loaded[key]

    return load_model, lambda system: weight_hash(folder(system))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    commands = {"generate": cmd_generate, "memory": cmd_memory, "convert": cmd_convert, "prepare": cmd_prepare,
                "eval": cmd_eval, "bench": cmd_bench, "train": cmd_train, "study": cmd_study}
    try:
        result = commands[args.command](args)
    except (UserError, FileNotFoundError, ValueError) as err:
        print(json.dumps({"error": str(err)}))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(json.dumps({"error": "interrupted"}))
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI's contract: one JSON line, never a traceback
        log.debug("unexpected error", exc_info=True)
        print(json.dumps({"error": f"internal error: {type(err).__name__}: {err}"}))
        return 1
    print(json.dumps(result))
    return 0
