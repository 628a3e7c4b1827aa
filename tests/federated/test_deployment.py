"""The deployment engine on 127.0.0.1: a real SuperLink and SuperNodes, a run end to end, failures, cleanup.

Each test that starts Flower costs its processes' start (a few seconds each on 2 cores); the app is
tests/federated/_toy_fed_app.py (no torch), 2 nodes and 1 round, no client-side evaluation.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from tests.deps import need

need("flwr", extra="federated")

from loopml.errors import ArgumentError, FederatedError
from loopml.federated.deployment import Deployment, alive, run_deployment, write_app

from ._toy_fed_app import FAILURE

ROOT = Path(__file__).resolve().parents[2]
TOY = "tests.federated._toy_fed_app"
# The Flower processes import the toy app from the repository and loopml from src/, whatever installed it.
ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)}
NODES = [{"partition-id": i, "num-partitions": 2} for i in range(2)]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("fed") / "app", serverapp=f"{TOY}:serverapp", clientapp=f"{TOY}:clientapp",
                     config={"out": "", "mode": "ok", "nodes": 2})


def _all_gone(pids: tuple[int, ...] | list[int]) -> list[int]:
    return [pid for pid in pids if alive(pid)]


def test_write_app_is_a_flower_app(tmp_path: Path) -> None:
    folder = write_app(tmp_path / "app", serverapp="pkg.mod:serverapp", clientapp="pkg.mod:clientapp",
                       config={"path": 'C:\\data "x"', "rate": 1e-05, "rounds": 3, "eval": False})
    config = tomllib.loads((folder / "pyproject.toml").read_text())
    assert config["tool"]["flwr"]["app"]["components"] == {"serverapp": "pkg.mod:serverapp",
                                                         "clientapp": "pkg.mod:clientapp"}
    assert config["tool"]["flwr"]["app"]["config"] == {"path": 'C:\\data "x"', "rate": 1e-05, "rounds": 3,
                                                       "eval": False}
    assert sorted(p.name for p in folder.iterdir()) == ["pyproject.toml"]  # no code: the components are installed

    with pytest.raises(ArgumentError, match=r"Argument serverapp should be a reference 'module:attr'"):
        write_app(tmp_path / "bad", serverapp="pkg.mod.serverapp", clientapp="pkg.mod:clientapp")
    with pytest.raises(ArgumentError, match=r"keys should be letters, digits"):
        write_app(tmp_path / "bad", serverapp="a:b", clientapp="a:c", config={"a b": 1})
    with pytest.raises(ArgumentError, match=r"config\['x'\] should be a str, int, float or bool, not list"):
        write_app(tmp_path / "bad", serverapp="a:b", clientapp="a:c", config={"x": [1]})  # type: ignore[dict-item]


def test_bad_arguments_fail_before_any_process_starts(app: Path, tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match=r"node_configs should be a non-empty list"):
        Deployment(node_configs=[], workdir=tmp_path)
    with pytest.raises(ArgumentError, match=r"cannot hold both ' and \""):
        Deployment(node_configs=[{"data-path": "it's \"here\""}], workdir=tmp_path)
    with pytest.raises(ArgumentError, match=r"timeout should be a number of seconds > 0"):
        run_deployment(app, node_configs=NODES, timeout=0, workdir=tmp_path)
    with pytest.raises(ArgumentError, match=r"does not declare: \['epochs'\].*write_app\(\.\.\., config=\.\.\.\)"):
        Deployment(node_configs=NODES, workdir=tmp_path).run(app, run_config={"epochs": 2})
    with pytest.raises(ArgumentError, match=r"pyproject.toml.*does not exist"):
        run_deployment(tmp_path / "nowhere", node_configs=NODES, timeout=10, workdir=tmp_path)
    assert not (tmp_path / "superlink.log").exists()


@pytest.mark.slow
def test_a_failing_serverapp_then_a_run_past_its_time_limit(app: Path, tmp_path: Path) -> None:
    """One deployment (starting one costs seconds) runs both; a run that succeeds is loopml's own apps
    through fit(engine="deployment"), in tests/federated/test_federation.py."""
    lines = list[str]()
    fed = Deployment(node_configs=NODES, workdir=tmp_path / "deployment", timeout=300, env=ENV, log=lines.append)
    with fed:
        assert any("SuperLink ready" in line for line in lines)
        with pytest.raises(FederatedError, match=rf"ended as 'finished:failed': .*{FAILURE}") as failed:
            fed.run(app, run_config={"mode": "raise"}, timeout=300)
        assert "RuntimeError" in str(failed.value)  # the traceback's end, from the run's log

        # the deployment outlives a failed run; a run that passes its time limit stops everything
        with pytest.raises(FederatedError, match=r"the run did not finish within its time limit \(3 s\)"):
            fed.run(app, run_config={"mode": "hang"}, timeout=3)
    assert len(fed.stopped_pids) >= 5
    assert _all_gone(fed.stopped_pids) == []
    assert all(p.exited() is not None for p in fed.procs)


@pytest.mark.slow
def test_a_time_limit_passing_while_starting_stops_everything(app: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "deployment"
    with pytest.raises(FederatedError, match=r"(?s)within the time limit \(1 s\).*The last lines of") as failed:
        run_deployment(app, node_configs=NODES, timeout=1, workdir=workdir, env=ENV)
    assert "superlink.log" in str(failed.value)
    # whatever had started is gone: no process runs from the work folder's Flower home
    assert _flower_processes(workdir) == []


def _flower_processes(workdir: Path) -> list[str]:
    home = str(workdir / "flwr-home")
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if f"FLWR_HOME={home}".encode() in environ and ") Z" not in stat:
                found.append(entry.name)
    return found
