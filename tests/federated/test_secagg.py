"""loopml.federated.fit with secure_aggregation=True: Flower's SecAgg+ gives plain FedAvg's model, tracked alike.

Two federations run here on the local engine (the same apps in this process), the same but for
the aggregation: one on SecAgg+, one on plain FedAvg. Every refusal happens before any engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.deps import need

need("flwr", extra="federated")
need("opacus", extra="federated")

import loopml
import loopml.federated as lf
from loopml.data import load
from loopml.errors import ArgumentError
from loopml.federated import secagg
from loopml.tracking import api
from tests.federated._models import TinyNet

SETTINGS = {"clients": 3, "rounds": 2, "lr": 0.1, "momentum": 0.9, "seed": 5, "progress": False, "engine": "local"}


@pytest.fixture(scope="module")
def digits() -> loopml.data.Dataset:
    return load("digits")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, digits: loopml.data.Dataset
         ) -> tuple[lf.FederatedResult, lf.FederatedResult, str]:
    uri = f"sqlite:///{tmp_path_factory.mktemp('secagg') / 'loopml.db'}"
    torch.manual_seed(0)
    secure = lf.fit(TinyNet(), digits, secure_aggregation=True, experiment="fed-secagg", tracking_uri=uri, **SETTINGS)
    torch.manual_seed(0)
    plain = lf.fit(TinyNet(), digits, experiment="fed-plain", tracking_uri=uri, **SETTINGS)
    return secure, plain, uri


def test_a_secure_federation_learns_and_is_tracked_like_a_plain_one(runs: tuple[lf.FederatedResult, lf.FederatedResult, str]
                                                                    ) -> None:
    secure, _, uri = runs
    h = secure.history
    assert list(h["round"]) == [0, 1, 2]
    # chance is ~0.1; 2 rounds of SGD with momentum over 3 clients reach 0.80 (measured)
    assert h["central_accuracy"].iloc[0] < 0.25 and h["central_accuracy"].iloc[-1] > 0.6, h
    assert list(h["clients_ok"].iloc[1:]) == [3, 3] and list(h["clients_failed"].iloc[1:]) == [0, 0]
    assert not h["kept_previous"].iloc[1:].any()
    assert h["clients_accuracy"].iloc[-1] > 0.6  # the clients' own evaluation comes back through the legacy format

    run = api.get_run(secure.run_id, tracking_uri=uri)
    assert run.status == "FINISHED"
    assert run.params["secure_aggregation"] == "True"
    assert run.params["secagg.num_shares"] == "3" and run.params["secagg.reconstruction_threshold"] == "2"
    assert secure.lineage["secure_aggregation"]["protocol"] == "secagg+"
    children = [r for r in api.runs("fed-secagg", tracking_uri=uri).itertuples() if r.parent_id == secure.run_id]
    assert len(children) == 3  # each client's metrics still reach its child run: SecAgg+ masks only the weights
    for child in children:
        assert api.get_run(child.run_id, tracking_uri=uri).history("train_loss").steps.tolist() == [1, 2]


def test_secure_aggregation_gives_plain_fedavgs_model_within_its_quantization(
        runs: tuple[lf.FederatedResult, lf.FederatedResult, str]) -> None:
    secure, plain, uri = runs
    assert api.get_run(plain.run_id, tracking_uri=uri).params["secure_aggregation"] == "False"
    params = api.get_run(secure.run_id, tracking_uri=uri).params
    clip, levels, max_weight = (float(params["secagg.clipping_range"]), int(params["secagg.quantization_range"]),
                                float(params["secagg.max_weight"]))
    # SecAgg+ clips each weight x (examples / max_weight) to +-clipping_range and rounds it
    # stochastically to one of quantization_range levels: one round's aggregate is off by at
    # most clients x (2 clipping_range / quantization_range) / sum of (examples / max_weight),
    # here 3 x 16 / 2**22 / 2.7 = 4.2e-6 (measured: 3.1e-6 after one round). After two rounds
    # the error is the second round's plus the first's carried through the second round's
    # training: measured 1.0 to 1.5 bounds over 7 runs with SGD (with Adam, which rescales
    # tiny gradients, up to 4), so 3 bounds; the rounding is unseeded (Flower's numpy global).
    examples = [size - round(size * 0.1) for size in secure.partitions.sizes]  # less apps' local held-out 10%
    bound = len(examples) * 2 * clip / levels / sum(n / max_weight for n in examples)
    worst = max(float((secure.model.state_dict()[k] - v).abs().max()) for k, v in plain.model.state_dict().items())
    assert worst < 3 * bound, (worst, bound)
    np.testing.assert_allclose(secure.history["central_loss"], plain.history["central_loss"], atol=1e-4)


# -- refused before any engine starts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"clients": 2}, "at least 3 clients"),
        ({"clients": 4, "fraction": 0.5}, "at least 3 clients a round"),
        ({"clients": 4, "privacy": lf.DP(epsilon=4.0, mechanism="central")}, "cannot be combined with central DP"),
    ],
)
def test_what_secure_aggregation_cannot_do_is_refused_first(digits: loopml.data.Dataset, kwargs: dict, words: str,
                                                            tmp_path: Path) -> None:
    with pytest.raises(ArgumentError) as info:
        lf.fit(TinyNet(), digits, rounds=1, secure_aggregation=True, progress=False, workdir=tmp_path, **kwargs)
    assert words in str(info.value)
    assert not list(tmp_path.iterdir())  # nothing was started or written


def test_the_protocol_grows_with_the_federation() -> None:
    small, large = secagg.protocol(3, 400), secagg.protocol(100, 50)
    assert (small.num_shares, small.reconstruction_threshold, small.max_weight) == (3, 2, 400.0)
    # O(log n) neighbours, odd, a majority to reconstruct (Bell et al. 2020)
    assert (large.num_shares, large.reconstruction_threshold) == (15, 8)
    with pytest.raises(ArgumentError, match="at least 3"):
        secagg.protocol(2, 10)
