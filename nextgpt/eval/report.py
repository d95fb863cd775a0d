"""An `EvalReport` -> report.json, report.md, items.jsonl.gz and PNG plots in one folder.

    paths = write_report(report, Path("runs/eval"))   # {"json": ..., "md": ..., "items": ..., "plots": [...]}

Plots are drawn with matplotlib's object API (no pyplot, no global state); a table that was skipped gets
no plot, and report.md says why.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

from nextgpt.eval.evaluate import ASKED_ROWS, PRODUCED_COLUMNS, EvalReport, iter_lines
from nextgpt.world.vocab import HELD_OUT_PAIRS, MODALITIES


ITEMS = "items.jsonl.gz"  # one JSON line per judged turn, gzipped (mtime 0: the same items, the same bytes)

_KIND_NAMES = {"edit": "edit in a later turn", "upload_edit": "upload + edit in one turn"}


def _held_out_words() -> list[str]:
    return [f"{a} {b}" for pairs in HELD_OUT_PAIRS.values() for a, b in pairs]


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
    write_items(report.items, out / ITEMS)
    (out / "report.md").write_text(markdown(report))
    return {"json": str(out / "report.json"), "md": str(out / "report.md"), "items": str(out / ITEMS),
            "plots": [str(p) for p in plots]}


def write_items(items: list[dict[str, Any]], path: Path) -> None:
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write("".join(iter_lines(items)).encode())


def read_items(folder: Path) -> list[dict[str, Any]]:
    """The judged turns of the report in `folder` (`zcat items.jsonl.gz` shows them too)."""
    with gzip.open(Path(folder) / ITEMS, "rt") as f:
        return [json.loads(line) for line in f]


def _plain(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


# ---- markdown ---------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _pct_n(r: dict[str, Any] | None) -> str:
    """'64.0 (n 100)': a rate in % and its n; '-' when there is none."""
    return f"{_pct(r['rate'])} (n {r['n']})" if r else "-"


def _rate(r: dict[str, Any] | None) -> str:
    """'85.0 (34/40; 70.9-92.9)': the rate in %, its count and 95 % Wilson interval."""
    if not r or r.get("rate") is None:
        return "-"
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:.1f} ({r['k']}/{r['n']}; {100 * lo:.1f}-{100 * hi:.1f})"


def _chance(r: dict[str, Any] | None) -> str:
    if not r or r.get("chance") is None:
        return "-"
    return "<0.1" if 0 < r["chance"] < 0.0005 else f"{100 * r['chance']:.1f}"


def _attrs(attributes: dict[str, dict[str, Any]]) -> str:
    """Per-attribute rates (not "all") as 'colour 90.0, shape 85.0'."""
    return ", ".join(f"{k} {_pct(v['rate'])}" for k, v in attributes.items() if k != "all") or "-"


def _combination_rows(name: str, rows: dict[str, Any]) -> list[list[str]]:
    out = []
    for m, r in rows.items():
        c = r.get("combinations")
        if c and c["held_out"]["n"]:
            out.append([name, m, _rate(c["seen"]), _rate(c["held_out"]), _chance(c["held_out"])])
    return out


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _cell(text: str, limit: int) -> str:
    """One markdown table cell: single line, pipes escaped, cut at `limit` characters."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _tasks_section(tasks: dict[str, Any] | None) -> list[str]:
    """Section 6: one row per task row of the world (`records.TASKS`)."""
    lines = ["## 6. Requests about uploaded media (mosit.json task records)", ""]
    rows = (tasks or {}).get("rows", {})
    if not any(r["n"] for r in rows.values()):
        return lines + ["Not measured: this split has no task records (world version 3 writes them), or the "
                        "checkpoint cannot do them (see above).", ""]
    lines += [f"History: {tasks['history']}. *right*: media turns produce exactly the expected item, judged to have "
              "every word of its caption; questions about uploads produce no media and give the verdict (yes / no, "
              "first / second) that the uploads' world attributes give. *edited* / *kept*: the changed / the other "
              "words of an edited upload; *carried over*: the produced item took a word of the latest earlier item "
              "where the target differs from it (n: records with such an item). Where a media turn goes wrong: "
              "*modality*: the reply is one item of the expected modality; *text*: the reply's text names every "
              "word of the expected item; *decoded*: right, of the replies with both (the media side alone).", ""]
    table = []
    for name, r in rows.items():
        if not r["n"]:
            continue
        by = ", ".join(f"{m} {_pct_n(v)}" for m, v in r["by_modality"].items())
        table.append([name, str(r["n"]), _rate(r["right"]), _chance(r["right"]), _rate(r.get("modality")),
                      _rate(r.get("text")), _pct_n(r.get("decoded")), _rate(r.get("edited")), _rate(r.get("kept")),
                      _pct_n(r.get("carried_over")), by])
    return lines + _table(["row", "n", "right %", "chance %", "modality %", "text %", "decoded %", "edited %", "kept %",
                           "carried over %", "by modality %"], table) + [""]


