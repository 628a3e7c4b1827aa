"""Retrain a version on its new labels plus a replay of its stored training data: the challenger.

The champion's weights are rebuilt from its ``torch`` format (its class and state
dict) and fine-tuned, or the same architecture is trained from scratch, on the labels
plus a seeded sample of the rows its run stored (replay keeps it from forgetting what
it knew), through the :class:`~loopml.train.Trainer`, tracked as a run. The OOD gate
and the drift reference are fitted again on the new training set, and the challenger
is registered under the same name with its lineage: the parent version, the label
and replay datasets, and the cause (the alert id, or the command)::

    from loopml.loop.retrain import retrain

    challenger, report = retrain("digits@production", labels, cause={"alert": 12})
    challenger.parent_version, challenger.lineage["labels"]      # 3, '9f2c...'

What is guaranteed when the store fails: nothing is written to the registry until the
model is trained and its gate fitted; the version and its files are created in one
transaction; should storing the gate afterwards fail, the new version is deleted again
(:class:`~loopml.errors.StoreError` says whether that worked), so no alias can point at
a challenger without its gate. The failure is recorded as a ``failed`` loop event when
the database is still reachable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import (
    ArgumentError,
    ArgumentTypeError,
    DataError,
    LoopMLError,
    StoreError,
)
from ..models.evaldata import version_data
from ..models.registry import (
    current_user,
    load_version,
    registry_for,
    resolve_version,
    version_example,
)
from ..models.registry import register as register_model
from ..models.runtime import import_class
from ..models.signature import Signature
from ..monitor.ood import DETECTORS, fit_gate
from ..monitor.versions import store_version_gate
from ..store.labels import LabelStore
from ..store.loopevents import LoopEvents
from ..store.registry import ModelVersion, local_registry
from ..tracking import api
from .labels import label_dataset

if TYPE_CHECKING:
    import torch

    from ..data.dataset import Dataset
    from ..store.registry import RegistryStore
    from ..train.callbacks import Callback

__all__ = ["MIN_LABELS", "RetrainReport", "check_count", "check_holdout", "check_labels", "retrain"]

MIN_LABELS = 20
"""Fewest labels a retrain takes by default: fewer hardly move the weights, and the comparison on
recent data could not tell a gain from noise (20 rows give a 95% Wilson interval ~0.4 wide)."""

_FORMATS = ("pt2", "torch", "onnx")  # what a challenger is registered in: the champion's, among these


@dataclass(frozen=True, kw_only=True)
class RetrainReport:
    """What a retrain did: the rows it trained on, the run, and the challenger's measured accuracy."""

    champion: str
    challenger: str
    run_id: str
    labels: int
    labels_fingerprint: str
    recent: int
    replay: int
    replay_fingerprint: str | None
    from_scratch: bool
    epochs: int
    val_accuracy: float | None
    ood_gate: bool
    cause: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_count(value: Any, what: str, low: int) -> int:
    """``value`` when it is a whole number >= ``low``; else an ArgumentError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ArgumentError(f"Argument {what} should be a whole number >= {low}; got {value!r}")
    return value


def check_holdout(holdout: Any) -> float:
    """The share of the labels kept out of training for the comparison: 0 to below 1."""
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout < 1:
        raise ArgumentError(f"Argument holdout should be the fraction of the labels kept out for the comparison, 0 to "
                            f"below 1, e.g. 0.3; got {holdout!r}")
    return float(holdout)


def check_labels(version: ModelVersion, labels: "Dataset", *, min_labels: int = MIN_LABELS) -> None:
    """Raise :class:`~loopml.errors.ArgumentError` unless ``labels`` fit ``version``'s signature and are enough."""
    sig = Signature.from_dict(version.signature)
    if not sig.is_classifier:
        raise ArgumentError(f"{version.ref} is not a classifier (its signature has no class names); retrain takes classifiers")
    classes = list(sig.class_names or ())
    want = tuple(sig.input.shape)
    got = tuple(int(d) for d in labels.x.shape)
    if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want[1:], got[1:])):
        shown = ", ".join("batch" if d is None else str(d) for d in want)
        raise ArgumentError(
            f"Argument labels should have inputs of {version.ref}'s shape ({shown}); they have shape "
            f"({', '.join(['batch', *map(str, got[1:])])}). Label rows of this model's inputs"
        )
    if labels.task != "classification":
        raise ArgumentError(f"Argument labels should hold class indices for {version.ref}'s classes {classes}; got regression targets")
    if len(labels) < min_labels:
        raise ArgumentError(
            f"Argument labels should hold at least {min_labels} rows to retrain {version.ref} on; got {len(labels)}. "
            f"Label more (loopml label), or pass min_labels= (--min-labels) to accept fewer"
        )
    top = int(labels.y.max()) if len(labels) else -1
    if top >= len(classes):
        raise ArgumentError(
            f"Argument labels should name classes of {version.ref} (0..{len(classes) - 1}: {classes}); "
            f"got class index {top}. A class the model does not know needs a new model, not a retrain"
        )
    names = labels.class_names or []
    default = [str(i) for i in range(len(names))]
    if names and names != default and names != classes[: len(names)]:
        raise ArgumentError(
            f"Argument labels should have {version.ref}'s class names {classes}; got {names}. "
            "Map the labels onto the model's classes first"
        )


