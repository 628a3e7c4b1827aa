"""The model registry client: ``register``, ``load_model``, aliases, export.

A trained module becomes a *version* of a named model: the weights and how to
rebuild it (a ``torch.export`` program, and the state dict with the class's
import path and constructor arguments), the signature inferred from the input
example, the example itself, the run's metrics, lineage (run, dataset
fingerprints) and the training data's profile (the drift reference)::

    import loopml

    with loopml.start_run(experiment="digits") as run:
        trainer.fit(...)
        v = loopml.register(model, "digits", input_example=x[:8], class_names=list("0123456789"))
    loopml.models.set_alias("digits", "production", v.version)

    model = loopml.load_model("digits@production")   # no training script needed
    model.predict(x_new)                              # class indices; model(x) gives the raw outputs

Loading never unpickles arbitrary objects: the torch files go through
``torch.load(weights_only=True)`` / ``torch.export.load``, the others through
ONNX Runtime and ExecuTorch; every file's sha256 is checked first.
"""

from __future__ import annotations

import getpass
import json
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, ExportError, LoopMLError, NotFound, warn_user
from ..store.loopevents import LoopEvents
from ..store.registry import (
    MANIFEST,
    AliasEvent,
    ModelInfo,
    ModelVersion,
    RegistryStore,
    check_model_name,
    local_registry,
    parse_ref,
)
from ..store.tracking import TrackingStore
from ..tracking import api
from ..tracking.api import backend_for
from . import exporting as ex
from . import measure
from . import graphs
from .exporting import FILE_NAMES, FORMATS
from .rebuild import model_spec
from .remote import RemoteRegistry
from .runtime import load_predictor, pte_batch_capacity
from .signature import Signature, infer_signature, random_inputs

if TYPE_CHECKING:
    import torch

    from ..store.protocols import Registry, TrackingBackend
    from ..tracking.run import Run
    from .runtime import Predictor
    from .signature import Signature

__all__ = [
    "LoadedModel",
    "alias_history",
    "delete_alias",
    "delete_version",
    "export",
    "get_version",
    "list_models",
    "list_versions",
    "load_model",
    "register",
    "rollback",
    "set_alias",
    "stored_graph",
]

# Formats a model can be loaded from, in the order load_model prefers them
# when none is asked for: the torch.export program needs no model code and
# keeps a torch module; ONNX needs onnxruntime; the state dict needs the code.
LOAD_ORDER = ("pt2", "onnx", "torch", "pte")
EXAMPLE = "input_example"  # not a model format: the stored input example (.npy, read without pickle)
EXAMPLE_FILE = "input_example.npy"


