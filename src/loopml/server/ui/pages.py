"""The UI's pages: a registry, the HTML shell every page shares, and the four pages.

A page is a :class:`Page`: a path, a title and the JavaScript module that
draws it from ``/ui/api`` JSON. :func:`add_page` registers the route, makes
its path public (the shell holds no data) and, with ``nav=True``, lists it
in the navigation bar of every page. The shell holds no user data at all:
the module reads its arguments (``?experiment=``, ``?id=``) from the URL.

A module adds its pages when it is imported, as :mod:`loopml.server.ui.models` does::

    add_page(router, Page(path="/ui/models", title="Models", script="models.js", nav=True))

>>> import loopml.server.ui
>>> NAV
[...]
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from fastapi import APIRouter
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ... import __version__
from ...errors import ArgumentError
from .assets import STATIC_DIR, plotly_url

__all__ = ["CSP", "NAV", "PAGES", "Page", "add_page", "public_paths", "router", "shell"]

# No inline script, no eval, no other origin: a string that reaches the page cannot run.
# Inline styles are allowed because plotly.js styles its SVG through them.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, kw_only=True)
class Page:
    """One page of the UI.

    ``path``: where it is served (under ``/ui``); ``title``: the window and
    navigation title; ``script``: its module in ``static/pages/``;
    ``nav``: listed in the navigation bar; ``charts``: loads plotly.js.
    """

    path: str
    title: str
    script: str
    nav: bool = False
    charts: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"/ui(/[a-z0-9_-]+)*/?", self.path) or self.path.startswith(("/ui/api", "/ui/static")):
            raise ArgumentError(f"Argument path should be a page path under /ui such as '/ui/models', got {self.path!r}")
        if not (STATIC_DIR / "pages" / self.script).is_file():
            raise ArgumentError(f"Argument script should name a module in {STATIC_DIR / 'pages'}, got {self.script!r}")


PAGES: list[Page] = []
# (title, path) of the navigation bar, in order; add_page(nav=True) appends
NAV: list[tuple[str, str]] = []


def public_paths() -> list[str]:
    """Path regexes whose GET needs no token: the pages, the static files, plotly.js, ``/``."""
    return ["/", "/ui/static/.+", "/ui/vendor/plotly\\.min\\.js", *(re.escape(p.path) for p in PAGES)]


def shell(page: Page) -> str:
    """The HTML of ``page``: the navigation bar and an empty ``<main>`` that its module fills."""
    e = html.escape
    nav = "".join(f'<a href="{e(path)}">{e(title)}</a>' for title, path in NAV)
    v = e(__version__)
    # async: the page's module fetches its data while plotly.js (4.8 MB) is still being evaluated
    charts = f'<script src="{e(plotly_url())}" id="plotly-js" async></script>\n' if page.charts else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(page.title)} · loopml</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/static/ui.css?v={v}">
{charts}<script type="module" src="/ui/static/pages/{e(page.script)}?v={v}"></script>
</head>
<body>
<header class="top"><a class="brand" href="/ui/">loopml</a><nav>{nav}</nav><span id="auth"></span></header>
<main id="main"><p class="muted">Loading…</p></main>
</body>
</html>
"""


def add_page(router: APIRouter, page: Page) -> None:
    """Serve ``page`` from ``router``, make its shell public and (``nav=True``) list it in the bar."""
    if any(p.path == page.path for p in PAGES):
        raise ArgumentError(f"Argument page should have a new path; {page.path!r} is taken")
    PAGES.append(page)
    if page.nav:
        NAV.append((page.title, page.path))

    def render() -> Response:
        return HTMLResponse(shell(page), headers=SECURITY_HEADERS)

    router.add_api_route(page.path, render, methods=["GET"], include_in_schema=False, name=f"page {page.path}")


router = APIRouter(include_in_schema=False)


@router.get("/")
def home() -> Response:
    return RedirectResponse("/ui/", status_code=307)


add_page(router, Page(path="/ui/", title="Experiments", script="experiments.js", nav=True))
add_page(router, Page(path="/ui/runs", title="Runs", script="runs.js"))
add_page(router, Page(path="/ui/run", title="Run", script="run.js", charts=True))
add_page(router, Page(path="/ui/compare", title="Compare", script="compare.js", charts=True))
