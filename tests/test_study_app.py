"""A simulated study through the launched app (gradio_client): six scripted raters of known agreement rate a
prepared toy study; the admin reads the results.

    .venv/bin/python -m pytest tests/test_study_app.py -q

Checks: balanced assignment (each item to k = 3 raters, raters of one block share all its items), blinding
(no system id, label or setting in any response a rater gets), per-rater order and A/B sides, resuming,
statistics equal to independently computed values, and results / exports only with the admin token.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
from gradio_client import Client

from conftest import free_port
from app.media import OutputRoot
from app.standin import STANDIN_NOTE, tiny_model
from app.store import ScoreStore
from app.study_tab import available_studies
from app.ui import build_demo, launch
from nextgpt.study import load_study
from nextgpt.study.assign import blocks, screens
from nextgpt.study.prepare import prepare
from tests.study_fixtures import LABELS, STEPS, SYSTEMS, quality, scripted_models, shown_quality, write_study
from tests.test_study import alpha_interval, icc_2k, t_interval

ADMIN = "admin-secret-for-tests"
OFFSETS = (0, 0, 1, -1, 0, 2)  # rater k scores quality + OFFSETS[k] (+ a wobble for rater 5)
HIDDEN = (*SYSTEMS, *LABELS, *(f"num_inference_steps\": {k}" for k in STEPS))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("rating")
    study = load_study(write_study(root / "toy"))
    prepare(study, *scripted_models(), progress=False)
    store = ScoreStore(root / "scores.sqlite")
    model = tiny_model()
    apps = {}
    for name, token in (("admin", ADMIN), ("open", None)):
        demo = build_demo(model, output=OutputRoot(root / f"out-{name}"), store=store, note=STANDIN_NOTE,
                          studies=available_studies([str(study.folder)]), admin_token=token)
        port = free_port()
        launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
        apps[name] = (demo, f"http://127.0.0.1:{port}/")
    yield study, store, apps["admin"][1], apps["open"][1]
    for demo, _ in apps.values():
        demo.close()


def shown(component):
    """A component's value in an API response (an update dict when the handler changed more than the value)."""
    return component["value"] if isinstance(component, dict) and component.get("__type__") == "update" else component


def score_for(k: int, shown: int, n_item: int) -> int:
    wobble = (n_item % 3) - 1 if k == 5 else 0
    return int(np.clip(shown + OFFSETS[k] + wobble, 1, 10))


