"""Optional test dependencies: skip locally, fail on CI.

``need(module, extra=...)`` replaces ``pytest.importorskip``. Outside CI a
missing dependency skips the tests that asked for it, with the install command
in the reason; on CI (``CI=true``) it fails them, so that a missing extra can
never hide a feature behind a green run (as for PostgreSQL and Chromium, see
tests/conftest.py). Call it where the dependency is used: at module level only
in a file whose every test needs it (files are split by extra for that), else
inside the test or fixture.

    from tests.deps import need

    ort = need("onnxruntime", extra="export")
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` (a test dependency from loopml's ``extra``); skip locally, fail on CI when missing.

    Example: ``executorch = need("executorch", extra="edge")``
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f"{module} is not installed ({exc}); install it with: pip install -e '.[{extra},test]'"
        if ON_CI:
            pytest.fail(f"{reason}. On CI (CI=true) every test dependency must be installed: run `make test`",
                        pytrace=False)
        pytest.skip(reason, allow_module_level=True)
