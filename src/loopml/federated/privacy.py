"""Differential privacy for a federation: DP-SGD on every client (Opacus) or central DP on the server (Flower).

Two mechanisms, two different promises:

``DP(..., mechanism="dp-sgd")``: sample-level privacy on each client (Abadi et al. 2016, "Deep
    Learning with Differential Privacy", https://arxiv.org/abs/1607.00133). Each client trains
    with Opacus: every row's gradient is clipped to ``max_grad_norm``, Gaussian noise is added to
    each batch's sum, and batches are drawn by Poisson sampling. Whatever the server or the other
    clients see (every update the client sends, in every round) is then ``(epsilon, delta)``-DP
    with respect to adding or removing one *row* of that client's data. A row lives on one client
    only, so the federation's guarantee for any row is the largest epsilon a client spent. The
    noise is chosen from the target epsilon and the steps planned over all rounds
    (:func:`local_noise`), and the spent epsilon is accounted per client across rounds
    (:class:`Ledger`, :func:`spent_epsilon`). The server needs no trust.

``DP(..., mechanism="central")``: client-level privacy for the federation (McMahan et al. 2018,
    "Learning Differentially Private Recurrent Language Models", https://arxiv.org/abs/1710.06963).
    The server clips each client's model update to ``max_grad_norm`` (an L2 norm of the whole
    update, not of a gradient), averages them and adds Gaussian noise of standard deviation
    ``noise_multiplier * max_grad_norm / clients_per_round`` (Flower's
    ``DifferentialPrivacyServerSideFixedClipping``). The released global models are then
    ``(epsilon, delta)``-DP with respect to adding or removing one *client's whole data set*, a
    stronger unit than a row, but only towards whoever sees the global model: the server sees
    the raw updates and must be trusted. The noise is chosen from the target epsilon with the
    sampling rate ``clients_per_round / clients`` and one step per round (:func:`central_noise`).

Both are accounted with Rényi DP (Opacus's ``RDPAccountant``, Mironov 2017) and its conversion to
``(epsilon, delta)``. Noise comes from PyTorch's seeded generator, not from Opacus's ``secure_mode``
(torchcsprng, archived upstream and not part of the extra): fine for research and for this
package's reproducible runs, not hardened against floating-point attacks on the noise (Mironov 2012).

Example: the noise for 20 rounds of one local epoch on a client with 600 rows, and what it spends:

>>> dp = DP(epsilon=8.0, delta=1e-5, max_grad_norm=1.0)
>>> rate = poisson_rate(rows=600, batch_size=32)               # 19 Poisson batches an epoch
>>> sigma = local_noise(dp, sample_rate=rate, steps=20 * 19)
>>> round(sigma, 3), round(spent_epsilon([(sigma, rate, 20 * 19)], dp.delta), 2)
(0.978, 8.0)

then, on the client, ``make_private(model, optimizer, loader, noise_multiplier=sigma,
max_grad_norm=dp.max_grad_norm, seed=0)`` and a :class:`Ledger` of the steps taken.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
try:  # the `federated` extra: a missing package names the install command
    from flwr.app import ConfigRecordValues
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(f"Federated training needs {exc.name}: pip install 'loopml[federated]'") from exc
from torch import nn
from torch.utils.data import DataLoader

from ..errors import ArgumentError, ArgumentTypeError

MECHANISMS = ("dp-sgd", "central")

# The RDP orders where Opacus's conversion to (epsilon, delta) found its best bound at the edge of
# its range: the epsilon is still a valid upper bound (only a looser one), and a binary search for
# the noise passes through many such extremes; these warnings would only bury loopml's own output.
_EDGE_ORDER = r"Optimal order is the (largest|smallest) alpha"
# loopml seeds the noise on purpose (reproducible runs) and states what that means in this module's
# docstring and in docs/federated.md; Opacus would repeat it once per client per round.
_SECURE_RNG_OFF = r"Secure RNG turned off"


def _positive_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"Argument {name} should be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ArgumentError(f"Argument {name} should be a finite number > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DP:
    """A differential-privacy budget for a federation: ``(epsilon, delta)``, the clipping norm and the mechanism.

    ``mechanism="dp-sgd"`` (default): DP-SGD with Opacus on every client; each client's rows get
    ``(epsilon, delta)`` sample-level DP; ``max_grad_norm`` bounds each row's gradient.
    ``mechanism="central"``: Flower's server-side clipping and Gaussian noise; the federation
    gets ``(epsilon, delta)`` client-level DP; ``max_grad_norm`` bounds each client's model update.
    The module docstring of :mod:`loopml.federated.privacy` says what each one promises.

    Example: ``DP(epsilon=8.0)``, ``DP(epsilon=2.0, delta=1e-6, max_grad_norm=0.5, mechanism="central")``
    """

    epsilon: float
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    mechanism: str = "dp-sgd"

    def __post_init__(self) -> None:
        example = "for example loopml.federated.DP(epsilon=8.0, delta=1e-5, max_grad_norm=1.0)"
        eps = _positive_finite("epsilon", self.epsilon)
        if isinstance(self.delta, bool) or not isinstance(self.delta, numbers.Real):
            raise ArgumentTypeError(f"Argument delta should be a number, got {self.delta!r}")
        if not 0 < self.delta < 1:
            raise ArgumentError(f"Argument delta should be in (0, 1), got {self.delta!r}; it is the chance that the "
                                f"guarantee fails, so keep it well below 1 / rows (1e-5 is usual); {example}")
        norm = _positive_finite("max_grad_norm", self.max_grad_norm)
        if self.mechanism not in MECHANISMS:
            raise ArgumentError(f"Argument mechanism should be one of {', '.join(map(repr, MECHANISMS))}, got "
                                f"{self.mechanism!r}: 'dp-sgd' protects each row of every client with Opacus, "
                                "'central' protects each client with noise added by the server")
        # frozen: the checked values are stored as floats (an int epsilon stays comparable and JSON-stable)
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "delta", float(self.delta))
        object.__setattr__(self, "max_grad_norm", norm)

    @property
    def unit(self) -> str:
        """What one unit of privacy is: ``"row"`` (DP-SGD, sample-level) or ``"client"`` (central, client-level)."""
        return "row" if self.mechanism == "dp-sgd" else "client"

    def to_dict(self) -> dict[str, float | str]:
        """The settings as run params: ``privacy.epsilon``, ``privacy.delta``, ``privacy.max_grad_norm``, ``privacy.mechanism``."""
        return {"privacy.epsilon": self.epsilon, "privacy.delta": self.delta,
                "privacy.max_grad_norm": self.max_grad_norm, "privacy.mechanism": self.mechanism}


def _need_mechanism(dp: object, mechanism: str, what: str) -> DP:
    if not isinstance(dp, DP):
        raise ArgumentTypeError(f"Argument dp should be loopml.federated.DP(epsilon=...), got {dp!r}")
    if dp.mechanism != mechanism:
        raise ArgumentError(f"{what} is for DP(mechanism={mechanism!r}), got mechanism={dp.mechanism!r}")
    return dp


def _sample_rate(value: object, name: str = "sample_rate") -> float:
    rate = _positive_finite(name, value)
    if rate > 1:
        raise ArgumentError(f"Argument {name} should be in (0, 1] (a probability), got {value!r}")
    return rate


def _count(value: object, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"Argument {name} should be an integer, got {value!r}")
    if value < minimum:
        raise ArgumentError(f"Argument {name} should be >= {minimum}, got {value!r}")
    return int(value)


def poisson_rate(*, rows: int, batch_size: int) -> float:
    """The sampling rate Opacus's Poisson loader uses for ``rows`` rows and this ``batch_size``: ``1 / ceil(rows / batch_size)``.

    Plan the noise with this rate: it is the one :func:`make_private`'s loader samples with
    (``loader.sample_rate``), which is at most ``batch_size / rows``.
    """
    return 1 / math.ceil(_count(rows, "rows") / _count(batch_size, "batch_size"))


def _noise_for(epsilon: float, delta: float, sample_rate: float, steps: int, *, unit: str, fix: str) -> float:
    """Opacus's binary search for the smallest noise multiplier that keeps epsilon within the target."""
    from opacus.accountants.utils import get_noise_multiplier  # Opacus takes seconds to import: only when DP is used
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_EDGE_ORDER)
        try:
            # Opacus stops once the epsilon is within 0.01 below the target (epsilon_tolerance)
            return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                              steps=steps, accountant="rdp"))
        except ValueError as exc:  # "The privacy budget is too low.": even a noise multiplier of 1e6 spends more
            raise ArgumentError(
                f"epsilon={epsilon:g} (delta={delta:g}) cannot be reached over {steps} {unit} with sample rate "
                f"{sample_rate:g}: even a noise multiplier of 1e6 spends more; raise epsilon, or {fix}") from exc


