"""Explain a live module or a registered version: the model, the baseline, the target, the Captum call.

:class:`Explainer` holds one model ready to explain many batches (the servers keep
one per served version); :func:`explain` makes one for a single call. Which stored
format of a version is used:

- ``torch`` (the model's class and its ``state_dict``) when the class imports here:
  the real module, so every method works, DeepLIFT's layer rules included;
- else ``pt2`` (the ``torch.export`` program as a module): gradients flow through it,
  so saliency, integrated gradients, GradientSHAP, occlusion and feature ablation
  work; DeepLIFT does not (the program calls its activations as functions, and
  DeepLIFT's rules attach to activation modules);
- else (only ``onnx`` or ``pte``, which give no gradients): occlusion and feature
  ablation, which only run the model, through the stored format; a gradient method
  raises :class:`~loopml.errors.ExplainError` saying so.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, ExplainError, LoopMLError, OverBudget
from .explanation import Explanation, Faithfulness
from ..models.exporting import FORMATS
from ..models.signature import Signature
from .methods import GRADIENT_METHODS, ROWS_PER_FORWARD, Options

if TYPE_CHECKING:
    import torch

    from ..store.protocols import Registry
    from ..store.registry import ModelVersion

__all__ = ["BASELINES", "Explainer", "baseline_from_text", "explain", "preflight"]

BASELINES = ("zeros", "mean", "blur")
_NUMPY_RNG = threading.Lock()
IG_ROWS_PER_PASS = 1 << 22  # integrated gradients' rows x values per forward: past it Captum's internal_batch_size splits the steps


def _import_captum() -> Any:
    try:
        import captum.attr
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"Explanations need {exc.name}: pip install 'loopml[explain]'") from exc
    return captum.attr


class Explainer:
    """One model, ready to explain batches of its inputs (see the module docstring for the formats).

    Build with :meth:`for_version` (a registered version) or :meth:`for_module` (a live
    ``nn.Module``). ``module`` is the differentiable model (None for a version stored
    only as ONNX or ExecuTorch); ``forward`` runs the model on a float32 tensor batch.
    Thread-safe: one explanation runs at a time per explainer (a module's hooks and
    gradients are not shareable between threads).

    >>> from loopml.models.registry import registry_for
    >>> ex = Explainer.for_version(registry_for(), "digits@production")
    >>> ex.format, ex.explain(x[:2], method="saliency").attributions.shape
    ('torch', (2, 1, 8, 8))
    """

    def __init__(
        self,
        *,
        module: "torch.nn.Module | None",
        forward: "Callable[[torch.Tensor], torch.Tensor] | None" = None,
        signature: "Signature | None" = None,
        ref: str | None = None,
        format: str | None = None,
        layers: bool = True,
        mean: np.ndarray | None = None,
    ) -> None:
        if module is None and forward is None:
            raise ArgumentError("Explainer needs a module or a forward function")
        self.module = module
        self._forward = forward
        self.signature = signature
        self.ref = ref
        self.format = format
        self.layers = layers  # False for a pt2 program: no activation modules for DeepLIFT
        self.mean = mean
        self._lock = threading.Lock()
        self._modules = [] if module is None else list(module.modules())  # their training flags, set per explanation

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def for_module(cls, module: "torch.nn.Module", signature: "Signature | None" = None, *,
                   mean: Any = None) -> "Explainer":
        """A live module; ``signature`` (optional) checks inputs and names classes and features;
        ``mean`` (optional) is the training mean for ``baseline="mean"``."""
        import torch

        if not isinstance(module, torch.nn.Module):
            raise ArgumentError(f"Argument model should be a torch.nn.Module, a loaded or registered version, or a reference like 'digits@production'; got {type(module).__name__}")
        return cls(module=module, signature=signature, format="module",
                   mean=None if mean is None else np.asarray(mean, dtype=np.float32))

    @classmethod
    def for_version(cls, registry: "Registry", version: "ModelVersion | str", *, format: str | None = None) -> "Explainer":
        """A registered version, from its most capable stored format (see the module docstring), or from ``format``."""
        from ..models.registry import load_version, resolve_version

        version = resolve_version(registry, version)
        signature = Signature.from_dict(version.signature)
        mean = _reference_mean(registry, version, signature)
        if format is not None and format not in version.files:
            have = ", ".join(sorted(f for f in version.files if f in FORMATS)) or "no model file"
            raise ExplainError(f"{version.ref} has no {format!r} format; it has {have}")
        fmt = format
        if fmt is None:
            if "torch" in version.files and version.model_spec:
                try:
                    loaded = load_version(registry, version, format="torch")
                    return cls(module=loaded.module(), signature=signature, ref=version.ref, format="torch", mean=mean)
                except LoopMLError:
                    pass  # the class does not import here: the program needs no code
            fmt = "pt2" if "pt2" in version.files else None
        loaded = load_version(registry, version, format=fmt)  # None: onnx or pte, which run but give no gradients
        inner = getattr(loaded.predictor, "model", None)
        if inner is not None:
            return cls(module=inner, signature=signature, ref=version.ref, format=loaded.format,
                       layers=loaded.format == "torch", mean=mean)
        predictor = loaded.predictor

        def forward(x: "torch.Tensor") -> "torch.Tensor":
            import torch

            return torch.from_numpy(np.asarray(predictor(x.detach().cpu().numpy()), dtype=np.float32))

        return cls(module=None, forward=forward, signature=signature, ref=version.ref, format=loaded.format, mean=mean)

    # -- the work -------------------------------------------------------------------------------

    def prepare(self, inputs: Any) -> tuple[np.ndarray, bool]:
        """The inputs as the model's float32 batch, and whether they were one row (the signature's rules)."""
        if self.signature is not None:
            x, single = self.signature.parse(inputs)
        else:
            import torch

            arr = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
            if arr.dtype.kind not in "fiub" or arr.ndim < 2:
                raise ArgumentError(
                    f"Argument inputs should be a numeric batch (rows first, e.g. x[:1] for one row); got shape {arr.shape} of {arr.dtype}"
                )
            x, single = arr, False
        if len(x) == 0:
            raise ArgumentError("Argument inputs should hold at least one row")
        return np.ascontiguousarray(x, dtype=np.float32), single

    def explain(
        self,
        inputs: Any,
        *,
        method: object = "integrated_gradients",
        target: Any = None,
        baseline: Any = "zeros",
        steps: object = None,
        samples: object = None,
        stdevs: object = None,
        window: object = None,
        stride: object = None,
        feature_groups: object = None,
        seed: object = 0,
        budget: int | None = None,
        check: bool = False,
    ) -> Explanation:
        """Attributions of ``inputs`` (see :func:`loopml.explain` for every argument)."""
        import torch

        x, _ = self.prepare(inputs)
        row_shape = tuple(x.shape[1:])
        names = self.signature.feature_names if self.signature is not None else None
        opts = preflight(method, x.shape, budget=budget, feature_names=names, gradients=self.module is not None,
                         ref=self.ref, stored=self.format, steps=steps, samples=samples, stdevs=stdevs, window=window,
                         stride=stride, feature_groups=feature_groups, seed=seed)
        evals = opts.evaluations(row_shape)
        if opts.method == "deeplift" and not self.layers:
            raise ExplainError(
                f"DeepLIFT needs the model's activation layers, and {self.ref or 'this model'} is loaded from its pt2 program, "
                "which calls them as functions; use integrated_gradients (the same completeness property), or make the "
                "model's class importable here so that its torch format loads"
            )
        base_name, base = self._baseline(baseline, x)
        started = time.perf_counter()
        with self._lock, _eval_mode(self._modules):
            xt = torch.from_numpy(x)
            with torch.no_grad():
                outputs = self.run(xt).detach().cpu().numpy()
            tgt = self._target(target, outputs)
            # a tensor, as Captum would make of a list (zero-copy from the int64 array)
            attr, delta = run_method(opts, self.module, self.run, xt, torch.from_numpy(base),
                                     torch.from_numpy(tgt) if isinstance(tgt, np.ndarray) else tgt, row_shape)
        seconds = time.perf_counter() - started
        class_names = list(self.signature.class_names) if self.signature is not None and self.signature.class_names else None
        target_arr = None if tgt is None else (tgt if isinstance(tgt, np.ndarray) else np.full(len(x), tgt, dtype=np.int64))
        if not isinstance(check, bool):
            raise ArgumentError(f"Argument check should be True or False; got {check!r}")
        e = Explanation(
            method=opts.method, baseline=base_name, inputs=x, attributions=attr, outputs=outputs,
            target=target_arr,
            target_names=None if target_arr is None or class_names is None else [class_names[int(t)] for t in target_arr],
            delta=delta, evaluations=evals, seconds=seconds, options=opts.describe(), ref=self.ref, format=self.format,
            names=names, class_names=class_names, baseline_values=base,
        )  # fmt: skip
        if check:
            e.faithfulness = self.faithfulness(e)
        return e

    def faithfulness(self, e: Explanation, *, fraction: float = 0.1, trials: int = 20, seed: int = 0) -> Faithfulness:
        """Do the attributions point at what the model uses? Set each row's ``fraction`` of values with the largest
        attributions to the baseline and see how far the explained output falls, against ``trials`` random sets of
        as many values (one batched forward pass).

        A faithful explanation's top values move the output much more than random ones (``Faithfulness.faithful``:
        the fall is above the random falls' mean plus two standard deviations). Captum's metrics
        (``infidelity``, ``sensitivity_max``) score perturbations of the whole input rather than this deletion test,
        which reads directly as "the pixels it names matter"; so it is written here, in a few lines of NumPy.
        """
        import torch

        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ArgumentError(f"Argument fraction should be between 0 and 1 (the share of values removed); got {fraction!r}")
        if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= 1000:
            raise ArgumentError(f"Argument trials should be an int from 1 to 1000; got {trials!r}")
        if e.baseline_values is None:
            raise ArgumentError("This explanation does not keep its baseline's values; explain again with this loopml")
        n = len(e.inputs)
        flat_x = e.inputs.reshape(n, -1)
        flat_b = e.baseline_values.reshape(n, -1)
        size = flat_x.shape[1]
        k = max(1, int(round(fraction * size)))
        rng = np.random.default_rng(seed)
        batch = np.repeat(flat_x[:, None, :], trials + 2, axis=1)  # per row: the input, its top-k removed, k random removed
        rows = np.arange(n)
        top = np.argsort(-e.attributions.reshape(n, -1), axis=1, kind="stable")[:, :k]
        batch[rows[:, None], 1, top] = flat_b[rows[:, None], top]
        for t in range(trials):
            pick = np.stack([rng.choice(size, k, replace=False) for _ in range(n)])
            batch[rows[:, None], 2 + t, pick] = flat_b[rows[:, None], pick]
        with self._lock, _eval_mode(self._modules), torch.no_grad():
            out = self.run(torch.from_numpy(batch.reshape(n * (trials + 2), *e.inputs.shape[1:]))).detach().cpu().numpy()
        out = out.reshape(n, trials + 2, -1)
        target = np.zeros(n, dtype=np.int64) if e.target is None else e.target
        score = out[rows, :, target]  # (n, trials + 2): the explained output of each variant
        drop_top = score[:, 0] - score[:, 1]
        drops = score[:, :1] - score[:, 2:]
        return Faithfulness(fraction=float(fraction), removed=k, trials=trials, top_drop=drop_top,
                            random_drop=drops.mean(axis=1), random_sd=drops.std(axis=1, ddof=1) if trials > 1 else np.zeros(n))

    def run(self, x: "torch.Tensor") -> "torch.Tensor":
        """The model's raw outputs for a float32 batch (the module, else the stored format)."""
        if self.module is not None:
            out = self.module(x)
        else:
            assert self._forward is not None
            out = self._forward(x)
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]
        return out  # type: ignore[no-any-return]

    # -- the pieces ------------------------------------------------------------------------------

    def _baseline(self, baseline: Any, x: np.ndarray) -> tuple[str, np.ndarray]:
        """(its name, the baseline as a batch like ``x``)."""
        if isinstance(baseline, str):
            if baseline == "zeros":
                return "zeros", np.zeros_like(x)
            if baseline == "mean":
                if self.mean is None:
                    where = (f"{self.ref} has no drift reference to take it from (loopml.models.store_reference adds one)"
                             if self.ref else "pass Explainer.for_module(model, mean=X_train.mean(axis=0)) or baseline=X_train.mean(axis=0)")
                    raise ExplainError(f"baseline='mean' needs the training mean: {where}")
                if self.mean.shape != x.shape[1:]:
                    raise ExplainError(f"The training mean has shape {list(self.mean.shape)}, the inputs' rows {list(x.shape[1:])}")
                return "mean", np.broadcast_to(self.mean, x.shape).copy()
            if baseline == "blur":
                if x.ndim < 3:
                    raise ArgumentError("baseline='blur' blurs images; these inputs are table rows: use 'zeros' or 'mean'")
                return "blur", blur(x)
            raise ArgumentError(f"Argument baseline should be one of {', '.join(BASELINES)}, a number or an array shaped like one input; got {baseline!r}")
        if isinstance(baseline, bool):
            raise ArgumentError(f"Argument baseline should be one of {', '.join(BASELINES)}, a number or an array; got {baseline!r}")
        if isinstance(baseline, (int, float)):
            if not math.isfinite(baseline):
                raise ArgumentError(f"Argument baseline should be a finite number; got {baseline!r}")
            return f"constant {baseline:g}", np.full_like(x, float(baseline))
        arr = np.asarray(baseline, dtype=np.float32)
        if arr.shape == x.shape[1:]:
            arr = np.broadcast_to(arr, x.shape).copy()
        if arr.shape != x.shape or not np.isfinite(arr).all():
            raise ArgumentError(
                f"Argument baseline should be finite and shaped like one input {list(x.shape[1:])} or like the batch {list(x.shape)}; got {list(arr.shape)}"
            )
        return "custom", np.ascontiguousarray(arr)

    def _target(self, target: Any, outputs: np.ndarray) -> int | np.ndarray | None:
        """Captum's target: one class index per row, int64 (None: each row's predicted class; None for a 1-D output)."""
        n = len(outputs)
        if outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1):
            if target not in (None, 0):
                raise ExplainError(f"The model has one output; target should be None (or 0); got {target!r}")
            return None if outputs.ndim == 1 else 0
        if outputs.ndim != 2:
            raise ExplainError(f"loopml explains models whose output is (rows, classes); this one returns {list(outputs.shape)}")
        classes = outputs.shape[1]
        if target is None:
            return np.asarray(outputs.argmax(axis=1), dtype=np.int64)
        if isinstance(target, (list, tuple, np.ndarray)):
            values = list(target)
            if len(values) != n:
                raise ArgumentError(f"Argument target should give one class per row ({n}); got {len(values)}")
            return np.array([self._class_index(t, classes) for t in values], dtype=np.int64)
        return np.full(n, self._class_index(target, classes), dtype=np.int64)

    def _class_index(self, value: Any, classes: int) -> int:
        names = self.signature.class_names if self.signature is not None else None
        if isinstance(value, str):
            if names is not None and value in names:
                return names.index(value)
            if value.strip().lstrip("-").isdigit() and names is None:
                value = int(value)
            else:
                known = f"one of {', '.join(names[:20])}" if names else f"a class index from 0 to {classes - 1}"
                raise ExplainError(f"Argument target should be {known}; got {value!r}")
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < classes:
            return int(value)
        raise ExplainError(f"Argument target should be a class index from 0 to {classes - 1}" +
                           (" or a class name" if names else "") + f"; got {value!r}")


