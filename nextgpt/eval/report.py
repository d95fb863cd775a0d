"""An `EvalReport` -> report.json, report.md, items.jsonl and PNG plots in one folder.

    paths = write_report(report, Path("runs/eval"))   # {"json": ..., "md": ..., "items": ..., "plots": [...]}

Plots are drawn with matplotlib's object API (no pyplot, no global state); a table that was skipped gets
no plot, and report.md says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from nextgpt.eval.evaluate import ASKED_ROWS, PRODUCED_COLUMNS, EvalReport, iter_lines
from nextgpt.world.vocab import MODALITIES


def write_report(report: EvalReport, out: Path) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = [p for p in (plot_captioning(report, out / "captioning.png"), plot_generation(report, out / "generation.png"),
                         plot_confusion(report, out / "modality_confusion.png"),
                         plot_embeddings(report, out / "embedding_metrics.png"),
                         plot_dialogue(report, out / "editing_dialogue.png"), plot_samples(report, out / "samples.png"))
             if p is not None]
    report.meta["plots"] = [p.name for p in plots]
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1, default=_plain) + "\n")
    (out / "items.jsonl").write_text("".join(iter_lines(report.items)))
    (out / "report.md").write_text(markdown(report))
    return {"json": str(out / "report.json"), "md": str(out / "report.md"), "items": str(out / "items.jsonl"),
            "plots": [str(p) for p in plots]}


def _plain(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


# ---- markdown ---------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _cell(text: str, limit: int) -> str:
    """One markdown table cell: single line, pipes escaped, cut at `limit` characters."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(report: EvalReport) -> str:
    meta, t = report.meta, report.tables
    cfg = meta["config"]
    caps = meta["capabilities"]
    lines = [
        f"# NExT-GPT evaluation: preset `{meta['preset']}`, world split `{cfg['split']}`",
        "",
        f"Split **{meta.get('split', cfg['split'])}** of the world (seed {meta.get('world', {}).get('seed')}); "
        f"checkpoint `{meta.get('checkpoint')}`, weights `{meta.get('weight_hash')}`; code at git commit "
        f"`{meta.get('git_commit')}`.",
        "",
        f"Limit {cfg['limit'] or 'none'} (items per modality / edit turns / dialogues), seed {cfg['seed']}, "
        f"{meta['decoding']}; {meta['chat_calls']} chat calls in {meta['elapsed_s']} s "
        f"(torch threads: {meta['torch_threads']}). Everything goes through `NextGPT.chat`.",
        "",
        f"Checkpoint reads media: **{caps['reads_media']}**; generates: **{', '.join(caps['generates']) or 'text only'}**.",
        "",
    ]
    if meta["skipped"]:
        lines += ["**Not measured:**", "", *(f"- {s}" for s in meta["skipped"]), ""]
    if meta["errors"]:
        lines += ["**Turns that failed (judged wrong):**", "", *(f"- {e}" for e in meta["errors"]), ""]

    # 1. captioning
    lines += ["## 1. X -> text captioning (comprehension.json)", "",
              "BLEU-4, METEOR and CIDEr(-D) x100 as in the COCO tables (pycocoevalcap); references: "
              + t["captioning"]["references"] + ". Attribute accuracy (%) of the words in the reply "
              "(`parse_caption`); *all* = every attribute right.", ""]
    rows = []
    for m in MODALITIES:
        r = t["captioning"]["rows"][m]
        if r.get("skipped"):
            rows.append([m, "0", "-", "-", "-", "skipped: " + r["skipped"]])
            continue
        acc = ", ".join(f"{k} {_pct(v)}" for k, v in r.get("attributes", {}).items()) or "-"
        rows.append([m, str(r["n"]), _pct(r.get("BLEU-4")), _pct(r.get("METEOR")), _pct(r.get("CIDEr")), acc])
    lines += _table(["input", "n", "BLEU-4", "METEOR", "CIDEr", "attribute accuracy"], rows) + [""]
    unavailable = {v for m in MODALITIES for v in t["captioning"]["rows"][m].get("unavailable", {}).values()}
    lines += [f"METEOR unavailable: {u}" for u in unavailable] + ([""] if unavailable else [])

    # 2. generation
    g = t["generation"]
    lines += ["## 2. text -> X generation (t2m.json + text-only questions)", "",
              "Switch: the reply produced exactly the asked-for modality (none for text-only questions). "
              "Attribute accuracy (%) of the produced item by the rule-based judges, " + g["attribute_accuracy"] + ". "
              "FID analogue: Frechet distance between produced and real test media embeddings (nano encoder); "
              "the real-halves value is the same distance between two halves of the real media (the floor at "
              "this n). CLIPSIM analogue: mean cosine(encoder(media), encoder_text(caption)), produced vs real.", ""]
    rows = []
    for asked in ASKED_ROWS:
        r = g["rows"][asked]
        if r.get("skipped"):
            rows.append([asked, "0", "-", "-", "-", "-", "skipped: " + r["skipped"]])
            continue
        acc = ", ".join(f"{k} {_pct(v)}" for k, v in r.get("attributes", {}).items()) or "-"
        fid = _num(r.get("frechet"), 2) + (f" (real halves {_num(r.get('frechet_real_halves'), 2)})"
                                           if r.get("frechet_real_halves") is not None else "")
        clip = (f"{_num(r.get('clipsim'))} (real {_num(r.get('clipsim_real'))})" if "clipsim_real" in r else "-")
        note = r.get("frechet_reason") or r.get("embedding_skipped") or ""
        rows.append([asked, str(r["n"]), _pct(r["switch_accuracy"]), acc, fid, clip, note])
    lines += _table(["asked", "n", "switch %", "attribute accuracy", "FID analogue", "CLIPSIM analogue", "note"], rows)
    lines += ["", f"Mean switching accuracy over measured rows: {_pct(g['switch_accuracy_mean'])} %", "",
              "Modality-switching confusion (rows: asked for; columns: produced; a reply with two items counts twice):", ""]
    lines += _table(["asked \\ produced", *PRODUCED_COLUMNS],
                    [[a, *(str(g["confusion"][a][c]) for c in PRODUCED_COLUMNS)] for a in g["confusion"]]) + [""]
    answers = g["rows"].get("text", {}).get("answers", [])
    if answers:
        lines += ["Answers to the text-only questions (general chat after the tuning; first 200 characters):", ""]
        lines += _table(["question", "produced", "reply"],
                        [[a["prompt"], ", ".join(a["produced"]) or "none", _cell(a["reply"], 200)] for a in answers])
        lines += [""]

    # 3. editing
    e = t["editing"]
    lines += ["## 3. text + X -> X editing (mosit.json edit turns)", "",
              f"History: {e['history']}. *all*: the produced item has every attribute of the new caption; "
              "*edited*: the changed attribute is right; *kept*: the other attributes are right.", ""]
    if e["n"]:
        lines += _table(["modality", "n", "produced %", "all %", "edited %", "kept %"],
                        [[m, str(r["n"]), _pct(r["produced"]), _pct(r["all"]), _pct(r["edited"]), _pct(r["kept"])]
                         for m, r in e["rows"].items()])
        lines += ["", f"Editing accuracy over all edit turns: {_pct(e['accuracy'])} % (n = {e['n']})", ""]
    else:
        lines += ["Not measured (see above).", ""]

    # 4. dialogues
    d = t["dialogue"]
    lines += ["## 4. Multi-turn dialogue success (mosit.json)", "",
              f"History: {d['history']}. A dialogue succeeds when every turn is right (media turns: the expected "
              "items, judged right; text turns: no media and the reference answer's attribute words).", ""]
    if d["n"]:
        lines += [f"Success rate: **{_pct(d['success_rate'])} %** of {d['n']} dialogues; turn accuracy "
                  f"{_pct(d['turn_accuracy'])} %.", ""]
        lines += _table(["turn kind", "n", "accuracy %"],
                        [[k, str(v["n"]), _pct(v["accuracy"])] for k, v in d["by_kind"].items()]) + [""]
        lines += _table(["turn #", "n", "accuracy %"],
                        [[k, str(v["n"]), _pct(v["accuracy"])] for k, v in d["by_turn"].items()]) + [""]
    else:
        lines += ["Not measured (see above).", ""]
    if meta.get("plots"):
        lines += ["## Plots", "", *(f"![{p}]({p})" for p in meta["plots"]), ""]
    return "\n".join(lines)