def markdown(report: EvalReport) -> str:
    meta, t = report.meta, report.tables
    cfg = meta["config"]
    caps = meta["capabilities"]
    lines = [
        f"# NExT-GPT evaluation: preset `{meta['preset']}`, world split `{cfg['split']}`",
        "",
        f"Split **{meta.get('split', cfg['split'])}** of the world (seed {meta.get('world', {}).get('seed')}); "
        f"checkpoint `{meta.get('checkpoint')}`, weights `{meta.get('weight_hash')}`; code at git commit "
        f"`{meta.get('git_commit')}`. User turns: {(meta.get('world') or {}).get('phrasings') or 'train'} "
        "phrasings.",
        "",
        f"Limit {cfg['limit'] or 'none'} (items per modality / edit turns / dialogues / task records per row), "
        f"seed {cfg['seed']}, "
        f"{meta['decoding']}; {meta['chat_calls']} chat calls in {meta['elapsed_s']} s "
        f"(torch threads: {meta['torch_threads']}"
        + (f", shared by {cfg['workers']} worker processes" if (cfg.get("workers") or 1) > 1 else "")
        + "). Everything goes through `NextGPT.chat`.",
        "",
        f"Checkpoint reads media: **{caps['reads_media']}**; generates: **{', '.join(caps['generates']) or 'text only'}**.",
        "",
    ]
    if meta["skipped"]:
        lines += ["**Not measured:**", "", *(f"- {s}" for s in meta["skipped"]), ""]
    if meta["errors"]:
        lines += ["**Turns that failed (judged wrong):**", "", *(f"- {e}" for e in meta["errors"]), ""]

    lines += ["Rates are in % as *rate (right/n; 95 % Wilson interval)*; *chance* is what a blind guess of every "
              "judged word would score.", ""]
    # 1. captioning
    lines += ["## 1. X -> text captioning (comprehension.json)", "",
              "*All attributes*: every attribute word in the reply is right (`parse_caption`). BLEU-4, METEOR and "
              "CIDEr(-D) x100 (pycocoevalcap); their references are " + t["captioning"]["references"]
              + ", so they are not comparable with the paper's COCO figures.", ""]
    rows = []
    for m in MODALITIES:
        r = t["captioning"]["rows"][m]
        if r.get("skipped"):
            rows.append([m, "0", "skipped: " + r["skipped"], "-", "-", "-", "-", "-"])
            continue
        a = r.get("attributes", {})
        rows.append([m, str(r["n"]), _rate(a.get("all")), _chance(a.get("all")), _attrs(a),
                     _pct(r.get("BLEU-4")), _pct(r.get("METEOR")), _pct(r.get("CIDEr"))])
    lines += _table(["input", "n", "all attributes %", "chance %", "per attribute %", "BLEU-4", "METEOR", "CIDEr"],
                    rows) + [""]
    unavailable = {v for m in MODALITIES for v in t["captioning"]["rows"][m].get("unavailable", {}).values()}
    lines += [f"METEOR unavailable: {u}" for u in unavailable] + ([""] if unavailable else [])

    # 2. generation
    g = t["generation"]
    lines += ["## 2. text -> X generation (t2m.json + text-only questions)", "",
              "*Switch*: the reply produced exactly the asked-for modality (none for text-only questions; chance: "
              "one of image, audio, video, none). *All attributes*: the produced item has every attribute of the "
              "request, read by the rule-based judges, " + g["attribute_accuracy"] + ".", ""]
    rows = []
    for asked in ASKED_ROWS:
        r = g["rows"][asked]
        if r.get("skipped"):
            rows.append([asked, "0", "skipped: " + r["skipped"], "-", "-", "-", "-"])
            continue
        a = r.get("attributes", {})
        rows.append([asked, str(r["n"]), _rate(r["switch_accuracy"]), _rate(a.get("all")) if a else "-",
                     _chance(a.get("all")) if a else "-", _attrs(a) if a else "-"])
    lines += _table(["asked", "n", "switch %", "all attributes %", "chance %", "per attribute %"], rows)
    lines += ["", "FID analogue: Frechet distance between produced and real media embeddings, computed in the nano "
              "encoder's space (not Inception's, so not comparable with published FIDs); *floor*: the same "
              "distance between the real media and an independent render of the produced items' captions (new "
              "sizes, places, pitches, paths), at the same n: what a perfect generator would score. CLIPSIM "
              "analogue: mean cosine(encoder(media), encoder_text(caption)) in the same space, produced vs real.", ""]
    rows = []
    for asked in MODALITIES:
        r = g["rows"][asked]
        if r.get("skipped") or "clipsim_real" not in r and "embedding_skipped" not in r:
            continue
        note = r.get("frechet_reason") or r.get("embedding_skipped") or ""
        rows.append([asked, _num(r.get("frechet"), 2), _num(r.get("frechet_floor"), 2), _num(r.get("clipsim")),
                     _num(r.get("clipsim_real")), note])
    if rows:
        lines += _table(["asked", "FID analogue", "floor", "CLIPSIM analogue", "real media", "note"], rows)
    lines += ["", f"Mean switching accuracy over measured rows: {_pct(g['switch_accuracy_mean'])} %", "",
              "Modality-switching confusion (rows: asked for; columns: produced; a reply with two items counts twice):", ""]
    lines += _table(["asked \\ produced", *PRODUCED_COLUMNS],
                    [[a, *(str(g["confusion"][a][c]) for c in PRODUCED_COLUMNS)] for a in g["confusion"]]) + [""]
    text = g["rows"].get("text", {})
    answers = text.get("answers", [])
    if answers:
        mark = {True: "yes", False: "**no**", None: "-"}
        lines += ["General questions (none of them a training question, no keyword in a training answer): the reply "
                  "is right when it produces no media and names a keyword. "
                  f"This model: **{_rate(text.get('keyword_right'))}**; "
                  + (f"{text['base']}: **{_rate(text.get('base_keyword_right'))}**." if text.get("base") else
                     "the base LLM was not run for comparison.") + " Replies cut at 160 characters:", ""]
        lines += _table(["question", "keywords", "produced", "right", "reply", "base right", "base reply"],
                        [[a["prompt"], ", ".join(a.get("keywords", [])) or "-", ", ".join(a["produced"]) or "none",
                          mark[a.get("right")], _cell(a["reply"], 160), mark[a.get("base_right")],
                          _cell(a.get("base_reply") or "-", 160)] for a in answers])
        lines += [""]

    # 3. editing
    e = t["editing"]
    lines += ["## 3. text + X -> X editing (mosit.json edit turns)", "",
              f"History: {e['history']}. *all*: the produced item has every attribute of the new caption; "
              "*edited*: the changed attribute is right; *kept*: the other attributes are right.", ""]
    if e["n"]:
        rows = [[m, str(r["n"]), _rate(r["all"]), _chance(r["all"]), _rate(r["edited"]), _rate(r["kept"]),
                 _pct(r["produced"]["rate"])] for m, r in e["rows"].items()]
        rows.append(["**every edit**", str(e["n"]), _rate(e["accuracy"]), _chance(e["accuracy"]), "", "", ""])
        rows += [[f"{_KIND_NAMES.get(k, k)}", str(r["n"]), _rate(r), _chance(r), "", "", ""]
                 for k, r in e.get("by_kind", {}).items()]
        lines += _table(["modality", "n", "all %", "chance %", "edited %", "kept %", "produced %"], rows) + [""]
    else:
        lines += ["Not measured (see above).", ""]

    # 4. dialogues
    d = t["dialogue"]
    lines += ["## 4. Multi-turn dialogue success (mosit.json)", "",
              f"History: {d['history']}. A dialogue succeeds when every turn is right (media turns: the expected "
              "items, judged right; small talk: no media and says what the reference says, e.g. thanks acknowledged or "
              "the abilities named; other text turns: no media and the reference answer's attribute words).", ""]
    if d["n"]:
        lines += _table(["", "n", "right %", "chance %"],
                        [["**dialogues, every turn right**", str(d["n"]), _rate(d["success_rate"]),
                          _chance(d["success_rate"])],
                         ["turns", str(d["turn_accuracy"]["n"]), _rate(d["turn_accuracy"]), _chance(d["turn_accuracy"])],
                         *[[f"turns: {k}", str(v["n"]), _rate(v), _chance(v)] for k, v in d["by_kind"].items()],
                         *[[f"turn #{k}", str(v["n"]), _rate(v), _chance(v)] for k, v in d["by_turn"].items()]])
        lines += [""]
    else:
        lines += ["Not measured (see above).", ""]

    # 5. held-out combinations
    combos = (_combination_rows("captioning", t["captioning"]["rows"])
              + _combination_rows("generation", {m: r for m, r in g["rows"].items() if m != "text"})
              + _combination_rows("editing", e["rows"])
              + [row for name, r in t.get("tasks", {}).get("rows", {}).items()
                 for row in _combination_rows(f"uploads: {name}", r.get("combinations", {}))])
    lines += ["## 5. Attribute combinations held out of training", "",
              "Every attribute right, for items whose attribute combination is in the train split vs those with a "
              f"combination held out of it ({', '.join(_held_out_words())}).", ""]
    trained = meta.get("checkpoint_world") or {}
    if trained.get("world_version") is not None and trained["world_version"] < (meta.get("world") or {}).get("version", 0):
        lines += [f"**This checkpoint was trained on world version {trained['world_version']}, whose train split "
                  "had every combination: for it these rows measure unseen phrasings and media, not unseen "
                  "combinations.**", ""]
    lines += (_table(["table", "modality", "seen combinations %", "held-out combinations %", "chance %"], combos)
              if combos else ["No held-out combination in this split."]) + [""]
    lines += _tasks_section(t.get("tasks"))
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


