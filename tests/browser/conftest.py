"""Real headless Chromium for the browser tests, and a static site to load pages from.

Chromium is Debian's (``/usr/bin/chromium``, or ``$PAYWARDEN_CHROMIUM``), driven
by the ``playwright`` package's bundled driver: no browser download. When either
is missing the tests fail under ``CI=true`` and are skipped elsewhere.

Fixtures:

* ``chromium`` (module): a launched playwright ``Browser``;
* ``browser_page``: a fresh ``Page`` in its own context; its console lines and
  uncaught page errors are collected in ``browser_console``;
* ``serve_static_page``: ``serve_static_page(html) -> url`` serves ``html`` as the
  body of a page on a loopback origin (a secure context, so WebCrypto works)
  whose ``<head>`` loads ``/paywarden-e2e.js`` from the installed package.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NoReturn

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from paywarden.clients import browser_helper_source
from tests.support.servers import run_app_in_thread

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

DEFAULT_CHROMIUM = "/usr/bin/chromium"
HELPER_PATH = "/paywarden-e2e.js"
PAGE_TEMPLATE = """<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>paywarden e2e test page</title>
<script src="{helper}"></script>
</head>
<body>
{body}
</body>
</html>
"""


def _unavailable(reason: str) -> NoReturn:
    # CI must run these tests: a missing browser there is a broken machine, not a skip.
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = os.environ.get("PAYWARDEN_CHROMIUM", DEFAULT_CHROMIUM)
    resolved = shutil.which(path)
    if resolved is None:
        _unavailable(f"Chromium not found at {path} (apt-get install chromium)")
    return resolved


@pytest.fixture(scope="module")
def chromium(chromium_executable: str) -> Iterator[Browser]:
    # Module scope, not session: while playwright's sync API is active the main
    # thread has a running asyncio loop, so ``asyncio.run`` in other modules'
    # tests would fail. pytest-randomly keeps each module's tests together.
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_console() -> list[str]:
    """Console lines and uncaught errors of ``browser_page``, in order."""
    return []


@pytest.fixture
def browser_page(chromium: Browser, browser_console: list[str]) -> Iterator[Page]:
    context = chromium.new_context()
    page = context.new_page()
    page.on("console", lambda message: browser_console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: browser_console.append(f"pageerror: {error}"))
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()


class StaticSite:
    """Pages registered at run time, plus the packaged browser helper."""

    def __init__(self) -> None:
        self.base_url = ""
        self._pages: dict[str, str] = {}
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route(HELPER_PATH, self._helper),
                Route("/pages/{name}", self._page),
                Route("/favicon.ico", self._no_icon),
            ]
        )

    def serve(self, html: str) -> str:
        """Serve ``html`` as a page body that loads the helper; returns its URL."""
        name = uuid.uuid4().hex
        with self._lock:
            self._pages[name] = PAGE_TEMPLATE.format(helper=HELPER_PATH, body=html)
        return f"{self.base_url}/pages/{name}"

    async def _helper(self, request: Request) -> Response:
        # Read from the installed package, as a merchant's server would.
        return Response(
            browser_helper_source(),
            media_type="text/javascript",
            headers={"Cache-Control": "no-store"},
        )

    async def _page(self, request: Request) -> Response:
        with self._lock:
            html = self._pages.get(request.path_params["name"])
        if html is None:
            return PlainTextResponse("no such page", status_code=404)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def _no_icon(self, request: Request) -> Response:
        return Response(status_code=204)


@pytest.fixture(scope="session")
def static_site() -> Iterator[StaticSite]:
    site = StaticSite()
    with run_app_in_thread(site.app) as url:
        site.base_url = url
        yield site


@pytest.fixture
def serve_static_page(static_site: StaticSite) -> Callable[[str], str]:
    """``serve_static_page(html) -> url``: a page whose ``<head>`` loads ``/paywarden-e2e.js``."""
    return static_site.serve
