"""A study in a real headless Chromium: a rater rates 10 items, blind; the admin reads the results; a rater
link signs in. Skipped, like tests/test_app_browser.py, when chromium or chromedriver is not installed.

    .venv/bin/python -m pytest tests/test_study_browser.py -q
"""

from __future__ import annotations

import re
import secrets

import pytest

from tests.test_app_browser import By, chromium, free_port, screenshot, wait  # skips this module without Chromium

from app.media import OutputRoot  # noqa: E402
from app.standin import STANDIN_NOTE, tiny_model  # noqa: E402
from app.store import ScoreStore  # noqa: E402
from app.study_tab import available_studies  # noqa: E402
from app.ui import build_demo, launch  # noqa: E402
from nextgpt.study import load_study  # noqa: E402
from nextgpt.study.prepare import prepare  # noqa: E402
from tests.study_fixtures import LABELS, SYSTEMS, scripted_models, write_study  # noqa: E402

pytestmark = pytest.mark.browser
ADMIN = "browser-admin-token"
HIDDEN = (*SYSTEMS, *LABELS)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("study-browser")
    store = ScoreStore(root / "scores.sqlite")
    study = load_study(write_study(root / "toy", items_per_rater=None))  # 12 items and a gold item per rater
    prepare(study, *scripted_models(), progress=False)
    studies = available_studies([str(study.folder)])
    demo = build_demo(tiny_model(), output=OutputRoot(root / "out"), store=store, note=STANDIN_NOTE,
                      studies=studies, admin_token=ADMIN)
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", store
    demo.close()


@pytest.fixture()
def browser(tmp_path):
    driver = chromium(tmp_path / "chromium-profile", size=(1400, 1600))
    yield driver
    driver.quit()


def open_tab(driver, title: str) -> None:
    wait(driver, lambda d: d.find_element(By.XPATH, f"//button[@role='tab'][contains(., '{title}')]")).click()


def progress(driver) -> tuple[int, int] | None:
    found = re.search(r"(\d+) of (\d+)", driver.find_element(By.ID, "study-progress").text)
    return (int(found.group(1)), int(found.group(2))) if found else None


def test_rate_ten_items_blind_then_read_the_results(served, browser, tmp_path):
    url, store = served
    browser.get(url)
    open_tab(browser, "Evaluation")
    name = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#study-rater textarea, #study-rater input"))
    name.send_keys("browser rater")
    browser.find_element(By.ID, "study-start").click()
    wait(browser, lambda d: progress(d) == (0, 13))
    for done in range(10):
        wait(browser, lambda d: d.find_element(By.ID, "study-answer-a").text.strip())  # an answer is on screen
        page = browser.page_source
        assert [hidden for hidden in HIDDEN if hidden in page] == []
        assert "Answer A" in page and "Answer B" in page and "Rubric" in page
        browser.find_element(By.ID, "study-save").click()
        wait(browser, lambda d, done=done: progress(d) == (done + 1, 13))
    screenshot(browser, tmp_path, "study-rater.png")
    rows = store.study_ratings("toy")
    assert len(rows) == 20 and {r["rater"] for r in rows} == {"browser rater"} and {r["score"] for r in rows} == {5}

    # the admin: the results stay closed without the token, open with it
    browser.find_element(By.ID, "admin").click()
    box = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#admin-token input, #admin-token textarea"))
    browser.find_element(By.ID, "admin-results").click()
    wait(browser, lambda d: "admin" in d.page_source and "Not the admin token" in d.page_source)
    assert "Krippendorff" not in browser.find_element(By.ID, "admin-table").text
    box.send_keys(ADMIN)
    browser.find_element(By.ID, "admin-results").click()
    wait(browser, lambda d: "Krippendorff" in d.find_element(By.ID, "admin-table").text)
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#admin-plots img")) >= 1)
    table = browser.find_element(By.ID, "admin-table")
    assert SYSTEMS[1] in table.text  # the admin does see the systems
    browser.execute_script("arguments[0].scrollIntoView()", table)
    screenshot(browser, tmp_path, "study-admin.png")


def test_a_rater_link_signs_in(served, browser):
    url, store = served
    token = secrets.token_urlsafe(18)
    store.add_study_rater("toy", "linked rater", token)
    browser.get(f"{url}?study=toy&rater={token}")
    open_tab(browser, "Evaluation")
    wait(browser, lambda d: progress(d) == (0, 13))
    assert "linked rater" in browser.find_element(By.ID, "study-status").text
