"""``loopml.Client``: the public API bound to one store.

Every call of the module-level API takes ``tracking_uri=`` (default: the current
tracking URI). A :class:`Client` resolves the URI once and holds the store and its
registry; its methods are the same operations without ``tracking_uri=``::

    import loopml

    with loopml.Client("sqlite:///experiments/loopml.db") as c:
        with c.start_run(experiment="digits") as run:
            trainer.fit(parts.train, val=parts.val)
            v = c.register(model, "digits", input_example=parts.train.x[:8], ood=(parts.train, parts.val))
        c.set_alias("digits", "production", v)
        model = c.load_model("digits@production")

Each operation has one implementation, in its layer, taking the registry (or the
store) and a reference or a version: ``Client.load_model`` and ``loopml.load_model``
are both thin calls of :func:`loopml.models.registry.load_version`, ``Client.export``
and ``loopml.models.export`` of :func:`~loopml.models.registry.export_version`, and so
on. The module-level functions stay as conveniences for the current store.

``loopml.register`` lives here, not in :mod:`loopml.models`: it registers the model
through the registry and then fits and stores its OOD gate through
:mod:`loopml.monitor`, the layer above the registry.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import config
from .errors import ArgumentError, ArgumentTypeError, LoopMLError, warn_user
from .explanations import Explainer, Explanation
from .models.evaldata import version_data
from .models.registry import (
    current_user,
    delete_numbered_version,
    export_version,
    load_version,
    registration_run,
    registry_of,
    version_example,
)
from .models.registry import register as register_model
from .models.variants import quantize_version
from .monitor.ood import load_version_gate
from .monitor.performance import live_accuracy
from .monitor.versions import fit_version_gate, gate_options
from .monitor.windows import prediction_windows
from .store.registry import ModelVersion
from .tracking.api import (
    backend_for,
    experiments,
    get_run,
    get_tracking_uri,
    runs,
    start_run,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from .data.dataset import Dataset
    from .data.split import Split
    from .models.registry import LoadedModel
    from .monitor.alerts import Alert, AlertRule
    from .monitor.ood import OODGate
    from .monitor.univariate import DriftReport
    from .store.protocols import Registry, TrackingBackend
    from .store.records import Experiment
    from .store.registry import AliasEvent, ModelInfo
    from .tracking.run import Run

__all__ = ["Client", "register"]

_OOD_FAILURES = (LoopMLError, ValueError, TypeError, RuntimeError, ImportError)


def _shown(uri: str) -> str:
    """The URI without its password (``postgresql+psycopg://ana:***@host/db``)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)


class Client:
    """The public API on one store: runs, the model registry and the OOD gates of its versions.

    ``tracking_uri``: ``sqlite:///path/loopml.db``, ``postgresql+psycopg://...`` or a
    loopml server ``http://host:port`` (default: the current tracking URI, read once
    here). Versions may be given as a reference (``"digits@production"``,
    ``"digits/3"``, ``"digits"`` for the newest) or as a
    :class:`~loopml.models.ModelVersion` this store returned.

    The store's connection is the process's one for that URI (shared with the
    module-level functions and closed at exit); :meth:`close` (or leaving a ``with``
    block) finishes the runs this client started and left open. Two clients on
    different URIs see nothing of each other's runs and models.

    >>> c = loopml.Client()                          # the current tracking URI
    >>> [m.name for m in c.list_models()]
    ['digits']
    >>> c.load_model("digits@production").predict(x[:4]).shape
    (4,)
    >>> with loopml.Client(server_url) as remote:    # a loopml server: the same store over HTTP
    ...     remote.get_version("digits/1").ref
    'digits/1'
    """

    def __init__(self, tracking_uri: str | None = None) -> None:
        if tracking_uri is not None and not isinstance(tracking_uri, str):
            raise ArgumentTypeError(
                "Argument tracking_uri should be a string such as 'sqlite:///path/loopml.db' or 'http://127.0.0.1:5000'; "
                f"got {type(tracking_uri).__name__}"
            )
        self.tracking_uri: str = config.check_tracking_uri(tracking_uri) if tracking_uri else get_tracking_uri()
        self._setup(backend_for(self.tracking_uri))

    @classmethod
    def _over(cls, backend: "TrackingBackend") -> "Client":
        """A client on a store already open (a run's), whatever URI it was opened with."""
        client = cls.__new__(cls)
        client.tracking_uri = str(backend.uri)
        client._setup(backend)
        return client

    def _setup(self, backend: "TrackingBackend") -> None:
        self._backend = backend
        self._registry = registry_of(backend)
        self._lock = threading.Lock()
        self._runs: list[Run] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"Client({_shown(self.tracking_uri)!r})"

    @property
    def backend(self) -> "TrackingBackend":
        """The tracking store: a ``TrackingStore`` (a database) or a ``RemoteStore`` (a loopml server)."""
        return self._backend

    @property
    def registry(self) -> "Registry":
        """The store's model registry (the same methods over HTTP for a loopml server)."""
        return self._registry

    # -- lifetime ------------------------------------------------------------------

    def close(self, status: str = "FINISHED") -> None:
        """Finish the runs this client started that are still open (with ``status``); the client is then closed."""
        with self._lock:
            runs, self._runs = self._runs, []
            self._closed = True
        for run in runs:
            if run.is_open:
                run.finish(status)

    def __enter__(self) -> "Client":
        self._check_open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("KILLED")
        else:
            self.close("FAILED")

    def _check_open(self) -> None:
        if self._closed:
            raise LoopMLError(f"{self!r} is closed; make a new one: loopml.Client({_shown(self.tracking_uri)!r})")

    def _holds(self, run: "Run") -> bool:
        backend = run.backend  # the store the run logs to
        if backend is self._backend:
            return True
        uri = getattr(backend, "uri", None)
        return isinstance(uri, str) and uri.rstrip("/") == self.tracking_uri.rstrip("/")

    def _version(self, version: "str | ModelVersion") -> ModelVersion:
        """A reference resolved here; a ModelVersion read again from this store (and checked to be from it)."""
        self._check_open()
        if isinstance(version, str):
            return self._registry.resolve(version)
        if not isinstance(version, ModelVersion):
            raise ArgumentTypeError(
                "Argument version should be a model reference such as 'digits@production' or 'digits/3', or a "
                f"ModelVersion; got {type(version).__name__}"
            )
        here = self._registry.get_version(version.name, version.version)
        if (here.created_at, here.run_id) != (version.created_at, version.run_id):
            raise ArgumentError(
                f"Argument version should be a version of this client's store ({_shown(self.tracking_uri)}): its "
                f"{here.ref} is another version than the one given, which comes from another store. Pass "
                f"{version.ref!r} to mean this store's {here.ref}, or use a client of the store it came from"
            )
        return here

    # -- runs ----------------------------------------------------------------------

    def start_run(
        self,
        experiment: str = "default",
        *,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        parent: "Run | str | None" = None,
        run_id: str | None = None,
    ) -> "Run":
        """:func:`loopml.start_run` in this store: open a run (or resume ``run_id``), this thread's active run.

        >>> with loopml.Client().start_run(experiment="client-demo") as run:
        ...     run.log({"loss": 0.5})
        >>> run.status
        'FINISHED'
        """
        self._check_open()
        run = start_run(experiment, name=name, params=params, tags=tags, parent=parent, run_id=run_id,
                        tracking_uri=self.tracking_uri)
        with self._lock:
            self._runs = [r for r in self._runs if r.is_open] + [run]
        return run

    def get_run(self, run_id: str) -> "Run":
        """:func:`loopml.get_run` in this store: a run by id (read-only)."""
        self._check_open()
        return get_run(run_id, tracking_uri=self.tracking_uri)

    def runs(
        self,
        experiment: str | Sequence[str] | None = None,
        *,
        filter: str | None = None,
        order_by: Sequence[str] | str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> "pd.DataFrame":
        """:func:`loopml.runs` in this store: one row per run, columns ``params.*``, ``metrics.*``, ``tags.*``."""
        self._check_open()
        return runs(experiment, filter=filter, order_by=order_by, limit=limit, offset=offset,
                    tracking_uri=self.tracking_uri)

    def experiments(self) -> list["Experiment"]:
        """:func:`loopml.experiments` in this store: every experiment with its run count and last activity."""
        self._check_open()
        return experiments(tracking_uri=self.tracking_uri)

    # -- data ----------------------------------------------------------------------

    def resolve_data(self, data: Any, *, target: str | None = None) -> "Dataset | Split":
        """:func:`loopml.data.resolve` with fingerprints looked up in this store.

        ``data``: a Dataset or Split, ``(x, y)``, a ``.npz`` / ``.csv`` / ``.parquet`` file
        (``target``: its label column), a bundled set's name or a stored dataset's fingerprint.
        """
        from .data.sources import resolve

        self._check_open()
        return resolve(data, target=target, backend=self._backend)

    def version_data(
        self,
        version: "str | ModelVersion",
        data: Any = None,
        *,
        target: str | None = None,
        seed: int = 0,
        example: str = "e.g. data='train.npz' (arrays x and y) or data=(x, y)",
    ) -> "Split":
        """The data a version is calibrated and measured on (:func:`loopml.models.evaldata.version_data`).

        ``data`` as for :meth:`resolve_data`, split as the Trainer splits (``seed``); default:
        the datasets logged with the version's run. ``example``: the call the errors show as
        the fix. Needs the store itself, not a server.
        """
        resolved = self._version(version)
        if not hasattr(self._registry, "store"):
            raise ArgumentError("Reading a version's data needs the store itself, not a loopml server; make the client "
                             "with the database's URI (sqlite:///... or postgresql+psycopg://...)")
        return version_data(self._registry, resolved, data, target=target, seed=seed, example=example)

    # -- the registry --------------------------------------------------------------

    def register(
        self,
        model: "torch.nn.Module",
        name: str,
        *,
        input_example: Any,
        run: "Run | None" = None,
        class_names: Sequence[str] | None = None,
        init_args: Mapping[str, Any] | None = None,
        train_data: Any = None,
        formats: Iterable[str] = ("pt2", "torch"),
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
        ood: "tuple[Any, Any] | Mapping[str, Any] | None" = None,
        feature_names: Sequence[str] | None = None,
        store_graph: bool = False,
        graph: Any = None,
    ) -> ModelVersion:
        """Register ``model`` as the next version of ``name`` in this store (:func:`loopml.register`).

        ``run``: the run that trained it, a run of this store (default: this thread's
        active run when it logs here; else a short run ``register NAME`` holds the files).
        ``ood=(train, val)`` (or a mapping with options, see :func:`loopml.register`) also
        fits the version's OOD gate from the live ``model``; a gate that cannot be fitted
        never fails the registration: it is skipped with a warning.
        """
        self._check_open()
        options = gate_options(ood)  # a bad ood= fails before anything is stored
        if run is not None and not self._holds(run):
            raise ArgumentError(
                f"Argument run should be a run of this client's store ({_shown(self.tracking_uri)}); run {run.id} logs "
                f"to {_shown(run.backend.uri)}. Register with a client of that store, "
                "or leave run= out to file the version under a run of its own here"
            )
        run = registration_run(run, self.tracking_uri)
        version = register_model(
            model, name, input_example=input_example, run=run, class_names=class_names, init_args=init_args,
            train_data=train_data, formats=formats, tags=tags, description=description,
            tracking_uri=self.tracking_uri, feature_names=feature_names, store_graph=store_graph, graph=graph,
        )
        if options is None:
            return version
        return self._fit_registered_gate(version, model, options)

    def _fit_registered_gate(self, version: ModelVersion, model: "torch.nn.Module", options: Mapping[str, Any]) -> ModelVersion:
        """Fit the OOD gate from the live module and store it with the version; a gate that cannot be
        fitted is skipped with a warning, for the model is registered either way."""
        try:
            fit_version_gate(self._registry, version, model, **options)
        except _OOD_FAILURES as exc:
            warn_user(
                f"{version.ref} is registered without an OOD gate: fitting it failed ({type(exc).__name__}: {exc}). "
                f"Fit it later with `loopml monitor fit-ood {version.ref}` or "
                f"loopml.monitor.fit_ood({version.ref!r}, model=model, train=..., val=...)."
            )
        return self._registry.get_version(version.name, version.version)

    def load_model(self, version: "str | ModelVersion", *, format: str | None = None, threads: int = 1,
                   allow_pickle: bool = False) -> "LoadedModel":
        """:func:`loopml.load_model` in this store: a version loaded from one of its formats (sha256 checked)."""
        return load_version(self._registry, self._version(version), format=format, threads=threads,
                            allow_pickle=allow_pickle)

    def explain(self, version: "str | ModelVersion", inputs: Any, *, method: str = "integrated_gradients",
                format: str | None = None, **options: Any) -> "Explanation":
        """:func:`loopml.explain` of a version in this store (``options``: target, baseline, steps, ...; see there)."""
        explainer = Explainer.for_version(self._registry, self._version(version), format=format)
        return explainer.explain(inputs, method=method, **options)

    def input_example(self, version: "str | ModelVersion") -> "np.ndarray":
        """The input example stored with a version (read without pickle)."""
        return version_example(self._registry, self._version(version))

    def export(self, version: "str | ModelVersion", formats: Iterable[str]) -> ModelVersion:
        """:func:`loopml.models.export` in this store: add formats (``onnx``, ``pte``, ``pt2``), checked against the module."""
        return export_version(self._registry, self._version(version), formats)

    def quantize(
        self,
        version: "str | ModelVersion",
        *,
        method: str,
        bits: int = 8,
        data: Any = None,
        target: str | None = None,
        seed: int = 0,
        epochs: int | None = None,
    ) -> ModelVersion:
        """:func:`loopml.models.quantize` in this store: a measured quantized variant, registered as the next version."""
        return quantize_version(self._registry, self._version(version), method=method, bits=bits, data=data,
                                target=target, seed=seed, epochs=epochs)

    def list_models(self) -> list["ModelInfo"]:
        """Every registered model with its newest version and aliases."""
        self._check_open()
        return self._registry.list_models()

    def list_versions(self, name: str) -> list[ModelVersion]:
        """The versions of model ``name``, newest first."""
        self._check_open()
        return self._registry.list_versions(name)

    def get_version(self, ref: str) -> ModelVersion:
        """The version a reference names (``"digits@production"``, ``"digits/3"``, ``"digits"``: the newest)."""
        return self._version(ref)

    def set_alias(self, name: str, alias: str, version: "int | ModelVersion") -> "AliasEvent":
        """Point ``alias`` (e.g. ``production``) at ``version`` (a number or a ModelVersion of ``name``); recorded with who and when."""
        if isinstance(version, ModelVersion):
            if version.name != name:
                raise ArgumentError(f"Argument version should be a version of {name!r}; got {version.ref}")
            number = self._version(version).version
        elif isinstance(version, bool) or not isinstance(version, int):
            raise ArgumentTypeError(f"Argument version should be a version number or a ModelVersion; got {type(version).__name__}")
        else:
            self._check_open()
            number = version
        return self._registry.set_alias(name, alias, number, by=current_user())

    def delete_alias(self, name: str, alias: str) -> "AliasEvent":
        """Remove ``alias`` from model ``name`` (recorded in its history)."""
        self._check_open()
        return self._registry.delete_alias(name, alias, by=current_user())

    def alias_history(self, name: str, alias: str | None = None) -> list["AliasEvent"]:
        """Every move of ``name``'s aliases (or of one alias), oldest first."""
        self._check_open()
        return self._registry.alias_history(name, alias)

    def delete_version(self, version: "str | ModelVersion") -> None:
        """Delete a version (``"digits/3"`` or a ModelVersion) and its files; refused while an alias points at it."""
        self._check_open()
        delete_numbered_version(self._registry, self._version(version) if not isinstance(version, str) else version)

    # -- the OOD gate --------------------------------------------------------------

    def fit_ood(
        self,
        version: "str | ModelVersion",
        *,
        train: Any = None,
        val: Any = None,
        data: Any = None,
        target: str | None = None,
        seed: int = 0,
        detectors: Sequence[str] = ("vae", "mahalanobis"),
        target_false_abstain: float = 0.01,
        mode: str = "class",
        vae_options: Mapping[str, Any] | None = None,
        model: "torch.nn.Module | None" = None,
    ) -> "OODGate":
        """:func:`loopml.monitor.fit_ood` of a version in this store: fit, calibrate and store its OOD gate.

        A gate for a live module that is not registered is :func:`loopml.monitor.ood.fit_gate`
        (it stores nothing, so it needs no client).
        """
        if not isinstance(version, (str, ModelVersion)):
            raise ArgumentTypeError(
                "Argument version should be a registered version ('digits/1' or a ModelVersion); for a module that is "
                f"not registered use loopml.monitor.ood.fit_gate(model, train=..., val=...), which stores nothing; "
                f"got {type(version).__name__}"
            )
        return fit_version_gate(self._registry, self._version(version), model, train=train, val=val, data=data,
                                target=target, seed=seed, detectors=detectors,
                                target_false_abstain=target_false_abstain, mode=mode, vae_options=vae_options)

    def load_gate(self, version: "str | ModelVersion", *, threads: int = 1) -> "OODGate":
        """:func:`loopml.monitor.load_gate` in this store: the gate stored with a version (sha256 checked)."""
        return load_version_gate(self._registry, self._version(version), threads=threads)


    # -- monitoring (this store's request log, feedback and alert rules) ---------------------

    def drift(self, reference: Any, current: Any = None, *, since: float | str | None = None,
              last: int | None = None, **options: Any) -> "DriftReport":
        """:func:`loopml.monitor.drift` in this store: a version's request log against its training data
        (``c.drift("digits@production", since="1h")``), or two tables."""
        from .monitor.fromlog import drift

        self._check_open()
        return drift(reference, current, since=since, last=last, tracking_uri=self.tracking_uri, **options)

    def prediction_windows(self, model: str, version: int | None = None, **options: Any) -> "pd.DataFrame":
        """:func:`loopml.monitor.windows.prediction_windows` in this store."""
        self._check_open()
        return prediction_windows(model, version, tracking_uri=self.tracking_uri, **options)

    def live_accuracy(self, model: str, **options: Any) -> "pd.DataFrame":
        """:func:`loopml.monitor.live_accuracy` in this store: accuracy from feedback labels, per window."""
        self._check_open()
        return live_accuracy(model, tracking_uri=self.tracking_uri, **options)

    def add_alert_rule(self, target: str, name: str, *, metric: str, below: float | None = None,
                       above: float | None = None, webhook: str | None = None, allow: Sequence[str] = ()) -> "AlertRule":
        """:func:`loopml.monitor.alerts.add_rule` in this store."""
        from .monitor import alerts

        self._check_open()
        return alerts.add_rule(target, name, metric=metric, below=below, above=above, webhook=webhook, allow=allow,
                               tracking_uri=self.tracking_uri)

    def alert_rules(self, target: str | None = None) -> "list[AlertRule]":
        """The alert rules stored here (of one target, or all)."""
        from .monitor import alerts

        self._check_open()
        return alerts.rules(target, tracking_uri=self.tracking_uri)

    def delete_alert_rule(self, target: str, name: str) -> None:
        """Delete an alert rule and the alerts it fired."""
        from .monitor import alerts

        self._check_open()
        alerts.delete_rule(target, name, tracking_uri=self.tracking_uri)

    def alert_history(self, model: str | None = None, *, since: float | None = None) -> "list[Alert]":
        """The alerts fired in this store, oldest first."""
        from .monitor import alerts

        self._check_open()
        return alerts.history(model, since=since, tracking_uri=self.tracking_uri)

def register(
    model: "torch.nn.Module",
    name: str,
    *,
    input_example: Any,
    run: "Run | None" = None,
    class_names: Sequence[str] | None = None,
    init_args: Mapping[str, Any] | None = None,
    train_data: Any = None,
    formats: Iterable[str] = ("pt2", "torch"),
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    ood: "tuple[Any, Any] | Mapping[str, Any] | None" = None,
    tracking_uri: str | None = None,
    feature_names: Sequence[str] | None = None,
    store_graph: bool = False,
    graph: Any = None,
) -> ModelVersion:
    """Register ``model`` as the next version of ``name``; returns the new :class:`~loopml.models.ModelVersion`.

    The version is filed under ``run`` (default: this thread's active run, when it
    logs to ``tracking_uri``'s store; without one a short run named ``register NAME``
    holds the files) and lives in that run's store. The files, signature, lineage
    and the other arguments are those of :func:`loopml.models.registry.register`
    (``input_example``, ``formats``, ``class_names``, ``init_args``, ``train_data``,
    ``feature_names``, ``tags``, ``description``; for a graph model, ``store_graph`` and ``graph``).

    ``ood=(train, val)``: also fit the out-of-distribution gate from the live
    ``model`` on ``train`` and calibrate it on ``val``, stored in formats that need
    no model code (see :func:`loopml.monitor.fit_ood`); ``loopml serve`` then abstains
    on inputs it flags. A mapping passes options too:
    ``ood={"train": train, "val": val, "target_false_abstain": 0.05, "detectors": ["vae"]}``.
    A bad ``ood=`` is an error before anything is stored; a gate that cannot be
    fitted never fails the registration: it is skipped with a warning.

    ``loopml.Client(uri).register(...)`` is the same on a given store.

    >>> v = loopml.register(model, "digits-cnn", input_example=x[:8], class_names=list("0123456789"))
    >>> v.ref
    'digits-cnn/1'
    >>> sorted(v.files)
    ['input_example', 'pt2', 'torch']
    """
    chosen = registration_run(run, tracking_uri)
    client = Client(tracking_uri) if chosen is None else Client._over(chosen.backend)  # the run's store
    return client.register(
        model, name, input_example=input_example, run=chosen, class_names=class_names, init_args=init_args,
        train_data=train_data, formats=formats, tags=tags, description=description, ood=ood,
        feature_names=feature_names, store_graph=store_graph, graph=graph,
    )