def preflight(method: object, batch_shape: Sequence[int], *, budget: int | None = None,
              feature_names: Sequence[str] | None = None, gradients: bool = True, ref: str | None = None,
              stored: str | None = None, **options: Any) -> Options:
    """Everything about a request that can be refused before a model is loaded or run: the method and its options
    (``ArgumentError``), the cost against ``budget`` (``OverBudget``), and a gradient method asked of a model without
    gradients (``gradients=False``: stored only as ``stored``, e.g. ONNX; ``ExplainError``). Returns the options.

    :meth:`Explainer.explain` runs it first; a server runs it before queueing the work.
    """
    shape = tuple(int(d) for d in batch_shape)
    opts = Options.make(method, shape[1:], feature_names=feature_names, **options)
    check_budget(opts.method, opts.evaluations(shape[1:]), shape, budget)
    if opts.method in GRADIENT_METHODS and not gradients:
        raise ExplainError(
            f"{ref or 'This model'} is stored only as {stored or 'a format without gradients'}, which gives no gradients, "
            f"so {opts.method} cannot run; use method='occlusion' or 'feature_ablation' (they only run the model), or "
            "register the version with its torch or pt2 format (loopml.register keeps both by default)"
        )
    return opts


def baseline_from_text(text: str | None) -> str | float:
    """A baseline given as text (a query string, a command line): a name of :data:`BASELINES` or a finite number;
    empty means ``"zeros"``.

    >>> baseline_from_text("blur"), baseline_from_text("0.5"), baseline_from_text(None)
    ('blur', 0.5, 'zeros')
    """
    text = (text or "").strip() or "zeros"
    if text in BASELINES:
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ArgumentError(f"Argument baseline should be {', '.join(BASELINES)} or a finite number; got {text!r}")
    return value


