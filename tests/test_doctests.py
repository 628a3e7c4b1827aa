"""The examples in loopml's docstrings run, and say what really happens.

Every module of ``src/loopml`` with a ``>>>`` example is collected and run by
:mod:`doctest` (ELLIPSIS and NORMALIZE_WHITESPACE on). Each module runs in its own
working directory, on its own copy of one small store (``LOOPML_HOME``), with
these names at hand besides the module's own globals -- the names the examples
leave undefined, as a reader would have them after a first training run:

- ``torch``, ``np`` (NumPy), ``loopml``
- ``parts``: ``loopml.data.split(loopml.data.load("digits"), val=0.15, test=0.15, seed=0)``
- ``x_train, y_train, x_val, y_val, x_test, y_test``: its tensors; ``x`` is ``x_test``
- ``model``: a :class:`loopml.models.nets.DigitsCNN` trained 5
  epochs on ``parts`` (each docstring gets its own copy)
- ``run_id``: the run that trained it, in experiment ``digits``, which holds its
  metrics and datasets; the model is registered from that run as ``digits/1``
  (formats ``pt2``, ``torch``, ``onnx``) and aliased ``production``.
- ``server_url``: a ``loopml server`` on an ephemeral 127.0.0.1 port over the
  module's store (started only for the modules whose examples use it).

An example that cannot run here in seconds on a CPU (a server that runs until
stopped, ``torchrun``) keeps ``# doctest: +SKIP``; SKIPPED names each such module
and why, and a test keeps that list from growing silently.
"""

from __future__ import annotations

import copy
import doctest
import importlib
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import loopml

from .deps import need

SRC = Path(loopml.__file__).resolve().parent

#: module -> why its remaining ``+SKIP`` examples cannot run in a test
SKIPPED: dict[str, str] = {
    "loopml.server.app": "serve() runs the tracking server until it is interrupted",
}


def _modules_with_examples() -> dict[str, Path]:
    """Module name -> source file, for every module whose source holds a ``>>>`` (found without importing)."""
    found = {}
    for file in sorted(SRC.rglob("*.py")):
        parts = file.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if ">>>" in file.read_text():
            found[name] = file
    return found


SOURCES = _modules_with_examples()
MODULES = sorted(SOURCES)
EXTRA_OF = {"fastapi": "server", "uvicorn": "server", "starlette": "server", "plotly": "server", "uvloop": "serve",
            "httptools": "serve", "onnx": "export", "onnxruntime": "export", "onnxscript": "export",
            "executorch": "edge", "torchao": "quantize", "sklearn": "data", "psycopg": "postgres"}

LISTENING = re.compile(r"loopml server listening on (http://127\.0\.0\.1:\d+)")


def _start_server(home: Path, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    """``loopml server --port 0`` on ``home``'s store; returns (process, url) once it listens."""
    env = {**os.environ, "LOOPML_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("LOOPML_SERVER_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "loopml", "server", "--port", "0"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)],  # type: ignore[union-attr]
                     daemon=True).start()
    seen = []
    while (line := lines.get(timeout=120)) is not None:
        seen.append(line)
        if match := LISTENING.search(line):
            return proc, match.group(1)
    proc.kill()
    raise AssertionError("loopml server exited before it listened:\n" + "".join(seen))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A store with a trained, registered digits model, and the names the examples use."""
    import numpy as np
    import torch

    from loopml import data
    from loopml.models.nets import DigitsCNN
    from loopml.tracking import api
    from loopml.train import Trainer

    for package in ("sklearn", "onnx", "onnxruntime", "onnxscript"):  # load("digits"); the onnx format
        need(package, extra=EXTRA_OF[package])
    home = tmp_path_factory.mktemp("doctest") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOPML_HOME", str(home))
        for var in ("LOOPML_TRACKING_URI", "LOOPML_TRACKING_TOKEN", "LOOPML_SERVER_TOKEN", "LOOPML_ARTIFACT_ROOT"):
            mp.delenv(var, raising=False)
        torch.manual_seed(0)
        parts = data.split(data.load("digits"), val=0.15, test=0.15, seed=0)
        model = DigitsCNN()
        with loopml.start_run(experiment="digits") as run:
            Trainer(model, metrics=["accuracy"], seed=0).fit(parts.train, val=parts.val, epochs=5, batch_size=64)
            v = loopml.register(model, "digits", input_example=parts.train.x[:8], class_names=list("0123456789"),
                                formats=("pt2", "torch", "onnx"))
        loopml.models.set_alias("digits", "production", v.version)
        api.close_all()
    model.eval()
    names = {
        "torch": torch, "np": np, "loopml": loopml, "parts": parts, "model": model, "run_id": run.id,
        "x_train": parts.train.x, "y_train": parts.train.y, "x_val": parts.val.x, "y_val": parts.val.y,
        "x_test": parts.test.x, "y_test": parts.test.y, "x": parts.test.x,
    }
    yield {"home": home, "names": names}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, base: dict[str, Any], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from loopml.tracking import api

    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "loopml":
            raise
        need(exc.name, extra=EXTRA_OF.get(exc.name.split(".")[0], "test"))  # skips here, fails on CI
        raise
    home = tmp_path / "home"
    shutil.copytree(base["home"], home)
    monkeypatch.setenv("LOOPML_HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    torch.set_num_threads(1)
    globs = {**base["names"], **vars(module)}
    server = None
    if "server_url" in SOURCES[name].read_text():
        server, globs["server_url"] = _start_server(home, work)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=flags)
    report: list[str] = []
    try:
        tests = finder.find(module, name, globs=globs)
        assert tests, f"{name} has '>>>' but doctest finds no example in it"
        for test in tests:  # each docstring gets its own copy of the model
            test.globs["model"] = copy.deepcopy(base["names"]["model"])
            runner.run(test, out=report.append)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        active = api.active_run()
        if active is not None:
            active.finish("FAILED")
        api.close_all()
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, "".join(report)
    assert attempted > 0


def test_skipped_examples_are_only_those_that_cannot_run() -> None:
    """``# doctest: +SKIP`` stays only in the modules of SKIPPED, each with its reason."""
    found = {}
    for name, file in SOURCES.items():
        count = len(re.findall(r"doctest:\s*\+SKIP", file.read_text()))
        if count:
            found[name] = count
    assert set(found) == set(SKIPPED), (
        f"modules with '+SKIP' examples: {sorted(found)}; listed in SKIPPED: {sorted(SKIPPED)}. "
        "Make the example run (tests/test_doctests.py lists the names at hand) or add the module with the reason."
    )
