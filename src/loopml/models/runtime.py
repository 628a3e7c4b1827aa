"""Run a stored model file: ``load_predictor(format, path)`` returns a callable on numpy batches.

``pt2``, ``onnx`` and ``pte`` files run without the code that defined the model, and
loading them never unpickles arbitrary objects (a ``.pt2`` holding pickled
non-tensor objects is refused). Only ``torch`` (a ``state_dict``) imports the
model's class, from the ``class_path`` recorded with :func:`class_path_of`. Example::

    from loopml.models.runtime import load_predictor

    predict = load_predictor("onnx", "model.onnx")
    logits = predict(np.zeros((4, 64), dtype=np.float32))   # shape (4, 10)

``mlflow`` (a version registered through the MLflow-compatible API, a zip of an MLflow
model folder) runs MLflow's pytorch flavor: its ``torch.export`` program (``data/model.pt2``,
MLflow 3's default) loads like ``pt2``, with the same pickle-free check; a module saved with
``torch.save`` (``serialization_format="pickle"``) is a pickle, and unpickling runs whatever
code its writer put in it, so it loads only with ``allow_pickle=True``
(``loopml serve --allow-pickle``), with a :class:`~loopml.errors.LoopMLWarning` that says so.

Threads: a predictor sets torch's thread count (``threads``) in each thread that
calls it, on its first call there; OpenMP keeps that setting per thread, and a
worker thread left at the default spins extra threads and runs many times slower.
ONNX Runtime sessions get ``intra_op_num_threads=threads``.
"""

from __future__ import annotations

import importlib
import io
import json
import threading
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from loopml.errors import ExportError, warn_user
from loopml.models.exporting import FORMATS
from loopml.quiet import import_onnxruntime, native_output, quiet_loggers
from ..errors import ArgumentError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MLFLOW",
    "PICKLE_RISK",
    "MlflowPredictor",
    "Predictor",
    "check_importable",
    "class_path_of",
    "import_class",
    "load_predictor",
    "load_program",
    "program_module",
    "pte_batch_capacity",
]


class Predictor(Protocol):
    """A loaded model: a float32 batch in, the model's output batch out.

    ``format`` is one of :data:`loopml.models.exporting.FORMATS`. Example::

        predict: Predictor = load_predictor("pt2", "model.pt2")
        predict(x).argmax(axis=1)
    """

    format: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def _as_batch(x: np.ndarray) -> np.ndarray:
    # XNNPACK (and ORT) want C-contiguous float32; a transposed view breaks the XNNPACK CNN
    return np.ascontiguousarray(x, dtype=np.float32)


class _TorchThreads:
    """Set torch's thread count once in every thread that calls the predictor."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._local = threading.local()
        self.ensure()

    def ensure(self) -> None:
        if not getattr(self._local, "done", False):
            import torch

            torch.set_num_threads(self.threads)
            self._local.done = True


class OnnxPredictor:
    """An ONNX Runtime session on one CPU thread pool of ``threads`` threads (use :func:`load_predictor`)."""

    format = "onnx"

    def __init__(self, path: Path, *, threads: int, outputs: int = 1) -> None:
        try:
            ort = import_onnxruntime()  # errors only: its thread pools log warnings through the default logger
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(f"Loading an ONNX model needs {exc.name}: pip install 'loopml[export]'") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise ExportError(f"ONNX Runtime could not load {path}: {_first_line(exc)}") from exc
        ins, outs = self._session.get_inputs(), self._session.get_outputs()
        if len(ins) != 1 or len(outs) != outputs:
            raise ExportError(
                f"{path} has {len(ins)} inputs and {len(outs)} outputs; loopml expected one input and {outputs} output(s)"
            )
        self.input_name: str = ins[0].name
        self._output_names: list[str] = [o.name for o in outs]
        # Plain run() with cached names measured fastest at batch 1 (~5 us): IOBinding
        # (~9 us) and OrtValue inputs (~40 us) cost more than they save for small batches.
        self._run = self._session.run

    def __call__(self, x: np.ndarray) -> np.ndarray:
        try:
            out = self._run(self._output_names, {self.input_name: _as_batch(x)})
        except Exception as exc:
            raise ExportError(f"ONNX Runtime failed on a batch of shape {np.shape(x)}: {_first_line(exc)}") from exc
        return np.asarray(out[0])

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of the session for ``x`` (a model exported with several outputs)."""
        try:
            return [np.asarray(o) for o in self._run(self._output_names, {self.input_name: _as_batch(x)})]
        except Exception as exc:
            raise ExportError(f"ONNX Runtime failed on a batch of shape {np.shape(x)}: {_first_line(exc)}") from exc