# ---- plots ------------------------------------------------------------------------------------------
def _figure(width: float = 8.0, height: float = 3.5, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _bars(ax: Any, groups: list[str], series: dict[str, list[float | None]], ylabel: str, ylim: float | None = None) -> None:
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        ax.bar(x + k * width - 0.4 + width / 2, [np.nan if v is None else v for v in values], width, label=name)
    ax.set_xticks(x, groups, rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(0, ylim)
    ax.legend(fontsize=7)


def plot_captioning(report: EvalReport, path: Path) -> Path | None:
    rows = {m: r for m, r in report.tables["captioning"]["rows"].items() if "BLEU-4" in r}
    if not rows:
        return None
    fig, (ax1, ax2) = _figure(10, 3.5, 2)
    _bars(ax1, list(rows), {k: [rows[m][k] for m in rows] for k in ("BLEU-4", "METEOR", "CIDEr")}, "score (raw)")
    ax1.set_title("X -> text: caption scores")
    names = [(m, a) for m in rows for a in rows[m]["attributes"]]
    _bars(ax2, [f"{m}:{a}" for m, a in names], {"accuracy": [rows[m]["attributes"][a] for m, a in names]}, "accuracy", 1.0)
    ax2.set_title("X -> text: attribute accuracy")
    fig.savefig(path)
    return path


def plot_generation(report: EvalReport, path: Path) -> Path | None:
    rows = {m: r for m, r in report.tables["generation"]["rows"].items() if not r.get("skipped")}
    if not rows:
        return None
    fig, (ax1, ax2) = _figure(10, 3.5, 2)
    _bars(ax1, list(rows), {"switch accuracy": [rows[m]["switch_accuracy"] for m in rows]}, "fraction", 1.0)
    ax1.set_title("text -> X: right modality produced")
    names = [(m, a) for m in rows for a in rows[m].get("attributes", {})]
    if names:
        _bars(ax2, [f"{m}:{a}" for m, a in names], {"accuracy": [rows[m]["attributes"][a] for m, a in names]},
              "accuracy", 1.0)
    ax2.set_title("text -> X: judged attribute accuracy")
    fig.savefig(path)
    return path


def plot_confusion(report: EvalReport, path: Path) -> Path | None:
    confusion = report.tables["generation"]["confusion"]
    if not confusion:
        return None
    asked = list(confusion)
    counts = np.array([[confusion[a][c] for c in PRODUCED_COLUMNS] for a in asked], dtype=float)
    fig, (ax,) = _figure(5, 1.2 + 0.6 * len(asked))
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)  # (asked, produced) row fractions
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(asked)):
        for j in range(len(PRODUCED_COLUMNS)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(PRODUCED_COLUMNS)), PRODUCED_COLUMNS)
    ax.set_yticks(range(len(asked)), asked)
    ax.set_xlabel("produced")
    ax.set_ylabel("asked for")
    ax.set_title("modality switching")
    fig.savefig(path)
    return path