def _replay_rows(registry: "RegistryStore", champion: ModelVersion, replay: float, replay_data: Any,
                 seed: int) -> tuple["Dataset | None", "Dataset | None"]:
    """(a seeded sample of the champion's training rows, its validation rows), from its lineage or ``replay_data``."""
    from ..data.sources import resolve
    from ..data.split import Split

    if replay == 0 and replay_data is None:  # no replay; still validate on the champion's stored val rows if kept
        try:
            return None, version_data(registry, champion).val
        except DataError:
            return None, None
    fix = ("pass its training data as replay_data= (--replay-data FILE) in any form loopml.data.resolve takes, "
           "or replay=0 (--replay 0) to train on the labels alone")
    if replay_data is not None:
        given = resolve(replay_data, backend=registry.store)
        train, val = (given.train, given.val) if isinstance(given, Split) else (given, None)
    else:
        try:
            parts = version_data(registry, champion, example=fix)
        except DataError as exc:
            raise DataError(f"Replay needs {champion.ref}'s training rows: {exc}") from None
        train, val = parts.train, parts.val
    k = int(round(len(train) * replay))
    if k >= len(train):
        return train, val
    picked = np.sort(np.random.default_rng(seed).choice(len(train), size=k, replace=False))
    return train.subset(picked, name=f"{train.name}-replay"), val


def _rebuild(registry: "RegistryStore", champion: ModelVersion, from_scratch: bool) -> "torch.nn.Module":
    import torch


    fix = (f"register {champion.ref} with the 'torch' format (its class importable, e.g. loopml.models.nets.MLP or a "
           "class decorated with @loopml.models.keep_init_args), then retrain it")
    if "torch" not in champion.files or not champion.model_spec:
        raise ArgumentError(f"{champion.ref} has no 'torch' format (state dict and class) to rebuild its weights from; {fix}")
    if from_scratch:
        spec = champion.model_spec
        try:
            module = import_class(str(spec["class_path"]))(**dict(spec.get("init_args") or {}))
        except (LoopMLError, ImportError, TypeError) as exc:
            raise ArgumentError(f"{champion.ref}'s class could not be rebuilt here ({exc}); {fix}") from None
    else:
        module = load_version(registry, champion, format="torch").module()
    if not isinstance(module, torch.nn.Module):
        raise ArgumentError(f"{champion.ref}'s class is not a torch.nn.Module; {fix}")
    return module.train()