class Pt2Predictor:
    """A ``torch.export`` program loaded from a ``.pt2`` file (use :func:`load_predictor`).

    ``model`` is the program as a torch module (it cannot switch to train mode).
    """

    format = "pt2"

    def __init__(self, path: Path, *, threads: int) -> None:
        import torch

        self._threads = _TorchThreads(threads)
        program = load_program(path)
        try:
            # already in eval form: an exported program's module refuses .eval()
            self.model: torch.nn.Module = program.module()
        except Exception as exc:
            raise ExportError(f"torch.export could not load {path}: {_first_line(exc)}") from exc
        self._module = self.model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._threads.ensure()
        return _forward(self._module, x, "The .pt2 program")


class PtePredictor:
    """An ExecuTorch program (``.pte``) run by the ExecuTorch runtime (use :func:`load_predictor`).

    ``batch_capacity`` is the most rows the program takes per call (its planned
    batch); larger batches are split into chunks of that many rows.
    """

    format = "pte"

    def __init__(self, path: Path, *, threads: int) -> None:
        try:
            # "This API is experimental" on first import; torchao (imported by executorch) logs a warning per CUDA
            # kernel library it cannot load on a CPU machine
            with warnings.catch_warnings(), quiet_loggers(["torchao", "torch.utils._pytree"]):
                warnings.simplefilter("ignore")
                from executorch.runtime import Runtime
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(f"Loading a .pte model needs {exc.name}: pip install 'loopml[edge]'") from exc
        self._threads = _TorchThreads(threads)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = Runtime.get().load_program(path)
            with native_output(f"executorch: load {Path(path).name}"):  # XNNPACK's CPU probe prints to fd 2
                self._method = program.load_method("forward")
            meta = self._method.metadata
            if meta.num_inputs() != 1 or meta.num_outputs() != 1:
                raise ExportError(
                    f"{path} has {meta.num_inputs()} inputs and {meta.num_outputs()} outputs; "
                    "loopml runs single-input, single-output models"
                )
            sizes = tuple(meta.input_tensor_meta(0).sizes())
        except ExportError:
            raise
        except Exception as exc:  # RuntimeError / ValueError from the pybindings
            raise ExportError(f"The ExecuTorch runtime could not load {path}: {_first_line(exc)}") from exc
        if not sizes or sizes[0] < 1:
            raise ExportError(f"{path} has an input without a batch dimension (planned shape {sizes})")
        self.batch_capacity: int = int(sizes[0])
        self.input_shape: tuple[int, ...] = sizes

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        self._threads.ensure()
        batch = _as_batch(x)
        cap = self.batch_capacity
        try:
            if batch.shape[0] <= cap:
                return _to_numpy(self._method.execute([torch.from_numpy(batch)])[0])
            parts = [
                _to_numpy(self._method.execute([torch.from_numpy(batch[i : i + cap])])[0])
                for i in range(0, batch.shape[0], cap)
            ]
        except Exception as exc:
            raise ExportError(
                f"The ExecuTorch program failed on a batch of shape {batch.shape} "
                f"(planned input shape {self.input_shape}): {_first_line(exc)}"
            ) from exc
        return np.concatenate(parts, axis=0)


