"""Retrain, compare, promote, rollback, shadow: a small tabular MLP on two populations of Gaussian blobs.

The champion learns population A (three classes, eight features). New traffic comes from
population B (other class means, far from A's): the champion answers it poorly. Labels of B
plus a replay of A's stored training rows make a challenger that is better on B (the held-out
labels) and not worse on A's stored test split; a challenger trained on shuffled labels is
refused. One store for the module, versions registered in order (the tests build on each other).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: E402
from scipy.stats import binomtest

from loopml import data  # noqa: E402
from loopml.errors import ArgumentError, Conflict, DataError, NotFound, StoreError  # noqa: E402
from loopml.loop.compare import compare, comparison_of, mcnemar  # noqa: E402
from loopml.loop.promote import promote, rollback  # noqa: E402
from loopml.loop.retrain import retrain  # noqa: E402
from loopml.loop.shadow import shadow  # noqa: E402
from loopml.models.nets import MLP  # noqa: E402
from loopml.models.registry import alias_history, get_version, register, set_alias  # noqa: E402
from loopml.monitor.versions import fit_ood  # noqa: E402
from loopml.store.loopevents import LoopEvents  # noqa: E402
from loopml.store.predictions import PredictionLog  # noqa: E402
from loopml.tracking import api  # noqa: E402
from loopml.train import Trainer  # noqa: E402

from .helpers import MEANS_A, MEANS_B, BreakTheStore, population

torch.set_num_threads(1)
NAME = "blobs"


@dataclass
class Store:
    uri: str
    root: Path
    parts: data.Split


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    tmp = tmp_path_factory.mktemp("loop")
    uri = f"sqlite:///{(tmp / 'loopml.db').as_posix()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOPML_HOME", str(tmp / "home"))
        mp.setenv("LOOPML_ARTIFACT_ROOT", str(tmp / "artifacts"))
        api.backend_for(uri)  # the store of this URI, with its artifacts under tmp, for the whole module
    parts = data.split(population(600, MEANS_A, 0), val=0.15, test=0.15, seed=0)
    torch.manual_seed(0)
    model = MLP(8, 3, hidden=[16])
    with api.start_run(experiment="blobs", tracking_uri=uri) as run:
        Trainer(model, metrics=["accuracy"], seed=0).fit(parts.train, val=parts.val, epochs=8, batch_size=32)
        data.log_dataset(run, parts.test, role="test")
        v = register(model.eval(), NAME, input_example=parts.train.x[:8], formats=("torch",), run=run)
    fit_ood(v.ref, model=model, train=parts.train, val=parts.val, detectors=("mahalanobis",), target_false_abstain=0.05,
            tracking_uri=uri)
    set_alias(NAME, "production", 1, tracking_uri=uri)
    try:
        yield Store(uri, tmp / "artifacts", parts)
    finally:
        api.close_all()


@pytest.fixture(scope="module")
def labels() -> data.Dataset:
    return population(150, MEANS_B, 1)


@pytest.fixture(scope="module")
def challenger(site: Store, labels: data.Dataset) -> tuple[object, object]:
    return retrain(f"{NAME}@production", labels, epochs=15, cause={"alert": 7}, tracking_uri=site.uri)


def test_retrain_registers_a_child_with_its_lineage(site: Store, challenger: tuple, labels: data.Dataset) -> None:
    version, report = challenger
    assert version.ref == f"{NAME}/2" and version.parent_version == 1
    lineage = version.lineage
    assert lineage["parent"] == f"{NAME}/1" and lineage["cause"] == {"alert": 7}
    assert lineage["labels"] == labels.fingerprint == report.labels_fingerprint
    assert lineage["datasets"]["replay"] == lineage["replay"] == report.replay_fingerprint
    assert lineage["datasets"]["recent"] == lineage["recent"]
    assert report.labels == 150 and report.recent == 45 and report.replay == len(site.parts.train)
    assert version.signature == get_version(f"{NAME}/1", tracking_uri=site.uri).signature
    assert "drift_reference" in version.files, "the drift reference is fitted again on the new training set"
    gate = version.files["ood_gate"].details
    assert report.ood_gate and gate["detectors"] == ["mahalanobis"] and gate["requested_false_abstain"] == 0.05
    assert gate["train_fingerprint"] == version.lineage["datasets"]["train"], "fitted on the challenger's training set"
    events = LoopEvents(api.backend_for(site.uri)).events(f"{NAME}@production", step="retrain")
    assert events[-1]["status"] == "done" and events[-1]["cause"] == {"alert": 7} and events[-1]["version"] == 2


def test_mcnemar_against_scipy() -> None:
    rng = np.random.default_rng(0)
    a, z = rng.random(200) < 0.7, rng.random(200) < 0.8
    b, c, p = mcnemar(a, z, alternative="better")
    assert (b, c) == (int((a & ~z).sum()), int((~a & z).sum()))
    assert p == binomtest(c, b + c, 0.5, alternative="greater").pvalue
    assert mcnemar(a, z, alternative="worse")[2] == binomtest(b, b + c, 0.5, alternative="greater").pvalue
    assert mcnemar(a, a, alternative="worse") == (0, 0, 1.0)


def test_a_better_challenger_is_promoted_and_rolled_back(site: Store, challenger: tuple) -> None:
    result = compare(f"{NAME}@production", f"{NAME}/2", tracking_uri=site.uri)
    assert result.decision == "promote", result.reasons
    recent, test = result.recent, result.test
    assert recent is not None and test is not None
    assert recent.rows == 45 and test.rows == len(site.parts.test)
    assert recent.challenger_accuracy - recent.champion_accuracy >= 0.3
    assert recent.p_value == binomtest(recent.challenger_only, recent.champion_only + recent.challenger_only, 0.5,
                                       alternative="greater").pvalue
    lo, hi = recent.challenger_interval
    assert lo < recent.challenger_accuracy < hi or recent.challenger_accuracy == 1.0
    assert comparison_of(f"{NAME}/2", tracking_uri=site.uri) == result, "stored with the challenger, read back"

    event = promote(f"{NAME}/2", tracking_uri=site.uri)
    assert (event.from_version, event.to_version) == (1, 2)
    with pytest.raises(Conflict, match="already points at blobs/2"):
        promote(result, tracking_uri=site.uri)
    back = rollback(NAME, "production", cause={"command": "test"}, tracking_uri=site.uri)
    assert (back.from_version, back.to_version) == (2, 1)
    history = [(e.from_version, e.to_version) for e in alias_history(NAME, "production", tracking_uri=site.uri)]
    assert history == [(None, 1), (1, 2), (2, 1)]
    steps = [(e["step"], e["status"]) for e in LoopEvents(api.backend_for(site.uri)).events(model=NAME)]
    assert ("promote", "done") in steps and ("promote", "skipped") in steps and steps[-1] == ("rollback", "done")


def test_rollback_without_a_previous_version_is_an_error(site: Store) -> None:
    set_alias(NAME, "staging", 1, tracking_uri=site.uri)
    with pytest.raises(NotFound, match="no previous version to roll back to.*loopml models alias blobs staging"):
        rollback(NAME, "staging", tracking_uri=site.uri)


def test_a_worse_challenger_is_refused(site: Store, labels: data.Dataset) -> None:
    shuffled = data.Dataset(labels.x, np.random.default_rng(5).permutation(labels.y.numpy()), class_names=["a", "b", "c"])
    worse, report = retrain(f"{NAME}/1", shuffled, replay=0.0, from_scratch=True, epochs=3, tracking_uri=site.uri)
    assert worse.lineage["from_scratch"] is True and report.replay == 0 and worse.parent_version == 1
    result = compare(f"{NAME}/1", worse, test=site.parts.test, recent=population(200, MEANS_B, 9), tracking_uri=site.uri)
    assert result.decision == "keep"
    assert result.test is not None and not result.test.passed and result.test.p_value < 0.01
    assert any(r.startswith("test: worse") for r in result.reasons)
    with pytest.raises(Conflict, match=r"Not promoting blobs/\d+ to @production: its comparison .* decided keep: test: worse"):
        promote(result, tracking_uri=site.uri)


def test_shadow_scores_the_logged_traffic(site: Store, challenger: tuple) -> None:
    from loopml.models.registry import load_model

    champion = load_model(f"{NAME}/1", tracking_uri=site.uri)
    traffic = population(40, MEANS_B, 11).x.numpy()
    records = []
    for i in range(0, 40, 4):  # ten requests of four rows
        x = traffic[i : i + 4]
        buf = io.BytesIO()
        np.save(buf, x)
        answers = [{"prediction": "abc"[k], "probabilities": [0.0, 0.0, 0.0]} for k in champion.predict(x)]
        records.append({"request_id": f"r{i}", "model": NAME, "version": 1, "created_at": 1000.0 + i, "status": "ok",
                        "rows": 4, "latency_ms": 1.0, "ood_score": None, "inputs": buf.getvalue(),
                        "outputs": json.dumps({"results": answers})})
    PredictionLog(api.backend_for(site.uri)).insert_many(records)
    report = shadow(f"{NAME}/1", f"{NAME}/2", tracking_uri=site.uri)
    mine = load_model(f"{NAME}/2", tracking_uri=site.uri).predict(traffic)
    theirs = champion.predict(traffic)
    assert report.rows == 40 and report.requests == 10
    assert report.agreement == pytest.approx(float((mine == theirs).mean()))
    assert len(report.disagreements) == int((mine != theirs).sum()) > 0
    d = report.disagreements[0]
    row = int(d.request_id[1:]) + d.row
    assert (d.champion, d.challenger) == ("abc"[theirs[row]], "abc"[mine[row]])
    assert sum(c["disagree"] for c in report.per_class.values()) == len(report.disagreements)
    assert report.queue_items()[0]["reason"] == "disagreement"
    with pytest.raises(DataError, match="no logged inputs"):
        shadow(f"{NAME}/2", f"{NAME}/1", tracking_uri=site.uri)


def test_bad_input_is_refused_before_any_work(site: Store, labels: data.Dataset) -> None:
    ref = f"{NAME}/1"
    with pytest.raises(ArgumentError, match="at least 20 rows to retrain blobs/1 on; got 5.*min_labels"):
        retrain(ref, labels.subset(range(5)), tracking_uri=site.uri)
    with pytest.raises(ArgumentError, match=r"inputs of blobs/1's shape \(batch, 8\); they have shape \(batch, 5\)"):
        retrain(ref, (labels.x.numpy()[:, :5], labels.y.numpy()), tracking_uri=site.uri)
    with pytest.raises(ArgumentError, match=r"classes of blobs/1 \(0..2: \['a', 'b', 'c'\]\); got class index 3"):
        retrain(ref, (labels.x.numpy(), np.full(150, 3)), tracking_uri=site.uri)
    wrong_names = data.Dataset(labels.x, labels.y, class_names=["x", "y", "z"])
    with pytest.raises(ArgumentError, match=r"class names \['a', 'b', 'c'\]; got \['x', 'y', 'z'\]"):
        retrain(ref, wrong_names, tracking_uri=site.uri)
    with pytest.raises(ArgumentError, match="Argument replay should be"):
        retrain(ref, labels, replay=2.0, tracking_uri=site.uri)
    with pytest.raises(ArgumentError, match="Argument alpha should be"):
        compare(ref, f"{NAME}/2", alpha=0.7, tracking_uri=site.uri)
    versions_before = len(api.backend_for(site.uri).search_runs(filter=None, limit=1000))
    assert versions_before > 0


def test_a_challenger_with_another_signature_is_refused(site: Store) -> None:
    torch.manual_seed(0)
    other = MLP(8, 2, hidden=[4]).eval()
    v = register(other, NAME, input_example=site.parts.train.x[:4], formats=("torch",), tracking_uri=site.uri,
                 class_names=["a", "b"])
    with pytest.raises(Conflict, match="signatures differ in class_names"):
        compare(f"{NAME}/1", v.ref, tracking_uri=site.uri)
    with pytest.raises(Conflict, match="signatures differ"):
        shadow(f"{NAME}/1", v.ref, tracking_uri=site.uri)


def test_a_version_without_weights_or_stored_rows_says_what_to_pass(site: Store, labels: data.Dataset) -> None:
    torch.manual_seed(0)
    program_only = register(MLP(8, 3, hidden=[16]).eval(), "programs", input_example=site.parts.train.x[:4],
                            formats=("pt2",), class_names=["a", "b", "c"], tracking_uri=site.uri)
    with pytest.raises(ArgumentError, match="programs/1 has no 'torch' format .* register programs/1 with the 'torch' format"):
        retrain(program_only.ref, labels, tracking_uri=site.uri)
    no_rows = register(MLP(8, 3, hidden=[16]).eval(), "norows", input_example=site.parts.train.x[:4],
                       formats=("torch",), class_names=["a", "b", "c"], tracking_uri=site.uri)
    with pytest.raises(DataError, match="Replay needs norows/1's training rows.*replay_data=.*replay=0"):
        retrain(no_rows.ref, labels, tracking_uri=site.uri)
    trained, report = retrain(no_rows.ref, labels, replay=0.0, epochs=2, register=False, tracking_uri=site.uri)
    assert trained is None and report.replay == 0 and report.labels == 150


def test_the_store_failing_after_training_registers_nothing(site: Store, labels: data.Dataset) -> None:
    before = [v.version for v in api_versions(site)]
    try:
        with pytest.raises(StoreError, match="nothing was registered|failed"):
            retrain(f"{NAME}/1", labels, epochs=2, callbacks=[BreakTheStore(site.root)], tracking_uri=site.uri)
    finally:
        site.root.unlink()
        site.root.with_name("artifacts-away").rename(site.root)
    assert [v.version for v in api_versions(site)] == before
    last = LoopEvents(api.backend_for(site.uri)).events(model=NAME, step="retrain")[-1]
    assert last["status"] == "failed" and "error" in last["details"]


def api_versions(site: Store) -> list:
    from loopml.models.registry import list_versions

    return list_versions(NAME, tracking_uri=site.uri)



def test_the_commands(site: Store, labels: data.Dataset, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loopml.cli import app

    run = CliRunner()
    np.savez(tmp_path / "labels.npz", x=labels.x.numpy(), y=labels.y.numpy())
    np.savez(tmp_path / "few.npz", x=labels.x.numpy()[:5], y=labels.y.numpy()[:5])
    wide = {"COLUMNS": "250"}
    out = run.invoke(app, ["retrain", f"{NAME}@production", "--labels", str(tmp_path / "labels.npz"), "--epochs", "15",
                           "--promote-if-better", "--store", site.uri], env=wide)
    assert out.exit_code == 0, out.output
    new = max(v.version for v in api_versions(site))
    assert f"{NAME}/{new} registered, retrained from {NAME}/1 on 150 labels (45 held out)" in out.output
    assert "decision: promote" in out.output and f"{NAME}@production moved from 1 to {new}" in out.output
    lineage = get_version(f"{NAME}/{new}", tracking_uri=site.uri).lineage
    assert lineage["cause"]["command"].startswith("loopml retrain blobs@production --labels")

    out = run.invoke(app, ["compare", f"{NAME}/1", f"{NAME}/{new}", "--json", "--store", site.uri])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["decision"] == "promote"
    out = run.invoke(app, ["shadow", f"{NAME}/1", f"{NAME}/2", "--store", site.uri], env=wide)
    assert out.exit_code == 0 and "agreement" in out.output and "disagreements (first 10)" in out.output, out.output

    out = run.invoke(app, ["models", "rollback", f"{NAME}@production", "--store", site.uri])
    assert out.exit_code == 0 and f"{NAME}@production rolled back from {new} to 1" in out.output, out.output

    out = run.invoke(app, ["retrain", f"{NAME}@production", "--labels", str(tmp_path / "few.npz"), "--store", site.uri])
    assert out.exit_code == 2 and "error: Argument labels should hold at least 20 rows" in out.output, out.output
    out = run.invoke(app, ["models", "rollback", f"{NAME}@nosuch", "--store", site.uri])
    assert out.exit_code == 2 and "error: Model 'blobs' has no alias 'nosuch'" in out.output, out.output