def check_budget(method: str, evals: int, shape: Sequence[int], budget: int | None) -> None:
    """Raise :class:`~loopml.errors.OverBudget` when evaluations x rows x input size is over ``budget``."""
    if budget is None:
        return
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ArgumentError(f"Argument budget should be an int >= 1 (evaluations x rows x input size) or None; got {budget!r}")
    rows, size = int(shape[0]), math.prod(int(d) for d in shape[1:])
    total = evals * rows * size
    if total > budget:
        fits = max(0, budget // max(1, evals * size))
        hint = f"send at most {fits:,} rows per request" if fits >= 1 else "this method does not fit even one row"
        raise OverBudget(
            f"This explanation costs {total:,} ({evals:,} evaluations x {rows:,} rows x {size:,} values), over the budget of "
            f"{budget:,}; {hint}, use fewer steps or samples, or a cheaper method (saliency costs {rows * size:,})",
            cost=total, budget=budget,
        )


def run_method(opts: Options, module: "torch.nn.Module | None", forward: "Callable[[torch.Tensor], torch.Tensor]",
               x: "torch.Tensor", base: "torch.Tensor", target: "int | torch.Tensor | None",
               row_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """Captum's method on the batch: (attributions, delta per row or None)."""
    attr_mod = _import_captum()
    m = opts.method
    n = x.shape[0]
    size = math.prod(row_shape)
    delta: Any = None
    if m in GRADIENT_METHODS:
        x = x.detach().clone().requires_grad_()  # Captum warns about (and then sets) it otherwise
    if m == "saliency":
        attr = attr_mod.Saliency(forward).attribute(x, target=target)
    elif m == "integrated_gradients":
        steps = int(opts.steps or 50)
        internal = None if n * steps * size <= IG_ROWS_PER_PASS else max(n, IG_ROWS_PER_PASS // size)
        attr, delta = attr_mod.IntegratedGradients(forward).attribute(
            x, baselines=base, target=target, n_steps=steps, internal_batch_size=internal, return_convergence_delta=True)
    elif m == "gradient_shap":
        samples = int(opts.samples or 20)
        # Captum draws the points along each path from NumPy's global generator (np.random.uniform) and the noise
        # from torch's: both seeded for a repeatable answer, NumPy's state put back after (one at a time: it is global)
        import torch

        with _NUMPY_RNG, torch.random.fork_rng(devices=[]):
            state = np.random.get_state()
            np.random.seed(opts.seed)
            torch.default_generator.manual_seed(opts.seed)  # torch.manual_seed would also seed CUDA lazily, slowly
            try:
                attr, delta = attr_mod.GradientShap(forward).attribute(
                    x, baselines=base[:1] if bool((base == base[:1]).all()) else base, target=target, n_samples=samples,
                    stdevs=opts.stdevs, return_convergence_delta=True)
            finally:
                np.random.set_state(state)
        delta = delta.reshape(n, samples).mean(dim=1)  # Captum repeats each row `samples` times in a row
    elif m == "deeplift":
        assert module is not None
        with warnings.catch_warnings():  # "Setting forward, backward hooks ... on non-linear activations": its own, removed after
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
            attr, delta = attr_mod.DeepLift(module).attribute(x, baselines=base, target=target, return_convergence_delta=True)
    elif m == "occlusion":
        assert opts.window is not None
        per = max(1, min(opts.evaluations(row_shape), ROWS_PER_FORWARD // max(1, n)))
        attr = attr_mod.Occlusion(forward).attribute(
            x, sliding_window_shapes=opts.window, strides=opts.stride, baselines=base, target=target,
            perturbations_per_eval=per)
    else:
        per = max(1, min(opts.evaluations(row_shape), ROWS_PER_FORWARD // max(1, n)))
        attr = attr_mod.FeatureAblation(forward).attribute(
            x, baselines=base, target=target, feature_mask=opts.feature_mask(row_shape), perturbations_per_eval=per)
    out = attr.detach().cpu().numpy().astype(np.float32)
    deltas: np.ndarray | None = None if delta is None else delta.detach().cpu().numpy().astype(np.float64).reshape(n)
    return out, deltas


def blur(x: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Each image of ``x`` (N, [C,] H, W) blurred by a Gaussian (sigma: a quarter of the shorter side by default).

    The blurred-input baseline: the image with its detail removed, so that the
    attributions show which details mattered (a black image would instead credit
    every bright pixel).
    """
    import torch

    h, w = x.shape[-2:]
    s = float(sigma) if sigma is not None else max(0.5, min(h, w) / 4)
    radius = max(1, int(math.ceil(2 * s)))
    k = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2) / (2 * s * s))
    k = k / k.sum()
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(-1, 1, h, w)
    pad = torch.nn.functional.pad(t, (radius, radius, radius, radius), mode="replicate")
    out = torch.nn.functional.conv2d(pad, k.reshape(1, 1, 1, -1))
    out = torch.nn.functional.conv2d(out, k.reshape(1, 1, -1, 1))
    return out.reshape(x.shape).numpy()


@contextlib.contextmanager
def _eval_mode(modules: "list[torch.nn.Module]") -> Iterator[None]:
    """The modules in eval mode for the explanation (dropout off, batch norm frozen), their modes restored after."""
    if not any(m.training for m in modules):
        yield
        return
    modes = [(m, m.training) for m in modules]
    try:
        for m, _ in modes:
            m.training = False  # not .eval(): an exported program's module refuses it
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _reference_mean(registry: "Registry", version: "ModelVersion", signature: "Signature") -> np.ndarray | None:
    """The training mean of a version's inputs, from its drift reference's row sample (None without one)."""
    from ..models.reference import load_reference

    try:
        ref = load_reference(registry, version)
    except LoopMLError:
        return None
    if ref is None or ref.rows is None or len(ref.rows) == 0:
        return None
    rows = np.asarray(ref.rows, dtype=np.float64)
    shape = tuple(d for d in signature.input.shape[1:])
    mean = rows.mean(axis=0).astype(np.float32)
    if None in shape or mean.size != math.prod(int(d) for d in shape if d is not None):
        return None
    return np.asarray(mean.reshape(tuple(int(d) for d in shape if d is not None)), dtype=np.float32)


def explain(
    model: Any,
    inputs: Any,
    *,
    method: object = "integrated_gradients",
    target: Any = None,
    baseline: Any = "zeros",
    steps: object = None,
    samples: object = None,
    stdevs: object = None,
    window: object = None,
    stride: object = None,
    feature_groups: object = None,
    seed: object = 0,
    budget: int | None = None,
    check: bool = False,
    format: str | None = None,
    tracking_uri: str | None = None,
) -> Explanation:
    """Why the model answered what it answered: attributions of ``inputs`` by one of Captum's methods.

    ``model``: a ``torch.nn.Module``, a loaded version (``loopml.load_model``), a
    :class:`~loopml.store.registry.ModelVersion`, or a reference (``"digits@production"``,
    ``"digits/3"``). A version is explained from its ``torch`` format (class importable)
    or its ``pt2`` program; one stored only as ONNX or ExecuTorch takes occlusion and
    feature ablation only.

    ``inputs``: a batch (a live module takes rows first: ``x[:1]`` for one row); a
    version also takes one row, records by column name, anything its signature parses.
    ``method``: ``saliency``, ``integrated_gradients`` (``ig``), ``gradient_shap``,
    ``deeplift``, ``occlusion``, ``feature_ablation`` (see :mod:`loopml.explanations.methods`
    for their cost and options: ``steps``, ``samples``, ``stdevs``, ``window``, ``stride``,
    ``feature_groups``). ``target``: the class explained: None (each row's predicted
    class), an index, a class name, or one per row. ``baseline``: the input that means
    "nothing": ``"zeros"``, ``"mean"`` (the training mean, from a version's drift
    reference), ``"blur"`` (images), a number, or an array shaped like one input.
    ``seed`` makes GradientSHAP's draws repeatable. ``budget``: refuse (``OverBudget``)
    an explanation costing more than this many evaluations x rows x input size.
    ``check=True`` also tests that the attributions are faithful (``e.faithfulness``:
    removing the top 10% of values moves the output more than removing random ones,
    see :meth:`Explainer.faithfulness`).
    ``format`` picks a version's stored format (``"torch"``, ``"pt2"``, ``"onnx"``).

    >>> e = loopml.explain("digits@production", x[:4], method="ig")
    >>> e.attributions.shape, e.ref, len(e.target)
    ((4, 1, 8, 8), 'digits/1', 4)
    >>> bool(abs(e.delta).max() < 0.05)          # sum(attributions) = F(x) - F(baseline), within delta
    True
    >>> list(e.top(5).columns)
    ['feature', 'value', 'attribution', 'sign']
    >>> e.plot()                                 # a matplotlib Figure: the heat map over the image
    <Figure size 420x420 with 1 Axes>
    """
    explainer = explainer_of(model, format=format, tracking_uri=tracking_uri)
    return explainer.explain(inputs, method=method, target=target, baseline=baseline, steps=steps, samples=samples,
                             stdevs=stdevs, window=window, stride=stride, feature_groups=feature_groups, seed=seed,
                             budget=budget, check=check)  # fmt: skip


def explainer_of(model: Any, *, format: str | None = None, tracking_uri: str | None = None) -> Explainer:
    """The :class:`Explainer` for anything :func:`explain` takes as ``model``."""
    import torch

    from ..models.registry import LoadedModel, registry_for
    from ..store.registry import ModelVersion

    if isinstance(model, Explainer):
        return model
    if isinstance(model, torch.nn.Module):
        return Explainer.for_module(model)
    if isinstance(model, LoadedModel):
        inner = getattr(model.predictor, "model", None)
        if inner is not None and format in (None, model.format):
            return Explainer(module=inner, signature=model.signature, ref=model.version.ref, format=model.format,
                             layers=model.format == "torch")
        model = model.version
    if isinstance(model, (str, ModelVersion)):
        return Explainer.for_version(registry_for(tracking_uri), model, format=format)
    raise ArgumentError(
        "Argument model should be a torch.nn.Module, a loaded model (loopml.load_model), a ModelVersion, or a "
        f"reference like 'digits@production'; got {type(model).__name__}"
    )