class TorchPredictor:
    """A model rebuilt from its class and a ``state_dict`` (use :func:`load_predictor`); ``model`` is the module."""

    format = "torch"

    def __init__(self, path: Path, *, threads: int, model_spec: Mapping[str, Any] | None) -> None:
        import torch

        self._threads = _TorchThreads(threads)
        if not isinstance(model_spec, Mapping) or not isinstance(model_spec.get("class_path"), str):
            raise ArgumentError(
                "Argument model_spec should be a mapping with the model's class for the 'torch' format, e.g. "
                "{'class_path': 'mypkg.models:Net', 'init_args': {'hidden': 32}}"
            )
        init_args = model_spec.get("init_args") or {}
        if not isinstance(init_args, Mapping):
            raise ArgumentError(f"Argument model_spec['init_args'] should be a mapping; got {init_args!r}")
        cls = import_class(model_spec["class_path"])
        try:
            model = cls(**init_args)
        except Exception as exc:
            raise ExportError(
                f"Could not construct {model_spec['class_path']} with init_args {dict(init_args)!r}: {exc}"
            ) from exc
        if not isinstance(model, torch.nn.Module):
            raise ExportError(f"{model_spec['class_path']} is not a torch.nn.Module")
        try:
            state = torch.load(str(path), weights_only=True, map_location="cpu")
            model.load_state_dict(state)
        except Exception as exc:
            raise ExportError(f"Could not load the state_dict {path} into {model_spec['class_path']}: {_first_line(exc)}") from exc
        self.model: torch.nn.Module = model.eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        self._threads.ensure()
        with torch.inference_mode():
            out = self.model(torch.from_numpy(_as_batch(x)))
        return _to_numpy(out)


MLFLOW = "mlflow"  # the registry format of an MLflow model folder (loopml.store.mlflow_models)
PICKLE_RISK = (
    "unpickling runs arbitrary code from whoever wrote the file: load only models from people you trust"
)