def current_user() -> str | None:
    """The login name recorded as who registered a version or moved an alias (None where there is none)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers; the record simply has none
        return None


def registry_for(tracking_uri: str | None = None) -> "Registry":
    """The registry of the store at ``tracking_uri`` (default: the current tracking URI)."""
    return registry_of(backend_for(tracking_uri))


def registry_of(backend: "TrackingBackend") -> "Registry":
    """The registry over a tracking backend: the database itself, or a loopml server over HTTP."""
    if isinstance(backend, TrackingStore):
        return RegistryStore(backend)
    from ..tracking.remote import RemoteStore

    if isinstance(backend, RemoteStore):
        return RemoteRegistry(backend)
    raise ArgumentTypeError(f"Argument backend should be a TrackingStore or a RemoteStore, got {type(backend).__name__}")


def resolve_version(registry: "Registry", version: "str | ModelVersion") -> ModelVersion:
    """A reference (``"digits@production"``, ``"digits/3"``) resolved on ``registry``; a ModelVersion as it is."""
    if isinstance(version, ModelVersion):
        return version
    if isinstance(version, str):
        return registry.resolve(version)
    raise ArgumentTypeError(
        f"Argument version should be a model reference such as 'digits@production' or 'digits/3', or a ModelVersion; "
        f"got {type(version).__name__}"
    )


def _as_tensor(example: Any) -> "torch.Tensor":
    import torch

    if isinstance(example, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(example))
    if isinstance(example, torch.Tensor):
        return example.detach().cpu().contiguous()
    raise ArgumentTypeError(
        f"Argument input_example should be a torch.Tensor or numpy array with a batch dimension, "
        f"e.g. x_train[:8]; got {type(example).__name__}"
    )


def registration_run(run: "Run | None", tracking_uri: str | None = None) -> "Run | None":
    """The run a version registered with ``run=`` and ``tracking_uri=`` is filed under, or None for a short run of its own.

    ``run`` when given; else this thread's active run, when it logs to ``tracking_uri``'s
    store (any store when ``tracking_uri`` is None); else None: ``register`` opens a run
    in ``tracking_uri``'s store. The version lives in that run's store, beside its files.
    """
    if run is not None:
        return run
    active = api.active_run()
    if active is None or tracking_uri is None:
        return active
    # backends are one per URI per process; run.backend is the store the run logs to
    return active if active.backend is api.backend_for(tracking_uri) else None


def _logged_train_dataset(backend: "TrackingBackend", run_id: str) -> Mapping[str, Any] | None:
    """The stored record (schema, profile, ...) of the train dataset logged with the run, if any."""
    try:
        fingerprint = backend.run_datasets(run_id).get("train")
        return backend.get_dataset(fingerprint) if fingerprint else None
    except NotFound:
        return None


def _data_lineage(backend: "TrackingBackend", run_id: str) -> dict[str, Any]:
    """The run's datasets by role, and the roles whose rows the store keeps (a retrain or an evaluation
    finds them with :func:`loopml.data.sources.stored`)."""
    try:
        roles = dict(backend.run_datasets(run_id))
    except NotFound:
        return {}
    kept = sorted(role for role, fp in roles.items() if backend.get_dataset(fp).get("stored_path") is not None)
    return {"datasets": roles, "stored": kept}


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
    ood: None = None,
    tracking_uri: str | None = None,
    feature_names: Sequence[str] | None = None,
    lineage: Mapping[str, Any] | None = None,
    parent_version: int | None = None,
    store_graph: bool = False,
    graph: Any = None,
) -> ModelVersion:
    """Register ``model`` as the next version of ``name``; returns the new :class:`ModelVersion`.

    ``run``: the run that trained it (default: the active run, when it logs to
    ``tracking_uri``'s store; without one a short run named ``register NAME`` in
    ``tracking_uri``'s store holds the files). The version lives in the run's store. ``input_example``: a
    batch of inputs (tensor or array); the signature is inferred from it.
    ``formats``: any of ``pt2``, ``torch``, ``onnx``, ``pte`` (more can be added
    later with :func:`export`). ``train_data``: the training set, whose profile is kept
    with the version and whose drift reference (:mod:`loopml.models.reference`) is stored
    as its file ``drift_reference`` (default: the run's logged train dataset's).

    The ``torch`` format (a state dict) is rebuilt as ``Class(**init_args)``: the
    arguments come from ``init_args=`` (checked here: a wrong one is an error), or
    are recorded by the class (loopml's own networks, and any class decorated with
    :func:`loopml.models.keep_init_args`), or are none. A model that cannot be
    rebuilt that way (an ``nn.Sequential`` built in code, a class defined in
    ``__main__``) is registered without the ``torch`` format, with one
    :class:`~loopml.errors.LoopMLWarning` that says why and how to keep it; the
    other formats load without the model's code.

    The out-of-distribution gate (``ood=(train, val)``) belongs to the layer above:
    :func:`loopml.register` and :meth:`loopml.Client.register` take ``ood=``, call this
    and then fit and store the gate with :mod:`loopml.monitor`. Here ``ood`` is
    refused with an error that says so.

    ``feature_names``: the input's column names, so that requests may name them
    (default: the model's :class:`~loopml.data.Preprocessor`, else ``train_data``'s
    or the run's logged train dataset's names, when the input is as wide).
    ``class_names``: one name per output column of a classifier (default: the
    class names of ``train_data`` or of the run's logged train dataset, when it is
    a classification set with one class per output column); a version with class
    names is measured (accuracy) and served (probabilities) as a classifier.
    ``lineage``: more lineage to keep beside the run id and datasets (a retrained
    version's cause and label set, :mod:`loopml.loop.retrain`); ``parent_version``:
    the version of ``name`` it was derived from.

    A graph model (``model(x, edge_index)``, scores per node) registers with a
    :class:`~loopml.data.Graph` or an ``(x, edge_index)`` pair as ``input_example``: its
    signature has the inputs ``x`` (float32, ``(None, F)``) and ``edge_index`` (int64,
    ``(2, None)``) and ``kind="graph"``; class names default to the Graph's. Its pt2 and
    onnx files have dynamic numbers of nodes and edges and are checked against eager; one
    that does not export is left out with a warning that says why
    (:mod:`loopml.models.graphs`). ``store_graph=True`` keeps the example Graph with the
    version (``graph=``: another Graph or pair), so that ``loopml serve`` answers node ids
    of it (transductive serving).

    >>> v = loopml.register(model, "digits-cnn", input_example=x[:8], class_names=list("0123456789"))
    >>> v.ref
    'digits-cnn/1'
    >>> sorted(v.files)
    ['input_example', 'pt2', 'torch']
    """
    import torch


    if ood is not None:
        raise ArgumentTypeError(
            "Argument ood is taken by loopml.register and loopml.Client.register, which register the model here and "
            "then fit its OOD gate with loopml.monitor; call loopml.register(model, name, input_example=..., "
            "ood=(train, val)), or fit the gate later with loopml.monitor.fit_ood(version.ref, model=model, train=..., val=...)"
        )
    check_model_name(name)
    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(f"Argument model should be a torch.nn.Module, got {type(model).__name__}")
    wanted = list(dict.fromkeys(formats))
    bad = [f for f in wanted if f not in FORMATS]
    if bad or not wanted:
        raise ArgumentError(f"Argument formats should be a non-empty list of {', '.join(FORMATS)}; got {list(formats)!r}")
    pair = graphs.graph_example(input_example)
    kept_graph = None
    if pair is None:
        if store_graph or graph is not None:
            raise ArgumentError("Arguments store_graph and graph are for graph models: pass input_example=a Graph or (x, edge_index)")
        example = _as_tensor(input_example)
        signature = infer_signature(model, example, class_names=class_names, feature_names=feature_names)
    else:  # a graph model: two inputs, its own export and example file (loopml.models.graphs)
        example = pair[0]
        signature = graphs.infer_graph_signature(model, *pair, class_names=class_names)
        if hasattr(input_example, "schema"):
            signature = signature.classes_from(input_example.schema())
        if graph is not None:
            kept_graph = graphs.graph_of(graph)
        elif store_graph:
            kept_graph = graphs.graph_of(input_example)
        if kept_graph is not None:
            graphs.check_graph(signature, kept_graph[0], kept_graph[1])
    train_schema = train_data.schema() if hasattr(train_data, "schema") else None
    signature = signature.named_from(train_schema).classes_from(train_schema)
    spec, problem = model_spec(model, init_args, check="torch" in wanted)
    if "torch" in wanted and spec is None:
        wanted.remove("torch")  # keep the formats that need no code
        if not wanted:
            wanted = ["pt2"]
        warn_user(
            f"register({name!r}): the 'torch' format was left out: {problem}. The version keeps "
            f"{', '.join(wanted)}, which load without the model's code. To keep the torch format, pass the "
            "constructor's arguments as init_args={...}, or decorate the class with @loopml.models.keep_init_args; "
            "a model built in code (e.g. nn.Sequential) needs a class of its own in an importable module."
        )

    own_run = None
    run = registration_run(run, tracking_uri)
    if run is None:
        own_run = run = api.start_run(experiment="models", name=f"register {name}", tracking_uri=tracking_uri)
    try:
        run.flush()
        backend = run.backend
        logged = _logged_train_dataset(backend, run.id)  # names the columns and classes, profiles the data
        if logged is not None:
            signature = signature.named_from(logged.get("schema")).classes_from(logged.get("schema"))
        reference: dict[str, Any] | None
        if train_data is not None:
            from ..data.profile import profile as profile_of

            reference = dict(profile_of(train_data))
        else:
            reference = dict(logged["profile"]) if logged is not None and logged.get("profile") else None
        from ..data.reference import FILE as REFERENCE_FILE
        from ..data.reference import details as reference_details
        from ..data.reference import registration_reference
        from ..store.reference import FORMAT as REFERENCE_FORMAT

        # a graph version keeps no drift reference: the reference summarises rows of one input
        drift_reference = None if pair is not None else registration_reference(backend, run.id, train_data, signature.feature_names)
        with tempfile.TemporaryDirectory(prefix="loopml-register-") as tmp:
            folder = Path(tmp)
            files: dict[str, dict[str, Any]] = {}
            if pair is not None:
                files.update(_graph_files(name, model, pair, wanted, folder, kept_graph))
            else:
                for fmt in wanted:
                    details = _export_one(fmt, model, example, folder / FILE_NAMES[fmt])
                    files[fmt] = {"file": FILE_NAMES[fmt], "details": details}
                _store_latency(files, folder, example.numpy(), spec)
                np.save(folder / EXAMPLE_FILE, example.numpy(), allow_pickle=False)
                files[EXAMPLE] = {"file": EXAMPLE_FILE, "details": {"rows": int(example.shape[0])}}
            if drift_reference is not None:  # the training inputs' summary that drift compares live data with
                drift_reference.save(folder / REFERENCE_FILE)
                files[REFERENCE_FORMAT] = {"file": REFERENCE_FILE, "details": reference_details(drift_reference)}
            manifest = {
                "signature": signature.to_dict(),
                "model_spec": spec,
                "files": files,
                "profile": reference,
                "tags": {str(k): str(v) for k, v in (tags or {}).items()},
                "description": description,
                "lineage": {**_data_lineage(backend, run.id), **dict(lineage or {})},
                "parent_version": parent_version,
            }
            (folder / MANIFEST).write_text(json.dumps(manifest, allow_nan=False), encoding="utf-8")
            run.log_artifact(folder, f"models/{name}")
        registry = registry_of(backend)
        version = registry.create_version_from_run(name, f"runs:/{run.id}/models/{name}", created_by=current_user())
    finally:
        if own_run is not None:
            own_run.finish()
    return version


def _graph_files(name: str, model: "torch.nn.Module", pair: Any, wanted: list[str], folder: Path,
                 kept_graph: Any) -> dict[str, dict[str, Any]]:
    """A graph model's files: each format that exports (the others left out with a warning), the example, the graph."""
    import torch

    files: dict[str, dict[str, Any]] = {}
    skipped = []
    for fmt in wanted:
        path = folder / FILE_NAMES[fmt]
        if fmt == "torch":
            torch.save(model.state_dict(), path)
            files[fmt] = {"file": FILE_NAMES[fmt], "details": {}}
            continue
        if fmt == "pte":
            skipped.append("pte: loopml lowers single-input models to ExecuTorch only")
            continue
        try:
            files[fmt] = {"file": FILE_NAMES[fmt], "details": graphs.export_graph(fmt, model, pair[0], pair[1], path)}
        except ExportError as exc:
            skipped.append(f"{fmt}: {exc}")
    if skipped:
        warn_user(f"register({name!r}): left out " + "; ".join(skipped))
    if not any(f in files for f in FORMATS):
        raise ExportError(f"register({name!r}): no format of the graph model could be stored ({'; '.join(skipped)}); "
                          "add 'torch' to formats= (it needs the model's class importable)")
    x, edge_index = pair
    files[EXAMPLE] = {"file": graphs.EXAMPLE_FILE,
                      "details": graphs.write_graph_file(folder / graphs.EXAMPLE_FILE, x.numpy(), edge_index.numpy())}
    if kept_graph is not None:
        files[graphs.GRAPH] = {"file": graphs.GRAPH_FILE,
                               "details": graphs.write_graph_file(folder / graphs.GRAPH_FILE, *kept_graph)}
    return files


# formats whose runtime loads in milliseconds are timed at registration; pt2 and pte take
# seconds to load, so they are timed when export() adds them (it loads them to verify anyway)
_TIMED_AT_REGISTRATION = ("onnx", "torch")


def _store_latency(files: dict[str, dict[str, Any]], folder: Path, x: np.ndarray, spec: Mapping[str, Any] | None) -> None:
    """Put each quickly loaded file's measured latency in its details: `loopml serve --backend auto`
    compares these instead of loading every runtime at start (loopml.serve.backends)."""
    for fmt in _TIMED_AT_REGISTRATION:
        if fmt in files:
            try:
                predict = load_predictor(fmt, folder / files[fmt]["file"], model_spec=spec)
                files[fmt]["details"]["latency_ms"] = measure.serving_latency(predict, x)
            except (LoopMLError, ModuleNotFoundError) as exc:  # a figure to choose by, not a reason to refuse the model
                files[fmt]["details"]["latency_ms"] = None
                files[fmt]["details"]["latency_error"] = f"{type(exc).__name__}: {exc}"


def _export_one(fmt: str, model: "torch.nn.Module", example: "torch.Tensor", path: Path) -> dict[str, Any]:
    import torch


    if fmt == "torch":
        torch.save(model.state_dict(), path)
        return {}
    if fmt == "pt2":
        ex.export_pt2(model, example, path)
        return {"dynamic_batch": True}
    if fmt == "onnx":
        ex.export_onnx(model, example, path)
        return {"dynamic_batch": True}
    if fmt == "pte":
        ex.export_executorch(model, example, path)
        return {"max_batch": pte_batch_capacity(path)}
    raise ArgumentError(f"Unknown format {fmt!r}")


class LoadedModel:
    """A registered version, loaded from one of its formats.

    ``model(x)`` returns the raw outputs (validated input in, NumPy out);
    ``predict`` gives class indices for a classifier; ``predict_proba`` the
    softmax probabilities; ``module()`` a torch module (pt2 / torch formats).
    A graph model is called as ``model(x, edge_index)`` or ``model(graph)`` (one row per node).
    """

    def __init__(self, version: ModelVersion, fmt: str, predictor: "Predictor", signature: "Signature") -> None:
        self.version = version
        self.format = fmt
        self.predictor = predictor
        self.signature = signature

    def __repr__(self) -> str:
        return f"LoadedModel({self.version.ref!r}, format={self.format!r})"

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self.signature.class_names

    def __call__(self, x: Any, edge_index: Any = None) -> np.ndarray:
        if self.signature.is_graph:
            return self._graph(x, edge_index)
        if edge_index is not None:
            raise ArgumentError(f"{self.version.ref} is not a graph model; call it with one batch of inputs")
        return np.asarray(self.predictor(self.signature.validate(x)))

    def _graph(self, x: Any, edge_index: Any) -> np.ndarray:
        """A graph model's scores per node: ``model(graph)`` or ``model(x, edge_index)``, checked first."""
        if edge_index is None:
            if getattr(x, "kind", None) != "graph":
                raise ArgumentError(f"{self.version.ref} is a graph model: call it as model(x, edge_index) or model(graph)")
            x, edge_index = x.x, x.edge_index
        xa, ea = graphs.check_graph(self.signature, x, edge_index)
        return np.asarray(self.predictor(xa, ea))  # type: ignore[call-arg]

    def predict_proba(self, x: Any, edge_index: Any = None) -> np.ndarray:
        out = self(x, edge_index).astype(np.float64)
        out -= out.max(axis=1, keepdims=True)
        np.exp(out, out=out)
        out /= out.sum(axis=1, keepdims=True)
        return out

    def predict(self, x: Any, edge_index: Any = None) -> np.ndarray:
        out = self(x, edge_index)
        if self.signature.is_classifier:
            return np.asarray(out.argmax(axis=1))
        return out

    def module(self) -> "torch.nn.Module":
        module = getattr(self.predictor, "model", None)
        if module is None:
            raise ArgumentError(f"{self.version.ref} was loaded from {self.format!r}; load format='pt2' or 'torch' for a torch module")
        return module  # type: ignore[no-any-return]


def load_model(
    ref: "str | ModelVersion",
    *,
    format: str | None = None,
    threads: int = 1,
    tracking_uri: str | None = None,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Load ``"digits@production"``, ``"digits/3"``, ``"digits@latest"`` or ``"digits"`` (the newest).

    ``format``: one of the version's formats (default: the first present of
    pt2, onnx, torch, pte). The file's sha256 is checked before loading.
    ``loopml.Client(uri).load_model(ref)`` is the same on a given store.
    ``allow_pickle``: load a version registered from MLflow whose module was pickled
    (``mlflow.pytorch.log_model(..., serialization_format="pickle")``); unpickling runs
    arbitrary code from whoever wrote the file, so it is off unless asked for
    (:mod:`loopml.models.runtime`). loopml's own formats never unpickle.

    >>> m = loopml.load_model("digits@production")
    >>> m.predict(x[:4])                              # class indices
    array([...])
    >>> m(x[:4]).shape                                # the raw outputs
    (4, 10)
    """
    return load_version(registry_for(tracking_uri), ref, format=format, threads=threads, allow_pickle=allow_pickle)


def load_version(
    registry: "Registry",
    version: "str | ModelVersion",
    *,
    format: str | None = None,
    threads: int = 1,
    allow_pickle: bool = False,
) -> LoadedModel:
    """:func:`load_model` on a given registry (a reference, or a version already resolved there).

    The one implementation behind ``load_model``, ``loopml.Client.load_model`` and ``loopml serve``.
    """
    version = resolve_version(registry, version)
    formats = [f for f in version.files if f != EXAMPLE]
    if format is None:
        fmt = next((f for f in LOAD_ORDER if f in version.files), formats[0] if formats else None)
        if fmt is None:
            raise NotFound(f"{version.ref} has no loadable file")
    else:
        fmt = format
    path = registry.file_path(version.name, version.version, fmt)
    runtime_format = version.files[fmt].details.get("runtime", fmt) if fmt in version.files else fmt
    if isinstance(version.signature, Mapping) and version.signature.get("kind") == "graph":
        graph_predictor = graphs.load_graph_predictor(runtime_format, path, threads=threads, model_spec=version.model_spec)
        return LoadedModel(version, fmt, graph_predictor, Signature.from_dict(version.signature))  # type: ignore[arg-type]
    details = version.files[fmt].details if fmt in version.files else {}
    predictor = load_predictor(runtime_format, path, threads=threads, model_spec=version.model_spec,
                               details=details, allow_pickle=allow_pickle)
    return LoadedModel(version, fmt, predictor, Signature.from_dict(version.signature))


def input_example(ref: "str | ModelVersion", *, tracking_uri: str | None = None) -> np.ndarray:
    """The input example stored with a version (read without pickle)."""
    return version_example(registry_for(tracking_uri), ref)


def version_example(registry: "Registry", version: "str | ModelVersion") -> np.ndarray:
    """:func:`input_example` on a given registry (a graph version's: its example's node features)."""
    version = resolve_version(registry, version)
    path = registry.file_path(version.name, version.version, EXAMPLE)
    if version.files[EXAMPLE].path.endswith(".npz"):  # a graph model's example (loopml.models.graphs)
        return graphs.read_graph_file(path)[0]
    return np.asarray(np.load(path, allow_pickle=False))


def stored_graph(ref: "str | ModelVersion", *, tracking_uri: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The graph kept with a graph model's version (``register(..., store_graph=True)``): ``(x, edge_index, node_ids)``.

    ``node_ids`` is None when the nodes are known by their numbers. Example::

        x, edge_index, ids = stored_graph("karate@production")
    """
    return version_graph(registry_for(tracking_uri), ref)


def version_graph(registry: "Registry", version: "str | ModelVersion") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`stored_graph` on a given registry."""
    version = resolve_version(registry, version)
    if graphs.GRAPH not in version.files:
        raise NotFound(f"{version.ref} has no stored graph; register it with store_graph=True (or graph=...) to keep one")
    return graphs.read_graph_file(registry.file_path(version.name, version.version, graphs.GRAPH))


def export(ref: "str | ModelVersion", formats: Iterable[str], *, tracking_uri: str | None = None) -> ModelVersion:
    """Add formats (``onnx``, ``pte``, ``pt2``) to an existing version, checked against its pt2/torch module.

    The exported file is compared with the module on the stored input example
    and 100 random inputs within the signature (max abs difference <= 1e-4).
    Against a loopml server the export runs on the server.

    >>> from loopml.models.registry import export
    >>> v = loopml.register(model, "cnn", input_example=x[:8])      # pt2 and torch by default
    >>> sorted(export(v.ref, ["onnx"]).files)
    ['input_example', 'onnx', 'pt2', 'torch']
    """
    return export_version(registry_for(tracking_uri), ref, formats)


def export_version(registry: "Registry", ref: "str | ModelVersion", formats: Iterable[str]) -> ModelVersion:
    """:func:`export` on a given registry: the one implementation behind ``export``,
    ``loopml.Client.export`` and the tracking server's export route.

    A registry over HTTP hands the work to its server (which runs this on its own store).
    """
    wanted = list(dict.fromkeys(formats))
    if isinstance(registry, RemoteRegistry):  # a loopml server: it exports with its own copy of the files
        return registry.export(ref.ref if isinstance(ref, ModelVersion) else ref, wanted)
    local = local_registry(registry, "export")
    version = resolve_version(registry, ref)
    bad = [f for f in wanted if f not in ex.FORMATS or f == "torch"]
    if bad or not wanted:
        raise ArgumentError(f"Argument formats should name some of pt2, onnx, pte; got {list(formats)!r}")
    signature = Signature.from_dict(version.signature)
    if signature.is_graph:
        return _export_graph_version(registry, local, version, wanted)
    module = source_module(registry, version)
    example = version_example(registry, version)
    check = np.concatenate([example, random_inputs(signature, 100, like=example)]).astype(example.dtype)
    with tempfile.TemporaryDirectory(prefix="loopml-export-") as tmp:
        for fmt in wanted:
            path = Path(tmp) / ex.FILE_NAMES[fmt]
            details = _export_one(fmt, module, _as_tensor(example), path)
            predictor = load_predictor(fmt, path)
            diff = ex.verify(predictor, module, check, atol=1e-4)
            details["max_abs_diff"] = float(diff)
            details["latency_ms"] = measure.serving_latency(predictor, example)  # what `serve --backend auto` compares
            local.add_file(version.name, version.version, fmt, path, details)
    return registry.get_version(version.name, version.version)


def _export_graph_version(registry: "Registry", local: Any, version: ModelVersion, wanted: list[str]) -> ModelVersion:
    """Add pt2/onnx files to a graph version, exported from its torch format and checked on its example graph."""
    import torch

    if "torch" not in version.files or "pte" in wanted:
        raise ArgumentError(f"{version.ref} is a graph model: formats pt2 and onnx are exported from its torch format "
                            f"(it has {sorted(version.files)}); pte is not supported for graph models")
    module = load_version(registry, version, format="torch").module()
    x, edge_index, _ = graphs.read_graph_file(registry.file_path(version.name, version.version, EXAMPLE))
    with tempfile.TemporaryDirectory(prefix="loopml-export-") as tmp:
        for fmt in wanted:
            path = Path(tmp) / ex.FILE_NAMES[fmt]
            details = graphs.export_graph(fmt, module, torch.from_numpy(x), torch.from_numpy(edge_index), path)
            local.add_file(version.name, version.version, fmt, path, details)
    return registry.get_version(version.name, version.version)


def source_module(registry: "Registry", version: ModelVersion) -> "torch.nn.Module":
    """The version as a torch module to export or quantize from: its class with the state dict, else its pt2 program.

    The program is wrapped so that ``train()``/``eval()`` leave it alone (an exported program is always in eval).
    """
    import torch

    if "torch" in version.files and version.model_spec:
        try:
            return load_version(registry, version, format="torch").module()
        except LoopMLError:
            pass  # the class is not importable here; the pt2 program needs no code
    if "pt2" not in version.files:
        raise NotFound(f"{version.ref} has neither a pt2 program nor an importable torch class to export from")
    program = load_version(registry, version, format="pt2").module()

    class _Program(torch.nn.Module):
        # an exported program's module cannot switch to eval (it already is): keep train()/eval() from reaching it
        def __init__(self) -> None:
            super().__init__()
            self.program = program

        def train(self, mode: bool = True) -> "_Program":
            self.training = mode
            return self

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.program(x)  # type: ignore[no-any-return]

    return _Program()


def list_models(*, tracking_uri: str | None = None) -> list[ModelInfo]:
    return registry_for(tracking_uri).list_models()


def list_versions(name: str, *, tracking_uri: str | None = None) -> list[ModelVersion]:
    return registry_for(tracking_uri).list_versions(name)


def get_version(ref: str, *, tracking_uri: str | None = None) -> ModelVersion:
    """The version a reference names (``"digits@production"``, ``"digits/3"``, ``"digits"``: the newest)."""
    return registry_for(tracking_uri).resolve(ref)


def set_alias(name: str, alias: str, version: int, *, tracking_uri: str | None = None) -> AliasEvent:
    """Point ``alias`` (e.g. ``production``) at ``version``; the move is recorded with who and when."""
    return registry_for(tracking_uri).set_alias(name, alias, int(version), by=current_user())


def delete_alias(name: str, alias: str, *, tracking_uri: str | None = None) -> AliasEvent:
    return registry_for(tracking_uri).delete_alias(name, alias, by=current_user())


def alias_history(name: str, alias: str | None = None, *, tracking_uri: str | None = None) -> list[AliasEvent]:
    return registry_for(tracking_uri).alias_history(name, alias)


def rollback(name: str, alias: str, *, cause: Mapping[str, Any] | None = None,
             tracking_uri: str | None = None) -> AliasEvent:
    """Move ``alias`` back to the version it pointed at before its latest move; recorded in the alias history.

    A second rollback undoes the first (it is a move like any other). In a store (not over
    HTTP) a ``rollback`` loop event keeps ``cause`` (default: the command). Example::

        rollback("digits", "production").to_version   # 1, when production was moved 1 -> 2
    """
    return rollback_alias(registry_for(tracking_uri), name, alias, cause=cause)


def rollback_alias(registry: "Registry", name: str, alias: str, *, by: str | None = None,
                   cause: Mapping[str, Any] | None = None) -> AliasEvent:
    """:func:`rollback` on a given registry."""
    current = registry.resolve(f"{check_model_name(name)}@{alias}").version  # NotFound names how to set it
    moves = [e for e in registry.alias_history(name, alias) if e.to_version == current]
    previous = moves[-1].from_version if moves else None
    if previous is None:
        raise NotFound(
            f"{name}@{alias} has no previous version to roll back to: its history has no move to version {current} "
            f"from another one. Point it at a version yourself: loopml models alias {name} {alias} VERSION"
        )
    event = registry.set_alias(name, alias, previous, by=by if by is not None else current_user())
    if isinstance(registry, RegistryStore):
        LoopEvents(registry.store).record(f"{name}@{alias}", name, previous, "rollback", "done",
                                          cause=dict(cause or {"command": "rollback"}),
                                          details={"from": current, "to": previous, "by": event.by})
    return event


def delete_version(ref: "str | ModelVersion", *, tracking_uri: str | None = None) -> None:
    """Delete a version and its files; refused (:class:`~loopml.errors.Conflict`) while an alias points at it."""
    delete_numbered_version(registry_for(tracking_uri), ref)


def delete_numbered_version(registry: "Registry", ref: "str | ModelVersion") -> None:
    """:func:`delete_version` on a given registry: a version named by number (``"digits/3"``) or a ModelVersion."""
    if isinstance(ref, ModelVersion):
        registry.delete_version(ref.name, ref.version)
        return
    name, which = parse_ref(ref)
    if not isinstance(which, int):
        raise ArgumentError(f"Name the version to delete by number, e.g. '{name}/3'; got {ref!r}")
    registry.delete_version(name, which)

