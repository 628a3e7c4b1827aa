"""The curated public surface of ``import loopml``, pinned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import loopml

EXPECTED = [
    "ArtifactPathError",
    "AuthError",
    "Client",
    "ConfigError",
    "Conflict",
    "DataError",
    "Experiment",
    "ExportError",
    "FilterError",
    "History",
    "IntegrityError",
    "LoopMLError",
    "MigrationRequired",
    "NotFound",
    "RemoteError",
    "Run",
    "RunRecord",
    "StoreError",
    "Trainer",
    "__version__",
    "active_run",
    "data",
    "experiments",
    "explain",
    "federated",
    "get_run",
    "get_tracking_uri",
    "load_model",
    "log",
    "log_artifact",
    "log_params",
    "models",
    "register",
    "runs",
    "set_tags",
    "set_tracking_uri",
    "start_run",
    "train",
]


def test_all_is_pinned_and_sorted() -> None:
    assert loopml.__all__ == EXPECTED
    assert loopml.__all__ == sorted(loopml.__all__)
    assert sorted(dir(loopml)) == EXPECTED


def test_every_public_name_resolves() -> None:
    for name in loopml.__all__:
        assert getattr(loopml, name) is not None, name
    assert isinstance(loopml.__version__, str)


def test_public_names_are_the_real_objects() -> None:
    from loopml.errors import LoopMLError, StoreError
    from loopml.store.records import Experiment, History, RunRecord
    from loopml.tracking.api import start_run
    from loopml.tracking.run import Run

    assert (loopml.Run, loopml.start_run, loopml.History) == (Run, start_run, History)
    assert (loopml.RunRecord, loopml.Experiment) == (RunRecord, Experiment)
    from loopml.client import Client, register

    assert (loopml.Client, loopml.register) == (Client, register)  # register with ood= lives above the registry
    assert issubclass(loopml.StoreError, LoopMLError) and loopml.StoreError is StoreError
    for name in ("ArtifactPathError", "AuthError", "ConfigError", "DataError", "FilterError", "MigrationRequired", "NotFound", "RemoteError"):
        assert issubclass(getattr(loopml, name), LoopMLError), name


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'loopml' has no attribute 'nope'"):
        loopml.nope  # noqa: B018


def test_import_is_lazy(tmp_path: Path) -> None:
    # `import loopml` (and the CLI module) stay light: the store and pandas load on first use.
    # loopml.client, which the CLI's commands load, leaves SciPy and torch to the calls that need them
    # (scipy.stats once came in through monitor.windows and cost every command about a second)
    code = (
        "import sys, loopml, loopml.cli; "
        "print(sorted(m for m in ('sqlalchemy', 'pandas', 'alembic', 'torch') if m in sys.modules)); "
        "import loopml.client; "
        "print(sorted(m for m in ('scipy', 'scipy.stats', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.splitlines() == ["[]", "[]"], out.stdout


def test_documented_models_calls_are_callables_that_submodule_imports_do_not_replace() -> None:
    """``loopml.models.export(...)`` and ``loopml.models.quantize(...)`` (README, docs) call the functions,
    even after the modules behind them have been imported (an import binds a submodule's name on its package)."""
    code = (
        "import importlib, loopml.models as m\n"
        "for name in ('exporting', 'quantization', 'registry', 'variants', 'runtime'):\n"
        "    importlib.import_module('loopml.models.' + name)\n"
        "from loopml.models.registry import export\n"
        "from loopml.models.variants import quantize\n"
        "assert m.export is export and m.quantize is quantize, (m.export, m.quantize)\n"
        "import loopml\n"
        "assert loopml.models.export is export and loopml.models.quantize is quantize\n"
        "from loopml.models import export as e, quantize as q\n"
        "assert (e, q) == (export, quantize) and {'export', 'quantize'} <= set(m.__all__)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
