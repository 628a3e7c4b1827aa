"""``loopml federated run|partition`` from a shell: the partition shown, one short federation tracked and registered, bad input.

One federation runs here (3 clients, 2 rounds of digits; Ray's start makes it ~15-40 s on
2 shared cores); every other case stops before any engine starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.deps import need

need("flwr", extra="federated")
need("opacus", extra="federated")

import loopml  # noqa: E402
from loopml.cli import app  # noqa: E402
from loopml.cli_federated import show_run  # noqa: E402
from loopml.data import load  # noqa: E402
from loopml.data.split import split  # noqa: E402
from loopml.federated.partitions import partition  # noqa: E402
from loopml.federated.privacy import central_epsilon  # noqa: E402
from loopml.models.nets import DigitsCNN  # noqa: E402
from loopml.models.registry import register, registry_for  # noqa: E402
from loopml.tracking import api  # noqa: E402

WIDE = {"COLUMNS": "200"}
CNN = "loopml.models.nets:DigitsCNN"


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=WIDE)
    return result.exit_code, result.stdout, result.stderr


def test_partition_shows_the_rows_fit_would_deal_and_draws_them(tmp_path: Path) -> None:
    png = tmp_path / "parts.png"
    code, out, err = _cli("federated", "partition", "--data", "digits", "--clients", "5", "--partition", "dirichlet",
                          "--alpha", "0.5", "--seed", "3", "--png", str(png))
    assert code == 0, out + err
    # what fit deals: the rows left after holding out 20% for the server, with the same seed
    rows = split(load("digits"), val=0.0, test=0.2, seed=3).train
    want = partition(rows, 5, "dirichlet", alpha=0.5, seed=3)
    assert want.text() in out
    assert png.read_bytes().startswith(b"\x89PNG")

    code, out, err = _cli("federated", "partition", "--data", "digits", "--clients", "5", "--partition", "dirichlet",
                          "--alpha", "0.5", "--seed", "3", "--eval-fraction", "0", "--json")
    assert code == 0, out + err
    assert json.loads(out) == json.loads(json.dumps(partition(load("digits"), 5, "dirichlet", alpha=0.5, seed=3).to_dict()))


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], str]]:
    """``fedcnn/1`` registered, then trained further by a federation from the shell (registered as ``fedcnn/2``)."""
    tmp = tmp_path_factory.mktemp("fedcli")
    uri = f"sqlite:///{tmp / 'loopml.db'}"
    # a module's fixture runs before the per-test LOOPML_HOME: the store's files go to this one's folder
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOPML_HOME", str(tmp / "home"))
        env.setenv("LOOPML_ARTIFACT_ROOT", str(tmp / "artifacts"))
        torch.manual_seed(0)
        x = load("digits").x[:8]
        register(DigitsCNN(channels=4), "fedcnn", input_example=x, formats=("torch",), tracking_uri=uri)
        code, out, err = _cli("federated", "run", "fedcnn/1", "--data", "digits", "--clients", "3", "--rounds", "2",
                              "--lr", "0.05", "--experiment", "fed-cli", "--seed", "1", "--epsilon", "50", "--delta", "1e-3",
                              "--max-grad-norm", "5", "--central-dp", "--engine", "local", "--store", uri,
                              "--json")
        assert code == 0, out + err
        yield json.loads(out), uri


def test_a_run_from_a_version_is_tracked_with_child_runs(federation: tuple[dict[str, Any], str]) -> None:
    doc, uri = federation
    assert doc["clients"] == 3 and doc["rounds"] == 2 and doc["strategy"] == "fedavg" and doc["failures"] == 0
    assert [r["round"] for r in doc["history"]] == [0, 1, 2]
    assert [r.get("clients_ok") for r in doc["history"][1:]] == [3, 3]
    run = api.get_run(doc["run_id"], tracking_uri=uri)
    # central DP (Flower's server-side clipping and noise): every client answers every round (sample rate 1),
    # so the epsilon after round r is the RDP accountant's for r steps at the run's noise multiplier
    noise = float(run.params["privacy.noise_multiplier"])
    expected = [central_epsilon(noise, 1.0, r, 1e-3) for r in (1, 2)]
    np.testing.assert_allclose(run.history("epsilon").values[1:], expected, rtol=1e-9)
    assert doc["privacy"]["mechanism"] == "central" and doc["privacy"]["delta"] == 1e-3
    assert doc["privacy"]["epsilon"] == pytest.approx(expected[-1]) and expected[-1] <= 50.0
    assert run.tags["privacy.mechanism"] == "central" and run.params["privacy.max_grad_norm"] == "5.0"
    assert run.status == "FINISHED" and run.experiment == "fed-cli" and run.tags["loopml.federated"] == "true"
    assert run.params["clients"] == "3" and run.params["seed"] == "1"
    assert run.history("central_accuracy").steps.tolist() == [0, 1, 2]
    children = [r for r in api.runs("fed-cli", tracking_uri=uri).itertuples() if r.parent_id == doc["run_id"]]
    assert len(children) == 3

    # the federation started from fedcnn/1's weights: round 0 is that version on the server's held-out rows
    held_out = split(load("digits"), val=0.0, test=0.2, seed=1).test
    assert held_out is not None
    start = loopml.load_model("fedcnn/1", format="torch", tracking_uri=uri)
    accuracy = float(np.mean(start(held_out.x.numpy()).argmax(axis=1) == held_out.y.numpy()))
    assert doc["history"][0]["central_accuracy"] == pytest.approx(accuracy)

    # the partition command, with the run's options, shows the partition the run trained on
    code, out, err = _cli("federated", "partition", "--data", "digits", "--clients", "3", "--seed", "1", "--json")
    assert code == 0, out + err
    assert json.loads(out) == doc["partition"]


def test_the_result_is_the_versions_next_version_with_its_parent(federation: tuple[dict[str, Any], str]) -> None:
    doc, uri = federation
    assert doc["version"] == "fedcnn/2"
    version = registry_for(uri).get_version("fedcnn", 2)
    assert version.parent_version == 1 and version.run_id == doc["run_id"]
    assert version.lineage["parent"] == "fedcnn/1"
    assert version.lineage["federated"]["rounds"] == 2 and version.lineage["federated"]["clients"] == 3
    assert version.tags["privacy.mechanism"] == "central"
    assert version.model_spec is not None and version.model_spec["init_args"] == {"channels": 4}


def test_the_summary_shows_rounds_figures_run_and_version(federation: tuple[dict[str, Any], str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    doc, _ = federation
    show_run(doc)
    out = capsys.readouterr().out
    assert doc["partition_text"] in out
    assert "central accuracy" in out and "clients ok" in out
    assert f"run {doc['run_id']} (experiment fed-cli)" in out and "registered fedcnn/2" in out
    assert "central" in out and "client failures: 0" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", CNN, "--partition", "random"], "should be one of iid, dirichlet"),
        (["--model", CNN, "--partition", "dirichlet", "--alpha", "0"], "alpha"),
        (["--model", CNN, "--epsilon", "-1"], "epsilon"),
        (["--model", CNN, "--strategy", "fedsgd"], "fedavg, fedprox, fedadam"),
        (["--model", CNN, "--central-dp"], "--central-dp needs --epsilon"),
        ([], "Give the model to train"),
        (["nope@production"], "nope"),
        (["--model", "nowhere.nets:Net"], "--model 'nowhere.nets:Net' could not be imported"),
        (["--model", "DigitsCNN"], "package.module:Class"),
        (["--model", CNN, "--init-args", "[4]"], "--init-args should be a JSON object"),
        (["--model", CNN, "--init-args", "{\"width\": 4}"], "--init-args do not fit loopml.models.nets:DigitsCNN"),
        (["--model", CNN, "--init-args", "{\"classes\": 3}"], "one score per class"),  # built, then refused by fit
    ],
)
def test_bad_input_exits_2_with_one_clear_line(args: list[str], message: str, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'loopml.db'}"
    code, out, err = _cli("federated", "run", *args, "--data", "digits", "--clients", "3", "--rounds", "1",
                          "--store", uri)
    assert code == 2, out + err
    assert message in err and err.startswith("error: ") and "Traceback" not in out + err
    assert not api.runs(tracking_uri=uri).shape[0]  # nothing was started


def test_missing_data_and_bad_partition_options_exit_2() -> None:
    code, out, err = _cli("federated", "run", "--model", CNN)
    assert code == 2 and "Missing option '--data'" in err and "Traceback" not in out + err
    code, out, err = _cli("federated", "partition", "--data", "digits", "--eval-fraction", "1")
    assert code == 2 and "--eval-fraction should be a fraction" in err
    code, out, err = _cli("federated", "partition", "--data", "digits", "--partition", "dirichlet", "--alpha", "-1")
    assert code == 2 and "alpha" in err and "Traceback" not in out + err
    code, out, err = _cli("federated", "partition", "--data", "nowhere.npz")
    assert code == 2 and "nowhere.npz" in err
