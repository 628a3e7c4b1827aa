"""The Mahalanobis detector: distance of a classifier's penultimate features to the training features.

Lee et al. 2018: one mean per class and a covariance shared by the classes
(Ledoit-Wolf shrinkage), the score the Mahalanobis distance to the nearest class
mean; or one Gaussian over all features (``mode="single"``). The features are the
input of the classifier's last ``nn.Linear`` (:func:`last_linear`), captured with a
forward hook; :func:`joint_module` gives the model's output and those features in
one forward pass, which the server runs so the detector costs a distance only.

>>> det = MahalanobisDetector(model).fit(x_train, y_train)
>>> det.layer                                   # DigitsCNN's classifier head: the input of its last nn.Linear
'head.3'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ArgumentError, ArgumentTypeError, ExportError
from .base import (
    CalibratedDetector,
    TorchThreads,
    as_batch,
    check_shape,
    finite_or_inf,
    stored_threshold,
    to_numpy,
)

if TYPE_CHECKING:
    import torch

__all__ = ["MahalanobisDetector", "joint_module", "last_linear"]


def last_linear(model: "torch.nn.Module") -> str:
    """The qualified name of the last ``nn.Linear`` registered in ``model`` (its classifier head)."""
    from torch import nn

    names: list[str] = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ArgumentError(
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
        raise ArgumentError(f"Argument layer should name a submodule of the model, e.g. {last_linear(model)!r}; got {layer!r}") from None

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
                raise ArgumentError(f"Layer {layer!r} did not run in the model's forward")
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


class MahalanobisDetector(CalibratedDetector):
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
            raise ArgumentError(f"Argument mode should be 'class' (class means, shared covariance) or 'single'; got {mode!r}")
        if shrinkage not in self.SHRINKAGE:
            raise ArgumentError(f"Argument shrinkage should be 'ledoit_wolf' or 'pinv'; got {shrinkage!r}")
        if numpy_features is not None:
            if model is not None or features is not None:
                raise ArgumentError("Pass one of model=, features= or numpy_features=, not several")
            if not callable(numpy_features):
                raise ArgumentTypeError(f"Argument numpy_features should be a callable from a NumPy batch to features; got {type(numpy_features).__name__}")
        elif (model is None) == (features is None):
            raise ArgumentError(
                "Pass exactly one of model= (a classifier: its last nn.Linear's input are the features) or features= "
                "(a callable from inputs to features), e.g. MahalanobisDetector(model)"
            )
        if model is not None:
            import torch

            if not isinstance(model, torch.nn.Module):
                raise ArgumentTypeError(f"Argument model should be a torch.nn.Module; got {type(model).__name__}")
        if features is not None and not callable(features):
            raise ArgumentTypeError(f"Argument features should be a callable from an input tensor to features; got {type(features).__name__}")
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
        self._threads = TorchThreads(threads)

    def __repr__(self) -> str:
        fitted = f"{0 if self.means is None else len(self.means)} means" if self.means is not None else "not fitted"
        return f"MahalanobisDetector(layer={self.layer!r}, mode={self.mode!r}, {fitted}, threshold={self.threshold})"

    def embed(self, x: Any) -> np.ndarray:
        """The features of a batch (float64, N x D)."""
        data = as_batch(x, "x")
        if self.numpy_features is not None:
            feats = np.asarray(self.numpy_features(data))
            if feats.ndim < 1 or feats.shape[0] != data.shape[0]:
                raise ArgumentError("The features callable should return one feature row per input row (an N x D array)")
            return feats.reshape(feats.shape[0], -1).astype(np.float64)
        import torch

        self._threads.ensure()
        with torch.inference_mode():
            out = self.features(torch.from_numpy(data))
        if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != data.shape[0]:
            raise ArgumentError("The features callable should return one feature row per input row (an N x D tensor)")
        return out.reshape(out.shape[0], -1).double().numpy()

    def fit(self, x: Any, y: Any = None) -> "MahalanobisDetector":
        """Fit on in-distribution inputs ``x`` and their class labels ``y`` (needed for ``mode="class"``)."""
        data = as_batch(x, "x")
        if np.isinf(data).any():
            raise ArgumentError("Argument x should hold finite numbers only (no NaN or infinities)")
        feats = self.embed(data)  # NaN inputs are fine where the model imputes them (a loopml.data.Preprocessor)
        if not np.isfinite(feats).all():
            raise ArgumentError(
                "Argument x should hold finite numbers only (no NaN or infinities): the model's features are not "
                "finite for some rows; impute missing values in the model (loopml.data.Preprocessor) or drop those rows"
            )
        n = feats.shape[0]
        if self.mode == "class":
            if y is None:
                raise ArgumentError("Argument y should hold the class of each row of x for mode='class' (or use mode='single')")
            labels = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y).ravel()
            if labels.shape[0] != n:
                raise ArgumentError(f"Argument y should have one label per row of x ({n}); got {labels.shape[0]}")
            classes = np.unique(labels)
            means = np.stack([feats[labels == c].mean(axis=0) for c in classes])
            centered = feats - means[np.searchsorted(classes, labels)]
        else:
            classes = np.zeros(1, dtype=np.int64)
            means = feats.mean(axis=0, keepdims=True)
            centered = feats - means
        if n < 2:
            raise ArgumentError(f"Argument x should have at least 2 rows to fit on; got {n}")
        if self.shrinkage == "ledoit_wolf":
            from sklearn.covariance import LedoitWolf

            precision = LedoitWolf(assume_centered=True).fit(centered).precision_
        else:
            precision = np.linalg.pinv(centered.T @ centered / n, hermitian=True)
        precision = (precision + precision.T) / 2
        # precision = W W^T; for pinv, a positive semi-definite precision: eigh instead of Cholesky
        vals, vecs = np.linalg.eigh(precision)
        self._set_fit(means, vecs * np.sqrt(np.clip(vals, 0, None)), classes.astype(np.int64), tuple(data.shape[1:]))
        self.threshold = None
        return self

    def _set_fit(self, means: np.ndarray, whiten: np.ndarray, classes: np.ndarray, input_shape: tuple[int, ...]) -> None:
        """Hold the fitted means, whitening matrix and classes, and the means projected once for :meth:`distance`."""
        self.means, self.whiten, self.classes, self.input_shape = means, whiten, classes, input_shape
        self._projected_means = means @ whiten

    def score(self, x: Any) -> np.ndarray:
        """Distance to the nearest class mean (``mode="class"``) or to the mean (``"single"``), per row."""
        data = as_batch(x, "x")
        if self.whiten is None or self._projected_means is None:
            raise ArgumentError("This MahalanobisDetector is not fitted: call .fit(x_train, y_train) first")
        check_shape(data, self.input_shape, "x")
        return self.distance(self.embed(data))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """:meth:`score` from features already computed (N x D), e.g. by the model's own forward pass."""
        if self.whiten is None or self._projected_means is None:
            raise ArgumentError("This MahalanobisDetector is not fitted: call .fit(x_train, y_train) first")
        z = np.asarray(features, dtype=np.float64).reshape(len(features), -1) @ self.whiten
        m = self._projected_means
        sq = (z * z).sum(1, keepdims=True) - 2 * z @ m.T + (m * m).sum(1)
        return finite_or_inf(np.sqrt(np.clip(sq.min(axis=1), 0, None)))

    def config(self) -> dict[str, Any]:
        if self.means is None:
            raise ArgumentError("This MahalanobisDetector is not fitted: call .fit(x_train, y_train) first")
        return {
            "kind": self.kind, "mode": self.mode, "shrinkage": self.shrinkage, "layer": self.layer,
            "input_shape": list(self.input_shape or ()), "feature_dim": int(self.means.shape[1]),
            "classes": [int(c) for c in (self.classes if self.classes is not None else [])], "threshold": self.threshold,
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        """:meth:`state_dict` as NumPy arrays (what :meth:`OODGate.save` stores, readable without torch)."""
        if self.means is None or self.whiten is None or self.classes is None:
            raise ArgumentError("This MahalanobisDetector is not fitted: call .fit(x_train, y_train) first")
        return {"means": self.means.copy(), "whiten": self.whiten.copy(), "classes": self.classes.copy()}

    @classmethod
    def from_arrays(
        cls,
        means: Any,
        whiten: Any,
        classes: Any,
        *,
        input_shape: Sequence[int],
        threshold: float | None = None,
        model: "torch.nn.Module | None" = None,
        features: "Callable[[torch.Tensor], torch.Tensor] | None" = None,
        numpy_features: Callable[[np.ndarray], np.ndarray] | None = None,
        layer: str | None = None,
        mode: str = "class",
        shrinkage: str = "ledoit_wolf",
        threads: int = 1,
    ) -> "MahalanobisDetector":
        """A fitted detector from :meth:`state_arrays`' ``means`` (K x D), ``whiten`` (D x D) and
        ``classes`` (K) and the row shape it was fitted on. The features come from ``model`` (its
        ``layer``), ``features`` (tensor to tensor) or ``numpy_features`` (array to array: no torch
        needed); ``layer`` is recorded either way.

        >>> det = MahalanobisDetector(model).fit(x_train, y_train)
        >>> state = det.state_arrays()
        >>> twin = MahalanobisDetector.from_arrays(state["means"], state["whiten"], state["classes"],
        ...                                        input_shape=det.input_shape, model=model)
        >>> bool(np.allclose(twin.score(x[:4]), det.score(x[:4])))
        True
        """
        det = cls(model, features=features, layer=layer if model is not None else None, numpy_features=numpy_features,
                  mode=mode, shrinkage=shrinkage, threads=threads)
        det.layer = layer if layer is not None else det.layer
        m = to_numpy(means).astype(np.float64)
        w = to_numpy(whiten).astype(np.float64)
        c = to_numpy(classes).astype(np.int64).ravel()
        if m.ndim != 2 or w.shape != (m.shape[1], m.shape[1]) or c.shape[0] != m.shape[0]:
            raise ArgumentError(
                "Arguments means, whiten and classes should be K x D, D x D and K arrays (as state_arrays() gives them); "
                f"got shapes {m.shape}, {w.shape}, {c.shape}"
            )
        det._set_fit(m, w, c, tuple(int(v) for v in input_shape))
        det.threshold = stored_threshold(threshold)
        return det

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
        """Rebuild a fitted detector from :meth:`config` and :meth:`state_arrays` (or :meth:`state_dict`);
        the features come from ``model`` (its ``layer``), ``features`` (tensor to tensor) or
        ``numpy_features`` (array to array: no torch needed)."""
        try:
            means = to_numpy(state["means"]).astype(np.float64)
            whiten = to_numpy(state["whiten"]).astype(np.float64)
            classes = to_numpy(state["classes"]).astype(np.int64)
        except (KeyError, AttributeError, TypeError, ValueError) as exc:
            raise ExportError(f"The Mahalanobis tensors are incomplete (missing {exc})") from None
        d = int(config["feature_dim"])
        if means.ndim != 2 or means.shape[1] != d or whiten.shape != (d, d) or classes.shape[0] != means.shape[0]:
            raise ExportError("The Mahalanobis tensors do not match their config (feature_dim, classes)")
        return cls.from_arrays(
            means, whiten, classes, input_shape=config["input_shape"], threshold=config.get("threshold"),
            model=model, features=features, numpy_features=numpy_features, layer=config.get("layer"),
            mode=str(config["mode"]), shrinkage=str(config["shrinkage"]), threads=threads,
        )
