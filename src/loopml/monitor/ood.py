"""Out-of-distribution detectors and the gate that lets a server answer "I don't know".

Two detectors, each fitted on the training split and scored so that higher
means more unusual:

- :class:`VAEDetector`: a small variational autoencoder (an MLP over the
  pixels; a plain autoencoder for tabular rows, ``variational=False``) trained
  on standardised inputs; the score is the reconstruction error per feature
  (optionally plus the KL term);
- :class:`MahalanobisDetector`: Mahalanobis distance of the classifier's
  penultimate-layer features (the input of its last ``nn.Linear``) to the
  nearest class mean, with one covariance shared by the classes and
  Ledoit-Wolf shrinkage (Lee et al. 2018), or to a single Gaussian.

:class:`OODGate` joins them: each score is divided by its detector's
threshold, the gate's score is the largest of those ratios and the gate
abstains above 1.0. :meth:`OODGate.calibrate` picks the thresholds on the
validation split so that the gate as a whole abstains on about
``target_false_abstain`` of in-distribution inputs::

    from loopml.monitor.ood import MahalanobisDetector, OODGate, VAEDetector

    gate = OODGate({"vae": VAEDetector().fit(x_train),
                    "mahalanobis": MahalanobisDetector(model).fit(x_train, y_train)})
    gate.calibrate(x_val, target_false_abstain=0.01)
    gate.score(x) > gate.threshold      # abstain
    gate.explain(x)                     # ["mahalanobis: 3.1x its threshold", ...]
    gate.save("gate/")                  # JSON + NumPy arrays (.npz); the feature extractor as ONNX (else a .pt2 program)
    OODGate.load("gate/")               # never unpickles; without torch when the features are ONNX

:func:`fit_gate` fits a gate on a live model. A registered version's gate
(:func:`loopml.monitor.fit_ood`, in :mod:`loopml.monitor.versions`) is stored
with the version's files (formats ``ood_gate``, ``ood_vae``, ``ood_mahalanobis``,
``ood_features``, ``ood_joint``); :func:`load_version_gate` loads it back, each
file's sha256 checked. ``ood_joint`` is the model with its penultimate features as a
second output (ONNX, checked against PyTorch when stored): with it the server
gets the prediction and the Mahalanobis features from one forward pass
(:attr:`OODGate.joint`), and the detector costs a distance instead of a second
forward pass.

Loading a gate whose features (and joint file) are ONNX needs NumPy and ONNX
Runtime only, not torch: the detectors' arrays are ``.npz`` files read with
``allow_pickle=False``, the autoencoder scores in NumPy and the Mahalanobis
features come from ONNX Runtime, so ``loopml serve`` starts without importing
torch (about 1 s and 200 MB). Gates saved before this stored ``.pt`` tensor
files; they still load, through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from ..errors import (
    ArgumentError,
    ArgumentTypeError,
    ExportError,
    IntegrityError,
    NotFound,
    warn_user,
)
from ..files import atomic_path, atomic_write
from ..models.exporting import INPUT_NAME, OUTPUT_NAME, export_onnx, export_pt2
from ..models.runtime import OnnxPredictor, load_predictor
from ..store.artifacts import sha256_file
from .detectors import (
    Detector,
    MahalanobisDetector,
    VAEDetector,
    as_batch,
    calibrated_threshold,
    check_rate,
    joint_module,
    strictest_rate,
)

if TYPE_CHECKING:
    import torch

    from ..store.protocols import Registry
    from ..store.registry import ModelVersion

log = logging.getLogger("loopml.monitor")

__all__ = [
    "DETECTORS",
    "GATE_FORMATS",
    "Detector",
    "MahalanobisDetector",
    "OODGate",
    "VAEDetector",
    "calibrated_threshold",
    "fit_gate",
    "load_version_gate",
]

GATE_FILE = "ood_gate.json"
GATE_FORMAT_ID = "loopml-ood-gate"
GATE_FORMAT_VERSION = 1
DETECTORS: tuple[str, ...] = ("vae", "mahalanobis")
# registry format -> file name; the gate's JSON is stored last, so a half-stored gate is never loaded
GATE_FORMATS: dict[str, str] = {
    "ood_vae": "ood_vae.npz",
    "ood_mahalanobis": "ood_mahalanobis.npz",
    "ood_features": "ood_features.pt2",
    "ood_joint": "ood_joint.onnx",
    "ood_gate": GATE_FILE,
}
_DETECTOR_FORMAT = {"vae": "ood_vae", "mahalanobis": "ood_mahalanobis"}
# the detectors' files of gates saved before the .npz files: torch tensors, loaded with weights_only=True
_LEGACY_FILES = ("ood_vae.pt", "ood_mahalanobis.pt")


# -- the gate ------------------------------------------------------------------


class OODGate:
    """One or more detectors behind one threshold: abstain when any detector's score passes its own.

    ``score(x)`` is, per row, the largest of ``detector score / detector threshold``;
    the gate abstains where it exceeds :attr:`threshold` (always 1.0).

    >>> from loopml.monitor.detectors import MahalanobisDetector, VAEDetector
    >>> vae = VAEDetector(epochs=10).fit(x_train)
    >>> maha = MahalanobisDetector(model).fit(x_train, y_train)
    >>> gate = OODGate({"vae": vae, "mahalanobis": maha}).calibrate(x_val)
    >>> gate.abstain(torch.cat([x[:2], torch.rand(1, 1, 8, 8)]))               # two digits, then noise
    array([False, False,  True])
    >>> gate.explain(torch.rand(1, 1, 8, 8))
    ['...x its threshold (...x)']
    """

    threshold: float = 1.0

    def __init__(self, detectors: Mapping[str, Detector]) -> None:
        if not isinstance(detectors, Mapping) or not detectors:
            raise ArgumentError(
                "Argument detectors should map names to fitted detectors, e.g. "
                "OODGate({'vae': VAEDetector().fit(x_train)})"
            )
        for name, det in detectors.items():
            if name not in DETECTORS:
                raise ArgumentError(f"Argument detectors should use the names {', '.join(DETECTORS)}; got {name!r}")
            if not callable(getattr(det, "score", None)):
                raise ArgumentTypeError(f"Detector {name!r} should have a score(x) method; got {type(det).__name__}")
        self.detectors: dict[str, Detector] = dict(detectors)
        self.target_false_abstain: float | None = None
        self.val_false_abstain: float | None = None
        # set by fit_gate: the rate asked for (target_false_abstain is the one calibrated) and the rows it had
        self.requested_false_abstain: float | None = None
        self.val_rows: int | None = None
        # (model output, features) in one forward pass, when the gate was stored with the model's ONNX
        # "joint" file: the server runs it instead of the model, and the Mahalanobis detector scores its features
        self.joint: Callable[[np.ndarray], list[np.ndarray]] | None = None

    def __repr__(self) -> str:
        return f"OODGate({self.detectors!r}, target_false_abstain={self.target_false_abstain})"

    def calibrate(self, val_x: Any, target_false_abstain: float = 0.01) -> "OODGate":
        """Set every detector's threshold so the gate abstains on about ``target_false_abstain`` of ``val_x``.

        Each detector is first calibrated alone; their thresholds are then scaled
        by one common factor, chosen the same way on the gate's own scores, so
        that the union of detectors (not each one) meets the target.
        """
        rate = check_rate(target_false_abstain)
        data = as_batch(val_x, "val_x")
        raw = {name: det.score(data) for name, det in self.detectors.items()}
        alone = {name: calibrated_threshold(s, rate) for name, s in raw.items()}
        for name, t in alone.items():
            if t <= 0:
                raise ArgumentError(f"Detector {name!r} scores 0 on nearly all of val_x: it cannot be calibrated")
        joint = np.max(np.stack([raw[n] / alone[n] for n in raw]), axis=0)
        factor = calibrated_threshold(joint, rate)
        for name, det in self.detectors.items():
            det.threshold = alone[name] * factor
        self.target_false_abstain = rate
        self.val_rows = len(data)
        self.val_false_abstain = float(np.mean(self.score(data) > self.threshold))
        return self

    @property
    def thresholds(self) -> dict[str, float | None]:
        return {name: det.threshold for name, det in self.detectors.items()}

    def detector_scores(self, x: Any, *, features: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each detector's score divided by its threshold (1.0 = at the threshold), per row.

        ``features``: the model's penultimate features of ``x`` when already computed (the
        second output of :attr:`joint`); the Mahalanobis detector then skips its forward pass.
        """
        data = as_batch(x, "x")
        out = {}
        for name, det in self.detectors.items():
            if det.threshold is None:
                raise ArgumentError(f"The gate is not calibrated ({name!r} has no threshold): call .calibrate(x_val) first")
            if features is not None and isinstance(det, MahalanobisDetector):
                out[name] = det.distance(features) / det.threshold
            else:
                out[name] = det.score(data) / det.threshold
        return out

    def score(self, x: Any, *, features: np.ndarray | None = None) -> np.ndarray:
        """One score per row, higher = more unusual; above :attr:`threshold` (1.0) the gate abstains."""
        scores = self.detector_scores(x, features=features)
        worst: np.ndarray = np.max(np.stack(list(scores.values())), axis=0)  # numpy types np.max as Any
        return worst

    def abstain(self, x: Any) -> np.ndarray:
        """True where the gate would answer "I don't know"."""
        return self.score(x) > self.threshold

    def explain(self, x: Any) -> list[str]:
        """Per row, which detector decides and by how much, e.g. ``"vae: 2.7x its threshold (mahalanobis 0.6x)"``.

        A row within every threshold reads ``"in distribution (vae 0.4x, mahalanobis 0.3x)"``.
        """
        scores = self.detector_scores(x)
        names = list(scores)
        out = []
        for i in range(len(next(iter(scores.values())))):
            ratios = {n: float(scores[n][i]) for n in names}
            fired = [n for n in names if ratios[n] > self.threshold]
            if fired:
                top = max(fired, key=lambda n: ratios[n])
                rest = ", ".join(f"{n} {ratios[n]:.2g}x" for n in names if n != top)
                out.append(f"{top}: {ratios[top]:.2g}x its threshold" + (f" ({rest})" if rest else ""))
            else:
                out.append("in distribution (" + ", ".join(f"{n} {ratios[n]:.2g}x" for n in names) + ")")
        return out

    # -- persistence -------------------------------------------------------------

    def _files(self, folder: Path, *, example: np.ndarray | None) -> dict[str, Any]:
        """Write each detector's arrays (and the feature extractor) into ``folder``; return the gate document."""
        doc: dict[str, Any] = {
            "format": GATE_FORMAT_ID, "format_version": GATE_FORMAT_VERSION, "threshold": self.threshold,
            "target_false_abstain": self.target_false_abstain, "val_false_abstain": self.val_false_abstain,
            "detectors": {},
        }
        for name, det in self.detectors.items():
            config = det.config()
            fmt = _DETECTOR_FORMAT[name]
            path = folder / GATE_FORMATS[fmt]
            buffer = io.BytesIO()
            arrays: dict[str, Any] = det.state_arrays()
            np.savez(buffer, allow_pickle=False, **arrays)  # plain arrays: loading needs neither pickle nor torch
            atomic_write(path, buffer.getvalue())
            entry: dict[str, Any] = {"config": config, "format": fmt, "file": path.name, "sha256": sha256_file(path)}
            if isinstance(det, MahalanobisDetector):
                features = det.features
                if _is_module(features) and example is not None:
                    import torch

                    # the joint file first: the features graph is cut out of it (one export instead of two)
                    jpath = _save_joint(features, example, folder)
                    fpath = _features_of_joint(jpath, example, folder) if jpath is not None else None
                    if fpath is not None:
                        runtime = "onnx"
                    else:
                        fpath, runtime = _save_features(features, torch.from_numpy(example), folder)
                    entry["features"] = {"format": "ood_features", "file": fpath.name, "sha256": sha256_file(fpath),
                                         "runtime": runtime}
                    if jpath is not None:
                        entry["joint"] = {"format": "ood_joint", "file": jpath.name, "sha256": sha256_file(jpath)}
                else:
                    entry["features"] = None  # a plain callable: load(..., features=...) must supply it
            doc["detectors"][name] = entry
        return doc

    def save(self, folder: str | Path, *, example: Any = None) -> Path:
        """Write the gate into ``folder``: ``ood_gate.json``, the tensors, the features as a ``.pt2`` program.

        ``example``: a few input rows to trace the feature extractor with (default:
        zeros of the fitted input shape). Returns the path of ``ood_gate.json``.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if any(det.threshold is None for det in self.detectors.values()):
            raise ArgumentError("The gate is not calibrated: call .calibrate(x_val) before saving it")
        doc = self._files(folder, example=self._example(example))
        path = folder / GATE_FILE
        atomic_write(path, json.dumps(doc, indent=2, allow_nan=False).encode("utf-8"))
        return path

    def _example(self, example: Any) -> np.ndarray | None:
        if example is not None:
            return as_batch(example, "example")[:8]
        for det in self.detectors.values():
            shape = getattr(det, "input_shape", None)
            if shape:
                return np.zeros((2, *shape), dtype=np.float32)
        return None

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        model: "torch.nn.Module | None" = None,
        features: "Callable[[torch.Tensor], torch.Tensor] | None" = None,
        threads: int = 1,
    ) -> "OODGate":
        """Load a gate written by :meth:`save`; every file's sha256 is checked against ``ood_gate.json``.

        The Mahalanobis features come from ``features`` or ``model`` when given,
        else from the stored ``.pt2`` program (no model code needed).
        """
        folder = Path(folder)
        path = folder / GATE_FILE
        if not path.is_file():
            raise NotFound(f"{folder} holds no {GATE_FILE}: save a gate there with OODGate.save(folder)")
        doc = _read_gate_doc(path)
        paths: dict[str, Path] = {}
        for entry in doc["detectors"].values():
            for part in (entry, entry.get("features"), entry.get("joint")):
                if part:
                    p = folder / _plain_name(part["file"])
                    if not p.is_file():
                        raise NotFound(f"The gate in {folder} lists {part['file']}, which is missing")
                    paths[part["format"]] = p
        return _build(doc, paths, model=model, features=features, threads=threads)


def _is_module(obj: Any) -> "TypeGuard[torch.nn.Module]":
    torch = sys.modules.get("torch")  # a torch module exists only where torch is imported already
    return torch is not None and isinstance(obj, torch.nn.Module)


def _save_features(features: "torch.nn.Module", example: "torch.Tensor", folder: Path) -> tuple[Path, str]:
    """The feature extractor as ONNX (scored per request: ONNX Runtime runs a small CNN's features
    several times faster than the .pt2 program), else as a torch.export program."""
    try:
        return export_onnx(features, example, folder / _FEATURES_ONNX), "onnx"
    except (ExportError, ModuleNotFoundError):  # no onnx extra, or a layer ONNX cannot express
        return export_pt2(features, example, folder / GATE_FORMATS["ood_features"]), "pt2"


def _save_joint(features: Any, example: np.ndarray, folder: Path) -> Path | None:
    """The model with its penultimate features as a second output, as ONNX, checked against eager
    PyTorch on ``example`` (atol 1e-4 on both outputs); None when it cannot be made or does not match."""
    import torch

    joint = joint_module(features)
    if joint is None:
        return None
    path = folder / GATE_FORMATS["ood_joint"]
    try:
        export_onnx(joint, torch.from_numpy(example), path, outputs=(OUTPUT_NAME, "features"))
        got = OnnxPredictor(path, threads=1, outputs=2).run_all(example)
    except (ExportError, ModuleNotFoundError) as exc:  # the gate still works, with its own forward pass
        log.info("OOD gate: no joint model+features ONNX file (%s)", exc)
        path.unlink(missing_ok=True)
        return None
    with torch.inference_mode():
        want = [t.numpy() for t in joint(torch.from_numpy(example))]
    if any(g.shape != w.shape or not np.allclose(g, w, atol=1e-4) for g, w in zip(got, want)):
        log.warning("OOD gate: the joint ONNX file does not match the model within 1e-4; not stored")
        path.unlink(missing_ok=True)
        return None
    return path


def _features_of_joint(joint: Path, example: np.ndarray, folder: Path) -> Path | None:
    """The features graph cut out of the joint ONNX file (its ``features`` output, renamed ``output``): what
    exporting the feature extractor writes, without a second export (2-4 s each, torch.export and the ONNX
    translation). Checked with ``onnx.checker`` and against the joint file's features on ``example``
    (the same kernels: equal); None when it cannot be cut (the caller exports the extractor instead)."""
    import onnx
    from onnx.utils import Extractor

    path = folder / _FEATURES_ONNX
    try:
        proto = Extractor(onnx.load(str(joint))).extract_model([INPUT_NAME], ["features"])
        graph = proto.graph
        if not any("features" in n.output for n in graph.node) or any(OUTPUT_NAME in n.output for n in graph.node):
            return None
        for node in graph.node:  # the name export_onnx gives the one output, which the loaders expect
            node.output[:] = [OUTPUT_NAME if o == "features" else o for o in node.output]
            node.input[:] = [OUTPUT_NAME if i == "features" else i for i in node.input]
        graph.output[0].name = OUTPUT_NAME
        with atomic_path(path) as tmp:
            onnx.save(proto, str(tmp))
            onnx.checker.check_model(str(tmp), full_check=True)
        got = OnnxPredictor(path, threads=1).run_all(example)[0]
        want = OnnxPredictor(joint, threads=1, outputs=2).run_all(example)[1]
    except Exception as exc:  # noqa: BLE001 - onnx raises several types; exporting the extractor still works
        log.info("OOD gate: features not cut from the joint ONNX file (%s: %s)", type(exc).__name__, exc)
        path.unlink(missing_ok=True)
        return None
    if got.shape != want.shape or not np.array_equal(got, want):
        path.unlink(missing_ok=True)
        return None
    return path


_FEATURES_ONNX = "ood_features.onnx"


def _plain_name(name: Any) -> str:
    if not isinstance(name, str) or (name not in GATE_FORMATS.values() and name not in (_FEATURES_ONNX, *_LEGACY_FILES)):
        raise IntegrityError(f"{GATE_FILE} names an unexpected file {name!r}; loopml refuses to load it")
    return name


def _read_gate_doc(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path} is not a readable gate document: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != GATE_FORMAT_ID or not isinstance(doc.get("detectors"), dict):
        raise IntegrityError(f"{path} is not a loopml OOD gate (format {GATE_FORMAT_ID!r} expected)")
    if doc.get("format_version") != GATE_FORMAT_VERSION:
        raise IntegrityError(f"{path} has gate format version {doc.get('format_version')!r}; this loopml reads {GATE_FORMAT_VERSION}")
    return doc


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """A detector's stored state as NumPy arrays: an ``.npz`` file (no pickle, no torch), or a legacy ``.pt``."""
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except Exception as exc:  # not a zip, an object array, a truncated member: numpy raises several types
            raise ExportError(f"{path} is not a plain array file; loopml does not load it ({type(exc).__name__})") from exc
    import torch

    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a pickle with code, a truncated file: torch raises several types
        raise ExportError(f"{path} is not a plain tensor file; loopml does not load it ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"{path} should hold a dict of tensors")
    return {k: v.numpy() for k, v in state.items()}


def _build(
    doc: Mapping[str, Any],
    paths: Mapping[str, Path],
    *,
    model: "torch.nn.Module | None",
    features: "Callable[[torch.Tensor], torch.Tensor] | None",
    threads: int,
) -> OODGate:
    """Check each file's sha256 against the gate document, then rebuild the detectors."""

    def checked(part: Mapping[str, Any]) -> Path:
        path = paths[part["format"]]
        if sha256_file(path) != part.get("sha256"):
            raise IntegrityError(
                f"{path.name} does not match the sha256 recorded in {GATE_FILE}: it was changed after the gate was saved; "
                "loopml refuses to load it. Fit the gate again (loopml monitor fit-ood NAME@VER)."
            )
        return path

    detectors: dict[str, Detector] = {}
    for name, entry in doc["detectors"].items():
        config = entry["config"]
        if name == "vae" and config.get("kind") == "vae":
            detectors[name] = VAEDetector.from_state(config, _load_arrays(checked(entry)), threads=threads)
        elif name == "mahalanobis" and config.get("kind") == "mahalanobis":
            state = _load_arrays(checked(entry))
            feats, numpy_feats = features, None
            if feats is None and model is None:
                stored = entry.get("features")
                if not stored:
                    raise ArgumentError(
                        "This gate's Mahalanobis features were a plain callable and were not stored: "
                        "pass features=... or model=... to load it"
                    )

                runtime = stored.get("runtime", "pt2")  # gates stored before ONNX features were pt2
                predictor = load_predictor(runtime, checked(stored), threads=threads)
                if runtime == "pt2":
                    feats = predictor.model  # type: ignore[attr-defined]
                else:  # ONNX: NumPy in and out, no torch
                    numpy_feats = predictor
            detectors[name] = MahalanobisDetector.from_state(config, state, model=model, features=feats,
                                                             numpy_features=numpy_feats, threads=threads)
        else:
            raise IntegrityError(f"{GATE_FILE} lists an unknown detector {name!r}")
    gate = OODGate(detectors)
    gate.target_false_abstain = doc.get("target_false_abstain")
    gate.val_false_abstain = doc.get("val_false_abstain")
    joint = (doc["detectors"].get("mahalanobis") or {}).get("joint")
    if joint and model is None and features is None:
        gate.joint = OnnxPredictor(checked(joint), threads=threads, outputs=2).run_all
    return gate


# -- fitting on a live model ------------------------------------------------------


def _xy(data: Any, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y) from a loopml Dataset, an (x, y) pair, or x alone."""
    if hasattr(data, "x") and hasattr(data, "y"):
        return as_batch(data.x, what), np.asarray(data.y.numpy() if hasattr(data.y, "numpy") else data.y)
    if isinstance(data, tuple) and len(data) == 2:
        y = data[1]
        return as_batch(data[0], what), np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)
    return as_batch(data, what), None


def fit_gate(
    model: "torch.nn.Module | None",
    *,
    train: Any,
    val: Any,
    detectors: Sequence[str] = DETECTORS,
    target_false_abstain: float = 0.01,
    mode: str = "class",
    vae_options: Mapping[str, Any] | None = None,
    threads: int = 1,
    layer: str | None = None,
) -> OODGate:
    """Fit the named detectors on ``train`` and calibrate the gate on ``val`` (nothing is stored).

    ``train``/``val``: a loopml Dataset, an ``(x, y)`` pair or inputs alone. The
    class-conditional Mahalanobis detector uses ``y``, or the model's predicted
    classes when ``train`` has no labels; its features are the input of ``layer``
    (default: the model's last ``nn.Linear``). The model is put in eval mode.

    ``val`` with too few rows for ``target_false_abstain`` (``n`` rows calibrate
    rates down to ``1 / (n + 1)``: 99 rows for 1%) is calibrated at the strictest
    rate it supports, with a :class:`~loopml.errors.LoopMLWarning`;
    :attr:`OODGate.requested_false_abstain` keeps the rate asked for.

    >>> gate = fit_gate(model, train=(x_train, y_train), val=x_val, target_false_abstain=0.05)
    >>> gate.abstain(torch.rand(2, 1, 8, 8)).tolist()       # noise: "I don't know"
    [True, True]
    """
    import torch

    wanted = list(dict.fromkeys(detectors))
    if not wanted or any(d not in DETECTORS for d in wanted):
        raise ArgumentError(f"Argument detectors should be a non-empty list of {', '.join(DETECTORS)}; got {list(detectors)!r}")
    requested = check_rate(target_false_abstain)
    x_train, y_train = _xy(train, "train")
    x_val, _ = _xy(val, "val")
    rate = _rate_for(len(x_val), requested)
    fitted: dict[str, Detector] = {}
    if "vae" in wanted:
        options = dict(vae_options or {})
        if model is not None and "fill" not in options:  # the gaps the model's Preprocessor fills, filled alike
            options["fill"] = _preprocessor_fill(model, x_train)
        fitted["vae"] = VAEDetector(threads=threads, **options).fit(x_train)
    if "mahalanobis" in wanted:
        if model is None:
            raise ArgumentError("The mahalanobis detector needs the classifier: pass model=..., or detectors=('vae',)")
        model.eval()
        if y_train is None and mode == "class":
            with torch.inference_mode():
                y_train = model(torch.from_numpy(x_train)).argmax(1).numpy()
        fitted["mahalanobis"] = MahalanobisDetector(model, layer=layer, mode=mode, threads=threads).fit(x_train, y_train)
    gate = OODGate(fitted).calibrate(x_val, rate)
    gate.requested_false_abstain = requested
    return gate


def _rate_for(rows: int, requested: float) -> float:
    """``requested``, or the strictest false-abstain rate ``rows`` validation rows can calibrate, with a warning."""
    strictest = strictest_rate(rows)
    if requested >= strictest:
        return requested
    if strictest >= 0.5:
        raise ArgumentError(f"Argument val should have at least 2 rows to calibrate the gate on; got {rows}")
    warn_user(
        f"The OOD gate's validation data has {rows} rows, too few to calibrate a false-abstain rate of {requested:g} "
        f"(that needs {math.ceil(1 / requested - 1 - 1e-9)}): it is calibrated at {strictest:g}, the strictest rate "
        f"{rows} rows support. Pass more validation rows, or target_false_abstain={strictest:g} or larger."
    )
    return strictest


def _preprocessor_fill(model: "torch.nn.Module", x: np.ndarray) -> list[float | None] | None:
    """Per input column, the value the model's :class:`~loopml.data.Preprocessor` puts in a NaN (None: no imputer)."""
    from ..data.preprocess import find_preprocessor

    try:
        pre = find_preprocessor(model)
    except ValueError:
        return None
    if pre is None or not pre.imputed_columns or x.ndim != 2 or x.shape[1] != pre.n_features_in:
        return None
    doc = pre.to_dict()
    fill: dict[str, float | None] = {c["name"]: c["fill"] for c in doc["numeric"]}
    for c in doc["categorical"]:  # the most frequent category's code
        fill[c["name"]] = None if c["fill"] is None else float(c["categories"].index(c["fill"]))
    return [fill.get(name) for name in pre.feature_names]


# -- a registered version's gate --------------------------------------------------
#
# Fitting a version's gate and storing its files is loopml.monitor.versions (which reads the
# registry); loading them back is here, beside OODGate.load, for it needs nothing but the files.


def load_version_gate(registry: "Registry", version: "ModelVersion", *, threads: int = 1) -> OODGate:
    """The gate stored with a resolved ``version``, its files read through ``registry`` (sha256 checked).

    The gate's counterpart of :meth:`OODGate.load` for a version's files; what
    :func:`loopml.monitor.load_gate` and ``loopml serve`` call. ``registry`` is
    anything with ``file_path(name, version, format)`` (a registry store, or one
    over HTTP)::

        registry = loopml.models.registry.registry_for()
        gate = load_version_gate(registry, registry.resolve("digits@production"))
    """
    if "ood_gate" not in version.files:
        raise NotFound(f"{version.ref} has no OOD gate; fit one with: loopml monitor fit-ood {version.ref} --data train.npz")
    doc = _read_gate_doc(registry.file_path(version.name, version.version, "ood_gate"))
    paths: dict[str, Path] = {}
    for entry in doc["detectors"].values():
        for part in (entry, entry.get("features"), entry.get("joint")):
            if part:
                paths[part["format"]] = registry.file_path(version.name, version.version, part["format"])
    return _build(doc, paths, model=None, features=None, threads=threads)
