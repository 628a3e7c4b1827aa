"""The out-of-distribution detectors behind :class:`loopml.monitor.ood.OODGate`.

- :class:`VAEDetector`: reconstruction error of a small (variational) autoencoder
  fitted on in-distribution inputs;
- :class:`MahalanobisDetector`: Mahalanobis distance of a classifier's
  penultimate-layer features to the nearest class mean (shared covariance,
  Ledoit-Wolf shrinkage; Lee et al. 2018) or to a single Gaussian;
- :func:`calibrated_threshold`: the split-conformal ``(1 - rate)`` quantile that
  both use to calibrate a threshold on validation scores.

Both score with ``score(x) -> np.ndarray`` (one float64 per row, higher is more
unusual; a row with NaN scores +inf), hold their ``threshold`` and have
``config()`` / ``state_arrays()`` (NumPy; ``state_dict()`` as tensors) / ``from_state()``
for storage without pickle; a detector rebuilt from NumPy arrays scores without importing torch::

    from loopml.monitor.ood_detectors import MahalanobisDetector, VAEDetector

    vae = VAEDetector(epochs=40).fit(x_train)
    maha = MahalanobisDetector(model).fit(x_train, y_train)   # features: the input of model's last nn.Linear
    maha.calibrate(x_val, target_false_abstain=0.01)
    maha.score(x) > maha.threshold
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import ExportError

if TYPE_CHECKING:
    import torch

__all__ = [
    "Detector",
    "MahalanobisDetector",
    "VAEDetector",
    "calibrated_threshold",
    "last_linear",
    "strictest_rate",
]


# -- helpers -------------------------------------------------------------------


class _TorchThreads:
    """Set torch's thread count once in every thread that scores (docs/benchmarks.md, "Threads": a server's worker threads)."""

    def __init__(self, threads: int) -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"Argument threads should be a whole number >= 1, e.g. threads=1; got {threads!r}")
        self.threads = threads
        self._local = threading.local()

    def ensure(self) -> None:
        if not getattr(self._local, "done", False):
            import torch

            torch.set_num_threads(self.threads)
            self._local.done = True


def _as_batch(x: Any, what: str = "x") -> np.ndarray:
    """A float32, C-contiguous batch with at least one row (tensors and arrays accepted)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"Argument {what} should be a numpy array or torch tensor with a batch dimension; got {type(x).__name__}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"Argument {what} should be a batch of shape (N, ...) with N >= 1; got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _numpy(value: Any) -> np.ndarray:
    """A stored tensor or array as NumPy (torch tensors accepted without importing torch here)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _check_shape(x: np.ndarray, shape: Sequence[int] | None, what: str) -> None:
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(
            f"Argument {what} should have rows of shape {tuple(shape)} (as when the detector was fitted), "
            f"e.g. a batch of shape (N, {', '.join(map(str, shape))}); got {tuple(x.shape)}"
        )


def _check_rate(rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 0.5:
        raise ValueError(
            f"Argument target_false_abstain should be a fraction above 0 and below 0.5, e.g. 0.01 for 1%; got {rate!r}"
        )
    return float(rate)


def calibrated_threshold(scores: np.ndarray, target_false_abstain: float) -> float:
    """The threshold above which about ``target_false_abstain`` of new in-distribution rows score.

    The ``(1 - rate)`` quantile of the validation scores with the finite-sample
    (split-conformal) correction: the ``ceil((n + 1)(1 - rate))``-th smallest
    score, so that a new exchangeable row scores above it with probability at
    most ``rate``. Needs ``n >= 1/rate - 1`` rows (99 for 1%).
    """
    rate = _check_rate(target_false_abstain)
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = s.size
    # - 1e-9: (n + 1) * (1 - rate) is a whole number at rate = 1/(n+1), which float rounding can push above it
    k = math.ceil((n + 1) * (1 - rate) - 1e-9)
    if k > n:
        need = math.ceil(1 / rate - 1 - 1e-9)
        raise ValueError(
            f"Argument val_x should have at least {need} rows to calibrate a false-abstain rate of {rate:g}; got {n}. "
            "Pass more validation rows or a larger target_false_abstain."
        )
    if not np.isfinite(s[k - 1]):
        raise ValueError("Argument val_x gave non-finite scores (NaN or infinite inputs?); calibrate on clean validation data")
    return float(s[k - 1])


def strictest_rate(rows: int) -> float:
    """The smallest false-abstain rate that ``rows`` validation rows can calibrate (1 / (rows + 1)),
    rounded up to 4 decimals: 0.0117 for 85 rows, 0.01 for 99.

    >>> strictest_rate(85)
    0.0117
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ValueError(f"Argument rows should be a whole number >= 0; got {rows!r}")
    return math.ceil(10_000 / (rows + 1)) / 10_000


