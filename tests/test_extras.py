"""What each extra installs: the model server's extra carries no web framework."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]


def _names(extra: str, extras: dict[str, list[str]]) -> set[str]:
    """The package names an extra pulls in, following `loopml[other]` references."""
    out: set[str] = set()
    for req in extras[extra]:
        name = req.split(">")[0].split("=")[0].split("[")[0].strip().lower()
        if name == "loopml":
            for inner in req.split("[", 1)[1].rstrip("]").split(","):
                out |= _names(inner.strip(), extras)
        else:
            out.add(name)
    return out


def test_the_model_server_extra_has_no_web_framework() -> None:
    # `loopml serve` runs on its own HTTP layer (serve/http.py) and shares the Host/token checks
    # through loopml.access, so `pip install 'loopml[serve]'` must not bring FastAPI and friends
    # (tests/serve/test_startup.py checks that serving imports none of them)
    names = _names("serve", _extras())
    assert names.isdisjoint({"fastapi", "starlette", "uvicorn", "plotly"}), names
    assert {"uvloop", "httptools", "onnxruntime"} <= names


def test_the_tracking_server_extra_has_its_web_stack() -> None:
    assert {"fastapi", "uvicorn", "plotly"} <= _names("server", _extras())
