#!/usr/bin/env python
"""Run MLflow's own REST tracking tests against ``loopml server`` (or against MLflow's server).

MLflow's code never enters this repository: point ``--mlflow-tests`` at a checkout of
MLflow made elsewhere, at the pinned client's tag, e.g. on a machine with network::

    git clone --depth 1 --branch v3.17.2 https://github.com/mlflow/mlflow /tmp/mlflow-src
    python scripts/mlflow-peer-tests.py --mlflow-tests /tmp/mlflow-src --server original --server loopml

Everything this writes (a pytest plugin, a pytest.ini, the servers' stores, the JUnit
report) lives in a temporary folder. The plugin replaces exactly one thing in
``tests/tracking/test_rest_tracking.py``: its ``mlflow_client`` fixture, which starts
MLflow's server, now starts

- ``loopml``: ``loopml server --port 0 --store sqlite:///<tmp>/loopml.db`` (a fresh
  server and database per test, as MLflow's fixture does);
- ``mlflow``: ``mlflow server`` on a fresh SQLite database per test (proxied artifacts,
  as a team would run it);
- ``original``: nothing is replaced: MLflow's own fixture (its FastAPI app in a thread).

MLflow's file store is not run (loopml has none; ``[file]`` items are deselected), and
tests that do not use ``mlflow_client`` are deselected for ``loopml``/``mlflow``: they
exercise MLflow's internals or start their own MLflow server, so they say nothing about
the server under test. With two ``--server`` values the summary lists the tests that pass
against the first and fail against the second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

TEST_FILE = Path("tests") / "tracking" / "test_rest_tracking.py"
SERVERS = ("loopml", "mlflow", "original")

# The plugin is written into the temporary folder and loaded with ``-p``; it runs inside
# the interpreter that has the pinned mlflow client, so it imports only what that has.
PLUGIN = r'''
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

SERVER = os.environ["LOOPML_PEER_SERVER"]
LOOPML_CMD = json.loads(os.environ["LOOPML_PEER_LOOPML_CMD"])
TARGET = "test_rest_tracking.py"
START_TIMEOUT_S = 60.0


def _lines(stream, out):
    for line in stream:
        out.put(line)
    out.put(None)


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def _loopml_server(tmp_path):
    env = {
        **os.environ,
        "LOOPML_HOME": str(tmp_path / "loopml-home"),
        "LOOPML_ARTIFACT_ROOT": str(tmp_path / "loopml-artifacts"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("LOOPML_SERVER_TOKEN", None)
    store = f"sqlite:///{tmp_path / 'loopml.db'}"
    proc = subprocess.Popen(
        [*LOOPML_CMD, "server", "--port", "0", "--store", store],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen = []
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"loopml server did not start in {START_TIMEOUT_S} s: {''.join(seen)}")
            if line is None:
                raise RuntimeError(f"loopml server exited with {proc.wait()}: {''.join(seen)}")
            seen.append(line)
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                break
        yield match.group(1)
    finally:
        _stop(proc)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _mlflow_server(tmp_path):
    import requests

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--artifacts-destination", str(tmp_path / "mlartifacts")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:  # readiness poll: mlflow server prints nothing parseable when it listens
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}")
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer /health in {START_TIMEOUT_S} s")
            time.sleep(0.1)
        yield url
    finally:
        _stop(proc)


def _make_fixture():
    @pytest.fixture
    def mlflow_client(store_type, tmp_path):
        """Replaces MLflow's fixture: an MlflowClient on a fresh server of the kind asked for."""
        from mlflow import MlflowClient

        start = _loopml_server if SERVER == "loopml" else _mlflow_server
        with start(tmp_path) as url:
            yield MlflowClient(url)

    return mlflow_client


def pytest_collectstart(collector):
    # Before the module's fixtures are parsed: swap the one fixture that starts the server.
    if SERVER == "original" or not isinstance(collector, pytest.Module) or collector.path.name != TARGET:
        return
    module = collector.obj
    if not hasattr(module, "mlflow_client"):
        raise pytest.UsageError(f"{collector.path} has no mlflow_client fixture to replace; is it MLflow's file?")
    module.mlflow_client = _make_fixture()


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("store_type") == "file":
            drop.append(item)
        elif SERVER != "original" and "mlflow_client" not in getattr(item, "fixturenames", ()):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