def _finite_or_inf(scores: np.ndarray) -> np.ndarray:
    # a NaN input makes a NaN score, and NaN > threshold is False: make it abstain instead
    return np.where(np.isfinite(scores), scores, np.inf)


class Detector(Protocol):
    """What :class:`OODGate` needs of a detector (both of this module's have it)."""

    kind: str
    threshold: float | None

    def score(self, x: Any) -> np.ndarray: ...

    def calibrate(self, val_x: Any, target_false_abstain: float = 0.01) -> float: ...

    def config(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, "torch.Tensor"]: ...

    def state_arrays(self) -> dict[str, np.ndarray]: ...


# -- the autoencoder -----------------------------------------------------------


def _autoencoder(n_in: int, hidden: int, latent: int, variational: bool) -> "torch.nn.Module":
    import torch
    from torch import nn

    class AutoEncoder(nn.Module):
        """MLP encoder/decoder over standardised, flattened inputs; ``mu``/``logvar`` heads when variational."""

        mean: torch.Tensor
        scale: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(n_in))
            self.register_buffer("scale", torch.ones(n_in))
            self.encoder = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
            self.mu = nn.Linear(hidden, latent)
            self.logvar = nn.Linear(hidden, latent) if variational else None
            self.decoder = nn.Sequential(
                nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_in)
            )

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
            z_in = (x.flatten(1) - self.mean) / self.scale
            h = self.encoder(z_in)
            mu = self.mu(h)
            logvar = self.logvar(h) if self.logvar is not None else None
            z = mu
            if self.training and logvar is not None:
                z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return self.decoder(z), z_in, mu, logvar

    return AutoEncoder()


def _vae_shapes(n_in: int, hidden: int, latent: int, variational: bool) -> dict[str, tuple[int, ...]]:
    """The shape of every entry of the autoencoder's state dict (``_autoencoder``'s layers, in order)."""
    shapes: dict[str, tuple[int, ...]] = {"mean": (n_in,), "scale": (n_in,)}
    layers = [("encoder.0", n_in, hidden), ("encoder.2", hidden, hidden), ("mu", hidden, latent)]
    if variational:
        layers.append(("logvar", hidden, latent))
    layers += [("decoder.0", latent, hidden), ("decoder.2", hidden, hidden), ("decoder.4", hidden, n_in)]
    for name, n_from, n_to in layers:
        shapes[f"{name}.weight"] = (n_to, n_from)
        shapes[f"{name}.bias"] = (n_to,)
    return shapes


