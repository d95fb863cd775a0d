"""Tests for nextgpt/study/ (spec, default study, assignment, prepare, results, the store of raters and
ratings). The rating app itself is tested in tests/test_study_app.py.

    .venv/bin/python -m pytest tests/test_study.py -q
"""

from __future__ import annotations

import ast
import csv
import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from app.store import ScoreStore
from nextgpt.study import StudyError, load_study
from nextgpt.study.assign import blocks, least_rated, screens
from nextgpt.study.default import write_default
from nextgpt.study.prepare import load_prepared, prepare, require_prepared, stale
from nextgpt.study.results import compute, export, icc_2k as library_icc_2k, interval_alpha, write_results
from nextgpt.study.store import StudyStore
from tests.conftest import ROOT, run_nextgpt
from tests.study_fixtures import SYSTEMS, ScriptedModel, quality, scripted_models, write_study


# ---- independent statistics (textbook formulas, numpy only) ------------------------------------------
def alpha_interval(matrix: np.ndarray) -> float:
    """Krippendorff's alpha, interval metric, from (raters, units) with NaN for missing."""
    units = [col[~np.isnan(col)] for col in matrix.T]
    units = [u for u in units if u.size >= 2]
    values = np.concatenate(units)
    n = values.size
    observed = sum(((u[:, None] - u[None, :]) ** 2).sum() / (u.size - 1) for u in units) / n
    expected = ((values[:, None] - values[None, :]) ** 2).sum() / (n * (n - 1))
    return 1 - observed / expected


