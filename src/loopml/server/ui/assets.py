"""The UI's static files and plotly.js, served from the installed packages.

- ``/ui/static/{path}``: this package's ``static/`` folder (CSS and the page
  modules). Revalidated on each load (ETag), so an upgrade shows at once.
- ``/ui/vendor/plotly.min.js``: the plotly.js bundle that the ``plotly``
  PyPI package ships (``plotly/package_data/plotly.min.js``); nothing is
  copied into this repository. Cached for a year under a URL that names its
  version, so a browser parses it from its cache after the first page.
"""

from __future__ import annotations

import importlib.util
import mimetypes
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from ...errors import ConfigError, NotFound

__all__ = ["STATIC_DIR", "plotly_js", "plotly_url", "router"]

STATIC_DIR = Path(__file__).with_name("static")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}

router = APIRouter()


@lru_cache(maxsize=1)
def plotly_js() -> tuple[Path, str]:
    """The plotly.js bundle inside the installed ``plotly`` package, and its version."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("The web UI draws charts with plotly: pip install 'loopml[server]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ConfigError(f"The plotly package has no {path.name} at {path}; reinstall it: pip install -U plotly")
    from importlib.metadata import version

    return path, version("plotly")


def plotly_url() -> str:
    try:
        return f"/ui/vendor/plotly.min.js?v={plotly_js()[1]}"
    except ConfigError:
        return "/ui/vendor/plotly.min.js"


@router.get("/ui/vendor/plotly.min.js")
def plotly_bundle() -> Response:
    path, _version = plotly_js()
    return FileResponse(
        path,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"},
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