def _vae_arrays(state: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The layers of a (checked) autoencoder state as NumPy (weight transposed, bias) pairs, for scoring."""

    def pair(name: str) -> tuple[np.ndarray, np.ndarray]:
        return (np.ascontiguousarray(state[f"{name}.weight"].T), state[f"{name}.bias"].copy())

    arrays: dict[str, Any] = {
        "mean": state["mean"].copy(), "scale": state["scale"].copy(),
        "encoder": [pair("encoder.0"), pair("encoder.2")], "mu": pair("mu"),
        "decoder": [pair("decoder.0"), pair("decoder.2"), pair("decoder.4")],
    }
    if "logvar.weight" in state:
        arrays["logvar"] = pair("logvar")
    return arrays


class VAEDetector:
    """Reconstruction error of a small (variational) autoencoder fitted on in-distribution inputs.

    Inputs are flattened and standardised per feature (a floor on the scale
    keeps constant pixels from dividing by zero). ``variational=True`` (the
    default, for images) trains a VAE; ``False`` a plain MLP autoencoder (tabular
    rows). The score of a row is the mean squared reconstruction error of its
    standardised features, decoded from the posterior mean, plus ``kl_weight``
    times the KL term per feature.

    >>> det = VAEDetector(epochs=30).fit(x_train)
    >>> threshold = det.calibrate(x_val, target_false_abstain=0.01)   # about 1% of x_val scores above it
    >>> threshold == det.threshold
    True
    >>> (det.score(torch.rand(4, 1, 8, 8)) > det.threshold).tolist()
    [True, True, True, True]
    """

    kind = "vae"

    def __init__(
        self,
        *,
        latent: int = 8,
        hidden: int = 128,
        variational: bool = True,
        kl_weight: float = 0.0,
        beta: float = 1.0,
        epochs: int = 40,
        batch_size: int = 64,
        lr: float = 2e-3,
        seed: int = 0,
        threads: int = 1,
        fill: Sequence[float | None] | None = None,
    ) -> None:
        for arg, value in (("latent", latent), ("hidden", hidden), ("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Argument {arg} should be a whole number >= 1; got {value!r}")
        for arg, fvalue in (("kl_weight", kl_weight), ("beta", beta), ("lr", lr)):
            if isinstance(fvalue, bool) or not isinstance(fvalue, (int, float)) or not math.isfinite(fvalue) or fvalue < 0:
                raise ValueError(f"Argument {arg} should be a number >= 0; got {fvalue!r}")
        if lr == 0:
            raise ValueError("Argument lr should be above 0, e.g. lr=2e-3")
        self.latent, self.hidden, self.variational = latent, hidden, bool(variational)
        self.kl_weight, self.beta = float(kl_weight), float(beta)
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, float(lr), int(seed)
        # per input column, what replaces a NaN before scoring: the model's Preprocessor imputes the
        # same columns with the same values, so a row it serves is not scored as unusual for its gaps
        self.fill = None if fill is None else [None if f is None else float(f) for f in fill]
        self._fill = None if fill is None else np.array([np.nan if f is None else f for f in fill], dtype=np.float32)
        self.threshold: float | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.net: torch.nn.Module | None = None  # built on demand from the state after a torch-free load
        self.losses: list[float] = []
        self._state: dict[str, np.ndarray] = {}  # the autoencoder's state dict as float32 NumPy arrays
        self._arrays: dict[str, Any] = {}
        self._threads = _TorchThreads(threads)

    def __repr__(self) -> str:
        state = f"input_shape={self.input_shape}" if self._arrays else "not fitted"
        return f"VAEDetector(latent={self.latent}, hidden={self.hidden}, variational={self.variational}, {state}, threshold={self.threshold})"

    def fit(self, x: Any) -> "VAEDetector":
        """Train on in-distribution inputs ``x`` (N x features or N x C x H x W); returns self."""
        import torch

        data = self._filled(_as_batch(x, "x"))
        if data.shape[0] < 2:
            raise ValueError(f"Argument x should have at least 2 rows to fit on; got {data.shape[0]}")
        if not np.isfinite(data).all():
            raise ValueError("Argument x should hold finite numbers only (no NaN or infinities)")
        self._threads.ensure()
        flat = data.reshape(len(data), -1)
        n_in = flat.shape[1]
        std = flat.std(axis=0)
        floor = max(float(np.median(std)) * 0.1, 1e-3)
        torch.manual_seed(self.seed)
        net = _autoencoder(n_in, self.hidden, self.latent, self.variational)
        net.get_buffer("mean").copy_(torch.from_numpy(flat.mean(axis=0)))
        net.get_buffer("scale").copy_(torch.from_numpy(np.maximum(std, floor)))
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        xt = torch.from_numpy(data)
        net.train()
        self.losses = []
        for _ in range(self.epochs):
            total = 0.0
            for idx in torch.randperm(len(xt), generator=gen).split(self.batch_size):
                recon, target, mu, logvar = net(xt[idx])
                loss = 0.5 * (recon - target).pow(2).sum(1)
                if logvar is not None:
                    loss = loss + self.beta * _kl(mu, logvar)
                loss = loss.mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            self.losses.append(total / len(xt))
        net.eval()
        self.net, self.input_shape, self.threshold = net, tuple(data.shape[1:]), None
        self._cache_arrays()
        return self

    def score(self, x: Any) -> np.ndarray:
        """One score per row (float64): higher is more unusual.

        Runs in NumPy on the fitted weights (float32): at batch 1 that is about 5x
        faster than the same layers in eager PyTorch (``score_torch``, the oracle).
        """
        p = self._fitted()
        data = self._filled(_as_batch(x, "x"))
        _check_shape(data, self.input_shape, "x")
        z_in = (data.reshape(len(data), -1) - p["mean"]) / p["scale"]
        h = z_in
        for w, b in p["encoder"]:
            h = np.maximum(h @ w + b, 0)
        mu = h @ p["mu"][0] + p["mu"][1]
        r = mu
        for i, (w, b) in enumerate(p["decoder"]):
            r = r @ w + b
            if i < len(p["decoder"]) - 1:
                r = np.maximum(r, 0)
        out = np.square(r - z_in, dtype=np.float64).mean(1)
        if self.kl_weight and "logvar" in p:
            logvar = (h @ p["logvar"][0] + p["logvar"][1]).astype(np.float64)
            out += self.kl_weight * (-0.5 * (1 + logvar - np.square(mu, dtype=np.float64) - np.exp(logvar)).sum(1)) / z_in.shape[1]
        return _finite_or_inf(out)

    def score_torch(self, x: Any) -> np.ndarray:
        """:meth:`score` computed by the torch module (slower at small batches; the reference in tests)."""
        import torch

        net = self._torch_net()
        data = self._filled(_as_batch(x, "x"))
        _check_shape(data, self.input_shape, "x")
        self._threads.ensure()
        with torch.inference_mode():
            recon, target, mu, logvar = net(torch.from_numpy(data))
            out = (recon - target).pow(2).double().mean(1)
            if self.kl_weight and logvar is not None:
                out = out + self.kl_weight * _kl(mu.double(), logvar.double()) / target.shape[1]
        return _finite_or_inf(out.numpy())

    def _cache_arrays(self) -> None:
        """Keep the fitted module's state as NumPy, and its layers as (weight transposed, bias) pairs for :meth:`score`."""
        assert self.net is not None
        self._state = {k: v.detach().numpy().astype(np.float32, copy=True) for k, v in self.net.state_dict().items()}
        self._arrays = _vae_arrays(self._state)

    def _torch_net(self) -> "torch.nn.Module":
        """The autoencoder as a torch module (rebuilt from the state when the detector was loaded without torch)."""
        self._fitted()
        if self.net is None:
            import torch

            assert self.input_shape is not None
            net = _autoencoder(int(np.prod(self.input_shape)), self.hidden, self.latent, self.variational)
            net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self._state.items()}, strict=True)
            self.net = net.eval()
        return self.net

    def calibrate(self, val_x: Any, target_false_abstain: float = 0.01) -> float:
        """Set and return :attr:`threshold` for this detector alone (see :func:`calibrated_threshold`)."""
        self.threshold = calibrated_threshold(self.score(val_x), target_false_abstain)
        return self.threshold

    def _filled(self, data: np.ndarray) -> np.ndarray:
        if self._fill is None or data.ndim != 2 or data.shape[1] != len(self._fill):
            return data
        return np.where(np.isnan(data), self._fill, data).astype(np.float32, copy=False)

    def _fitted(self) -> dict[str, Any]:
        if not self._arrays:
            raise ValueError("This VAEDetector is not fitted: call .fit(x_train) first")
        return self._arrays

    def config(self) -> dict[str, Any]:
        self._fitted()
        return {
            "kind": self.kind, "latent": self.latent, "hidden": self.hidden, "variational": self.variational,
            "kl_weight": self.kl_weight, "input_shape": list(self.input_shape or ()), "threshold": self.threshold,
            "training": {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "beta": self.beta, "seed": self.seed},
            **({"fill": self.fill} if self.fill is not None else {}),
        }

    def state_dict(self) -> dict[str, "torch.Tensor"]:
        import torch

        self._fitted()
        return {k: torch.from_numpy(v.copy()) for k, v in self._state.items()}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """:meth:`state_dict` as NumPy arrays (what :meth:`OODGate.save` stores, readable without torch)."""
        self._fitted()
        return {k: v.copy() for k, v in self._state.items()}

    @classmethod
    def from_state(cls, config: Mapping[str, Any], state: Mapping[str, Any], *, threads: int = 1) -> "VAEDetector":
        """Rebuild a fitted detector from :meth:`config` and :meth:`state_arrays` (or :meth:`state_dict`).

        With NumPy arrays this needs no torch: the detector scores in NumPy, and
        builds its torch module only if :meth:`score_torch` or :meth:`state_dict` asks.
        """
        training = dict(config.get("training") or {})
        det = cls(
            latent=int(config["latent"]), hidden=int(config["hidden"]), variational=bool(config["variational"]),
            kl_weight=float(config["kl_weight"]), threads=threads, fill=config.get("fill"),
            **{k: training[k] for k in ("epochs", "batch_size", "lr", "beta", "seed") if k in training},
        )
        shape = tuple(int(d) for d in config["input_shape"])
        want = _vae_shapes(int(np.prod(shape)), det.hidden, det.latent, det.variational)
        arrays = {k: _numpy(v).astype(np.float32, copy=False) for k, v in state.items()}
        if set(arrays) != set(want) or any(arrays[k].shape != want[k] for k in want):
            wrong = sorted(set(want) ^ set(arrays)) or sorted(k for k in want if arrays[k].shape != want[k])
            raise ExportError(f"The autoencoder's tensors do not match its config (entries {', '.join(wrong[:4])})")
        det.input_shape, det._state = shape, arrays
        det._arrays = _vae_arrays(arrays)
        det.threshold = None if config.get("threshold") is None else float(config["threshold"])
        return det


