"""loopml.federated.privacy against Opacus and Flower called directly: noise, accounting, wrapping, bad input."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.deps import need

opacus = need("opacus", extra="federated")
need("flwr", extra="federated")

from flwr.app import ConfigRecord  # noqa: E402
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg  # noqa: E402

from loopml.errors import ArgumentError, ArgumentTypeError  # noqa: E402
from loopml.federated import DP  # noqa: E402
from loopml.federated.privacy import (  # noqa: E402
    Ledger,
    central_epsilon,
    central_noise,
    central_strategy,
    check_model,
    local_noise,
    make_private,
    poisson_rate,
    spent_epsilon,
)

torch.set_num_threads(1)
DELTA = 1e-5
# Opacus's get_noise_multiplier stops its binary search once the spent epsilon lies within
# epsilon_tolerance=0.01 *below* the target (it never returns a noise that overspends)
SEARCH_TOLERANCE = 0.01


def _data(rows: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 4, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _train(model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader[Any], epochs: int = 1) -> int:
    steps = 0
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()  # type: ignore[no-untyped-call]
            opt.step()
            steps += 1
    return steps


def test_dp_validates_and_logs() -> None:
    dp = DP(epsilon=8)
    assert (dp.epsilon, dp.delta, dp.max_grad_norm, dp.mechanism) == (8.0, 1e-5, 1.0, "dp-sgd")
    assert isinstance(dp.epsilon, float) and dp.unit == "row" and DP(1.0, mechanism="central").unit == "client"
    assert dp.to_dict() == {"privacy.epsilon": 8.0, "privacy.delta": 1e-5, "privacy.max_grad_norm": 1.0,
                            "privacy.mechanism": "dp-sgd"}
    with pytest.raises(AttributeError):
        dp.epsilon = 1.0


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"epsilon": 0}, ArgumentError, r"epsilon should be a finite number > 0, got 0"),
    ({"epsilon": -1.0}, ArgumentError, r"epsilon should be a finite number > 0"),
    ({"epsilon": math.inf}, ArgumentError, r"epsilon should be a finite number > 0, got inf"),
    ({"epsilon": math.nan}, ArgumentError, r"epsilon should be a finite number > 0, got nan"),
    ({"epsilon": "8"}, ArgumentTypeError, r"epsilon should be a number, got '8'"),
    ({"epsilon": True}, ArgumentTypeError, r"epsilon should be a number"),
    ({"epsilon": 8.0, "delta": 0.0}, ArgumentError, r"delta should be in \(0, 1\), got 0.0.*1e-5 is usual"),
    ({"epsilon": 8.0, "delta": 1.0}, ArgumentError, r"delta should be in \(0, 1\), got 1.0"),
    ({"epsilon": 8.0, "delta": math.nan}, ArgumentError, r"delta should be in \(0, 1\)"),
    ({"epsilon": 8.0, "max_grad_norm": 0.0}, ArgumentError, r"max_grad_norm should be a finite number > 0"),
    ({"epsilon": 8.0, "max_grad_norm": math.inf}, ArgumentError, r"max_grad_norm should be a finite number > 0"),
    ({"epsilon": 8.0, "mechanism": "local"}, ArgumentError, r"mechanism should be one of 'dp-sgd', 'central', got 'local'"),
])
def test_bad_dp_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        DP(**kwargs)


def test_local_noise_spends_the_target_epsilon_over_the_planned_steps() -> None:
    dp = DP(epsilon=2.0, delta=DELTA)
    rate, steps = poisson_rate(rows=600, batch_size=32), 3 * 19
    assert rate == 1 / 19
    sigma = local_noise(dp, sample_rate=rate, steps=steps)
    spent = spent_epsilon([(sigma, rate, steps)], DELTA)
    assert dp.epsilon - SEARCH_TOLERANCE <= spent <= dp.epsilon
    # fewer steps than planned spend less; more noise is needed for a smaller budget
    assert spent_epsilon([(sigma, rate, steps // 3)], DELTA) < spent
    assert local_noise(DP(epsilon=1.0), sample_rate=rate, steps=steps) > sigma


def test_unreachable_epsilon_says_what_to_change() -> None:
    with pytest.raises(ArgumentError, match=r"epsilon=0\.001 \(delta=1e-05\) cannot be reached over 1000 steps with "
                                            r"sample rate 1.*raise epsilon, or plan fewer steps"):
        local_noise(DP(epsilon=1e-3), sample_rate=1.0, steps=1000)
    with pytest.raises(ArgumentError, match=r"over 1000 rounds .*plan fewer rounds"):
        central_noise(DP(epsilon=1e-3, mechanism="central"), sample_rate=1.0, rounds=1000)


def test_spent_epsilon_over_two_rounds_equals_one_opacus_accountant() -> None:
    """Two rounds of our make_private + Ledger (through a Flower ConfigRecord) against one PrivacyEngine."""
    rate = poisson_rate(rows=64, batch_size=16)
    sigmas = (1.3, 0.9)  # a second round with other noise: the history must keep both entries
    # Opacus directly: one engine over both rounds, the noise changed between them; its accountant
    # hook counts the optimizer's steps itself
    model = _net()
    with pytest.warns(UserWarning, match="Secure RNG turned off"):  # make_private keeps this one quiet
        engine = opacus.PrivacyEngine(accountant="rdp")
    pm, po, pl = engine.make_private(module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                     data_loader=DataLoader(_data(), batch_size=16), noise_multiplier=sigmas[0],
                                     max_grad_norm=1.0, noise_generator=torch.Generator().manual_seed(0))
    assert pl.sample_rate == rate
    _train(pm, po, pl, epochs=2)
    po.noise_multiplier = sigmas[1]
    _train(pm, po, pl, epochs=1)
    expected = engine.get_epsilon(DELTA)
    # loopml: each round a fresh client (as in Flower), the ledger carried in a ConfigRecord
    state: dict[str, Any] = {}
    for rnd, (sigma, epochs) in enumerate(zip(sigmas, (2, 1))):
        model = _net()
        m, o, loader = make_private(model, torch.optim.SGD(model.parameters(), lr=0.1),
                                    DataLoader(_data(), batch_size=16), noise_multiplier=sigma,
                                    max_grad_norm=1.0, seed=rnd)
        steps = _train(m, o, loader, epochs=epochs)
        ledger = Ledger.from_record(dict(state))
        ledger.record(noise=sigma, sample_rate=loader.sample_rate, steps=steps)  # type: ignore[attr-defined]
        state = dict(ConfigRecord(ledger.to_record()))
    ledger = Ledger.from_record(state)
    assert ledger.history == [(1.3, rate, 8), (0.9, rate, 4)] and ledger.rounds == 2 and ledger.noise == 0.9
    assert ledger.epsilon(DELTA) == pytest.approx(expected, rel=1e-12)
    assert spent_epsilon(ledger.history, DELTA) == pytest.approx(expected, rel=1e-12)
    # the same mechanism in several rounds is merged into one entry, as Opacus's accountant does
    same = Ledger()
    for _ in range(3):
        same.record(noise=1.3, sample_rate=rate, steps=4)
    assert same.history == [(1.3, rate, 12)] and same.steps == 12 and same.rounds == 3
    assert same.epsilon(DELTA) == pytest.approx(spent_epsilon([(1.3, rate, 4)] * 3, DELTA), rel=1e-12)


def test_ledger_records() -> None:
    assert Ledger.from_record({}) == Ledger() and Ledger().noise is None and Ledger().epsilon(DELTA) == 0.0
    assert spent_epsilon([], DELTA) == 0.0 and spent_epsilon([(1.0, 0.1, 0)], DELTA) == 0.0
    with pytest.raises(ArgumentError, match=r"record should be what Ledger.to_record\(\) wrote"):
        Ledger.from_record({"noise": [1.0]})
    with pytest.raises(ArgumentError, match=r"lists of different lengths"):
        Ledger.from_record({"noise": [1.0], "sample_rate": [], "steps": [3], "rounds": 1})
    with pytest.raises(ArgumentError, match=r"sample_rate should be in \(0, 1\]"):
        Ledger().record(noise=1.0, sample_rate=2.0, steps=3)
    with pytest.raises(ArgumentError, match=r"history\[0\] noise_multiplier should be a finite number > 0"):
        spent_epsilon([(0.0, 0.1, 3)], DELTA)
    with pytest.raises(ArgumentError, match=r"history\[1\] should be \(noise_multiplier, sample_rate, steps\)"):
        spent_epsilon([(1.0, 0.1, 3), (1.0, 0.1)], DELTA)


def test_make_private_trains_the_original_module_reproducibly() -> None:
    def run(seed: int, global_seed: int) -> dict[str, torch.Tensor]:
        model = _net()
        keys = list(model.state_dict())
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.eval()  # make_private puts it in train mode itself
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Opacus's "Secure RNG turned off" is left out: loopml documents it
            m, o, loader = make_private(model, torch.optim.SGD(model.parameters(), lr=0.5),
                                        DataLoader(_data(), batch_size=16), noise_multiplier=1.0,
                                        max_grad_norm=1.0, seed=seed)
        assert m is not model and isinstance(m, opacus.GradSampleModule)
        assert isinstance(o, opacus.optimizers.DPOptimizer) and o.noise_multiplier == 1.0 and o.max_grad_norm == 1.0
        assert isinstance(loader, opacus.data_loader.DPDataLoader)
        torch.manual_seed(global_seed)  # the seeded noise and sampling must not depend on the global generator
        _train(m, o, loader, epochs=2)
        after = model.state_dict()
        assert list(after) == keys
        assert all(not torch.equal(before[k], after[k]) for k in keys)
        return {k: v.clone() for k, v in after.items()}

    first = run(seed=3, global_seed=0)
    again = run(seed=3, global_seed=99)
    other = run(seed=4, global_seed=0)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_make_private_bad_input() -> None:
    model = _net()
    opt = torch.optim.SGD(_net().parameters(), lr=0.1)  # another model's parameters
    with pytest.raises(ArgumentError, match=r"Opacus could not make .* private: Module parameters are different"):
        make_private(model, opt, DataLoader(_data(), batch_size=16), noise_multiplier=1.0, max_grad_norm=1.0)
    with pytest.raises(ArgumentError, match=r"noise_multiplier should be a finite number > 0, got 0"):
        make_private(model, opt, DataLoader(_data(), batch_size=16), noise_multiplier=0, max_grad_norm=1.0)
    empty = TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ArgumentError, match=r"loader has no rows"):
        make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(empty, batch_size=4),
                     noise_multiplier=1.0, max_grad_norm=1.0)


class _WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # type: ignore[no-any-return]


def test_check_model_names_the_layer_and_the_fix() -> None:
    model = _WithBatchNorm()
    with pytest.raises(ArgumentError, match=r"cannot train: body\.1 \(BatchNorm1d\): BatchNorm cannot support training "
                                            r"with differential privacy\. .*ModuleValidator\.fix\(model\)"):
        check_model(model)
    with pytest.raises(ArgumentError, match=r"body\.1 \(BatchNorm1d\)"):
        make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(_data(), batch_size=16),
                     noise_multiplier=1.0, max_grad_norm=1.0)
    fixed = opacus.validators.ModuleValidator.fix(model)
    check_model(fixed)
    check_model(_net().eval())  # eval mode is not a reason to refuse
    with pytest.raises(ArgumentTypeError, match=r"model should be a torch.nn.Module, got dict"):
        check_model({})  # type: ignore[arg-type]


def test_central_noise_and_epsilon_round_trip() -> None:
    dp = DP(epsilon=4.0, delta=DELTA, mechanism="central")
    sigma = central_noise(dp, sample_rate=5 / 50, rounds=30)
    assert dp.epsilon - SEARCH_TOLERANCE <= central_epsilon(sigma, 5 / 50, 30, DELTA) <= dp.epsilon
    assert central_epsilon(sigma, 5 / 50, 10, DELTA) < central_epsilon(sigma, 5 / 50, 30, DELTA)
    assert central_epsilon(sigma, 5 / 50, 0, DELTA) == 0.0
    # every client in every round: no amplification by sampling, so more noise for the same budget
    assert central_noise(dp, sample_rate=1.0, rounds=30) > sigma
    with pytest.raises(ArgumentError, match=r"central_noise is for DP\(mechanism='central'\), got mechanism='dp-sgd'"):
        central_noise(DP(epsilon=4.0), sample_rate=0.1, rounds=30)
    with pytest.raises(ArgumentError, match=r"local_noise is for DP\(mechanism='dp-sgd'\)"):
        local_noise(dp, sample_rate=0.1, steps=30)
    with pytest.raises(ArgumentError, match=r"sample_rate should be in \(0, 1\]"):
        central_noise(dp, sample_rate=1.5, rounds=30)
    with pytest.raises(ArgumentError, match=r"rounds should be >= 1, got 0"):
        central_noise(dp, sample_rate=0.5, rounds=0)


def test_central_strategy_wraps_flowers_strategy() -> None:
    inner = FedAvg()
    dp = DP(epsilon=4.0, max_grad_norm=0.5, mechanism="central")
    wrapped = central_strategy(inner, dp, noise_multiplier=1.2, clients_per_round=5)
    assert type(wrapped) is DifferentialPrivacyServerSideFixedClipping
    assert wrapped.strategy is inner
    assert (wrapped.noise_multiplier, wrapped.clipping_norm, wrapped.num_sampled_clients) == (1.2, 0.5, 5)
    with pytest.raises(ArgumentError, match=r"central_strategy is for DP\(mechanism='central'\)"):
        central_strategy(inner, DP(epsilon=4.0), noise_multiplier=1.2, clients_per_round=5)
    with pytest.raises(ArgumentError, match=r"clients_per_round should be >= 1"):
        central_strategy(inner, dp, noise_multiplier=1.2, clients_per_round=0)
    with pytest.raises(ArgumentTypeError, match=r"strategy should be a flwr.serverapp.strategy.Strategy"):
        central_strategy(object(), dp, noise_multiplier=1.2, clients_per_round=5)  # type: ignore[arg-type]
