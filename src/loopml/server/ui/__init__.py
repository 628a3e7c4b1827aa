"""The web UI: experiments, runs, one run's curves, and runs compared, in a browser.

The server renders a small HTML shell per page; a hand-written JavaScript
module (``static/pages/*.js``, no build step) fetches the page's data from
the JSON endpoints under ``/ui/api`` and draws it with the DOM's
``textContent`` (never ``innerHTML``) and plotly.js (served from the
installed ``plotly`` package). What is where:

- :mod:`.pages`: the page registry (:class:`Page`, :func:`add_page`, the
  navigation bar) and the four pages.
- :mod:`.api`: the JSON the pages read (``/ui/api/...``).
- :mod:`.assets`: ``/ui/static/...`` and ``/ui/vendor/plotly.min.js``.
- :mod:`.models`, :mod:`.monitoring`: the registry pages and a version's monitoring page.
- :mod:`.labeling`: the labeling page (the queue labelled with the keyboard).
- :mod:`.predictions`: the prediction log page, with each request's explanation.
- :mod:`.downsample`: min/max per bucket, so a 100,000-point history draws at once.

**Auth.** The shells and static files hold no data, so they are public
(:func:`public_paths`, handed to the
:class:`~loopml.server.security.SecurityMiddleware`); every ``/ui/api`` route
sits behind the server's bearer token like the REST API. When the server has
a token, a page asks for it once and keeps it in the tab's
``sessionStorage``. Every UI page is sent with a strict Content-Security-Policy
(``script-src 'self'``), so a string that reaches the page cannot run.

Adding a page (docs/ui.md has the details)::

    from loopml.server.ui.pages import Page, add_page
    add_page(my_router, Page(path="/ui/models", title="Models", script="models.js", nav=True))
    # + static/pages/models.js, + JSON routes under /ui/api/models (behind the token)
"""

from __future__ import annotations

from fastapi import APIRouter

from . import api, assets, labeling, models, monitoring, pages, predictions
from .pages import NAV, Page, add_page, public_paths

__all__ = ["NAV", "Page", "add_page", "public_paths", "router"]

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(assets.router)
router.include_router(api.router)
router.include_router(models.router)  # the Models and Model pages and /ui/api/models
router.include_router(monitoring.router)  # a version's monitoring page and its JSON
router.include_router(labeling.router)  # the labeling page and /ui/api/labeling
router.include_router(predictions.router)  # the prediction log page, explanations of requests and examples
