"""``loopml loop run``: one pass of monitor -> queue -> retrain -> compare -> promote, on a small tabular MLP.

The champion learns population A (three classes, eight features); the logged traffic comes
from population B (other means, far from A's), so the drift rule fires. The queue is
labelled from the ground truth with :func:`loopml.loop.labels.label`, as an annotator would.
One SQLite store for the module; the tests build on each other, in order. The lock is
tested on SQLite and PostgreSQL (processes racing for it), and two ``loopml loop run``
processes at once on PostgreSQL retrain once.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from loopml import data
from loopml.loop.labels import label
from loopml.loop.retrain import retrain
from loopml.loop.run import run
from loopml.loop.shadow import shadow
from loopml.models.nets import MLP
from loopml.models.registry import get_version, list_versions, register, set_alias
from loopml.monitor.alerts import add_rule
from loopml.store import TrackingStore
from loopml.store.labels import LabelStore
from loopml.store.loopevents import LoopEvents
from loopml.store.predictions import PredictionLog
from loopml.tracking import api
from loopml.train import Trainer

from .helpers import CLASSES, MEANS_A, MEANS_B, BreakTheStore, population

torch.set_num_threads(1)
NAME = "loopy"
TARGET = f"{NAME}@production"
SRC = str(Path(__file__).resolve().parents[2] / "src")


def champion(uri: str) -> data.Split:
    """Train, register (with its stored splits) and alias the champion ``loopy/1`` in the store ``uri``."""
    parts = data.split(population(500, MEANS_A, 0), val=0.15, test=0.15, seed=0)
    torch.manual_seed(0)
    model = MLP(8, 3, hidden=[16])
    with api.start_run(experiment="loopy", tracking_uri=uri) as r:
        Trainer(model, metrics=["accuracy"], seed=0).fit(parts.train, val=parts.val, epochs=6, batch_size=32)
        data.log_dataset(r, parts.test, role="test")
        register(model.eval(), NAME, input_example=parts.train.x[:8], formats=("torch",), run=r, class_names=CLASSES)
    set_alias(NAME, "production", 1, tracking_uri=uri)
    return parts


def log_traffic(uri: str, version: int, n: int, seed: int, prefix: str) -> dict[str, str]:
    """``n`` one-row requests of population B answered by ``version``, written as the server writes its log;
    returns the ground truth by request id."""
    from loopml.models.registry import load_model

    model = load_model(f"{NAME}/{version}", tracking_uri=uri)
    ds = population(n, MEANS_B, seed)
    x, y = ds.x.numpy(), ds.y.numpy()
    probs = model.predict_proba(x)
    now = time.time()
    records, truth = [], {}
    for i in range(n):
        rid = f"{prefix}{i:04d}"
        buf = io.BytesIO()
        np.save(buf, x[i : i + 1])
        p = [float(v) for v in probs[i]]
        out = {"request_id": rid, "status": "ok", "prediction": CLASSES[int(np.argmax(p))], "probabilities": p}
        records.append({"request_id": rid, "model": NAME, "version": version, "created_at": now - 30 + i * 0.01,
                        "status": "ok", "rows": 1, "latency_ms": 1.0, "ood_score": None, "inputs": buf.getvalue(),
                        "outputs": json.dumps(out)})
        truth[rid] = CLASSES[int(y[i])]
    PredictionLog(api.backend_for(uri)).insert_many(records)
    return truth


@dataclass
class Site:
    uri: str
    root: Path
    parts: data.Split
    truth: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> TrackingStore:
        backend = api.backend_for(self.uri)
        assert isinstance(backend, TrackingStore)
        return backend

    def versions(self) -> list[int]:
        return sorted(v.version for v in list_versions(NAME, tracking_uri=self.uri))

    def production(self) -> int:
        return get_version(TARGET, tracking_uri=self.uri).version


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("looprun")
    uri = f"sqlite:///{(tmp / 'loopml.db').as_posix()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOPML_HOME", str(tmp / "home"))
        mp.setenv("LOOPML_ARTIFACT_ROOT", str(tmp / "artifacts"))
        api.backend_for(uri)  # this URI's store, its artifacts under tmp, for the whole module
    parts = champion(uri)
    add_rule(TARGET, "drift", metric="drift", above=0.0, tracking_uri=uri)
    site = Site(uri, tmp / "artifacts", parts)
    site.truth.update(log_traffic(uri, 1, 200, seed=1, prefix="b"))
    try:
        yield site
    finally:
        api.close_all()


def steps(report: object) -> dict[str, str]:
    return {s.step: s.status for s in report.steps}  # type: ignore[attr-defined]


OPTS = dict(queue_size=150, label_budget=150, epochs=15)


def label_open_items(site: Site) -> int:
    items = LabelStore(site.db).items(NAME, status="open", limit=None)
    for it in items:
        label(it["request_id"], site.truth[it["request_id"]], row=it["row"], annotator="oracle", store=site.db)
    return len(items)


def test_an_alert_leads_to_a_queue(site: Site) -> None:
    report = run(TARGET, **OPTS, tracking_uri=site.uri)
    assert steps(report) == {"monitor": "done", "queue": "done", "retrain": "skipped", "compare": "skipped",
                             "promote": "skipped"}
    monitor, queue = report.step("monitor"), report.step("queue")
    assert monitor is not None and queue is not None
    alerts = monitor.details["alerts"]
    assert [a["rule"] for a in alerts] == ["drift"] and monitor.details["values"]["drift"] > 0
    assert queue.cause["alerts"] == alerts, "the queue's cause is the alert (its id and rule)"
    assert sum(queue.details["added"].values()) == 150 and queue.details["added"]["audit"] == 15
    assert "no agreed label" in report.step("retrain").why  # type: ignore[union-attr]
    history = LoopEvents(site.db).events(TARGET)
    assert [(e["step"], e["status"]) for e in history][-6:] == [
        ("run", "done"), ("monitor", "done"), ("queue", "done"), ("retrain", "skipped"), ("compare", "skipped"),
        ("promote", "skipped")]
    run_row = next(e for e in history if e["id"] == report.run_event)
    assert run_row["step"] == "run" and run_row["status"] == "done" and run_row["details"]["steps"]["queue"] == "done"


def test_labels_lead_to_retrain_compare_and_promote(site: Site) -> None:
    assert label_open_items(site) == 150
    held = run(TARGET, **OPTS, promote=False, tracking_uri=site.uri)
    assert steps(held) == {"monitor": "done", "queue": "skipped", "retrain": "done", "compare": "done",
                           "promote": "skipped"}, [s.why for s in held.steps]
    # the drift is flagged again, but the 150 items asked for this week are the whole budget
    assert "label budget spent: 150 items" in held.step("queue").why  # type: ignore[union-attr]
    assert held.challenger == f"{NAME}/2" and site.versions() == [1, 2] and site.production() == 1
    cause = held.step("retrain").cause  # type: ignore[union-attr]
    assert cause["labels"] == 150 and cause["new_labels"] == 150 and cause["alerts"], cause
    challenger = get_version(f"{NAME}/2", tracking_uri=site.uri)
    assert challenger.lineage["cause"]["alerts"] == cause["alerts"], "the challenger knows the alert that caused it"
    assert challenger.lineage["labels"] == cause["labels_fingerprint"]
    # the 15 audit rows are never trained on: they join the comparison's recent set with 30% of the other 135
    assert site.db.get_dataset(challenger.lineage["recent"])["n_rows"] == 15 + int(0.3 * 135)
    assert held.step("compare").details["decision"] == "promote"  # type: ignore[union-attr]
    assert "--no-promote" in held.step("promote").why  # type: ignore[union-attr]

    # no cooldown: still no second challenger from the same labels; the stored comparison is acted on
    again = run(TARGET, **OPTS, cooldown=0, tracking_uri=site.uri)
    assert steps(again)["retrain"] == "skipped" and "no new information" in again.step("retrain").why  # type: ignore[union-attr]
    assert steps(again)["compare"] == "skipped" and steps(again)["promote"] == "done"
    assert again.promoted == f"{NAME}/2" and site.production() == 2 and site.versions() == [1, 2]

    # nothing new: only skips (the monitor's cycle apart), nothing registered, the alias where it was
    quiet = run(TARGET, **OPTS, cooldown=0, tracking_uri=site.uri)
    assert steps(quiet) == {"monitor": "done", "queue": "skipped", "retrain": "skipped", "compare": "skipped",
                            "promote": "skipped"}
    assert site.versions() == [1, 2] and site.production() == 2


def test_the_cooldown_and_a_comparison_that_says_keep(site: Site) -> None:
    site.truth.update(log_traffic(site.uri, 2, 60, seed=2, prefix="c"))
    for rid in [r for r in site.truth if r.startswith("c")][:40]:
        label(rid, site.truth[rid], row=0, annotator="oracle", store=site.db)
    cooling = run(TARGET, **OPTS, cooldown="6h", tracking_uri=site.uri)
    why = cooling.step("retrain").why  # type: ignore[union-attr]
    assert steps(cooling)["retrain"] == "skipped" and why.startswith("cooldown: loopy was last retrained") and "6h" in why
    keep = run(TARGET, **OPTS, cooldown=0, tracking_uri=site.uri)
    assert steps(keep)["retrain"] == "done" and keep.challenger == f"{NAME}/3"
    assert keep.step("compare").details["decision"] == "keep"  # type: ignore[union-attr]
    assert steps(keep)["promote"] == "skipped" and "decided keep" in keep.step("promote").why  # type: ignore[union-attr]
    assert site.production() == 2, "no promotion without a passing comparison"


def test_the_wirings_labels_by_default_and_disagreements_to_the_queue(site: Site) -> None:
    _, report = retrain(f"{NAME}/2", epochs=1, register=False, tracking_uri=site.uri)
    assert report.labels == 40, "no labels given: the version's agreed labels"
    report_ = shadow(TARGET, f"{NAME}/3", to_queue=True, tracking_uri=site.uri)
    queued = LabelStore(site.db).items(NAME, status=None, limit=None, reasons=("disagreement",))
    assert report_.queued == len(queued) == len(report_.disagreements) > 0
    assert {(q["request_id"], q["row"]) for q in queued} == {(d.request_id, d.row) for d in report_.disagreements}
    assert shadow(TARGET, f"{NAME}/3", to_queue=True, tracking_uri=site.uri).queued == 0, "nothing queued twice"
    from loopml.errors import ArgumentError

    torch.manual_seed(1)
    bare = register(MLP(8, 3, hidden=[16]).eval(), "bare", input_example=site.parts.train.x[:4], formats=("torch",),
                    class_names=CLASSES, tracking_uri=site.uri)
    with pytest.raises(ArgumentError, match="bare/1 has no agreed label"):
        retrain(bare.ref, tracking_uri=site.uri)


def test_a_failing_step_is_recorded_and_moves_nothing(site: Site) -> None:
    for rid in [r for r in site.truth if r.startswith("c")][40:]:
        label(rid, site.truth[rid], row=0, annotator="oracle", store=site.db)
    before = site.versions()
    try:
        report = run(TARGET, **{**OPTS, "epochs": 2}, cooldown=0, min_labels=10, callbacks=[BreakTheStore(site.root)],
                     tracking_uri=site.uri)
    finally:
        site.root.unlink()
        site.root.with_name("artifacts-away").rename(site.root)
    assert report.status == "failed" and steps(report)["retrain"] == "failed"
    assert steps(report)["compare"] == "skipped" and steps(report)["promote"] == "skipped"
    assert site.versions() == before and site.production() == 2
    events = LoopEvents(site.db)
    failed = [e for e in events.events(TARGET, step="retrain") if e["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["id"] == report.step("retrain").event, "recorded once"  # type: ignore[union-attr]
    assert "Not a directory" in failed[0]["details"]["error"]
    assert "nothing was registered" in report.step("retrain").why  # type: ignore[union-attr]
    assert next(e for e in events.events(TARGET, step="run") if e["id"] == report.run_event)["status"] == "failed"


def test_the_commands(site: Site) -> None:
    from typer.testing import CliRunner

    from loopml.cli import app

    cli = CliRunner()
    out = cli.invoke(app, ["loop", "run", TARGET, "--no-promote", "--cooldown", "6h", "--json", "--store", site.uri])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert got["status"] == "done" and [s["step"] for s in got["steps"]] == ["monitor", "queue", "retrain", "compare",
                                                                            "promote"]
    assert got["steps"][0]["cause"]["command"].startswith("loopml loop run loopy@production")
    out = cli.invoke(app, ["loop", "run", TARGET, "--store", site.uri], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "cooldown: loopy was last retrained" in out.output, out.output
    out = cli.invoke(app, ["loop", "history", TARGET, "--last", "3", "--json", "--store", site.uri])
    rows = json.loads(out.output)
    assert out.exit_code == 0 and [r["step"] for r in rows] == ["promote", "compare", "retrain"], "newest first"
    out = cli.invoke(app, ["loop", "history", NAME, "--store", site.uri], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "newest first" in out.output and "run" in out.output
    for args, message in (
        (["--label-budget", "-1"], "Argument label_budget should be a whole number >= 0"),
        (["--cooldown", "5x"], "Argument cooldown should be a duration"),
        (["--every", "0s"], "Argument --every should be a positive duration"),
        (["--budget-period", "soon"], "Argument budget_period should be a duration"),
        (["--queue-size", "0"], "Argument queue_size should be a whole number >= 1"),
    ):
        out = cli.invoke(app, ["loop", "run", TARGET, *args, "--store", site.uri])
        assert out.exit_code == 2 and message in out.output, (args, out.output)
    out = cli.invoke(app, ["loop", "run", f"{NAME}/1", "--store", site.uri])
    assert out.exit_code == 2 and "Argument target should be NAME@ALIAS" in out.output, out.output
    out = cli.invoke(app, ["loop", "run", f"{NAME}@nosuch", "--store", site.uri])
    assert out.exit_code == 2 and "no alias 'nosuch'" in out.output, out.output


# -- the lock, on SQLite and PostgreSQL ---------------------------------------------------------------


def test_the_lock(store: TrackingStore) -> None:
    events = LoopEvents(store)
    first, held = events.acquire("m@p", "m", 1, ttl=60, holder={"host": "elsewhere", "pid": 1})
    assert first is not None and held is None
    second, held = events.acquire("m@p", "m", 1, ttl=60, holder={"host": "elsewhere", "pid": 2})
    assert second is None and held is not None and held["id"] == first and held["details"]["pid"] == 1
    assert events.acquire("other@p", "other", 1, ttl=60, holder={})[0] is not None, "one lock per target"
    assert events.refresh(first)
    # not refreshed for longer than its ttl: its run was killed; the next run takes over and says so
    later = time.time() + 120
    third, _ = events.acquire("m@p", "m", 1, ttl=60, holder={"host": "elsewhere", "pid": 3}, now=later)
    assert third is not None
    old = next(e for e in events.events("m@p", step="run") if e["id"] == first)
    assert old["status"] == "failed" and "not refreshed" in old["details"]["error"]
    assert not events.refresh(first) and not events.release(first, "done"), "a lost lock stays lost"
    # a holder on this machine whose process has ended is taken over at once
    import socket

    from loopml.loop.run import _this_host_dead

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert events.release(third, "done")
    fourth, _ = events.acquire("m@p", "m", 1, ttl=600, holder={"host": socket.gethostname(), "pid": int(gone.stdout)})
    fifth, _ = events.acquire("m@p", "m", 1, ttl=600, holder={"host": socket.gethostname(), "pid": os.getpid()},
                              stale=_this_host_dead)
    assert fourth is not None and fifth is not None
    sixth, held = events.acquire("m@p", "m", 1, ttl=600, holder={}, stale=_this_host_dead)
    assert sixth is None and held is not None and held["id"] == fifth, "this process is alive: its lock holds"


_RACE = """
import json, sys
from loopml.store import TrackingStore
from loopml.store.loopevents import LoopEvents
store = TrackingStore(sys.argv[1], artifact_root=sys.argv[2])
got, held = LoopEvents(store).acquire("race@production", "race", 1, ttl=600, holder={"host": "test", "pid": int(sys.argv[3])})
print(json.dumps({"got": got, "held": None if held is None else held["id"]}))
"""


def test_processes_racing_for_the_lock_one_wins(db_uri: str, tmp_path: Path) -> None:
    TrackingStore(db_uri, artifact_root=tmp_path / "artifacts").close()  # the schema, before the race
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, db_uri, str(tmp_path / "artifacts"), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(o) for o, _ in outs]
    winners = [r["got"] for r in results if r["got"] is not None]
    assert len(winners) == 1 and all(r["held"] == winners[0] for r in results if r["got"] is None), results


@pytest.mark.postgres
@pytest.mark.parametrize("db_uri", ["postgres"], indirect=True)  # two processes importing torch: ~20 s, run once
def test_two_runs_at_once_retrain_once(db_uri: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "LOOPML_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
           "LOOPML_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOPML_ARTIFACT_ROOT", env["LOOPML_ARTIFACT_ROOT"])
        try:
            champion(db_uri)
            truth = log_traffic(db_uri, 1, 40, seed=3, prefix="d")
            db = api.backend_for(db_uri)
            assert isinstance(db, TrackingStore)
            for rid, y in truth.items():
                label(rid, y, row=0, annotator="oracle", store=db)
            cmd = [sys.executable, "-m", "loopml", "loop", "run", TARGET, "--no-monitor", "--cooldown", "0", "--epochs",
                   "1", "--json", "--store", db_uri]
            procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2)]
            outs = [p.communicate(timeout=240) for p in procs]
            assert [p.returncode for p in procs] == [0, 0], outs
            reports = [json.loads(o) for o, _ in outs]
            retrained = [r for r in reports if any(s["step"] == "retrain" and s["status"] == "done" for s in r["steps"])]
            assert len(retrained) == 1, reports
            other = next(r for r in reports if r is not retrained[0])
            # it found the lock held, or came after the first had finished and found nothing new to retrain on
            assert other["locked_by"] is not None or other["steps"][2]["status"] == "skipped", other
            assert sorted(v.version for v in list_versions(NAME, tracking_uri=db_uri)) == [1, 2]
            done = [e for e in LoopEvents(db).events(TARGET, step="retrain") if e["status"] == "done"]
            assert len(done) == 1
        finally:
            api.close_all()
