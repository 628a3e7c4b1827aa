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
``config()`` / ``state_dict()`` / ``from_state()`` for storage without pickle::

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
    """Set torch's thread count once in every thread that scores (NOTES.md: a server's worker threads)."""

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


class VAEDetector:
    """Reconstruction error of a small (variational) autoencoder fitted on in-distribution inputs.

    Inputs are flattened and standardised per feature (a floor on the scale
    keeps constant pixels from dividing by zero). ``variational=True`` (the
    default, for images) trains a VAE; ``False`` a plain MLP autoencoder (tabular
    rows). The score of a row is the mean squared reconstruction error of its
    standardised features, decoded from the posterior mean, plus ``kl_weight``
    times the KL term per feature.

    >>> det = VAEDetector(epochs=30).fit(x_train)          # doctest: +SKIP
    >>> det.calibrate(x_val, target_false_abstain=0.01)     # doctest: +SKIP
    >>> det.score(x) > det.threshold                        # doctest: +SKIP
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
        self.threshold: float | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.net: torch.nn.Module | None = None
        self.losses: list[float] = []
        self._arrays: dict[str, Any] = {}
        self._threads = _TorchThreads(threads)

    def __repr__(self) -> str:
        state = f"input_shape={self.input_shape}" if self.net is not None else "not fitted"
        return f"VAEDetector(latent={self.latent}, hidden={self.hidden}, variational={self.variational}, {state}, threshold={self.threshold})"

    def fit(self, x: Any) -> "VAEDetector":
        """Train on in-distribution inputs ``x`` (N x features or N x C x H x W); returns self."""
        import torch

        data = _as_batch(x, "x")
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
        self._fitted()
        data = _as_batch(x, "x")
        _check_shape(data, self.input_shape, "x")
        p = self._arrays
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

        net = self._fitted()
        data = _as_batch(x, "x")
        _check_shape(data, self.input_shape, "x")
        self._threads.ensure()
        with torch.inference_mode():
            recon, target, mu, logvar = net(torch.from_numpy(data))
            out = (recon - target).pow(2).double().mean(1)
            if self.kl_weight and logvar is not None:
                out = out + self.kl_weight * _kl(mu.double(), logvar.double()) / target.shape[1]
        return _finite_or_inf(out.numpy())

    def _cache_arrays(self) -> None:
        """The fitted layers as NumPy (weight transposed, bias) pairs, for :meth:`score`."""
        net = self._fitted()

        def pair(layer: Any) -> tuple[np.ndarray, np.ndarray]:
            return (np.ascontiguousarray(layer.weight.detach().numpy().T), layer.bias.detach().numpy().copy())

        linear = lambda seq: [pair(m) for m in seq if hasattr(m, "weight")]  # noqa: E731
        arrays: dict[str, Any] = {
            "mean": net.get_buffer("mean").numpy().copy(), "scale": net.get_buffer("scale").numpy().copy(),
            "encoder": linear(net.encoder), "mu": pair(net.mu), "decoder": linear(net.decoder),
        }
        if net.logvar is not None:
            arrays["logvar"] = pair(net.logvar)
        self._arrays = arrays

    def calibrate(self, val_x: Any, target_false_abstain: float = 0.01) -> float:
        """Set and return :attr:`threshold` for this detector alone (see :func:`calibrated_threshold`)."""
        self.threshold = calibrated_threshold(self.score(val_x), target_false_abstain)
        return self.threshold

    def _fitted(self) -> "torch.nn.Module":
        if self.net is None:
            raise ValueError("This VAEDetector is not fitted: call .fit(x_train) first")
        return self.net

    def config(self) -> dict[str, Any]:
        self._fitted()
        return {
            "kind": self.kind, "latent": self.latent, "hidden": self.hidden, "variational": self.variational,
            "kl_weight": self.kl_weight, "input_shape": list(self.input_shape or ()), "threshold": self.threshold,
            "training": {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "beta": self.beta, "seed": self.seed},
        }

    def state_dict(self) -> dict[str, "torch.Tensor"]:
        return {k: v.detach().clone() for k, v in self._fitted().state_dict().items()}

    @classmethod
    def from_state(cls, config: Mapping[str, Any], state: Mapping[str, "torch.Tensor"], *, threads: int = 1) -> "VAEDetector":
        """Rebuild a fitted detector from :meth:`config` and :meth:`state_dict`."""
        training = dict(config.get("training") or {})
        det = cls(
            latent=int(config["latent"]), hidden=int(config["hidden"]), variational=bool(config["variational"]),
            kl_weight=float(config["kl_weight"]), threads=threads,
            **{k: training[k] for k in ("epochs", "batch_size", "lr", "beta", "seed") if k in training},
        )
        shape = tuple(int(d) for d in config["input_shape"])
        net = _autoencoder(int(np.prod(shape)), det.hidden, det.latent, det.variational)
        try:
            net.load_state_dict(dict(state), strict=True)
        except RuntimeError as exc:
            raise ExportError(f"The autoencoder's tensors do not match its config: {str(exc).splitlines()[0]}") from None
        net.eval()
        det.net, det.input_shape = net, shape
        det._cache_arrays()
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

    >>> det = MahalanobisDetector(model).fit(x_train, y_train)   # doctest: +SKIP
    >>> det.score(x)                                              # distance to the nearest class   # doctest: +SKIP
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
        threads: int = 1,
    ) -> None:
        import torch

        if mode not in self.MODES:
            raise ValueError(f"Argument mode should be 'class' (class means, shared covariance) or 'single'; got {mode!r}")
        if shrinkage not in self.SHRINKAGE:
            raise ValueError(f"Argument shrinkage should be 'ledoit_wolf' or 'pinv'; got {shrinkage!r}")
        if (model is None) == (features is None):
            raise ValueError(
                "Pass exactly one of model= (a classifier: its last nn.Linear's input are the features) or features= "
                "(a callable from inputs to features), e.g. MahalanobisDetector(model)"
            )
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"Argument model should be a torch.nn.Module; got {type(model).__name__}")
        if features is not None and not callable(features):
            raise TypeError(f"Argument features should be a callable from an input tensor to features; got {type(features).__name__}")
        self.mode, self.shrinkage = mode, shrinkage
        self.layer: str | None = None
        if model is not None:
            self.layer = layer if layer is not None else last_linear(model)
            features = _penultimate(model, self.layer)
        self.features: Callable[[torch.Tensor], torch.Tensor] = features  # type: ignore[assignment]
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
        import torch

        data = _as_batch(x, "x")
        self._threads.ensure()
        with torch.inference_mode():
            out = self.features(torch.from_numpy(data))
        if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != data.shape[0]:
            raise ValueError("The features callable should return one feature row per input row (an N x D tensor)")
        return out.reshape(out.shape[0], -1).double().numpy()

    def fit(self, x: Any, y: Any = None) -> "MahalanobisDetector":
        """Fit on in-distribution inputs ``x`` and their class labels ``y`` (needed for ``mode="class"``)."""
        data = _as_batch(x, "x")
        if not np.isfinite(data).all():
            raise ValueError("Argument x should hold finite numbers only (no NaN or infinities)")
        feats = self.embed(data)
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

        if self.means is None or self.whiten is None or self.classes is None:
            raise ValueError("This MahalanobisDetector is not fitted: call .fit(x_train, y_train) first")
        return {
            "means": torch.from_numpy(self.means.copy()),
            "whiten": torch.from_numpy(self.whiten.copy()),
            "classes": torch.from_numpy(self.classes.copy()),
        }

    @classmethod
    def from_state(
        cls,
        config: Mapping[str, Any],
        state: Mapping[str, "torch.Tensor"],
        *,
        model: "torch.nn.Module | None" = None,
        features: "Callable[[torch.Tensor], torch.Tensor] | None" = None,
        threads: int = 1,
    ) -> "MahalanobisDetector":
        """Rebuild a fitted detector; the features come from ``model`` (its ``layer``) or ``features``."""
        layer = config.get("layer")
        det = cls(model, features=features, layer=layer if model is not None else None,
                  mode=str(config["mode"]), shrinkage=str(config["shrinkage"]), threads=threads)
        det.layer = layer
        try:
            means, whiten = state["means"].double().numpy(), state["whiten"].double().numpy()
            classes = state["classes"].long().numpy()
        except (KeyError, AttributeError) as exc:
            raise ExportError(f"The Mahalanobis tensors are incomplete (missing {exc})") from None
        d = int(config["feature_dim"])
        if means.ndim != 2 or means.shape[1] != d or whiten.shape != (d, d) or classes.shape[0] != means.shape[0]:
            raise ExportError("The Mahalanobis tensors do not match their config (feature_dim, classes)")
        det.means, det.whiten, det.classes = means, whiten, classes
        det._projected_means = means @ whiten
        det.input_shape = tuple(int(v) for v in config["input_shape"])
        det.threshold = None if config.get("threshold") is None else float(config["threshold"])
        return det
