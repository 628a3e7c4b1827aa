"""benchmarks/<name>.py imported as a module, for the tests of the helpers behind their figures."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/{name}.py`` as the module ``benchmark_{name}``; the environment is left as it was.

    A benchmark sets thread and telemetry variables when imported and imports its sibling
    ``_common``; its dataclasses look their module up in ``sys.modules``.
    """
    env = dict(os.environ)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
        os.environ.clear()
        os.environ.update(env)
    return module