def test_six_raters_blind_balanced_and_the_admin_results(app):
    study, store, url, open_url = app
    admin = Client(url, verbose=False, download_files=False)
    links = admin.predict(ADMIN, "toy", "rater4, rater5", api_name="/study_links")
    tokens = dict(re.findall(r"- (rater\d): `.*rater=([\w-]+)`", links))
    assert set(tokens) == {"rater4", "rater5"}

    seen_text: list[str] = []
    truth: dict[tuple[str, str], dict[str, int]] = {}  # (item, system) -> rater -> score, as the test knows it
    orders, sides = {}, Counter()
    for k in range(6):
        name = f"rater{k}"
        client = Client(url, verbose=False, download_files=False)
        args = ("toy", "", tokens[name]) if name in tokens else ("toy", name, "")
        view = client.predict(*args, api_name="/study_start")
        seen_text.append(json.dumps(view))
        order = []
        while True:
            progress, question, answer_a, answer_b = (shown(c) for c in view[:4])
            match = re.search(r"\*\*(\d+) of (\d+)\*\*", progress)
            assert match and int(match.group(1)) == len(order)
            if not question:
                assert "all of your items are rated" in progress and int(match.group(2)) == 7
                break
            prompt = question[0]["content"][-1]
            prompt = prompt if isinstance(prompt, str) else prompt["text"]
            n_item = int(re.search(r"number (\d+)", prompt).group(1))
            item = f"q{n_item:02d}"
            order.append(item)
            qualities = [shown_quality(answer_a), shown_quality(answer_b)]
            scores = [score_for(k, q, n_item) for q in qualities]
            if item == "q99" and k == 3:
                scores = [10, 10]  # rater 3 fails one attention check
            if k == 1 and len(order) == 2:
                view = client.predict(api_name="/study_skip")
                seen_text.append(json.dumps(view))
                assert "Skipped" in view[-1]
                continue
            if item != "q99":
                for side, q in enumerate(qualities):
                    system = SYSTEMS[[quality(n_item, s) for s in (0, 1)].index(q)]
                    truth.setdefault((item, system), {})[name] = scores[side]
                    sides[(system, side)] += 1
            view = client.predict(scores[0], scores[1], f"comment by {name}", api_name="/study_rate")
            seen_text.append(json.dumps(view))
            assert "Saved" in view[-1]
        orders[name] = order
        # coming back with the same name (or link) in a new session resumes where the rater stopped
        again = Client(url, verbose=False, download_files=False).predict(*args, api_name="/study_start")
        assert "7 of 7" in shown(again[0])

    # 1. assignment: two blocks of six items, three raters each; every rater also got the gold item
    raters = {r["name"]: r for r in store.study_raters("toy")}
    assert Counter(r["block"] for r in raters.values()) == {0: 3, 1: 3}
    for name, order in orders.items():
        assert sorted(order) == sorted(blocks(study)[raters[name]["block"]] + ["q99"])
    per_item = Counter(r["item"] for r in store.study_ratings("toy") if r["system"] == SYSTEMS[0])
    assert set(per_item.values()) == {3} and len(per_item) == 12
    # 2. per-rater randomisation: each rater's own order (as assign.screens draws it), and A/B both ways
    for name, order in orders.items():
        assert order == [s.item for s in screens(study, raters[name]["id"], raters[name]["block"])]
    same_block = [o for n, o in orders.items() if raters[n]["block"] == 0]
    assert len({tuple(o) for o in same_block}) == 3
    assert min(sides.values()) > 0  # each system shown as A and as B
    # 3. blinding: nothing a rater received names a system, its label or its settings
    everything = "\n".join(seen_text)
    assert all(hidden not in everything for hidden in HIDDEN) and "gold" not in everything
    assert "quality" in everything and re.search(r"/[0-9a-f]{20}\.png", everything)  # answers did arrive, media too

    # 4. results: the admin's figures equal independent computations from what the raters gave
    markdown, summary, plots, files = admin.predict(ADMIN, "toy", api_name="/study_results")
    assert "Krippendorff" in markdown and len(plots) == 2 and len(files) == 2
    item_mean = {u: np.mean(list(v.values())) for u, v in truth.items()}
    for cell in summary["cells"]:
        items = [i.id for i in study.rated_items if cell["conversion"] in ("all", i.conversion)]
        expected = t_interval([item_mean[(i, cell["system"])] for i in items])
        assert (cell["mean"], cell["low"], cell["high"]) == pytest.approx(expected)
    overall = [d for d in summary["differences"] if d["conversion"] == "all"][0]
    diffs = [item_mean[(i.id, SYSTEMS[1])] - item_mean[(i.id, SYSTEMS[0])] for i in study.rated_items]
    assert (overall["mean"], overall["low"], overall["high"]) == pytest.approx(t_interval(diffs))
    names = sorted(orders)
    units = sorted(truth)
    matrix = np.array([[truth[u].get(r, np.nan) for u in units] for r in names], dtype=float)
    assert summary["alpha"] == pytest.approx(alpha_interval(matrix))
    for block in summary["icc"]:
        members = sorted(n for n in names if raters[n]["block"] == block["block"])
        complete = [u for u in units if u[0] in blocks(study)[block["block"]] and all(r in truth[u] for r in members)]
        y = np.array([[truth[u][r] for r in members] for u in complete], dtype=float)
        assert block["units"] == len(complete) and block["icc"] == pytest.approx(icc_2k(y))
    checks = {r["rater"]: (r["gold_passed"], r["gold_total"]) for r in summary["raters"]}
    assert checks["rater3"] == (1, 2) and checks["rater0"] == (2, 2)  # 10 for the plainly wrong answer fails
    assert [r["skipped"] for r in summary["raters"] if r["rater"] == "rater1"] == [2]

    # 5. admin only: a wrong token gets nothing; an app started without a token has no such endpoints
    for endpoint, args in (("/study_results", ("wrong", "toy")), ("/summary", ("wrong",)), ("/export_csv", ("",)),
                           ("/study_links", ("nope", "toy", "x"))):
        with pytest.raises(Exception, match="admin"):
            admin.predict(*args, api_name=endpoint)
    api = Client(open_url, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/study_start", "/study_rate", "/study_skip"} <= set(api)
    assert not {"/study_results", "/study_links", "/summary", "/export_csv"} & set(api)