def _concat(labels: "Dataset", replay: "Dataset | None", sig: Signature) -> "Dataset":
    from ..data.dataset import Dataset

    xs, ys = [labels.x.numpy()], [labels.y.numpy()]
    if replay is not None:
        xs.append(replay.x.numpy())
        ys.append(replay.y.numpy())
    x = np.concatenate(xs)
    names = list(sig.feature_names) if sig.feature_names and x.ndim == 2 and len(sig.feature_names) == x.shape[1] else None
    return Dataset(x, np.concatenate(ys), feature_names=names, class_names=list(sig.class_names or ()),
                   task="classification", name="retrain", source="loopml.loop.retrain")


def _version_labels(registry: "RegistryStore", champion: ModelVersion) -> "Dataset":
    """The champion's agreed labels with their logged inputs, stored by content with the (request_id, row) of each row."""
    return label_dataset(champion, store=True, backend=registry.store)


def _audit_rows(registry: "RegistryStore", champion: ModelVersion, labels_ds: "Dataset") -> "np.ndarray":
    """Which rows of the version's label set were drawn for the audit slice (a boolean mask), from the queue's
    items alone (no second read of the logged inputs)."""
    drawn = {(it["request_id"], it["row"])
             for it in LabelStore(registry.store).items(champion.name, status=None, limit=None, version=champion.version)
             if it["reason"] == "audit" or it["details"].get("audit")}
    return np.array([tuple(k) in drawn for k in getattr(labels_ds, "predictions", ())], dtype=bool)


def _resolve_labels(registry: "RegistryStore", labels: Any) -> "Dataset":
    from ..data.dataset import Dataset
    from ..data.sources import resolve
    from ..data.split import Split

    if labels is None:
        raise ArgumentError("Argument labels should be the labeled rows to retrain on: a loopml Dataset, (x, y), a .npz "
                            "file or a stored dataset's fingerprint")
    got = resolve(labels, backend=registry.store)
    if isinstance(got, Split):
        got = got.train
    if not isinstance(got, Dataset):
        raise ArgumentTypeError(f"Argument labels should resolve to a loopml Dataset, got {type(got).__name__}")
    return got


