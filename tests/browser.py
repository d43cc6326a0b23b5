"""Headless chromium for the tests that open a page: Debian's chromium (package chromium, which
.ci/run installs), driven by Playwright. Screenshots are kept under build/test-artifacts/."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

PROJECT = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT / "build" / "test-artifacts"
CHROMIUM = os.environ.get("INSARLAKE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@contextmanager
def browser_page(width: int = 1400, height: int = 1000) -> Iterator[tuple[object, list[str]]]:
    """A page of a fresh headless chromium and the list its problems are added to while it is
    open: console errors, uncaught page errors, failed requests."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium; .ci/run "
                    "does) or set INSARLAKE_CHROMIUM")
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
            yield page, problems
        finally:
            browser.close()