def local_noise(dp: DP, *, sample_rate: float, steps: int) -> float:
    """The DP-SGD noise multiplier that spends ``dp.epsilon`` (at ``dp.delta``) over ``steps`` steps at ``sample_rate``.

    ``steps``: every optimizer step the client will take over the whole federation (rounds x local
    epochs x steps per epoch); ``sample_rate``: the Poisson rate, :func:`poisson_rate`. Opacus's
    ``get_noise_multiplier`` with the RDP accountant; the epsilon it spends lies within 0.01 below
    the target.

    Example: ``local_noise(DP(epsilon=8.0), sample_rate=0.05, steps=400)``
    """
    dp = _need_mechanism(dp, "dp-sgd", "local_noise")
    return _noise_for(dp.epsilon, dp.delta, _sample_rate(sample_rate), _count(steps, "steps"), unit="steps",
                      fix="plan fewer steps (fewer rounds or local epochs) or a smaller sample rate (a smaller "
                          "batch_size or more rows per client)")


def central_noise(dp: DP, *, sample_rate: float, rounds: int) -> float:
    """The central-DP noise multiplier that spends ``dp.epsilon`` over ``rounds`` rounds (DP-FedAvg, client level).

    ``sample_rate``: clients per round / clients (1.0 when every client trains every round). Each
    round is one step of the sampled Gaussian mechanism over clients (McMahan et al. 2018).

    Example: ``central_noise(DP(epsilon=8.0, mechanism="central"), sample_rate=5 / 50, rounds=20)``
    """
    dp = _need_mechanism(dp, "central", "central_noise")
    return _noise_for(dp.epsilon, dp.delta, _sample_rate(sample_rate), _count(rounds, "rounds"), unit="rounds",
                      fix="plan fewer rounds, or sample fewer clients per round out of more clients")


