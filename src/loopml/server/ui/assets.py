"""The UI's static files and plotly.js, served from installed packages.

- ``/ui/static/{path}``: this package's ``static/`` folder (CSS and the page
  modules). Revalidated on each load (ETag), so an upgrade shows at once.
- ``/ui/vendor/plotly.min.js``: plotly.js, the first of

  1. the file ``LOOPML_UI_PLOTLY_JS`` names, when that variable is set (a
     file that does not exist is logged and skipped: the full bundle is served);
  2. plotly.js's *basic* bundle (scatter, bar and pie traces, 1.2 MB) from
     the npm package ``plotly.js-basic-dist-min``, pinned in ``js/package-lock.json``
     and installed by ``make`` (``npm ci --prefix js``) into ``js/node_modules``
     of a checkout;
  3. the full bundle (4.8 MB) that the ``plotly`` PyPI package ships
     (``plotly/package_data/plotly.min.js``), so a ``pip install
     'loopml[server]'`` without npm draws the same charts.

  The UI draws only ``scatter`` traces, which every bundle has; the basic one
  is evaluated in about 0.15 s instead of 1 s on each page load. The answer
  says which it is in ``X-Loopml-Plotly`` (``basic`` or ``full``). Nothing is
  copied into this repository. Cached for a year under a URL that names the
  version and the bundle, so a browser parses it from its cache after the
  first page.
"""

from __future__ import annotations

import importlib.util
import logging
import mimetypes
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from ... import config
from ...errors import ConfigError, NotFound

__all__ = ["PLOTLY_ENV", "STATIC_DIR", "PlotlyBundle", "plotly_js", "plotly_url", "router"]

STATIC_DIR = Path(__file__).with_name("static")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}
PLOTLY_ENV = "LOOPML_UI_PLOTLY_JS"
# where `npm ci --prefix js` (the Makefile) puts the basic bundle, relative to a checkout
_NPM_BASIC = Path("js/node_modules/plotly.js-basic-dist-min/plotly-basic.min.js")
# the banner every plotly.js dist file starts with: "plotly.js v4.1.1" or "plotly.js (basic - minified) v4.1.1"
_BANNER = re.compile(r"plotly\.js(?: \((\w+)(?: - minified)?\))? v(\d[\w.+-]*)")

log = logging.getLogger(__name__)
router = APIRouter()


@dataclass(frozen=True, kw_only=True)
class PlotlyBundle:
    """A plotly.js file the UI can serve: ``kind`` is ``"full"``, ``"basic"`` (or another partial bundle's name)."""

    path: Path
    kind: str
    version: str


@lru_cache(maxsize=8)
def _describe(path: Path, mtime_ns: int) -> PlotlyBundle:
    with open(path, "rb") as f:
        head = f.read(400).decode("utf-8", "replace")
    m = _BANNER.search(head)
    if m is None:  # not a plotly.js dist file we know; serve it, but say so
        return PlotlyBundle(path=path, kind="custom", version=str(mtime_ns))
    return PlotlyBundle(path=path, kind=m.group(1) or "full", version=m.group(2))


@lru_cache(maxsize=1)
def _full_bundle() -> PlotlyBundle:
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("The web UI draws charts with plotly: pip install 'loopml[server]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ConfigError(f"The plotly package has no {path.name} at {path}; reinstall it: pip install -U plotly")
    bundle = _describe(path, path.stat().st_mtime_ns)
    return PlotlyBundle(path=path, kind="full", version=bundle.version if bundle.kind == "full" else version("plotly"))


def _checkout_root() -> Path | None:
    root = Path(__file__).resolve().parents[4]  # src/loopml/server/ui/assets.py -> the checkout
    return root if (root / "pyproject.toml").is_file() else None


@lru_cache(maxsize=8)
def _warn_missing(path: str) -> None:  # once per path, not on every page
    log.warning("%s=%s: no such file; the web UI serves the full plotly.js bundle instead", PLOTLY_ENV, path)


def plotly_js() -> PlotlyBundle:
    """The plotly.js bundle to serve: ``$LOOPML_UI_PLOTLY_JS``, else npm's basic bundle, else the full one."""
    explicit = config.settings().ui_plotly_js
    if explicit:
        candidates = [explicit]
    else:
        root = _checkout_root()
        candidates = [root / _NPM_BASIC] if root is not None else []
    for path in candidates:
        try:
            return _describe(path, path.stat().st_mtime_ns)
        except OSError:
            if explicit:
                _warn_missing(explicit)
    return _full_bundle()


def plotly_url() -> str:
    try:
        b = plotly_js()
    except ConfigError:
        return "/ui/vendor/plotly.min.js"
    return f"/ui/vendor/plotly.min.js?v={b.version}-{b.kind}"


@router.get("/ui/vendor/plotly.min.js")
def plotly_bundle() -> Response:
    b = plotly_js()
    return FileResponse(
        b.path,
        media_type="text/javascript",
        headers={
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
            "X-Loopml-Plotly": b.kind,
        },
    )


@router.get("/ui/static/{path:path}")
def static_file(path: str) -> Response:
    # Only names we ship: resolve inside STATIC_DIR and refuse anything that leaves it.
    root = STATIC_DIR.resolve()
    target = (root / path).resolve()
    if not path or root not in target.parents or not target.is_file() or target.suffix not in _TYPES:
        raise NotFound(f"No UI file {path!r}")
    media = _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(
        target, media_type=media, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    )