def plot_embeddings(report: EvalReport, path: Path) -> Path | None:
    rows = {m: r for m, r in report.tables["generation"]["rows"].items() if "clipsim_real" in r}
    if not rows:
        return None
    fig, (ax1, ax2) = _figure(9, 3.2, 2)
    _bars(ax1, list(rows), {"produced vs real": [rows[m].get("frechet") for m in rows],
                            "real halves": [rows[m].get("frechet_real_halves") for m in rows]}, "Frechet distance")
    ax1.set_title("FID analogue (nano encoder)")
    _bars(ax2, list(rows), {"produced": [rows[m].get("clipsim") for m in rows],
                            "real": [rows[m]["clipsim_real"] for m in rows]}, "mean cosine")
    ax2.set_title("CLIPSIM analogue (media vs caption)")
    fig.savefig(path)
    return path


def plot_dialogue(report: EvalReport, path: Path) -> Path | None:
    e, d = report.tables["editing"], report.tables["dialogue"]
    if not e["n"] and not d["n"]:
        return None
    fig, (ax1, ax2) = _figure(10, 3.5, 2)
    if e["n"]:
        mods = list(e["rows"])
        _bars(ax1, mods, {k: [e["rows"][m][k] for m in mods] for k in ("all", "edited", "kept")}, "accuracy", 1.0)
    ax1.set_title("text + X -> X editing (reference history)")
    if d["n"]:
        kinds = list(d["by_kind"])
        _bars(ax2, [*kinds, "DIALOGUE"], {"accuracy": [d["by_kind"][k]["accuracy"] for k in kinds] + [d["success_rate"]]},
              "fraction", 1.0)
    ax2.set_title("multi-turn: turn accuracy by kind, dialogue success")
    fig.savefig(path)
    return path


def plot_samples(report: EvalReport, path: Path) -> Path | None:
    """A grid of produced images and video first frames with the requested caption."""
    samples = report.samples
    if not samples:
        return None
    cols = min(6, len(samples))
    rows = (len(samples) + cols - 1) // cols
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.9 * cols, 2.1 * rows), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, s in zip(axes, samples):
        arr = s["array"][0] if s["modality"] == "video" else s["array"]
        ax.imshow(arr)
        ax.set_title(s["caption"], fontsize=7)
    fig.savefig(path)
    return path