def retrain(
    ref: "str | ModelVersion",
    labels: Any = None,
    *,
    replay: float = 1.0,
    replay_data: Any = None,
    holdout: float = 0.3,
    from_scratch: bool = False,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    cause: Mapping[str, Any] | None = None,
    refit_ood: bool = True,
    register: bool = True,
    min_labels: int = MIN_LABELS,
    callbacks: Sequence["Callback"] = (),
    progress: bool = False,
    tracking_uri: str | None = None,
) -> tuple[ModelVersion | None, RetrainReport]:
    """Fine-tune (or retrain from scratch) the version ``ref`` on ``labels`` plus a replay sample; register the challenger.

    ``labels``: a loopml Dataset, ``(x, y)``, a ``.npz`` file or a stored dataset's
    fingerprint; None: the version's agreed labels with their logged inputs
    (:func:`loopml.loop.labels.label_dataset`, stored with the requests they came from). Checked against the champion's signature (shape, classes) and refused
    with fewer than ``min_labels`` rows. ``replay``: the fraction of the champion's
    stored training rows mixed in (seeded by ``seed``; 0: none); ``replay_data``: its
    training data when its run did not store the rows. ``holdout``: the fraction of the
    labels kept out of training and stored as the challenger's ``recent`` set, the rows
    :func:`loopml.loop.compare.compare` asks it to be better on (seeded; 0: none, then
    pass ``recent=`` to compare); with labels from the version's request log
    (``labels=None`` or a :func:`~loopml.loop.labels.label_dataset`) the audit slice's
    rows are always kept out too and join that set, never trained on. ``from_scratch``: the same class
    with fresh weights instead of the champion's. ``cause``: why (``{"alert": 12}``,
    ``{"command": "loopml retrain ..."}``), kept in the challenger's lineage and the
    loop event. ``refit_ood``: fit an OOD gate again when the champion has one.
    ``register=False`` trains and measures without registering: ``(None, report)``. ``callbacks``: more Trainer callbacks;
    ``progress``: show the Trainer's progress bar.

    Returns ``(challenger, report)``; a ``retrain`` loop event records it (or its failure). Example::

        challenger, report = retrain("churn@production", labels, epochs=5, cause={"alert": 3})
        challenger.parent_version, report.labels      # (1, 120)
    """
    import torch

    from ..data.lineage import log_dataset
    from ..train.progress import ProgressBar
    from ..train.trainer import Trainer

    check_count(epochs, "epochs", 1)
    check_count(batch_size, "batch_size", 1)
    check_count(seed, "seed", 0)
    check_count(min_labels, "min_labels", 1)
    if isinstance(replay, bool) or not isinstance(replay, (int, float)) or not 0 <= replay <= 1:
        raise ArgumentError(f"Argument replay should be the fraction of the stored training rows to mix in, 0 to 1; got {replay!r}")
    check_holdout(holdout)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < 10:
        raise ArgumentError(f"Argument lr should be a learning rate above 0, e.g. 1e-3; got {lr!r}")
    registry = local_registry(registry_for(tracking_uri), "retrain")
    champion = resolve_version(registry, ref)
    target = ref if isinstance(ref, str) else champion.ref
    why = dict(cause or {"command": "retrain"})
    events = LoopEvents(registry.store)
    labels_ds = _resolve_labels(registry, labels) if labels is not None else _version_labels(registry, champion)
    check_labels(champion, labels_ds, min_labels=min_labels)
    model = _rebuild(registry, champion, from_scratch)  # the clear error for a version without weights, before any work
    sig = Signature.from_dict(champion.signature)
    replay_ds, val = _replay_rows(registry, champion, float(replay), replay_data, seed)
    # rows from the request log (label_dataset keeps where each came from) may hold the audit slice
    from_log = getattr(labels_ds, "predictions", None) is not None
    audit = _audit_rows(registry, champion, labels_ds) if from_log else np.zeros(len(labels_ds), dtype=bool)
    rest = np.flatnonzero(~audit)
    order = rest[np.random.default_rng(seed).permutation(len(rest))]
    n_holdout = int(len(rest) * holdout)
    # the recent set: the audit slice (drawn uniformly from the traffic: never trained on, so the comparison keeps an
    # unbiased sample of what the model now sees) and a seeded holdout of the other labels
    keep_out = np.sort(np.concatenate([np.flatnonzero(audit), order[:n_holdout]]))
    recent = labels_ds.subset(keep_out, name="recent") if len(keep_out) else None
    fit_labels = labels_ds.subset(np.sort(order[n_holdout:]), name=labels_ds.name) if len(keep_out) else labels_ds
    if len(fit_labels) < min_labels:
        raise ArgumentError(f"{champion.ref} has {len(fit_labels)} labels to train on once the audit slice "
                            f"({int(audit.sum())}) and the holdout ({n_holdout}) are kept for the comparison; at least "
                            f"{min_labels} are needed: label more items (loopml label queue {champion.name}@ALIAS), "
                            "or lower holdout / min_labels")
    train = _concat(fit_labels, replay_ds, sig)
    if val is None:  # no stored validation rows: hold out part of the new set (seeded, stratified)
        from ..data.split import split

        parts = split(train, val=0.15, test=0.0, seed=seed)
        train, val = parts.train, parts.val
    gate_spec = champion.files.get("ood_gate")
    example = version_example(registry, champion)  # read now: after training only the new version is written
    try:
        with api.start_run(experiment="loop", name=f"retrain {champion.ref}", tracking_uri=tracking_uri) as run:
            run.log_params({"parent": champion.ref, "from_scratch": from_scratch, "replay": replay, "lr": lr,
                            "cause": str(why)[:250]})
            labels_fp = log_dataset(run, labels_ds, role="labels")
            replay_fp = log_dataset(run, replay_ds, role="replay") if replay_ds is not None else None
            recent_fp = log_dataset(run, recent, role="recent", keep_rows=True) if recent is not None else None
            trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=float(lr)), metrics=["accuracy"],
                              seed=seed, experiment="loop",
                              callbacks=[*callbacks, *([ProgressBar()] if progress else [])])
            trainer.fit(train, val=val, epochs=epochs, batch_size=batch_size)
            val_acc = trainer.state.metrics.get("val_accuracy")
            model.eval()
            gate = None
            if refit_ood and gate_spec is not None:

                kept = gate_spec.details  # the champion's detectors and the rate asked for, again
                rate = kept.get("requested_false_abstain") or kept.get("target_false_abstain") or 0.01
                detectors = tuple(kept.get("detectors") or ()) or DETECTORS
                gate = fit_gate(model, train=train, val=val, detectors=detectors, target_false_abstain=float(rate))
            report = RetrainReport(
                champion=champion.ref, challenger="", run_id=run.id, labels=len(labels_ds), labels_fingerprint=labels_fp,
                recent=0 if recent is None else len(recent),
                replay=0 if replay_ds is None else len(replay_ds), replay_fingerprint=replay_fp,
                from_scratch=from_scratch, epochs=epochs, val_accuracy=None if val_acc is None else float(val_acc),
                ood_gate=gate is not None, cause=why,
            )
            if not register:
                return None, report
            lineage = {"parent": champion.ref, "labels": labels_fp, "replay": replay_fp, "recent": recent_fp, "cause": why,
                       "from_scratch": from_scratch}
            formats = [f for f in _FORMATS if f in champion.files] or ["pt2", "torch"]
            challenger = register_model(
                model, champion.name, input_example=example, run=run,
                class_names=list(sig.class_names or ()), train_data=train, formats=formats,
                tags={"loop": "challenger"}, description=f"retrained from {champion.ref}", lineage=lineage,
                parent_version=champion.version,
                feature_names=list(sig.feature_names) if sig.feature_names else None,
            )
            if gate is not None:
                _store_gate(registry, challenger, gate, train)
            challenger = registry.get_version(challenger.name, challenger.version)
    except _GateNotStored as exc:
        _record_failure(events, target, champion, why, exc)
        raise
    except (StoreError, OSError) as exc:
        _record_failure(events, target, champion, why, exc)
        raise StoreError(f"Retraining {champion.ref} failed while writing to the store ({type(exc).__name__}: {exc}); "
                         "nothing was registered. Check the store and run it again") from exc
    report = RetrainReport(**{**report.to_dict(), "challenger": challenger.ref})
    events.record(target, champion.name, challenger.version, "retrain", "done", cause=why,
                  details={**report.to_dict(), "by": current_user()})
    return challenger, report


class _GateNotStored(StoreError):
    """The challenger was registered but its gate could not be stored (and the version was deleted again, if it could)."""


def _store_gate(registry: "RegistryStore", challenger: ModelVersion, gate: Any, train: Any) -> None:
    """Store the gate with the new version; on failure delete the version again, so no half-registered one stays."""

    try:
        store_version_gate(registry, challenger, gate, train)
    except (LoopMLError, OSError) as exc:
        try:
            registry.delete_version(challenger.name, challenger.version)
            undone = f"{challenger.ref} was deleted again"
        except (LoopMLError, OSError):
            undone = (f"deleting {challenger.ref} failed too: delete it with `loopml models delete {challenger.ref}` "
                      "once the store is back")
        raise _GateNotStored(f"Storing the OOD gate of {challenger.ref} failed ({exc}); {undone}") from exc


def _record_failure(events: LoopEvents, target: str, champion: ModelVersion, cause: Mapping[str, Any],
                    exc: BaseException) -> None:
    try:
        events.record(target, champion.name, champion.version, "retrain", "failed", cause=cause,
                      details={"error": f"{type(exc).__name__}: {exc}"})
    except (LoopMLError, OSError):
        pass  # the store is what failed; the exception the caller gets says so