def save_png(fig: Any, path: Path) -> None:
    """Save a figure as a 256-colour PNG: plots and flat-coloured world media lose nothing visible, and the
    committed report stays a third of the size (the tracked tree has a size limit)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    quantize_png(Image.open(buffer), path)


def quantize_png(image: Any, path: Path) -> None:
    """`image` (PIL) as a 256-colour optimised PNG at `path`."""
    from PIL import Image

    image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def plot_captioning(report: EvalReport, path: Path) -> Path | None:
    rows = {m: r for m, r in report.tables["captioning"]["rows"].items() if "BLEU-4" in r}
    if not rows:
        return None
    fig, (ax1, ax2) = _figure(10, 3.5, 2)
    _bars(ax1, list(rows), {k: [rows[m][k] for m in rows] for k in ("BLEU-4", "METEOR", "CIDEr")}, "score (raw)")
    ax1.set_title("X -> text: caption scores")
    names = [(m, a) for m in rows for a in rows[m]["attributes"]]
    _bars(ax2, [f"{m}:{a}" for m, a in names], {"accuracy": [rows[m]["attributes"][a]["rate"] for m, a in names]},
          "accuracy", 1.0)
    ax2.set_title("X -> text: attribute accuracy")
    save_png(fig, path)
    return path


def plot_generation(report: EvalReport, path: Path) -> Path | None:
    rows = {m: r for m, r in report.tables["generation"]["rows"].items() if not r.get("skipped")}
    if not rows:
        return None
    fig, (ax1, ax2) = _figure(10, 3.5, 2)
    _bars(ax1, list(rows), {"switch accuracy": [rows[m]["switch_accuracy"]["rate"] for m in rows]}, "fraction", 1.0)
    ax1.set_title("text -> X: right modality produced")
    names = [(m, a) for m in rows for a in rows[m].get("attributes", {})]
    if names:
        _bars(ax2, [f"{m}:{a}" for m, a in names],
              {"accuracy": [rows[m]["attributes"][a]["rate"] for m, a in names]}, "accuracy", 1.0)
    ax2.set_title("text -> X: judged attribute accuracy")
    save_png(fig, path)
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
    save_png(fig, path)
    return path


def plot_embeddings(report: EvalReport, path: Path) -> Path | None:
    rows = {m: r for m, r in report.tables["generation"]["rows"].items() if "clipsim_real" in r}
    if not rows:
        return None
    fig, (ax1, ax2) = _figure(9, 3.2, 2)
    _bars(ax1, list(rows), {"produced vs real": [rows[m].get("frechet") for m in rows],
                            "floor (independent render)": [rows[m].get("frechet_floor") for m in rows]}, "Frechet distance")
    ax1.set_title("FID analogue (nano encoder)")
    _bars(ax2, list(rows), {"produced": [rows[m].get("clipsim") for m in rows],
                            "real": [rows[m]["clipsim_real"] for m in rows]}, "mean cosine")
    ax2.set_title("CLIPSIM analogue (media vs caption)")
    save_png(fig, path)
    return path


def plot_dialogue(report: EvalReport, path: Path) -> Path | None:
    e, d = report.tables["editing"], report.tables["dialogue"]
    if not e["n"] and not d["n"]:
        return None
    fig, (ax1, ax2) = _figure(10, 3.5, 2)
    if e["n"]:
        mods = list(e["rows"])
        _bars(ax1, mods, {k: [e["rows"][m][k]["rate"] for m in mods] for k in ("all", "edited", "kept")}, "accuracy", 1.0)
    ax1.set_title("text + X -> X editing (reference history)")
    if d["n"]:
        kinds = list(d["by_kind"])
        _bars(ax2, [*kinds, "DIALOGUE"],
              {"accuracy": [d["by_kind"][k]["rate"] for k in kinds] + [d["success_rate"]["rate"]]}, "fraction", 1.0)
    ax2.set_title("multi-turn: turn accuracy by kind, dialogue success")
    save_png(fig, path)
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
    save_png(fig, path)
    return path