HistoryEntry = tuple[float, float, int]  # (noise multiplier, sample rate, steps), Opacus's RDPAccountant.history


def spent_epsilon(history: Iterable[Sequence[float]], delta: float) -> float:
    """The epsilon spent at ``delta`` by the steps in ``history``: ``[(noise_multiplier, sample_rate, steps), ...]``.

    Entries compose (Rényi DP adds up), so a client that trained in several rounds passes one
    entry per round, or per change of noise or sample rate. Opacus's ``RDPAccountant`` with this
    history; ``0.0`` for no steps.

    Example: ``spent_epsilon([(1.1, 0.05, 200), (1.1, 0.05, 200)], delta=1e-5)``
    """
    from opacus.accountants import RDPAccountant
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < delta < 1:
        raise ArgumentError(f"Argument delta should be in (0, 1), got {delta!r}")
    entries: list[HistoryEntry] = []
    for i, entry in enumerate(history):
        if len(entry) != 3:
            raise ArgumentError(f"history[{i}] should be (noise_multiplier, sample_rate, steps), got {entry!r}")
        noise, rate, steps = entry
        noise = _positive_finite(f"history[{i}] noise_multiplier", noise)
        rate = _sample_rate(rate, f"history[{i}] sample_rate")
        n = _count(steps, f"history[{i}] steps", minimum=0)
        if n:
            entries.append((noise, rate, n))
    if not entries:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = entries
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_EDGE_ORDER)
        return float(accountant.get_epsilon(delta=float(delta)))


def central_epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """The client-level epsilon that central DP spent after ``rounds`` rounds (``0.0`` after none).

    Example: ``central_epsilon(1.2, 0.1, 20, 1e-5)``
    """
    return spent_epsilon([(noise_multiplier, sample_rate, _count(rounds, "rounds", minimum=0))], delta)


