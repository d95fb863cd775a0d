"""The app on the shipped nano checkpoint in headless Chromium: the first screen and a conversation with every
medium, as a new user has them. No reply is scripted: what the page shows is what nano answers.

    NEXTGPT_SCREENSHOTS=assets/screenshots .venv/bin/python -m pytest tests/test_app_nano_browser.py -q

writes the README's two screenshots (nano-first-screen.png, nano-conversation.png). Skipped, as the other browser
tests, only when chromium or chromedriver is not installed.
"""

from __future__ import annotations

import re

import pytest

from app.examples import EXAMPLES_DIR
from app.media import OutputRoot
from app.store import ScoreStore
from app.ui import build_demo, launch
from nextgpt.model import NextGPT
from tests.test_app_browser import (FIRST_FOUR, By, chat_text, chromium, example_slot, free_port, generated_images,
                                    open_app, screenshot, send, wait)

pytestmark = pytest.mark.browser
# the chat box keeps a fixed height and scrolls; for the screenshot it grows to hold the whole conversation
UNROLL = """const chat = document.querySelector('#chat');
for (const e of [chat, ...chat.querySelectorAll('*')]) {
  const s = getComputedStyle(e);
  if (e === chat || s.overflowY === 'auto' || s.overflowY === 'scroll') {
    e.style.height = 'auto'; e.style.maxHeight = 'none'; e.style.overflow = 'visible';
  }
}"""
SOUND = "#chat audio, #chat [data-testid='waveform-Audio']"  # gradio 6's chat shows sound as a waveform player


@pytest.fixture(scope="module")
def nano_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("nano-browser")
    model = NextGPT.from_preset("nano")
    demo = build_demo(model, output=OutputRoot(root / "out"), store=ScoreStore(root / "scores.sqlite"))
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def _idle(driver) -> bool:
    stop = driver.find_elements(By.ID, "stop")
    return (not stop or not stop[0].is_displayed()) and "Generating" not in chat_text(driver)


def test_a_conversation_with_every_medium_on_nano(nano_app, tmp_path):
    driver = chromium(tmp_path / "profile", (1400, 1000))
    try:
        open_app(driver, nano_app)
        wait(driver, lambda d: example_slot(d, FIRST_FOUR[0]).is_displayed())
        screenshot(driver, tmp_path, "nano-first-screen.png")

        # 1. an uploaded picture, described
        driver.find_element(By.CSS_SELECTOR, "#message input[type=file]").send_keys(str(EXAMPLES_DIR / "green_triangle.png"))
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#message img"))
        send(driver, "What is in this picture?")
        # the answer, below the question (the upload's file name may show "triangle" before it)
        answer = lambda d: re.search(r"What is in this picture\?\n(.+)", chat_text(d))  # noqa: E731
        wait(driver, lambda d: answer(d) and _idle(d), timeout=120)
        assert "green triangle" in answer(driver).group(1).lower()
        # 2. a picture, 3. a sound, 4. a video, each asked in plain words
        send(driver, "Draw a red circle.")
        wait(driver, lambda d: generated_images(d) and _idle(d), timeout=120)
        send(driver, "Now play a low beeping tone.")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, SOUND) and _idle(d), timeout=120)
        send(driver, "Make a video of a yellow triangle moving right.")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#chat video") and _idle(d), timeout=120)

        image = generated_images(driver)[0]
        assert wait(driver, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
        video = driver.find_element(By.CSS_SELECTOR, "#chat video")
        wait(driver, lambda d: d.execute_script("return arguments[0].currentTime > 0", video))  # plays by itself
        # the whole conversation in one picture: a tall window, the chat scrolled to its top
        driver.set_window_size(1400, 2400)
        driver.execute_script(UNROLL)
        wait(driver, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
        screenshot(driver, tmp_path, "nano-conversation.png")
    finally:
        driver.quit()
