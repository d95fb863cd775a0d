"""A study's results, for its admin: mean score per conversion x system, the paired differences between
systems, inter-rater agreement, the raters' attention checks; plots and exports.

    results = compute(study, store.study_ratings("default"))   # rows: rater, item, system, side, score, ...
    results.summary()                      # JSON-ready
    write_results(results, "runs/study")   # results.md, results.json, means.png, differences.png
    export(study, ratings, "runs/study")   # ratings.csv, ratings.jsonl

How each figure is computed:
- **mean per conversion x system**: the item is the unit. Each answer's scores are averaged over its raters,
  then the mean over items with its two-sided 95 % t-interval (no interval with fewer than two items).
- **paired difference**: per item, the item mean of a system minus that of the first system (the
  baseline) on the same item; mean and 95 % t-interval over the items both have.
- **Krippendorff's alpha** (interval level, NLTK's `AnnotationTask` with `interval_distance`): every rated
  answer (item x system) is a unit, every rater a coder; missing ratings are allowed.
- **ICC(2,k)** (Shrout & Fleiss 1979: two-way random effects, absolute agreement, mean of k raters; McGraw &
  Wong 1996's "ICC(A,k)") from the mean squares of statsmodels' two-way ANOVA, with McGraw & Wong's 95 %
  interval, per block of items (assign.py): the block's raters who scored at least half of its answers, on
  the answers all of them scored.
Gold items are left out of all of these; each rater's gold answers count as attention checks passed when the
score lies in the gold answer's range. Skips are counted, never scored.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from scipy import stats

from nextgpt.study.assign import blocks
from nextgpt.study.spec import Study

ALL = "all"  # the conversion row over every item
EXPORT_COLUMNS = ("study", "item", "conversion", "gold", "system", "side", "rater", "score", "skipped", "comment",
                  "time", "created_at")


@dataclass(frozen=True)
class Cell:
    """Mean score of one system on the items of one conversion type."""

    conversion: str
    system: str
    items: int  # items with at least one score
    ratings: int
    mean: float
    low: float | None  # 95 % t-interval over items; None below two items
    high: float | None


@dataclass(frozen=True)
class Difference:
    """Paired difference (system - baseline) over the items both have, per conversion type."""

    conversion: str
    system: str
    baseline: str
    items: int
    mean: float
    low: float | None
    high: float | None


@dataclass(frozen=True)
class BlockICC:
    """ICC(2,k) of one block's raters; `icc` None with `reason` when it cannot be computed."""

    block: int
    raters: int
    units: int
    icc: float | None
    low: float | None  # 95 % interval (McGraw & Wong 1996); None where it is undefined (no residual spread)
    high: float | None
    reason: str = ""


@dataclass(frozen=True)
class RaterSummary:
    rater: str
    rated: int  # scored answers (gold ones included)
    skipped: int
    gold_passed: int
    gold_total: int