def icc_2k(y: np.ndarray) -> float:
    """ICC(2,k) (Shrout & Fleiss; McGraw & Wong ICC(A,k)) from a complete (units, raters) table."""
    n, k = y.shape
    grand = y.mean()
    ss_rows = k * ((y.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((y.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((y - grand) ** 2).sum() - ss_rows - ss_cols
    ms_rows, ms_cols, ms_err = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1))
    return (ms_rows - ms_err) / (ms_rows + (ms_cols - ms_err) / n)


def t_interval(values: list[float]) -> tuple[float, float, float]:
    mean = float(np.mean(values))
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, low, high


@pytest.fixture
def toy(tmp_path):
    return load_study(write_study(tmp_path / "toy"))


def test_agreement_matches_published_values():
    """The libraries behind the results (NLTK's alpha, statsmodels' ANOVA) and the numpy formulas above on
    the worked examples of the papers that define the coefficients."""
    nan = np.nan
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders x 12 units with missing
    # values (unit 12 has a single value and does not count); interval alpha = 0.849
    matrix = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
                       [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
                       [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
                       [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]])
    units = {u: {c: matrix[c, u] for c in range(4) if not np.isnan(matrix[c, u])} for u in range(12)}
    assert interval_alpha(units) == pytest.approx(alpha_interval(matrix)) == pytest.approx(0.849, abs=5e-4)
    # Shrout & Fleiss (1979), table 2: 6 targets x 4 judges; ICC(2,4) = 0.62 (ICC(2,1) = 0.29)
    y = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float)
    icc, low, high = library_icc_2k(y)
    assert icc == pytest.approx(icc_2k(y)) == pytest.approx(0.62, abs=5e-3)
    # McGraw & Wong (1996) ICC(A,k) interval on these data: 0.07 to 0.93
    assert (low, high) == pytest.approx((0.07, 0.93), abs=5e-3)
    # no residual spread (raters agree up to a constant offset): the interval is undefined
    assert library_icc_2k(np.array([[1, 2], [4, 5], [7, 8]]))[1:] == (None, None)


def test_the_library_imports_neither_the_app_nor_gpl_packages(tmp_path):
    """nextgpt/ never imports app/ (the app depends on the library, not the other way round), and the study
    commands run without the GPL packages (krippendorff, pingouin) the statistics once used."""
    for path in (ROOT / "nextgpt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            assert not [n for n in names if n.split(".")[0] == "app"], f"{path.relative_to(ROOT)} imports {names}"
    code = f"""
import sys
import numpy as np
from nextgpt.cli import main
from nextgpt.study.results import icc_2k, interval_alpha
from nextgpt.study.store import StudyStore
StudyStore({str(tmp_path / "s.sqlite")!r}).add_study_rater("toy", "ana", "x" * 20)
interval_alpha({{0: {{"a": 1, "b": 2}}, 1: {{"a": 3, "b": 3}}}})
icc_2k(np.array([[1, 2], [4, 4], [7, 9]]))
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("app", "krippendorff", "pingouin"))
assert not bad, bad
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---- spec and the default study -----------------------------------------------------------------------
def test_default_study_covers_every_conversion():
    study = load_study("default")
    assert len(study.items) == 60 and study.mode == "pairwise" and len(study.gold_items) == 2
    conversions = Counter(i.conversion for i in study.rated_items)
    assert set(conversions) == {"I->T", "A->T", "V->T", "T->I", "T->A", "T->V", "T+I->I", "T+A->A", "T+V->V", "T->T"}
    assert all(set(study.rubric(c)) == {"1", "5", "10"} for c in conversions)
    assert [s.generation_settings().num_inference_steps for s in study.systems] == [20, 50]
    assert len({i.prompt for i in study.items}) == 60


def test_default_study_is_reproducible(tmp_path):
    folder = write_default(tmp_path / "default")
    shipped = ROOT / "assets" / "studies" / "default"
    for name in ("study.json", "questions.jsonl"):
        assert (folder / name).read_text() == (shipped / name).read_text()
    for path in (folder / "media").glob("*"):
        if path.suffix in (".png", ".flac"):  # mp4 bytes depend on the encoder build
            assert path.read_bytes() == (shipped / "media" / path.name).read_bytes()
    assert sorted(p.name for p in (folder / "media").glob("*")) == sorted(p.name for p in (shipped / "media").glob("*"))


@pytest.mark.parametrize("change, message", [
    (lambda m, q: q.append(dict(q[0])), "unique"),
    (lambda m, q: q[0].update(conversion="T to I"), "conversion"),
    (lambda m, q: q[0].update(media=[{"type": "image", "path": "media/none.png"}]), "not found"),
    (lambda m, q: m["systems"].append({"id": "third"}), "exactly two"),
    (lambda m, q: m["systems"][0]["settings"].update(num_inference_steps=0), "num_inference_steps"),
    (lambda m, q: q[-1]["gold"][0].update(expect=[9, 2]), "expect"),
    (lambda m, q: m.update(mode="ranking"), "mode"),
])
def test_bad_studies_are_refused_with_the_reason(tmp_path, change, message):
    folder = write_study(tmp_path / "bad")
    meta = json.loads((folder / "study.json").read_text())
    questions = [json.loads(line) for line in (folder / "questions.jsonl").read_text().splitlines()]
    change(meta, questions)
    (folder / "study.json").write_text(json.dumps(meta))
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    with pytest.raises(StudyError, match=message):
        load_study(folder)


def test_unknown_study_names_the_bundled_ones():
    with pytest.raises(StudyError, match="default"):
        load_study("no-such-study")


# ---- assignment --------------------------------------------------------------------------------------
def test_blocks_are_balanced_and_cover_every_item_once(toy):
    parts = blocks(toy)
    assert [len(p) for p in parts] == [6, 6]
    assert sorted(i for p in parts for i in p) == sorted(i.id for i in toy.rated_items)
    assert blocks(toy) == parts  # the same after a restart
    assert least_rated([2, 1, 1]) == 1 and least_rated([0, 0]) == 0


def test_screens_per_rater(toy):
    first, second = screens(toy, 1, 0), screens(toy, 2, 0)
    assert first == screens(toy, 1, 0)  # deterministic per rater
    assert [s.item for s in first] != [s.item for s in second]  # each rater their own order
    assert sorted(s.item for s in first) == sorted(blocks(toy)[0] + ["q99"])  # block + gold item
    assert all(sorted(s.answers) == sorted(SYSTEMS) for s in first if s.item != "q99")
    sides = Counter(s.answers[0] for r in range(1, 21) for s in screens(toy, r, r % 2) if s.item != "q99")
    assert 0.35 < sides[SYSTEMS[0]] / sum(sides.values()) < 0.65  # A/B drawn, not fixed


def test_single_mode_shows_each_answer_on_its_own(tmp_path):
    study = load_study(write_study(tmp_path / "single", mode="single", items_per_rater=None))
    mine = screens(study, 3, 0)
    assert len(blocks(study)) == 1 and len(mine) == 12 * 2 + 2
    assert all(len(s.answers) == 1 for s in mine)


# ---- prepare -----------------------------------------------------------------------------------------
def test_prepare_is_resumable_and_names_media_by_content(toy):
    model = ScriptedModel()
    summary = prepare(toy, *scripted_models(model), progress=False)
    assert summary["generated"] == summary["answers"] == 12 * 2 + 2 and model.calls == 24
    prepared = require_prepared(toy)
    assert prepared.complete and len(prepared.answers) == 26
    answer = prepared.answers[("q00", SYSTEMS[1])]
    assert answer[0] == {"type": "text", "text": f"My answer has quality {quality(0, 1)}."}
    assert answer[1]["type"] == "image" and Path(answer[1]["path"]).is_file()
    for path in (toy.prepared_dir / "media").glob("*"):
        assert not any(s in path.name for s in SYSTEMS) and "gold" not in path.name
    gold = prepared.answers[("q99", "gold-1")]
    assert gold[0]["text"] == "Obviously wrong." and Path(gold[1]["path"]).parent == toy.prepared_dir / "media"
    # a second run does nothing; a changed system setting redoes that system's answers only
    assert prepare(toy, *scripted_models(model), progress=False)["generated"] == 0 and model.calls == 24
    assert stale(toy, {SYSTEMS[0]: "weights-v2", SYSTEMS[1]: "weights-v1"}) == [
        (item, SYSTEMS[0]) for item in toy.rated_items]
    assert load_prepared(toy, {SYSTEMS[0]: "weights-v2", SYSTEMS[1]: "weights-v1"}).missing


def test_a_killed_prepare_leaves_only_whole_answers(toy):
    class Dies(ScriptedModel):
        def chat(self, messages, settings):
            if self.calls == 5:
                raise KeyboardInterrupt
            return super().chat(messages, settings)

    with pytest.raises(KeyboardInterrupt):
        prepare(toy, *scripted_models(Dies()), progress=False)
    partial = load_prepared(toy)
    assert len(partial.answers) == 5 and not partial.complete
    with pytest.raises(StudyError, match="study prepare"):
        require_prepared(toy)
    model = ScriptedModel()
    assert prepare(toy, *scripted_models(model), progress=False)["generated"] == 26 - 5 and model.calls == 24 - 5


# ---- results -----------------------------------------------------------------------------------------
def scripted_ratings(study, raters: dict[str, tuple[int, int]]) -> list[dict]:
    """Ratings of raters name -> (block, offset): score = quality + offset + a rater-specific wobble."""
    rows = []
    for r, (name, (block, offset)) in enumerate(raters.items()):
        for item_id in blocks(study)[block]:
            n = int(item_id[1:])
            for s, system in enumerate(SYSTEMS):
                score = int(np.clip(quality(n, s) + offset + (n * (r + 1)) % 3 - 1, 1, 10))
                rows.append({"rater": name, "item": item_id, "system": system, "side": "A", "score": score,
                             "comment": "", "created_at": 1.7e9 + len(rows)})
    return rows


def test_results_equal_independent_computations(toy, tmp_path):
    raters = {"r0": (0, 0), "r1": (1, 0), "r2": (0, 1), "r3": (1, -1), "r4": (0, 0), "r5": (1, 2)}
    ratings = scripted_ratings(toy, raters)
    ratings.append({"rater": "r0", "item": "q99", "system": "gold-0", "side": "A", "score": 9, "comment": "",
                    "created_at": 1.8e9})
    ratings.append({"rater": "r0", "item": "q99", "system": "gold-1", "side": "B", "score": 8, "comment": "",
                    "created_at": 1.8e9})
    ratings.append({"rater": "r1", "item": blocks(toy)[1][0], "system": SYSTEMS[0], "side": "A", "score": None,
                    "comment": "skip", "created_at": 1.8e9})
    results = compute(toy, ratings)
    table: dict[tuple[str, str], dict[str, float]] = {}
    for r in ratings:
        if r["score"] is not None and r["item"] != "q99":
            table.setdefault((r["item"], r["system"]), {})[r["rater"]] = r["score"]
    item_mean = {u: np.mean(list(v.values())) for u, v in table.items()}
    # means per conversion x system, over item means
    for cell in results.cells:
        items = [i for i in toy.rated_items if cell.conversion in ("all", i.conversion)]
        mean, low, high = t_interval([item_mean[(i.id, cell.system)] for i in items])
        assert (cell.mean, cell.low, cell.high) == pytest.approx((mean, low, high))
    assert {(c.conversion, c.system) for c in results.cells} == {(c, s) for c in ("T->I", "I->T", "T->T", "T->A", "all")
                                                                 for s in SYSTEMS}
    # paired differences
    for d in results.differences:
        items = [i.id for i in toy.rated_items if d.conversion in ("all", i.conversion)]
        diff = [item_mean[(i, SYSTEMS[1])] - item_mean[(i, SYSTEMS[0])] for i in items]
        assert (d.mean, d.low, d.high) == pytest.approx(t_interval(diff))
    assert [d for d in results.differences if d.conversion == "all"][0].mean > 1.5  # system two is 2 better
    # Krippendorff's alpha over every answer, every rater
    names = sorted(raters)
    units = sorted(table)
    matrix = np.array([[table[u].get(r, np.nan) for u in units] for r in names], dtype=float)
    assert results.alpha == pytest.approx(alpha_interval(matrix)) and results.alpha_units == 24
    # ICC(2,k) per block: the block's three raters on its twelve answers
    for block in results.icc:
        members = sorted(n for n, (b, _) in raters.items() if b == block.block)
        block_units = [(i, s) for i in blocks(toy)[block.block] for s in SYSTEMS]
        y = np.array([[table[u][r] for r in members] for u in block_units], dtype=float)
        assert (block.raters, block.units) == (3, 12)
        assert block.icc == pytest.approx(icc_2k(y)) and block.low <= block.icc <= block.high
    # raters: attention checks, skips; coverage
    by_name = {r.rater: r for r in results.raters}
    assert (by_name["r0"].gold_passed, by_name["r0"].gold_total) == (1, 2) and by_name["r1"].skipped == 1
    assert set(results.raters_per_item.values()) == {3}
    # files
    paths = write_results(results, tmp_path / "out")
    assert [Path(p).name for p in paths["plots"]] == ["means.png", "differences.png"]
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in paths["plots"])
    assert "Krippendorff" in Path(paths["md"]).read_text() and json.loads(Path(paths["json"]).read_text())["alpha"]
    files = export(toy, ratings, tmp_path / "out")
    with open(files["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(ratings) and rows[-1]["skipped"] == "True" and rows[-1]["score"] == ""
    assert rows[0]["time"] == "2023-11-14T22:13:20+00:00"
    assert rows[0]["conversion"] == toy.item(rows[0]["item"]).conversion and rows[-3]["gold"] == "True"
    assert [json.loads(line)["rater"] for line in Path(files["jsonl"]).read_text().splitlines()] == \
        [r["rater"] for r in ratings]


def test_results_say_why_agreement_is_missing(toy):
    one = scripted_ratings(toy, {"solo": (0, 0)})
    results = compute(toy, one)
    assert results.alpha is None and "two scores" in results.alpha_reason
    assert all(b.icc is None and b.reason for b in results.icc)
    same = [dict(r, score=5) for r in scripted_ratings(toy, {"a": (0, 0), "b": (0, 0)})]
    assert compute(toy, same).alpha_reason == "every score is the same"
    empty = compute(toy, [])
    assert empty.cells == [] and empty.ratings == 0 and "0" in empty.markdown()


# ---- the store -----------------------------------------------------------------------------------------
def test_raters_spread_over_blocks_when_joining_at_once(tmp_path):
    path = tmp_path / "s.sqlite"
    StudyStore(path)
    joined, errors = [], []

    def join(k: int) -> None:
        try:
            joined.append(StudyStore(path).join_study("toy", least_rated, 3, name=f"rater{k}"))
        except Exception as err:  # noqa: BLE001 - asserted below
            errors.append(err)

    pool = [threading.Thread(target=join, args=(k,)) for k in range(9)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == [] and Counter(r["block"] for r in joined) == {0: 3, 1: 3, 2: 3}
    store = StudyStore(path)
    again = store.join_study("toy", least_rated, 3, name="rater4")  # the same name: the same rater and block
    assert again == [r for r in joined if r["name"] == "rater4"][0]


def test_ratings_are_kept_once_and_tokens_reserve_names(tmp_path):
    store = StudyStore(tmp_path / "s.sqlite")
    store.add_study_rater("toy", "ana", "x" * 20)
    with pytest.raises(ValueError, match="link"):
        store.join_study("toy", least_rated, 2, name="ana")
    with pytest.raises(ValueError, match="not valid"):
        store.join_study("toy", least_rated, 2, token="y" * 20)
    with pytest.raises(ValueError, match="already"):
        store.add_study_rater("toy", "ana", "z" * 20)
    ana = store.join_study("toy", least_rated, 2, token="x" * 20)
    assert ana["name"] == "ana" and ana["block"] == 0
    assert store.add_study_ratings("toy", ana["id"], "q01", [("a", "A", 7), ("b", "B", None)], " ok ")
    assert not store.add_study_ratings("toy", ana["id"], "q01", [("a", "A", 2), ("b", "B", 3)])  # first one stays
    with pytest.raises(ValueError, match="1 to 10"):
        store.add_study_ratings("toy", ana["id"], "q02", [("a", "A", 11)])
    rows = store.study_ratings("toy")
    assert [(r["rater"], r["system"], r["score"], r["comment"]) for r in rows] == [("ana", "a", 7, "ok"),
                                                                                   ("ana", "b", None, "ok")]
    assert store.study_done("toy", ana["id"]) == {("q01", "a"), ("q01", "b")}
    assert store.study_raters("toy")[0]["link"] is True
    assert "x" * 20 not in (tmp_path / "s.sqlite").read_bytes().decode("latin-1")  # tokens are stored hashed
    assert StudyStore(tmp_path / "s.sqlite").study_ratings("toy") == rows  # a new process reads them back
    assert ScoreStore(tmp_path / "s.sqlite").study_ratings("toy") == rows  # and so does the app's store


# ---- the command line ----------------------------------------------------------------------------------
def test_cli_raters_results_export(toy, tmp_path):
    from nextgpt.cli import main

    prepare(toy, *scripted_models(), progress=False)
    db = tmp_path / "s.sqlite"
    store = ScoreStore(db)  # the app's store; the commands read the same file through nextgpt's StudyStore
    for name, (block, offset) in {"a": (0, 0), "b": (0, 1), "c": (1, 0), "d": (1, 0)}.items():
        rater = store.join_study("toy", least_rated, 2, name=name)
        for item_id in blocks(toy)[rater["block"]]:
            n = int(item_id[1:])
            store.add_study_ratings("toy", rater["id"], item_id,
                                    [(s, "", min(10, quality(n, k) + offset)) for k, s in enumerate(SYSTEMS)])
    out = tmp_path / "results"
    assert main(["study", "results", "--study", str(toy.folder), "--scores-db", str(db), "--out", str(out)]) == 0
    assert (out / "means.png").is_file() and (out / "results.md").is_file()
    assert main(["study", "export", "--study", str(toy.folder), "--scores-db", str(db), "--out", str(out)]) == 0
    assert len((out / "ratings.csv").read_text().splitlines()) == 1 + 4 * 6 * 2
    assert main(["study", "raters", "--study", str(toy.folder), "--scores-db", str(db), "eve"]) == 0
    assert store.study_raters("toy")[-1]["name"] == "eve"
    assert main(["study", "results", "--study", str(tmp_path / "nothing")]) == 2  # {"error": ...}


def test_cli_prepare_on_the_nano_checkpoint(tmp_path):
    """`study prepare` as a user runs it, on the shipped nano checkpoint: a progress bar, answers with media,
    and a second run that finds nothing to do (without loading the model)."""
    folder = tmp_path / "nano-study"
    folder.mkdir()
    (folder / "questions.jsonl").write_text(
        json.dumps({"id": "t2i", "conversion": "T->I", "prompt": "Draw a red circle."}) + "\n"
        + json.dumps({"id": "t2t", "conversion": "T->T", "prompt": "What is the capital of Australia?"}) + "\n")
    systems = [{"id": f"steps-{k}", "preset": "nano", "settings": {"num_inference_steps": k, "max_new_tokens": 24}}
               for k in (2, 3)]
    (folder / "study.json").write_text(json.dumps({"name": "nano-study", "mode": "pairwise", "systems": systems}))
    first, stderr = run_nextgpt("study", "prepare", "--study", str(folder), "--threads", "1")
    assert (first["answers"], first["generated"]) == (4, 4) and "4/4" in stderr  # tqdm's bar
    second, _ = run_nextgpt("study", "prepare", "--study", str(folder), "--no-progress")
    assert (second["generated"], second["kept"]) == (0, 4) and second["seconds"] < 5
    prepared = require_prepared(load_study(folder))
    for system in ("steps-2", "steps-3"):
        assert [p["type"] for p in prepared.answers[("t2i", system)]] == ["text", "image"]
        assert [p["type"] for p in prepared.answers[("t2t", system)]] == ["text"]