'''

PYTEST_INI = """[pytest]
# MLflow's own pytest settings (addopts, plugins, warning filters) are left out on purpose.
addopts =
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run MLflow's tests/tracking/test_rest_tracking.py against loopml server.",
        epilog="Example: python scripts/mlflow-peer-tests.py --mlflow-tests /tmp/mlflow-src "
        "--server original --server loopml",
    )
    parser.add_argument("--mlflow-tests", required=True, type=Path,
                        help="An MLflow checkout (the folder holding tests/tracking/test_rest_tracking.py).")
    parser.add_argument("--server", action="append", choices=SERVERS,
                        help="Server to test (repeatable; default loopml). Two values: a comparison.")
    parser.add_argument("--python", default=sys.executable,
                        help="Interpreter with the pinned mlflow client and pytest (default: this one).")
    parser.add_argument("--loopml", default=None,
                        help="Command that runs loopml (default: '<python> -m loopml').")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression, to run a subset.")
    parser.add_argument("--timeout", type=int, default=120, help="Seconds per test (pytest-timeout, if installed).")
    parser.add_argument("--json", type=Path, default=None, help="Write each test's outcome per server to this file.")
    args = parser.parse_args(argv)
    test_file = args.mlflow_tests / TEST_FILE
    if not test_file.is_file():
        parser.error(f"--mlflow-tests {args.mlflow_tests} holds no {TEST_FILE}; pass the root of an MLflow "
                     "checkout, e.g. git clone --depth 1 --branch v3.17.2 https://github.com/mlflow/mlflow")
    if args.timeout <= 0:
        parser.error(f"--timeout should be a positive number of seconds, got {args.timeout}")
    args.server = args.server or ["loopml"]
    if len(args.server) > 2:
        parser.error("--server should be given once or twice (the second is compared with the first)")
    return args


def has_module(python: str, name: str) -> bool:
    return subprocess.run([python, "-c", f"import {name}"], capture_output=True).returncode == 0


def run_one(args: argparse.Namespace, server: str, work: Path) -> dict[str, tuple[str, str]]:
    """Run the file against one server; returns {test id: (outcome, first line of the failure)}."""
    plugin_dir = work / "plugin"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "loopml_peer_plugin.py").write_text(PLUGIN)
    (work / "pytest.ini").write_text(PYTEST_INI)
    junit = work / f"junit-{server}.xml"
    root = args.mlflow_tests.resolve()
    loopml_cmd = args.loopml.split() if args.loopml else [args.python, "-m", "loopml"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(root), os.environ.get("PYTHONPATH", "")]),
        "LOOPML_PEER_SERVER": server,
        "LOOPML_PEER_LOOPML_CMD": json.dumps(loopml_cmd),
        # A client error answered as 5xx must fail the test at once, not after 7 retries.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "TMPDIR": str(work),
    }
    cmd = [args.python, "-m", "pytest", str(root / TEST_FILE), "-c", str(work / "pytest.ini"),
           "--rootdir", str(root), "--confcutdir", str(root), "-p", "no:cacheprovider",
           "-p", "loopml_peer_plugin", "-q", "-rN", "--junitxml", str(junit),
           "--basetemp", str(work / f"pytest-{server}")]
    if has_module(args.python, "pytest_timeout"):
        cmd += ["--timeout", str(args.timeout)]
    if args.keyword:
        cmd += ["-k", args.keyword]
    print(f"== {server}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, env=env, cwd=work)
    return read_junit(junit)


def read_junit(path: Path) -> dict[str, tuple[str, str]]:
    results: dict[str, tuple[str, str]] = {}
    if not path.is_file():
        return results
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "?")
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                if tag == "skipped" and "xfail" in (node.get("type") or ""):
                    outcome = "xfailed"
                message = (node.get("message") or "").strip().splitlines()[0][:200] if node.get("message") else ""
                break
        results[name] = (outcome, message)
    return results


def summarize(server: str, results: dict[str, tuple[str, str]]) -> None:
    counts: dict[str, int] = {}
    for outcome, _ in results.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    print(f"\n== {server}: {len(results)} tests: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    for name, (outcome, message) in sorted(results.items()):
        if outcome in ("failed", "error"):
            print(f"  {outcome:6} {name}: {message}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    all_results: dict[str, dict[str, tuple[str, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="mlflow-peer-") as tmp:
        for server in args.server:
            work = Path(tmp) / server
            work.mkdir()
            all_results[server] = run_one(args, server, work)
    for server, results in all_results.items():
        summarize(server, results)
    if len(args.server) == 2:
        base, other = args.server
        regressions = sorted(
            name for name, (outcome, _) in all_results[base].items()
            # a test deselected for one server (it does not use the server fixture) is not compared
            if outcome == "passed" and name in all_results[other] and all_results[other][name][0] != "passed"
        )
        print(f"\n== pass against {base}, not against {other}: {len(regressions)}")
        for name in regressions:
            outcome, message = all_results[other][name]
            print(f"  {name}: {outcome}: {message}")
    if args.json:
        args.json.write_text(json.dumps(all_results, indent=1, sort_keys=True))
    failed = any(o in ("failed", "error") for o, _ in all_results[args.server[-1]].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
