"""loopml.federated.fit: it learns, it is tracked and registered, faults are counted, on each engine.

One federation runs on Flower's simulation engine (Ray: its start costs seconds), and again on the
local engine, which must give the same model; the others run on the local engine (the same apps in
this process), and one on the deployment engine. Every bad setting fails before any engine starts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.deps import need

need("flwr", extra="federated")
need("opacus", extra="federated")

import loopml  # noqa: E402
import loopml.federated as lf  # noqa: E402
from loopml.data import load  # noqa: E402
from loopml.errors import ArgumentError, ArgumentTypeError, FederatedError  # noqa: E402
from loopml.tracking import api  # noqa: E402
from tests.federated._models import TinyNet  # noqa: E402


@pytest.fixture(scope="module")
def digits() -> loopml.data.Dataset:
    return load("digits")


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory, digits: loopml.data.Dataset) -> tuple[lf.FederatedResult, str]:
    tmp = tmp_path_factory.mktemp("fed")
    uri = f"sqlite:///{tmp / 'loopml.db'}"
    with _own_home(tmp):
        torch.manual_seed(0)
        result = lf.fit(TinyNet(), digits, clients=4, partition="dirichlet", alpha=1.0, rounds=4, optimizer="adam",
                        lr=0.01, experiment="fed-digits", register="fed-digits", progress=False, tracking_uri=uri,
                        workers=1)  # one Ray worker: the suite's other worker keeps its core
    return result, uri


@contextmanager
def _own_home(tmp: Path) -> Iterator[None]:
    """A module's fixture runs before the per-test LOOPML_HOME: its store's files go to its own folder."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOPML_HOME", str(tmp / "home"))
        env.setenv("LOOPML_ARTIFACT_ROOT", str(tmp / "artifacts"))
        yield


def test_a_federation_learns_and_every_round_is_tracked(learned: tuple[lf.FederatedResult, str]) -> None:
    result, uri = learned
    h = result.history
    assert list(h["round"]) == [0, 1, 2, 3, 4]
    first, last = float(h["central_accuracy"].iloc[0]), float(h["central_accuracy"].iloc[-1])
    # an untrained net is at chance (~0.1); 4 rounds of Adam over 4 clients' 1,437 rows reach 0.79 (measured)
    assert first < 0.25 and last > 0.6, h
    assert list(h["clients_ok"].iloc[1:]) == [4, 4, 4, 4] and list(h["clients_failed"].iloc[1:]) == [0, 0, 0, 0]
    assert h["clients_accuracy"].iloc[-1] > 0.6  # the clients' own held-out rows agree with the central split
    assert result.epsilon is None and result.failures == 0

    run = api.get_run(result.run_id, tracking_uri=uri)
    assert run.status == "FINISHED"
    assert run.params["clients"] == "4" and run.params["partition"] == "dirichlet" and run.params["strategy"] == "fedavg"
    assert run.params["privacy.mechanism"] == "none" and run.tags["loopml.federated"] == "true"
    history = run.history("central_accuracy")
    assert history.steps.tolist() == [0, 1, 2, 3, 4]
    assert history.values[-1] == pytest.approx(last)
    artifacts = {a.path for a in run.artifacts("federated")}
    assert {"federated/partition.json", "federated/partition.png"} <= artifacts

    children = [r for r in api.runs("fed-digits", tracking_uri=uri).itertuples() if r.parent_id == result.run_id]
    assert len(children) == 4
    sizes = []
    for child in children:
        child_run = api.get_run(child.run_id, tracking_uri=uri)
        assert child_run.status == "FINISHED"
        assert child_run.history("train_loss").steps.tolist() == [1, 2, 3, 4]
        sizes.append(int(child_run.params["rows"]))
    assert sorted(sizes) == sorted(len(i) for i in result.partitions.indices)
    assert sum(sizes) == len(result._train) if result._train is not None else False


def test_the_global_model_is_registered_with_its_lineage_and_serves(learned: tuple[lf.FederatedResult, str],
                                                                  digits: loopml.data.Dataset) -> None:
    result, uri = learned
    version = result.version
    assert version is not None and version.ref == "fed-digits/1"
    fed = version.lineage["federated"]
    assert fed["rounds"] == 4 and fed["clients"] == 4 and fed["strategy"] == "fedavg" and fed["privacy"] is None
    assert fed["partition"]["how"] == "dirichlet"
    assert version.tags["privacy.mechanism"] == "none"
    assert "torch" in version.files and "pt2" in version.files
    loaded = loopml.load_model("fed-digits/1", format="torch", tracking_uri=uri)
    x = digits.x[:16]
    with torch.no_grad():
        expected = result.model(x).numpy()
    np.testing.assert_allclose(loaded(x.numpy()), expected, rtol=1e-5, atol=1e-6)