class MlflowPredictor:
    """MLflow's pytorch flavor from a registered ``mlflow`` zip (use :func:`load_predictor`); ``model`` is the module.

    ``details`` are the file's details stored at registration: ``serialization``
    (``pt2``, ``pickle`` or ``torchscript``) and ``model_file`` (its path in the zip).
    """

    format = MLFLOW

    def __init__(self, path: Path, *, threads: int, details: Mapping[str, Any], allow_pickle: bool = False) -> None:
        import tempfile

        import torch

        kind, member = details.get("serialization"), details.get("model_file")
        if kind not in ("pt2", "pickle", "torchscript") or not isinstance(member, str):
            flavors = ", ".join(details.get("flavors") or []) or "none"
            raise ExportError(
                f"{path} is an MLflow model loopml cannot run (flavors: {flavors}); loopml runs MLflow's pytorch "
                "flavor, saved as a torch.export program (pt2) or, with allow_pickle=True, a pickled module"
            )
        if kind != "pt2" and not allow_pickle:
            raise ExportError(
                f"This MLflow model is a {'TorchScript archive' if kind == 'torchscript' else 'pickled torch module'} "
                f"({member}); loading it means unpickling, and {PICKLE_RISK}. Opt in with "
                "load_model(ref, allow_pickle=True) or `loopml serve REF --allow-pickle`, or log the model with "
                "mlflow.pytorch.log_model(..., serialization_format='pt2') (MLflow 3's default), which loopml loads "
                "without unpickling"
            )
        self._threads = _TorchThreads(threads)
        try:
            with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory(prefix="loopml-mlflow-") as tmp:
                local = Path(tmp) / Path(member).name
                with archive.open(member) as src, open(local, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                if kind == "pt2":
                    self.model: torch.nn.Module = load_program(local).module()
                else:
                    warn_user(f"Loading the MLflow model {member} from {path.name} by unpickling it: {PICKLE_RISK}")
                    if kind == "torchscript":
                        self.model = torch.jit.load(str(local), map_location="cpu")  # type: ignore[no-untyped-call]
                    else:
                        self.model = torch.load(str(local), weights_only=False, map_location="cpu")
                    if not isinstance(self.model, torch.nn.Module):
                        raise ExportError(f"{member} holds a {type(self.model).__name__}, not a torch module")
                    self.model.eval()
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise ExportError(f"{path} is not a whole MLflow model archive: {_first_line(exc)}") from exc

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._threads.ensure()
        return _forward(self.model, x, "The MLflow model")


def load_predictor(
    format: str,
    path: str | Path,
    *,
    threads: int = 1,
    model_spec: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
    allow_pickle: bool = False,
) -> Predictor:
    """Load a model file written by :mod:`loopml.models.exporting` and return a :class:`Predictor`.

    ``format`` is one of :data:`~loopml.models.exporting.FORMATS`: ``"onnx"`` (ONNX
    Runtime, ``loopml[export]``), ``"pt2"`` (``torch.export``), ``"pte"``
    (ExecuTorch, ``loopml[edge]``; any batch size) and ``"torch"``, which needs
    ``model_spec={"class_path": "pkg.mod:Class", "init_args": {...}}`` and the
    class importable; ``"mlflow"`` (an MLflow model zip; ``details``: the file's
    registered details; ``allow_pickle``: see the module docstring). Example::

        predict = load_predictor("pt2", "model.pt2", threads=1)
        predict(np.random.rand(7, 64).astype("float32")).shape   # (7, 10)

    Raises :class:`loopml.errors.ExportError` for a missing, damaged or unsafe file.
    """
    if format not in FORMATS and format != MLFLOW:
        raise ArgumentError(f"Argument format should be one of {', '.join(FORMATS)}, {MLFLOW}; got {format!r}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ArgumentError(f"Argument threads should be an int >= 1; got {threads!r}")
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"No {format} model file at {path}")
    if format == "onnx":
        return OnnxPredictor(path, threads=threads)
    if format == "pt2":
        return Pt2Predictor(path, threads=threads)
    if format == "pte":
        return PtePredictor(path, threads=threads)
    if format == MLFLOW:
        return MlflowPredictor(path, threads=threads, details=details or {}, allow_pickle=allow_pickle)
    return TorchPredictor(path, threads=threads, model_spec=model_spec)


def load_program(path: str | Path) -> Any:
    """The ``torch.export.ExportedProgram`` in a ``.pt2`` file, its archive checked to hold only tensors first.

    Example::

        program = load_program("model.pt2")
        program.module()(torch.randn(2, 64))
    """
    import torch

    path = Path(path)
    _check_pt2_archive(path)
    try:
        return torch.export.load(str(path))
    except Exception as exc:  # torch raises several types for a damaged or foreign archive
        raise ExportError(f"torch.export could not load {path}: {_first_line(exc)}") from exc


def program_module(path: str | Path) -> "tuple[torch.nn.Module, list[tuple[str, str]]]":
    """A ``.pt2`` program as a module tree with the original submodule names, and the layers it calls.

    Returns ``(module, layers)``: ``module`` is the program unflattened
    (``torch.export.unflatten``), so each original submodule (``"head.3"``) is a
    submodule again and forward hooks on it fire; ``layers`` lists
    ``(name, "torch.nn.modules.linear.Linear")`` pairs in the order the program calls
    them. This lets code that needs a model's inner layers (the OOD gate's
    penultimate features) work from a version stored without its class. Example::

        module, layers = program_module("model.pt2")
        last_linear = [name for name, kind in layers if kind.endswith(".Linear")][-1]
    """
    import torch

    program = load_program(path)
    layers: dict[str, str] = {}
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack") if node.op == "call_function" else None
        if stack:
            name, kind = list(stack.values())[-1]  # the innermost module that made this op
            layers.setdefault(str(name), kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pytree deprecation notes from torch's own unflatten
            module = torch.export.unflatten(program)
    except Exception as exc:
        raise ExportError(f"The .pt2 program {path} could not be unflattened into its modules: {_first_line(exc)}") from exc
    return module, list(layers.items())


def class_path_of(model: object) -> str:
    """``"module:QualName"`` of the model's class, checked to be importable elsewhere.

    Refuses classes defined in ``__main__`` (a script or notebook) or inside a
    function, which another process cannot import. Example::

        class_path_of(Net())   # 'mypkg.models:Net'
    """
    cls = type(model)
    path = f"{cls.__module__}:{cls.__qualname__}"
    check_importable(path)
    return path


def check_importable(class_path: str) -> None:
    """Raise ``ValueError`` when ``class_path`` names a class no other process can import."""
    module, _, qualname = class_path.partition(":")
    if not module or not qualname:
        raise ArgumentError(f"Argument class_path should look like 'package.module:ClassName'; got {class_path!r}")
    advice = (
        "move the class to an importable module (a .py file on sys.path or in your package), "
        "or store the model as pt2/onnx, which load without its code"
    )
    if module == "__main__":
        raise ArgumentError(f"The model class {qualname} is defined in __main__ (a script or notebook): {advice}")
    if "<locals>" in qualname:
        raise ArgumentError(f"The model class {qualname} is defined inside a function: {advice}")


def import_class(class_path: str) -> type:
    """The class named by ``"package.module:QualName"``; ``ExportError`` when it cannot be imported.

    Example::

        import_class("torch.nn:Linear")(4, 2)
    """
    check_importable(class_path)
    module_name, _, qualname = class_path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExportError(
            f"The 'torch' format needs the model's code, and module {module_name!r} cannot be imported "
            f"({exc}). Install or put it on sys.path, or load the pt2 or onnx format, which need no model code."
        ) from exc
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise ExportError(
            f"Module {module_name!r} has no class {qualname!r}; load the pt2 or onnx format, which need no model code"
        ) from exc
    if not isinstance(obj, type):
        raise ExportError(f"{class_path} is not a class")
    return obj


_import_class = import_class  # the registry's name for it


def _to_numpy(out: Any) -> np.ndarray:
    import torch

    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ExportError(f"The model returned {type(out).__name__}; loopml runs models that return one tensor")
    return out.detach().numpy()


def _forward(module: Any, x: np.ndarray, what: str) -> np.ndarray:
    """``module`` on a batch without autograd; its failure as an ExportError naming ``what``."""
    import torch

    try:
        with torch.inference_mode():
            out = module(torch.from_numpy(_as_batch(x)))
    except Exception as exc:
        raise ExportError(f"{what} failed on a batch of shape {np.shape(x)}: {_first_line(exc)}") from exc
    return _to_numpy(out)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_pt2_archive(path: Path) -> None:
    """Refuse a .pt2 whose pickled parts are not plain tensors.

    ``torch.export.load`` unpickles pickled weights, custom objects and sample
    inputs with ``weights_only=False``; loopml first checks each of them loads
    with ``weights_only=True`` and refuses custom objects, so loading a file runs
    no code from it.
    """
    import torch

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            # every member sits under one root folder, named after the file at save time
            roots = {n.split("/", 1)[0] for n in names if "/" in n}
            if len(roots) != 1:
                raise ExportError(f"{path} is not a torch.export archive (no single root folder)")
            root = roots.pop() + "/"
            members = {n[len(root):]: n for n in names if n.startswith(root)}
            if "models/model.json" not in members and not any(m.startswith("models/") for m in members):
                raise ExportError(f"{path} is not a torch.export archive (no models/ entry)")

            def check_tensor_pickle(member: str) -> None:
                try:
                    torch.load(io.BytesIO(archive.read(members[member])), weights_only=True, map_location="cpu")
                except Exception as exc:
                    raise ExportError(
                        f"{path} holds pickled data that is not plain tensors ({member}); loopml does not load it. "
                        "Re-export the model with loopml.models.exporting.export_pt2."
                    ) from exc

            for member in members:
                if member.endswith(".pt"):  # sample inputs, legacy weights/constants
                    check_tensor_pickle(member)
                elif member.startswith("data/weights/") and member.endswith("_config.json"):
                    for meta in json.loads(archive.read(members[member]))["config"].values():
                        if meta.get("use_pickle"):
                            check_tensor_pickle("data/weights/" + meta["path_name"])
                elif member.startswith("data/constants/") and member.endswith("_config.json"):
                    for fqn, meta in json.loads(archive.read(members[member]))["config"].items():
                        name = meta["path_name"]
                        if not name.startswith("tensor_"):
                            raise ExportError(
                                f"{path} holds a custom object constant ({fqn}); loopml loads only tensor constants"
                            )
                        if meta.get("use_pickle"):
                            check_tensor_pickle("data/constants/" + name)
    except ExportError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, OSError) as exc:
        raise ExportError(f"{path} is not a valid .pt2 file: {_first_line(exc)}") from exc


def pte_batch_capacity(path: str | Path) -> int:
    """The most rows one call of a ``.pte`` program takes (its planned batch size).

    ``1`` for a program lowered with :data:`loopml.models.exporting.PTE_FIXED_BATCH`. Example::

        pte_batch_capacity(loopml.models.exporting.export_executorch(model, x, tmp / "model.pte"))  # e.g. 1024
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"No pte model file at {path}")
    return PtePredictor(path, threads=1).batch_capacity
