"""What the browser tests do again and again: open the app at projector size, start a long generation."""

from __future__ import annotations

import os
import time
from pathlib import Path

from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Once upon a time, in a small village by the sea,"


def screenshots_folder(default: Path) -> Path:
    """assets/screenshots (the README's images) under LMLAB_UPDATE_SCREENSHOTS=1, else ``default``."""
    return ROOT / "assets" / "screenshots" if os.environ.get("LMLAB_UPDATE_SCREENSHOTS") == "1" else default


def open_app(browser, app_url: str, width: int = 1400, height: int = 1100):
    """A fresh page of the app (its own browser context), once the Generate button is there."""
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.set_default_timeout(120_000)
    page.goto(app_url)
    page.wait_for_selector("#gen-go")
    return page


def start_long_generation(page, words: int = 1, seconds: float = 60):
    """Greedy generation of up to 500 tokens from ``PROMPT``, long enough that a Stop or a closed tab lands
    mid-stream however slow the browser is; returns the output box once ``words`` words have arrived."""
    page.locator("#gen-prompt textarea").fill(PROMPT)
    for elem_id, value in (("gen-temperature", "0"), ("gen-max-new", "500")):
        page.locator(f"#{elem_id} input[type=number]").fill(value)
        page.locator(f"#{elem_id} input[type=number]").press("Enter")
    page.locator("#gen-go").click()
    out = page.locator("#gen-output textarea")
    deadline = time.monotonic() + seconds
    while len(out.input_value().split()) < words and time.monotonic() < deadline:
        time.sleep(0.2)
    return out


def generate(page, prompt: str, tokens: int) -> str:
    """Generate ``tokens`` tokens after ``prompt`` in the Generate tab; returns prompt + generated text."""
    page.locator("#gen-prompt textarea").fill(prompt)
    page.locator("#gen-max-new input[type=number]").fill(str(tokens))
    page.locator("#gen-max-new input[type=number]").press("Enter")
    page.locator("#gen-go").click()
    expect(page.locator("#gen-status")).to_contain_text("Done", timeout=120_000)
    return prompt + page.locator("#gen-output textarea").input_value()