def test_the_local_engine_gives_the_simulation_engines_model(learned: tuple[lf.FederatedResult, str],
                                                             digits: loopml.data.Dataset, tmp_path: Path) -> None:
    result, _ = learned
    torch.manual_seed(0)
    local = lf.fit(TinyNet(), digits, clients=4, partition="dirichlet", alpha=1.0, rounds=4, optimizer="adam", lr=0.01,
                   experiment="fed-local", progress=False, tracking_uri=f"sqlite:///{tmp_path / 'loopml.db'}",
                   engine="local")
    # the same clients train the same way from the same seeds; only the order in which Flower sums
    # their answers differs (it samples node ids at random), which moves the weights by float rounding
    for (name, a), b in zip(result.model.state_dict().items(), local.model.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=name)
    np.testing.assert_allclose(local.history["central_accuracy"], result.history["central_accuracy"], atol=1e-9)


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, digits: loopml.data.Dataset) -> tuple[lf.FederatedResult, str]:
    tmp = tmp_path_factory.mktemp("fedp")
    uri = f"sqlite:///{tmp / 'loopml.db'}"
    with _own_home(tmp):
        torch.manual_seed(0)
        result = lf.fit(TinyNet(), digits, clients=4, rounds=3, lr=0.1, privacy=lf.DP(epsilon=8.0, delta=1e-5),
                        dropout=0.3, min_clients=2, client_eval=False, seed=3, experiment="fed-private",
                        progress=False, tracking_uri=uri, engine="local")
    return result, uri


def _dropped(seed: int, rounds: int, clients: int, p: float) -> dict[int, set[int]]:
    """Which clients drop out of which round: the rule of loopml.federated.apps (seeded per client and round)."""
    return {r: {c for c in range(clients) if random.Random(seed * 1_000_003 + r * 1009 + c).random() < p}
            for r in range(1, rounds + 1)}


def test_clients_that_drop_out_are_counted_and_the_rounds_go_on(private: tuple[lf.FederatedResult, str]) -> None:
    result, uri = private
    dropped = _dropped(3, 3, 4, 0.3)
    assert sum(map(len, dropped.values())) > 0, "the seed should make some client drop out"
    h = result.history.set_index("round")
    for rnd, gone in dropped.items():
        assert h.loc[rnd, "clients_failed"] == len(gone)
        assert h.loc[rnd, "clients_ok"] == 4 - len(gone)
        assert bool(h.loc[rnd, "kept_previous"]) == (4 - len(gone) < 2)
    assert result.failures == sum(map(len, dropped.values()))
    run = api.get_run(result.run_id, tracking_uri=uri)
    assert run.history("clients_failed").values.tolist() == [float(len(dropped[r])) for r in (1, 2, 3)]
    assert run.metrics["clients_failed_total"] == result.failures


def test_dp_sgd_spends_at_most_the_target_epsilon_and_records_it(private: tuple[lf.FederatedResult, str]) -> None:
    result, uri = private
    assert result.mechanism == "dp-sgd" and result.delta == 1e-5
    # the noise is planned for every round; a client that dropped out spent less, none spent more
    assert result.epsilon is not None and 0 < result.epsilon <= 8.0 + 1e-6
    run = api.get_run(result.run_id, tracking_uri=uri)
    assert run.params["privacy.epsilon"] == "8.0" and run.params["privacy.mechanism"] == "dp-sgd"
    assert float(run.tags["privacy.epsilon"]) == pytest.approx(result.epsilon, rel=1e-3)
    assert run.tags["privacy.delta"] == "1e-05"
    eps = run.history("epsilon").values.tolist()
    assert eps == sorted(eps) and eps[-1] == pytest.approx(result.epsilon)  # spent privacy only grows
    version = result.register("fed-private")
    assert version.tags["privacy.mechanism"] == "dp-sgd"
    assert float(version.tags["privacy.epsilon"]) == pytest.approx(result.epsilon, rel=1e-3)
    assert version.lineage["federated"]["privacy"]["privacy.epsilon_spent"] == pytest.approx(result.epsilon)


