"""Browser tests of the web dashboard: a real kernel serving HTTP, a real Chromium.

One Chromium for this package's tests (Debian's ``chromium`` package, installed by ``make
setup``; no Playwright browser download), one kernel per module, a fresh browser context per test (so
sessionStorage, i.e. the sign-in, starts empty). Screenshots go to a temporary directory,
or to docs/img/ when ``AGENTIX_SCREENSHOTS=1`` (how the images in docs/dashboard.md are made).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from http_api.conftest import Api, start_api

CHROMIUM = os.environ.get("AGENTIX_CHROMIUM", "/usr/bin/chromium")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    # package scope, not session: Playwright's sync API keeps an asyncio loop running in this
    # thread while it is open, which would break every later test that calls asyncio.run();
    # pytest closes a package fixture before it runs any test outside the package
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the dev extra pins it
        pytest.fail("the browser tests need playwright (the dev extra): run `make setup`")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM}: run `make setup` "
                    "(it installs the system packages) or set AGENTIX_CHROMIUM")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield b
        b.close()


@pytest.fixture(scope="module")
def dash(isolation_mode: str) -> Iterator[Api]:
    a, tmp = start_api(isolation_mode)
    yield a
    try:
        a.daemon.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("AGENTIX_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        return DOCS_IMG
    return tmp_path_factory.mktemp("screenshots")


class Page:
    """A signed-in dashboard tab, recording every dialog and page error."""

    def __init__(self, page: Any, url: str) -> None:
        self.page, self.url = page, url
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.set_default_timeout(20_000)

    def sign_in(self, token: str) -> Page:
        self.page.goto(self.url + "/")
        self.page.fill("#token", token)
        self.page.click("#signin button[type=submit]")
        self.page.wait_for_selector("#who:not(:empty)", state="attached")
        return self

    def go(self, route: str) -> Page:
        self.page.evaluate("r => { location.hash = r; }", route)
        return self


@pytest.fixture
def tab(browser: Any, dash: Api) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    made: list[Page] = []

    def open_tab(viewport: dict[str, int] | None = None) -> Page:
        p = Page(ctx.new_page(), dash.url)
        if viewport:
            p.page.set_viewport_size(viewport)
        made.append(p)
        return p

    yield open_tab
    try:
        for p in made:
            assert not p.errors, f"errors in the page: {p.errors}"
    finally:
        ctx.close()