@dataclass
class Ledger:
    """One client's DP-SGD history across rounds, kept in Flower's ``context.state`` between rounds.

    ``record`` adds a round's steps; ``epsilon(delta)`` is what the client spent so far;
    ``to_record()`` / ``from_record()`` turn it into a flat dict of lists of floats and ints, what a
    Flower ``ConfigRecord`` holds. ``noise`` is the noise multiplier in use (chosen once, in the
    first round, from the steps planned for the whole federation), ``None`` before the first round.

    Example::

        ledger = Ledger.from_record(dict(context.state.config_records.get("loopml-privacy", ConfigRecord())))
        ledger.record(noise=1.1, sample_rate=0.05, steps=20)
        context.state.config_records["loopml-privacy"] = ConfigRecord(ledger.to_record())
        ledger.epsilon(1e-5)
    """

    history: list[HistoryEntry] = field(default_factory=list)
    rounds: int = 0

    @property
    def noise(self) -> float | None:
        return self.history[-1][0] if self.history else None

    @property
    def steps(self) -> int:
        return sum(steps for _, _, steps in self.history)

    def record(self, *, noise: float, sample_rate: float, steps: int) -> None:
        """Add one round: ``steps`` optimizer steps with this noise multiplier and Poisson sample rate."""
        entry = (_positive_finite("noise", noise), _sample_rate(sample_rate), _count(steps, "steps", minimum=0))
        self.rounds += 1
        # k steps of the same mechanism spend exactly k times one step's Rényi divergence, so merging
        # (as Opacus's own accountant does) keeps the record small over many rounds and changes nothing
        if self.history and self.history[-1][:2] == entry[:2]:
            self.history[-1] = (entry[0], entry[1], self.history[-1][2] + entry[2])
        elif entry[2]:
            self.history.append(entry)

    def epsilon(self, delta: float) -> float:
        """The epsilon this client spent so far at ``delta`` (:func:`spent_epsilon`)."""
        return spent_epsilon(self.history, delta)

    def to_record(self) -> dict[str, ConfigRecordValues]:
        """A flat dict of lists of numbers, for a Flower ``ConfigRecord``."""
        return {"noise": [n for n, _, _ in self.history], "sample_rate": [r for _, r, _ in self.history],
                "steps": [s for _, _, s in self.history], "rounds": self.rounds}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Ledger:
        """The ledger that :meth:`to_record` wrote (an empty one from an empty dict)."""
        if not record:
            return cls()
        try:
            noise, rates, steps = (list(record[k]) for k in ("noise", "sample_rate", "steps"))
            rounds = int(record["rounds"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArgumentError(f"Argument record should be what Ledger.to_record() wrote (keys noise, sample_rate, "
                                f"steps, rounds), got {dict(record)!r}") from exc
        if not len(noise) == len(rates) == len(steps):
            raise ArgumentError(f"Argument record has lists of different lengths: {dict(record)!r}")
        return cls([(float(n), float(r), int(s)) for n, r, s in zip(noise, rates, steps)], rounds)


def check_model(model: nn.Module) -> None:
    """Refuse a model that Opacus cannot train with DP-SGD, naming each layer and the fix.

    Opacus's ``ModuleValidator`` (BatchNorm mixes rows of a batch; LSTM and MultiheadAttention
    need Opacus's own versions) and its per-sample-gradient check (a trainable layer with buffers).
    A model in eval mode is not refused for that: training switches it to train mode.

    Example: ``check_model(opacus.validators.ModuleValidator.fix(model))``
    """
    from opacus.grad_sample import GradSampleModule
    from opacus.utils.module_utils import trainable_modules
    from opacus.validators import ModuleValidator
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"Argument model should be a torch.nn.Module, got {type(model).__name__}")
    if not ModuleValidator.validate(model, strict=False) and not GradSampleModule.validate(model, strict=False):
        return
    # ModuleValidator.validate's errors do not say which layer they are about (and one of them is
    # "needs to be in training mode"), so the registered per-layer validators are run again by name
    problems: list[str] = []
    for name, layer in trainable_modules(model):
        validator = ModuleValidator.VALIDATORS.get(type(layer))
        found = [str(err).split(". ")[0] for err in (validator(layer) if validator else [])]
        if not found and any(True for _ in layer.buffers(recurse=False)):
            found = ["a trainable layer with buffers, which Opacus cannot compute per-row gradients for"]
        problems += [f"{name or '(the model)'} ({type(layer).__name__}): {why}" for why in found]
    if not problems:
        return
    raise ArgumentError(
        "Argument model has layers that DP-SGD (Opacus) cannot train: " + "; ".join(problems) + ". Replace them "
        "before training: `model = opacus.validators.ModuleValidator.fix(model)` (BatchNorm becomes GroupNorm, "
        "LSTM DPLSTM, MultiheadAttention DPMultiheadAttention), or use DP(..., mechanism='central'), which "
        "clips and noises whole model updates and accepts any layer")


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader[Any], *,
                 noise_multiplier: float, max_grad_norm: float, seed: int | None = None,
                 ) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader[Any]]:
    """Opacus's DP-SGD on one client: ``(model, optimizer, loader)`` wrapped by ``PrivacyEngine(accountant="rdp")``.

    The returned model computes per-row gradients and trains ``model``'s own parameters (so
    ``model.state_dict()`` is the trained one, with its own keys); the optimizer clips each row's
    gradient to ``max_grad_norm`` and adds Gaussian noise of ``noise_multiplier * max_grad_norm``;
    the loader draws Poisson batches at ``loader.sample_rate`` (:func:`poisson_rate`), which may be
    empty. ``seed`` seeds the noise and the sampling (independent of torch's global generator);
    ``None`` draws both from torch's global generator. Account the steps with :class:`Ledger`.

    Example::

        model, optimizer, loader = make_private(model, optimizer, loader, noise_multiplier=1.1,
                                                max_grad_norm=1.0, seed=0)
    """
    from opacus import PrivacyEngine
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler
    check_model(model)
    noise = _positive_finite("noise_multiplier", noise_multiplier)
    norm = _positive_finite("max_grad_norm", max_grad_norm)
    if len(loader.dataset) == 0:  # type: ignore[arg-type]
        raise ArgumentError("Argument loader has no rows to train on")
    noise_gen = sample_gen = None
    if seed is not None:
        # two independent streams from one seed (the same seed for both would draw correlated numbers)
        noise_seed, sample_seed = np.random.SeedSequence(_count(seed, "seed", minimum=0)).generate_state(2)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        noise_gen = torch.Generator(device=device).manual_seed(int(noise_seed))
        sample_gen = torch.Generator().manual_seed(int(sample_seed))
    model.train()  # Opacus refuses a module in eval mode, and the wrapped model is for training
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SECURE_RNG_OFF)
        engine = PrivacyEngine(accountant="rdp")
    try:
        private_model, private_opt, private_loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise, max_grad_norm=norm,
            poisson_sampling=True, noise_generator=noise_gen)
    except ValueError as exc:  # e.g. "Module parameters are different than optimizer Parameters"
        raise ArgumentError(f"Opacus could not make this model, optimizer and loader private: {exc}") from exc
    if sample_gen is not None:
        # make_private takes a generator for the noise only; its Poisson sampler otherwise draws from
        # torch's global generator, which the training around it also consumes
        sampler = private_loader.batch_sampler
        assert isinstance(sampler, UniformWithReplacementSampler)
        sampler.generator = sample_gen
    return private_model, private_opt, private_loader