# -- bad settings fail before any engine starts ------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"partition": "random"}, ArgumentError, "iid, dirichlet"),
        ({"strategy": "fedsgd"}, ArgumentError, "fedavg, fedprox, fedadam"),
        ({"engine": "cloud"}, ArgumentError, "simulation, local, deployment"),
        ({"rounds": 0}, ArgumentError, "rounds should be an integer >= 1"),
        ({"fraction": 0.0}, ArgumentError, "fraction should be a number > 0"),
        ({"lr": -1.0}, ArgumentError, "lr should be a number > 0"),
        ({"dropout": 1.5}, ArgumentError, "dropout should be a number"),
        ({"min_clients": 5, "clients": 4}, ArgumentError, "min_clients (5)"),
        ({"privacy": {"epsilon": 1.0}}, ArgumentTypeError, "loopml.federated.DP"),
        ({"eval_fraction": 1.0}, ArgumentError, "eval_fraction"),
    ],
)
def test_bad_settings_are_refused_with_what_to_do(digits: loopml.data.Dataset, kwargs: dict, error: type,
                                                  words: str, tmp_path: Path) -> None:
    kwargs = {"clients": 4, **kwargs}
    with pytest.raises(error, match=None) as info:
        lf.fit(TinyNet(), digits, rounds=kwargs.pop("rounds", 1), progress=False, workdir=tmp_path, **kwargs)
    assert words in str(info.value)
    assert not list(tmp_path.iterdir())  # nothing was started or written


def test_a_model_that_does_not_take_the_data_fails_before_any_engine(digits: loopml.data.Dataset, tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match=r"model\(x\[:2\]\)"):
        lf.fit(TinyNet(n_in=30), digits, clients=2, rounds=1, progress=False, workdir=tmp_path)
    with pytest.raises(ArgumentError, match="one score per class"):
        lf.fit(TinyNet(n_out=3), digits, clients=2, rounds=1, progress=False, workdir=tmp_path)


def test_the_deployment_engine_needs_a_model_it_can_rebuild(digits: loopml.data.Dataset, tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ArgumentError, match="keep_init_args"):
        lf.fit(model, digits, clients=2, rounds=1, engine="deployment", progress=False, workdir=tmp_path)


def test_data_must_be_a_dataset_or_a_pair(tmp_path: Path) -> None:
    with pytest.raises(ArgumentTypeError, match="loopml.data.Dataset"):
        lf.fit(TinyNet(), "digits", clients=2, rounds=1, progress=False, workdir=tmp_path)
    pair = (np.random.default_rng(0).random((40, 64)).astype(np.float32), np.arange(40) % 10)
    with pytest.raises(ArgumentError, match="clients"):  # more clients than rows: the partition refuses
        lf.fit(TinyNet(), pair, clients=100, rounds=1, progress=False, workdir=tmp_path)


def test_a_federation_no_client_answers_fails_clearly_and_the_run_says_so(digits: loopml.data.Dataset, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'loopml.db'}"
    with pytest.raises(FederatedError, match=r"No round of the federation had enough answers.*client 0 dropped out of round 1"):
        lf.fit(TinyNet(), digits, clients=2, rounds=1, dropout=1.0, client_eval=False, experiment="fed-fail",
               progress=False, tracking_uri=uri, engine="local")
    (run,) = api.runs("fed-fail", filter="tags.loopml.federated = 'true'", tracking_uri=uri).itertuples()
    assert run.status == "FAILED"


@pytest.mark.slow
def test_the_deployment_engine_runs_the_same_apps_on_a_local_superlink(digits: loopml.data.Dataset, tmp_path: Path) -> None:
    """A SuperLink and one SuperNode per client on 127.0.0.1 (about 25 s): the same ClientApp and ServerApp."""
    uri = f"sqlite:///{tmp_path / 'loopml.db'}"
    result = lf.fit(TinyNet(), digits, clients=2, rounds=1, engine="deployment", optimizer="adam", client_eval=False,
                    experiment="fed-deploy", progress=False, tracking_uri=uri, workdir=tmp_path)
    h = result.history
    assert list(h["clients_ok"].iloc[1:]) == [2] and h["central_accuracy"].iloc[-1] > h["central_accuracy"].iloc[0] + 0.3
    run = api.get_run(result.run_id, tracking_uri=uri)
    assert run.params["engine"] == "deployment" and run.status == "FINISHED"
    children = [r for r in api.runs("fed-deploy", tracking_uri=uri).itertuples() if r.parent_id == result.run_id]
    assert len(children) == 2
    assert not list(tmp_path.glob("loopml-fed-*"))  # the job folder (partitions, logs) is removed afterwards
