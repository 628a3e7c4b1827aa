"""A headless Chromium (Debian's ``chromium``) driven by Playwright, for the UI tests.

`make test` installs it (scripts/test-chromium.sh). Without it the browser
tests skip, except on CI (CI=true), where they fail: they must run there.
``LOOPML_TEST_CHROMIUM`` names another executable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from ...conftest import ON_CI
from ...deps import need

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]


def chromium_path() -> str | None:
    explicit = os.environ.get("LOOPML_TEST_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        if ON_CI:
            pytest.fail("Chromium is not installed on CI: run the suite through `make test` (scripts/test-chromium.sh)")
        pytest.skip("no Chromium (apt-get install chromium, or run `make test`)")
    playwright = need("playwright.sync_api", extra="test")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page; ``page.problems`` collects script errors, CSP violations and dialogs."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    problems: list[str] = []
    pg.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    pg.problems = problems
    yield pg
    context.close()
