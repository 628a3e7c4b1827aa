"""The data a registered version is calibrated, fine-tuned, gated and measured on, checked against its signature.

:func:`version_data` is the one place that decides it, for
:func:`loopml.models.quantize` and :func:`loopml.monitor.fit_ood` (and their
commands), in this order:

1. ``data`` when given: any form :func:`loopml.data.resolve` takes (a Dataset,
   a Split, ``(x, y)``, a ``.npz`` / ``.csv`` / ``.parquet`` file with ``target``,
   a stored dataset's fingerprint, or a bundled set named explicitly such as
   ``"digits"``). A single dataset is split as the Trainer splits (stratified
   for a classifier, 15% validation, 15% test, ``seed``).
2. the datasets logged with the version's run (its lineage: ``train``, ``val``,
   ``test``), when the store keeps their rows (:func:`loopml.data.log_dataset`
   keeps them up to 32 MiB).
3. otherwise a :class:`~loopml.errors.DataError` that says what to pass.

Before any work the inputs' shape is checked against the version's signature;
a mismatch names both shapes.

>>> from loopml.models.registry import registry_for
>>> registry = registry_for()
>>> parts = version_data(registry, registry.resolve("digits/1"))     # the datasets logged with its run
>>> len(parts.train), len(parts.val), parts.test
(1257, 270, None)
>>> np.savez("more.npz", x=x_test.numpy(), y=y_test.numpy())
>>> parts = version_data(registry, registry.resolve("digits/1"), "more.npz")    # split 70 / 15 / 15
>>> len(parts.train), len(parts.val), len(parts.test)
(190, 40, 40)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..errors import ArgumentError, ArgumentTypeError, DataError, NotFound

if TYPE_CHECKING:
    from ..data.split import Split
    from ..store.protocols import Registry
    from ..store.registry import ModelVersion

__all__ = ["SPLIT", "check_shape", "data_for", "version_data"]

SPLIT = {"val": 0.15, "test": 0.15}
"""How a single dataset passed as ``data`` is split (the Trainer's and the demo's fractions)."""


def _shape_text(shape: Any) -> str:
    dims = ["batch" if i == 0 and d is None else ("any" if d is None else str(d)) for i, d in enumerate(shape)]
    return "(" + ", ".join(dims) + ")"


def check_shape(version: "ModelVersion", parts: "Split", *, example: str) -> None:
    """Raise ``ValueError`` naming both shapes when a part's rows do not fit the version's input signature."""
    from .signature import Signature

    spec = Signature.from_dict(version.signature).input
    want = tuple(spec.shape)
    for role, ds in (("train", parts.train), ("val", parts.val), ("test", parts.test)):
        if ds is None:
            continue
        got = tuple(int(d) for d in ds.x.shape)
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want[1:], got[1:])):
            raise ArgumentError(
                f"Argument data should have inputs of {version.ref}'s signature shape {_shape_text(want)}; "
                f"its {role} rows have shape {_shape_text((None, *got[1:]))} ({got[0]} rows). "
                f"Pass data for this model, {example}"
            )


def _as_split(ds: Any, seed: int) -> "Split":
    from ..data import Dataset, split
    from ..data.split import Split

    if isinstance(ds, Split):
        return ds
    if not isinstance(ds, Dataset):
        raise ArgumentTypeError(f"Argument data should resolve to a loopml Dataset or Split, got {type(ds).__name__}")
    return split(ds, **SPLIT, stratify=True, seed=seed)


def _from_lineage(registry: "Registry", version: "ModelVersion", example: str) -> "Split":
    from ..data.sources import stored
    from ..data.split import Split

    backend = getattr(registry, "store", None)
    roles: dict[str, str] = dict((version.lineage or {}).get("datasets") or {})
    if not roles and version.run_id and backend is not None:
        try:
            roles = dict(backend.run_datasets(version.run_id))
        except NotFound:
            roles = {}
    if "train" not in roles or backend is None:
        raise DataError(
            f"{version.ref} has no training data logged with its run, and no data was passed; "
            f"pass data for it, {example}"
        )
    parts: dict[str, Any] = {}
    for role in ("train", "val", "test"):
        if role not in roles:
            continue
        try:
            parts[role] = stored(backend, roles[role], run_ids=[version.run_id] if version.run_id else None)
        except (DataError, NotFound) as exc:
            raise DataError(
                f"{version.ref}'s {role} data ({roles[role][:12]}...) is recorded with its run but its rows are not "
                f"stored, and no data was passed; pass data for it, {example}"
            ) from exc
    return Split(train=parts["train"], val=parts.get("val"), test=parts.get("test"), indices={})


def version_data(
    registry: "Registry",
    version: "ModelVersion",
    data: Any = None,
    *,
    target: str | None = None,
    seed: int = 0,
    example: str = "e.g. data='train.npz' (arrays x and y) or data=(x, y)",
) -> "Split":
    """The train/val/test parts for ``version`` (see the module docstring), checked against its signature.

    ``registry``: the :class:`~loopml.store.registry.RegistryStore` the version
    lives in (its store is where fingerprints are looked up). ``example``: the
    call or command that the errors show as the fix.
    """
    if isinstance(data, str) and re.fullmatch(r"[0-9a-f]{8,63}", data):
        # a prefix as `loopml models show` prints it: one of the version's own datasets
        logged = {fp for fp in ((version.lineage or {}).get("datasets") or {}).values() if fp.startswith(data)}
        if len(logged) == 1:
            data = logged.pop()
    if data is not None:
        from ..data.sources import resolve

        parts = _as_split(resolve(data, target=target, backend=getattr(registry, "store", None)), seed)
    else:
        parts = _from_lineage(registry, version, example)
    check_shape(version, parts, example=example)
    return parts


def data_for(
    ref: str,
    data: Any = None,
    *,
    target: str | None = None,
    seed: int = 0,
    example: str = "e.g. data='train.npz' (arrays x and y) or data=(x, y)",
    tracking_uri: str | None = None,
) -> "Split":
    """:func:`version_data` for the version ``ref`` in the store at ``tracking_uri``.

    >>> parts = data_for("digits/1", "digits")     # a bundled set, named: split as the Trainer splits
    >>> parts.train.x.shape
    torch.Size([1257, 1, 8, 8])
    """
    from .registry import registry_for

    registry = registry_for(tracking_uri)
    if not hasattr(registry, "store"):
        raise ArgumentError("Reading a version's data needs the store itself, not a loopml server; pass --store sqlite:///... "
                         "or postgresql+psycopg://...")
    return version_data(registry, registry.resolve(ref), data, target=target, seed=seed, example=example)