def central_strategy(strategy: Strategy, dp: DP, *, noise_multiplier: float, clients_per_round: int,
                     ) -> DifferentialPrivacyServerSideFixedClipping:
    """``strategy`` wrapped in Flower's server-side fixed clipping with Gaussian noise (central DP).

    Each client's update is clipped to ``dp.max_grad_norm`` and the aggregate gets noise of standard
    deviation ``noise_multiplier * dp.max_grad_norm / clients_per_round``; choose the noise with
    :func:`central_noise`. Flower's wrapper skips aggregation (the round keeps the old model) when a
    client replies with an error. The guarantee assumes an unweighted mean of ``clients_per_round``
    updates: a strategy that weights clients by their rows lets a large client move the mean by more
    than ``max_grad_norm / clients_per_round``.

    Example: ``central_strategy(FedAvg(), DP(epsilon=8.0, mechanism="central"), noise_multiplier=1.2, clients_per_round=5)``
    """
    dp = _need_mechanism(dp, "central", "central_strategy")
    if not isinstance(strategy, Strategy):
        raise ArgumentTypeError(f"Argument strategy should be a flwr.serverapp.strategy.Strategy (FedAvg(), ...), "
                                f"got {type(strategy).__name__}")
    return DifferentialPrivacyServerSideFixedClipping(
        strategy, noise_multiplier=_positive_finite("noise_multiplier", noise_multiplier),
        clipping_norm=dp.max_grad_norm, num_sampled_clients=_count(clients_per_round, "clients_per_round"))