def _kl(mu: "torch.Tensor", logvar: "torch.Tensor") -> "torch.Tensor":
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)


# -- Mahalanobis on penultimate features --------------------------------------


def last_linear(model: "torch.nn.Module") -> str:
    """The qualified name of the last ``nn.Linear`` registered in ``model`` (its classifier head)."""
    from torch import nn

    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(
            f"Argument model should contain an nn.Linear whose input are the penultimate features; {type(model).__name__} has none. "
            "Pass layer='name.of.layer' or features=callable, e.g. MahalanobisDetector(features=lambda x: model.body(x))"
        )
    return names[-1]


def _penultimate(model: "torch.nn.Module", layer: str) -> "torch.nn.Module":
    """A module returning the (flattened) input of ``model``'s submodule ``layer``: exportable with torch.export."""
    from torch import nn

    try:
        target = model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"Argument layer should name a submodule of the model, e.g. {last_linear(model)!r}; got {layer!r}") from None

    class Penultimate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen: list[torch.Tensor] = []
            handle = target.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
            try:
                self.model(x)
            finally:
                handle.remove()
            if not seen:
                raise ValueError(f"Layer {layer!r} did not run in the model's forward")
            return seen[-1].flatten(1)

    wrapper = Penultimate()
    wrapper.layer = layer  # type: ignore[assignment]
    wrapper.eval()
    return wrapper