@dataclass
class Results:
    study: str
    systems: list[str]
    ratings: int  # scores (not skips) of non-gold answers
    cells: list[Cell] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    alpha: float | None = None
    alpha_units: int = 0  # answers with two or more scores
    alpha_reason: str = ""
    icc: list[BlockICC] = field(default_factory=list)
    raters: list[RaterSummary] = field(default_factory=list)
    raters_per_item: dict[str, int] = field(default_factory=dict)  # item -> raters who scored or skipped it

    def summary(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The results as Markdown tables (the app's admin view and results.md)."""
        lines = [f"**{self.ratings}** scores from **{len(self.raters)}** rater(s); items have "
                 f"{_range(self.raters_per_item.values())} rater(s) each.", "",
                 "| conversion | system | items | scores | mean | 95 % interval |", "|---|---|---|---|---|---|"]
        lines += [f"| {c.conversion} | {c.system} | {c.items} | {c.ratings} | {c.mean:.2f} | {_ci(c.low, c.high)} |"
                  for c in self.cells]
        if self.differences:
            lines += ["", "| conversion | difference | items | mean | 95 % interval |", "|---|---|---|---|---|"]
            lines += [f"| {d.conversion} | {d.system} - {d.baseline} | {d.items} | {d.mean:+.2f} | "
                      f"{_ci(d.low, d.high)} |" for d in self.differences]
        alpha = f"{self.alpha:.3f}" if self.alpha is not None else f"- ({self.alpha_reason})"
        lines += ["", f"Krippendorff's alpha (interval): **{alpha}** over {self.alpha_units} answers rated twice or "
                  "more.",
                  "", "| block | raters | answers | ICC(2,k) | 95 % interval |", "|---|---|---|---|---|"]
        lines += [f"| {b.block} | {b.raters} | {b.units} | "
                  + (f"{b.icc:.3f} | {_ci(b.low, b.high)} |" if b.icc is not None else f"- | {b.reason} |")
                  for b in self.icc]
        lines += ["", "| rater | scored | skipped | attention checks passed |", "|---|---|---|---|"]
        lines += [f"| {r.rater} | {r.rated} | {r.skipped} | {r.gold_passed} of {r.gold_total} |" for r in self.raters]
        return "\n".join(lines)


def _range(values: Any) -> str:
    values = list(values)
    if not values:
        return "0"
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def _ci(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"{low:.2f} to {high:.2f}"


def mean_interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean and two-sided 95 % t-interval; no interval below two values (a zero spread gives a zero width)."""
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean, mean - half, mean + half


def _scores(study: Study, ratings: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """(item, system) -> {rater: score} for the non-gold answers of the study (unknown rows ignored)."""
    systems = {s.id for s in study.systems}
    rated = {i.id for i in study.rated_items}
    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in ratings:
        if r["score"] is not None and r["item"] in rated and r["system"] in systems:
            out.setdefault((r["item"], r["system"]), {})[r["rater"]] = float(r["score"])
    return out


def interval_alpha(scores: Mapping[Hashable, Mapping[Hashable, float]]) -> float:
    """Krippendorff's alpha, interval metric, of unit -> {rater: score}: a rater who did not score a unit is
    simply absent, and units with fewer than two scores do not count (Krippendorff 2011, "Computing
    Krippendorff's alpha-reliability"). Computed by NLTK's AnnotationTask with its interval (squared
    difference) distance."""
    from nltk.metrics.agreement import AnnotationTask
    from nltk.metrics.distance import interval_distance

    data = [(rater, unit, float(score)) for unit, by_rater in scores.items() for rater, score in by_rater.items()]
    return float(AnnotationTask(data=data, distance=interval_distance).alpha())


def _alpha(scores: dict[tuple[str, str], dict[str, float]]) -> tuple[float | None, int, str]:
    units = {u: by_rater for u, by_rater in scores.items() if len(by_rater) >= 2}
    if not units:
        return None, 0, "no answer has two scores yet"
    if len({s for by_rater in units.values() for s in by_rater.values()}) < 2:
        return None, len(units), "every score is the same"
    return interval_alpha(units), len(units), ""


def icc_2k(table: np.ndarray, confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """ICC(2,k) of a complete (units x raters) table and its two-sided interval (None where undefined).

    The mean squares of units (MSR), raters (MSC) and error (MSE) come from statsmodels' two-way ANOVA without
    interaction (one score per cell); the interval is McGraw & Wong (1996, table 7, case 2A, "ICC(A,k)"), with
    Satterthwaite's degrees of freedom."""
    import pandas as pd
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    table = np.asarray(table, dtype=float)
    n, k = table.shape
    frame = pd.DataFrame({"score": table.ravel(), "unit": np.repeat(np.arange(n), k),
                          "rater": np.tile(np.arange(k), n)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # F and p of a zero residual: not used here
        ms = anova_lm(ols("score ~ C(unit) + C(rater)", frame).fit())["mean_sq"]
    msr, msc, mse = float(ms["C(unit)"]), float(ms["C(rater)"]), float(ms["Residual"])
    # Shrout & Fleiss (1979) ICC(2,k): (MSR - MSE) / (MSR + (MSC - MSE) / n)
    icc = (msr - mse) / (msr + (msc - mse) / n) if msr + (msc - mse) / n > 0 else math.nan
    if not math.isfinite(icc) or mse <= 1e-12 * max(msr, msc, 1.0):  # no residual spread: no interval
        return icc, None, None
    p = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)  # ICC(2,1), for the degrees of freedom
    a, b = k * p / (n * (1 - p)), 1 + k * p * (n - 1) / (n * (1 - p))
    v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / ((n - 1) * (k - 1)))
    q = 0.5 + confidence / 2
    f_low, f_high = stats.f.ppf(q, n - 1, v), stats.f.ppf(q, v, n - 1)
    with np.errstate(all="ignore"):
        low = float(n * (msr - f_low * mse) / (f_low * (msc - mse) + n * msr))
        high = float(n * (f_high * msr - mse) / (msc - mse + n * f_high * msr))
    if not (math.isfinite(low) and math.isfinite(high)):
        return icc, None, None
    return icc, low, high


def _block_icc(study: Study, scores: dict[tuple[str, str], dict[str, float]]) -> list[BlockICC]:
    out = []
    for b, item_ids in enumerate(blocks(study)):
        units = [(i, s.id) for i in item_ids for s in study.systems]
        counts: dict[str, int] = {}
        for unit in units:
            for rater in scores.get(unit, {}):
                counts[rater] = counts.get(rater, 0) + 1
        raters = sorted(r for r, n in counts.items() if n >= len(units) / 2)
        complete = [u for u in units if all(r in scores.get(u, {}) for r in raters)] if len(raters) >= 2 else []
        reason = ""
        if len(raters) < 2:
            reason = "needs two raters who scored half of the block"
        elif len(complete) < 3:
            reason = "needs three answers scored by all of them"
        elif np.unique([scores[u][r] for u in complete for r in raters]).size < 2:
            reason = "every score is the same"
        if reason:
            out.append(BlockICC(b, len(raters), len(complete), None, None, None, reason))
            continue
        icc, low, high = icc_2k(np.array([[scores[u][r] for r in raters] for u in complete]))
        if not math.isfinite(icc):
            out.append(BlockICC(b, len(raters), len(complete), None, None, None, "no spread between answers"))
        else:
            out.append(BlockICC(b, len(raters), len(complete), icc, low, high))
    return out


def compute(study: Study, ratings: Sequence[dict[str, Any]]) -> Results:
    """Every figure of the module docstring from the study's rating rows (rater, item, system, score, ...)."""
    scores = _scores(study, ratings)
    systems = [s.id for s in study.systems]
    results = Results(study.name, systems, sum(len(v) for v in scores.values()))
    # 1. mean per conversion x system, over item means
    item_mean = {unit: float(np.mean(list(by_rater.values()))) for unit, by_rater in scores.items()}
    conversions = list(dict.fromkeys(i.conversion for i in study.rated_items)) + [ALL]
    in_conversion = {c: [i.id for i in study.rated_items if c in (ALL, i.conversion)] for c in conversions}
    for conversion in conversions:
        for system in systems:
            means = [item_mean[(i, system)] for i in in_conversion[conversion] if (i, system) in item_mean]
            if means:
                n = sum(len(scores[(i, system)]) for i in in_conversion[conversion] if (i, system) in scores)
                results.cells.append(Cell(conversion, system, len(means), n, *mean_interval(means)))
    # 2. paired differences against the first system
    for conversion in conversions:
        for system in systems[1:]:
            diffs = [item_mean[(i, system)] - item_mean[(i, systems[0])] for i in in_conversion[conversion]
                     if (i, system) in item_mean and (i, systems[0]) in item_mean]
            if diffs:
                results.differences.append(Difference(conversion, system, systems[0], len(diffs),
                                                      *mean_interval(diffs)))
    # 3. agreement
    results.alpha, results.alpha_units, results.alpha_reason = _alpha(scores)
    results.icc = _block_icc(study, scores)
    # 4. raters, attention checks and coverage
    gold = {i.id: i for i in study.gold_items}
    by_rater: dict[str, list[dict[str, Any]]] = {}
    for r in ratings:
        by_rater.setdefault(r["rater"], []).append(r)
    for rater, rows in by_rater.items():
        checks = [r for r in rows if r["item"] in gold and r["score"] is not None]
        passed = 0
        for r in checks:
            answer = gold[r["item"]].gold[int(r["system"].split("-")[1])]
            passed += answer.low <= r["score"] <= answer.high
        results.raters.append(RaterSummary(rater, sum(r["score"] is not None for r in rows),
                                           sum(r["score"] is None for r in rows), passed, len(checks)))
    for item in study.rated_items:
        results.raters_per_item[item.id] = len({r["rater"] for r in ratings if r["item"] == item.id})
    return results


def plot(results: Results, out: str | Path) -> list[Path]:
    """means.png (mean and 95 % interval per conversion x system) and, with two or more systems,
    differences.png (paired difference per conversion with its interval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    conversions = list(dict.fromkeys(c.conversion for c in results.cells))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(conversions) * len(results.systems)), 4))
    width = 0.8 / max(1, len(results.systems))
    for k, system in enumerate(results.systems):
        cells = {c.conversion: c for c in results.cells if c.system == system}
        xs = [i + (k - (len(results.systems) - 1) / 2) * width for i, c in enumerate(conversions) if c in cells]
        shown = [cells[c] for c in conversions if c in cells]
        err = np.array([[c.mean - c.low if c.low is not None else 0 for c in shown],
                        [c.high - c.mean if c.high is not None else 0 for c in shown]])
        ax.bar(xs, [c.mean for c in shown], width, yerr=err, capsize=3, label=system)
    ax.set_xticks(range(len(conversions)), conversions)
    ax.set_ylim(0, 10.5)
    ax.set_ylabel("mean score (1-10), 95 % interval")
    ax.set_title(f"{results.study}: mean score per conversion type")
    ax.legend(fontsize="small")
    fig.tight_layout()
    paths.append(out / "means.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    if results.differences:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(conversions)), 4))
        for d in results.differences:
            x = conversions.index(d.conversion) if d.conversion in conversions else len(conversions)
            err = [[d.mean - d.low], [d.high - d.mean]] if d.low is not None else None
            ax.errorbar([x], [d.mean], yerr=err, fmt="o", capsize=4, color="C0")
        ax.axhline(0, color="grey", lw=1)
        ax.set_xticks(range(len(conversions)), conversions)
        names = sorted({f"{d.system} - {d.baseline}" for d in results.differences})
        ax.set_ylabel("paired difference, 95 % interval")
        ax.set_title(f"{results.study}: {', '.join(names)}")
        fig.tight_layout()
        paths.append(out / "differences.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def write_results(results: Results, out: str | Path) -> dict[str, Any]:
    """results.md, results.json and the plots in `out` -> their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(f"# Study {results.study}\n\n{results.markdown()}\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results.summary(), indent=1) + "\n", encoding="utf-8")
    return {"md": str(out / "results.md"), "json": str(out / "results.json"),
            "plots": [str(p) for p in plot(results, out)]}


def export_rows(study: Study, ratings: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rating rows with the item's conversion and the time in ISO 8601 (UTC), in EXPORT_COLUMNS."""
    items = {i.id: i for i in study.items}
    out = []
    for r in ratings:
        item = items.get(r["item"])
        when = dt.datetime.fromtimestamp(r["created_at"], dt.timezone.utc).isoformat(timespec="seconds")
        out.append({"study": study.name, "item": r["item"], "conversion": item.conversion if item else "",
                    "gold": bool(item and item.is_gold), "system": r["system"], "side": r["side"], "rater": r["rater"],
                    "score": r["score"], "skipped": r["score"] is None, "comment": r["comment"], "time": when,
                    "created_at": r["created_at"]})
    return out


def export(study: Study, ratings: Sequence[dict[str, Any]], out: str | Path, stem: str = "ratings") -> dict[str, str]:
    """Every rating as `stem`.csv and `stem`.jsonl in `out` -> their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = export_rows(study, ratings)
    csv_path, jsonl_path = out / f"{stem}.csv", out / f"{stem}.jsonl"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with jsonl_path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return {"csv": str(csv_path), "jsonl": str(jsonl_path)}