def joint_module(features: Any) -> "torch.nn.Module | None":
    """A module returning ``(model output, features)`` in one forward pass, from a detector's
    ``features`` made by ``MahalanobisDetector(model)``; None for a plain features callable.

    The server runs it instead of the model when the gate is on, so the Mahalanobis
    detector costs a distance, not a second forward pass.
    """
    from torch import nn

    model = getattr(features, "model", None)
    target_name = getattr(features, "layer", None)
    if not isinstance(model, nn.Module) or not isinstance(target_name, str):
        return None
    net: nn.Module = model
    target = net.get_submodule(target_name)

    class Joint(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            seen: list[torch.Tensor] = []
            handle = target.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
            try:
                out = self.model(x)
            finally:
                handle.remove()
            return out, seen[-1].flatten(1)

    joint = Joint()
    joint.eval()
    return joint


class MahalanobisDetector:
    """Mahalanobis distance of a classifier's penultimate features to the training features.

    ``model``: the classifier; its features are the input of ``layer`` (default:
    the last ``nn.Linear``), captured with a forward hook. Or ``features``: any
    callable from an input tensor to an N x D feature tensor.
    ``mode="class"`` (default): one mean per class and a covariance shared by the
    classes (Lee et al. 2018), the score the distance to the nearest class mean;
    ``mode="single"``: one Gaussian over all training features. The covariance
    is estimated with Ledoit-Wolf shrinkage (``shrinkage="ledoit_wolf"``) or
    inverted with a pseudo-inverse (``"pinv"``).

    >>> det = MahalanobisDetector(model).fit(x_train, y_train)
    >>> det.score(x[:3])                                          # distance to the nearest class
    array([...])
    """

    kind = "mahalanobis"
    MODES = ("class", "single")
    SHRINKAGE = ("ledoit_wolf", "pinv")

    def __init__(
        self,
        model: "torch.nn.Module | None" = None,
        *,
        features: "Callable[[torch.Tensor], torch.Tensor] | None" = None,
        layer: str | None = None,
        mode: str = "class",
        shrinkage: str = "ledoit_wolf",
        numpy_features: Callable[[np.ndarray], np.ndarray] | None = None,
        threads: int = 1,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"Argument mode should be 'class' (class means, shared covariance) or 'single'; got {mode!r}")
        if shrinkage not in self.SHRINKAGE:
            raise ValueError(f"Argument shrinkage should be 'ledoit_wolf' or 'pinv'; got {shrinkage!r}")
        if numpy_features is not None:
            if model is not None or features is not None:
                raise ValueError("Pass one of model=, features= or numpy_features=, not several")
            if not callable(numpy_features):
                raise TypeError(f"Argument numpy_features should be a callable from a NumPy batch to features; got {type(numpy_features).__name__}")
        elif (model is None) == (features is None):
            raise ValueError(
                "Pass exactly one of model= (a classifier: its last nn.Linear's input are the features) or features= "
                "(a callable from inputs to features), e.g. MahalanobisDetector(model)"
            )
        if model is not None:
            import torch

            if not isinstance(model, torch.nn.Module):
                raise TypeError(f"Argument model should be a torch.nn.Module; got {type(model).__name__}")
        if features is not None and not callable(features):
            raise TypeError(f"Argument features should be a callable from an input tensor to features; got {type(features).__name__}")
        self.mode, self.shrinkage = mode, shrinkage
        self.layer: str | None = None
        if model is not None:
            self.layer = layer if layer is not None else last_linear(model)
            features = _penultimate(model, self.layer)
        self.features: Callable[[torch.Tensor], torch.Tensor] = features  # type: ignore[assignment]
        # NumPy in, NumPy out (the stored ONNX feature graph): scoring then needs no torch
        self.numpy_features = numpy_features
        self.threshold: float | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.classes: np.ndarray | None = None
        self.means: np.ndarray | None = None  # K x D (one row for mode="single")
        self.whiten: np.ndarray | None = None  # D x D with whiten @ whiten.T = precision
        self._projected_means: np.ndarray | None = None
        self._threads = _TorchThreads(threads)

    def __repr__(self) -> str:
        fitted = f"{0 if self.means is None else len(self.means)} means" if self.means is not None else "not fitted"
        return f"MahalanobisDetector(layer={self.layer!r}, mode={self.mode!r}, {fitted}, threshold={self.threshold})"

    def embed(self, x: Any) -> np.ndarray:
        """The features of a batch (float64, N x D)."""
        data = _as_batch(x, "x")
        if self.numpy_features is not None:
            feats = np.asarray(self.numpy_features(data))
            if feats.ndim < 1 or feats.shape[0] != data.shape[0]:
                raise ValueError("The features callable should return one feature row per input row (an N x D array)")
            return feats.reshape(feats.shape[0], -1).astype(np.float64)
        import torch

        self._threads.ensure()
        with torch.inference_mode():
            out = self.features(torch.from_numpy(data))
        if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != data.shape[0]:
            raise ValueError("The features callable should return one feature row per input row (an N x D tensor)")
        return out.reshape(out.shape[0], -1).double().numpy()

    def fit(self, x: Any, y: Any = None) -> "MahalanobisDetector":
        """Fit on in-distribution inputs ``x`` and their class labels ``y`` (needed for ``mode="class"``)."""
        data = _as_batch(x, "x")
        if np.isinf(data).any():
            raise ValueError("Argument x should hold finite numbers only (no NaN or infinities)")
        feats = self.embed(data)  # NaN inputs are fine where the model imputes them (a loopml.data.Preprocessor)
        if not np.isfinite(feats).all():
            raise ValueError(
                "Argument x should hold finite numbers only (no NaN or infinities): the model's features are not "
                "finite for some rows; impute missing values in the model (loopml.data.Preprocessor) or drop those rows"
            )
        n = feats.shape[0]
        if self.mode == "class":
            if y is None:
                raise ValueError("Argument y should hold the class of each row of x for mode='class' (or use mode='single')")
            labels = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y).ravel()
            if labels.shape[0] != n:
                raise ValueError(f"Argument y should have one label per row of x ({n}); got {labels.shape[0]}")
            classes = np.unique(labels)
            means = np.stack([feats[labels == c].mean(axis=0) for c in classes])
            centered = feats - means[np.searchsorted(classes, labels)]
        else:
            classes = np.zeros(1, dtype=np.int64)
            means = feats.mean(axis=0, keepdims=True)
            centered = feats - means
        if n < 2:
            raise ValueError(f"Argument x should have at least 2 rows to fit on; got {n}")
        if self.shrinkage == "ledoit_wolf":
            from sklearn.covariance import LedoitWolf

            precision = LedoitWolf(assume_centered=True).fit(centered).precision_
        else:
            precision = np.linalg.pinv(centered.T @ centered / n, hermitian=True)
        precision = (precision + precision.T) / 2
        # precision = W W^T; for pinv, a positive semi-definite precision: eigh instead of Cholesky
        vals, vecs = np.linalg.eigh(precision)
        self.whiten = vecs * np.sqrt(np.clip(vals, 0, None))
        self.means, self.classes = means, classes.astype(np.int64)
        self._projected_means = means @ self.whiten
        self.input_shape, self.threshold = tuple(data.shape[1:]), None
        return self

    def score(self, x: Any) -> np.ndarray:
        """Distance to the nearest class mean (``mode="class"``) or to the mean (``"single"``), per row."""
        data = _as_batch(x, "x")
        if self.whiten is None or self._projected_means is None:
            raise ValueError("This MahalanobisDetector is not fitted: call .fit(x_train, y_train) first")
        _check_shape(data, self.input_shape, "x")
        return self.distance(self.embed(data))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """:meth:`score` from features already computed (N x D), e.g. by the model's own forward pass."""
        if self.whiten is None or self._projected_means is None:
            raise ValueError("This MahalanobisDetector is not fitted: call .fit(x_train, y_train) first")
        z = np.asarray(features, dtype=np.float64).reshape(len(features), -1) @ self.whiten
        m = self._projected_means
        sq = (z * z).sum(1, keepdims=True) - 2 * z @ m.T + (m * m).sum(1)
        return _finite_or_inf(np.sqrt(np.clip(sq.min(axis=1), 0, None)))

    def calibrate(self, val_x: Any, target_false_abstain: float = 0.01) -> float:
        """Set and return :attr:`threshold` for this detector alone (see :func:`calibrated_threshold`)."""
        self.threshold = calibrated_threshold(self.score(val_x), target_false_abstain)
        return self.threshold

    def config(self) -> dict[str, Any]:
        if self.means is None:
            raise ValueError("This MahalanobisDetector is not fitted: call .fit(x_train, y_train) first")
        return {
            "kind": self.kind, "mode": self.mode, "shrinkage": self.shrinkage, "layer": self.layer,
            "input_shape": list(self.input_shape or ()), "feature_dim": int(self.means.shape[1]),
            "classes": [int(c) for c in (self.classes if self.classes is not None else [])], "threshold": self.threshold,
        }

    def state_dict(self) -> dict[str, "torch.Tensor"]:
        import torch

        return {k: torch.from_numpy(v) for k, v in self.state_arrays().items()}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """:meth:`state_dict` as NumPy arrays (what :meth:`OODGate.save` stores, readable without torch)."""
        if self.means is None or self.whiten is None or self.classes is None:
            raise ValueError("This MahalanobisDetector is not fitted: call .fit(x_train, y_train) first")
        return {"means": self.means.copy(), "whiten": self.whiten.copy(), "classes": self.classes.copy()}

    @classmethod
    def from_state(
        cls,
        config: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        model: "torch.nn.Module | None" = None,
        features: "Callable[[torch.Tensor], torch.Tensor] | None" = None,
        numpy_features: Callable[[np.ndarray], np.ndarray] | None = None,
        threads: int = 1,
    ) -> "MahalanobisDetector":
        """Rebuild a fitted detector; the features come from ``model`` (its ``layer``), ``features``
        (tensor to tensor) or ``numpy_features`` (array to array: no torch needed)."""
        layer = config.get("layer")
        det = cls(model, features=features, layer=layer if model is not None else None, numpy_features=numpy_features,
                  mode=str(config["mode"]), shrinkage=str(config["shrinkage"]), threads=threads)
        det.layer = layer
        try:
            means = _numpy(state["means"]).astype(np.float64)
            whiten = _numpy(state["whiten"]).astype(np.float64)
            classes = _numpy(state["classes"]).astype(np.int64)
        except (KeyError, AttributeError, TypeError, ValueError) as exc:
            raise ExportError(f"The Mahalanobis tensors are incomplete (missing {exc})") from None
        d = int(config["feature_dim"])
        if means.ndim != 2 or means.shape[1] != d or whiten.shape != (d, d) or classes.shape[0] != means.shape[0]:
            raise ExportError("The Mahalanobis tensors do not match their config (feature_dim, classes)")
        det.means, det.whiten, det.classes = means, whiten, classes
        det._projected_means = means @ whiten
        det.input_shape = tuple(int(v) for v in config["input_shape"])
        det.threshold = None if config.get("threshold") is None else float(config["threshold"])
        return det
