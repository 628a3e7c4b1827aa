"""The attribution methods: their names, their options, their cost, and the Captum call behind each.

Every method is Captum's (``loopml[explain]``); this module only chooses the
options Captum leaves to the caller and says what each costs, so that a server can
refuse a request before it runs. :func:`cost` is evaluations x rows x input size,
where an *evaluation* is one forward pass over the batch (with its backward pass
for the gradient methods):

=====================  ==============================  ===========================================
method                 evaluations                     options
=====================  ==============================  ===========================================
``saliency``           1                               (gradients' absolute values, Captum's default)
``integrated_gradients``  ``steps`` (50)               ``steps``; reports the completeness delta
``gradient_shap``      ``samples`` (20)                ``samples``, ``stdevs`` (0.0); delta
``deeplift``           2 (input and baseline)          needs the model's layers (a module); delta
``occlusion``          windows + 1                     ``window``, ``stride`` (no gradients)
``feature_ablation``   features (or groups) + 1        ``feature_groups`` (no gradients)
=====================  ==============================  ===========================================

>>> cost("integrated_gradients", (32, 64))          # 50 steps x 32 rows x 64 values
102400
>>> evaluations("occlusion", (1, 8, 8))             # 2x2 windows, stride 1: 7 x 7 windows + 1
50
>>> method_name("ig")
'integrated_gradients'
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ArgumentError, ArgumentTypeError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ALIASES",
    "CHEAP",
    "DEFAULT_BUDGET",
    "GRADIENT_METHODS",
    "METHODS",
    "Options",
    "cost",
    "evaluations",
    "method_name",
]

METHODS = ("saliency", "integrated_gradients", "gradient_shap", "deeplift", "occlusion", "feature_ablation")
ALIASES = {
    "ig": "integrated_gradients",
    "integrated-gradients": "integrated_gradients",
    "gs": "gradient_shap",
    "shap": "gradient_shap",
    "gradient-shap": "gradient_shap",
    "dl": "deeplift",
    "ablation": "feature_ablation",
    "feature-ablation": "feature_ablation",
}
GRADIENT_METHODS = frozenset({"saliency", "integrated_gradients", "gradient_shap", "deeplift"})
"""Methods that need the model's gradients: a torch module (the ``torch`` format or the ``pt2`` program)."""
CHEAP = frozenset({"saliency"})
"""Methods cheap enough to answer on a server's event loop (one forward and backward pass)."""
DEFAULT_BUDGET = 20_000_000
"""The servers' default budget: evaluations x rows x input size (IG's 50 steps on 32 rows of 12,500 values)."""

DEFAULT_STEPS = 50  # Captum's own default for integrated gradients
DEFAULT_SAMPLES = 20  # GradientSHAP's expectation: 20 draws keep its delta near IG's at 50 steps on the digits CNN
MAX_STEPS = 10_000
ROWS_PER_FORWARD = 2048  # occlusion/ablation perturbations batched into forwards of at most this many rows


def method_name(name: object) -> str:
    """The canonical name of a method (aliases: ``ig``, ``shap``, ``gs``, ``dl``, ``ablation``)."""
    if not isinstance(name, str):
        raise ArgumentTypeError(f"Argument method should be a string, one of {', '.join(METHODS)}; got {name!r}")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise ArgumentError(
            f"Argument method should be one of {', '.join(METHODS)} (or ig, shap, dl, ablation); got {name!r}"
        )
    return key


def _positive_int(name: str, value: object, *, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise ArgumentError(f"Argument {name} should be an int from 1 to {top:,}; got {value!r}")
    return value


@dataclass(frozen=True)
class Options:
    """A method with its options checked and its defaults filled for one input shape (a row's shape).

    Build with :meth:`make`; ``window``/``stride`` are full-rank tuples (one per
    input dimension), ``groups`` the feature ablation's groups as lists of flat
    indices (None: every value its own feature), ``names`` their names.
    """

    method: str
    steps: int | None = None
    samples: int | None = None
    stdevs: float = 0.0
    window: tuple[int, ...] | None = None
    stride: tuple[int, ...] | None = None
    groups: tuple[tuple[int, ...], ...] | None = None
    group_names: tuple[str, ...] | None = None
    seed: int = 0

    @classmethod
    def make(
        cls,
        method: object,
        row_shape: Sequence[int],
        *,
        steps: object = None,
        samples: object = None,
        stdevs: object = None,
        window: object = None,
        stride: object = None,
        feature_groups: object = None,
        feature_names: Sequence[str] | None = None,
        seed: object = 0,
    ) -> "Options":
        name = method_name(method)
        shape = tuple(int(d) for d in row_shape)
        if (steps, samples, stdevs, window, stride, feature_groups) == (None,) * 6 and type(seed) is int and seed == 0:
            return _defaults(name, shape)  # the common call: every option at its default, made once per shape
        return cls._make(name, shape, steps=steps, samples=samples, stdevs=stdevs, window=window, stride=stride,
                         feature_groups=feature_groups, feature_names=feature_names, seed=seed)

    @classmethod
    def _make(cls, name: str, shape: tuple[int, ...], *, steps: object = None, samples: object = None,
              stdevs: object = None, window: object = None, stride: object = None, feature_groups: object = None,
              feature_names: Sequence[str] | None = None, seed: object = 0) -> "Options":
        given = {"steps": steps, "samples": samples, "stdevs": stdevs, "window": window, "stride": stride,
                 "feature_groups": feature_groups}  # fmt: skip
        allowed = {
            "integrated_gradients": {"steps"},
            "gradient_shap": {"samples", "stdevs"},
            "occlusion": {"window", "stride"},
            "feature_ablation": {"feature_groups"},
        }.get(name, set())
        stray = [k for k, v in given.items() if v is not None and k not in allowed]
        if stray:
            takes = f"takes {', '.join(sorted(allowed))}" if allowed else "takes no options"
            raise ArgumentError(f"Method {name} {takes}; got {', '.join(stray)}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ArgumentError(f"Argument seed should be an int; got {seed!r}")
        out: dict[str, Any] = {"method": name, "seed": seed}
        if name == "integrated_gradients":
            out["steps"] = DEFAULT_STEPS if steps is None else _positive_int("steps", steps, top=MAX_STEPS)
        elif name == "gradient_shap":
            out["samples"] = DEFAULT_SAMPLES if samples is None else _positive_int("samples", samples, top=MAX_STEPS)
            if stdevs is not None:
                if isinstance(stdevs, bool) or not isinstance(stdevs, (int, float)) or not 0 <= stdevs < math.inf:
                    raise ArgumentError(f"Argument stdevs should be a number >= 0 (the noise added to each sample); got {stdevs!r}")
                out["stdevs"] = float(stdevs)
        elif name == "occlusion":
            out["window"] = _window(window, shape)
            out["stride"] = _stride(stride, out["window"], shape)
        elif name == "feature_ablation" and feature_groups is not None:
            out["groups"], out["group_names"] = _groups(feature_groups, shape, feature_names)
        return cls(**out)

    def evaluations(self, row_shape: Sequence[int]) -> int:
        """Forward passes over the batch this method makes (see the module's table)."""
        m = self.method
        if m == "saliency":
            return 1
        if m == "integrated_gradients":
            return int(self.steps or DEFAULT_STEPS)
        if m == "gradient_shap":
            return int(self.samples or DEFAULT_SAMPLES)
        if m == "deeplift":
            return 2
        if m == "occlusion":
            assert self.window is not None and self.stride is not None
            return math.prod(windows(row_shape, self.window, self.stride)) + 1
        size = math.prod(row_shape)
        if self.groups is None:
            return size + 1
        grouped = sum(len(g) for g in self.groups)
        return len(self.groups) + (size - grouped) + 1  # each ungrouped value is a feature of its own

    def describe(self) -> dict[str, Any]:
        """The options as JSON (what an answer reports alongside the attributions)."""
        out: dict[str, Any] = {}
        if self.steps is not None:
            out["steps"] = self.steps
        if self.samples is not None:
            out.update(samples=self.samples, stdevs=self.stdevs, seed=self.seed)
        if self.window is not None:
            out.update(window=list(self.window), stride=list(self.stride or ()))
        if self.group_names is not None:
            out["feature_groups"] = list(self.group_names)
        return out

    def feature_mask(self, row_shape: Sequence[int]) -> "torch.Tensor | None":
        """Captum's ``feature_mask`` for the groups: a (1, *row shape) tensor of group ids."""
        if self.groups is None:
            return None
        import torch

        size = math.prod(row_shape)
        mask = torch.full((size,), -1, dtype=torch.long)
        for gid, members in enumerate(self.groups):
            mask[list(members)] = gid
        rest = (mask < 0).nonzero().flatten()
        mask[rest] = torch.arange(len(self.groups), len(self.groups) + len(rest))  # ungrouped: each its own
        return mask.reshape(1, *row_shape)


@functools.lru_cache(maxsize=256)
def _defaults(method: str, shape: tuple[int, ...]) -> Options:
    """A method's options at their defaults for rows of ``shape`` (frozen, so one object serves every call)."""
    return Options._make(method, shape)


def windows(row_shape: Sequence[int], window: Sequence[int], stride: Sequence[int]) -> tuple[int, ...]:
    """Window positions per dimension, as Captum's Occlusion counts them: ceil((size - window) / stride) + 1."""
    return tuple(math.ceil((d - w) / s) + 1 for d, w, s in zip(row_shape, window, stride))


def _window(window: object, shape: tuple[int, ...]) -> tuple[int, ...]:
    if window is None:
        if len(shape) >= 2:  # an image: all channels, a quarter of each side
            return (*shape[:-2], max(1, math.ceil(shape[-2] / 4)), max(1, math.ceil(shape[-1] / 4)))
        return tuple(1 for _ in shape)  # a table: one feature at a time
    w = (window,) if isinstance(window, int) and not isinstance(window, bool) else window
    if not isinstance(w, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in w):
        raise ArgumentError(f"Argument window should be a list of sizes (ints >= 1), e.g. {list(_window(None, shape))}; got {window!r}")
    w = tuple(w)
    if len(w) == len(shape) - 1 and len(shape) >= 3:  # (h, w) for a (c, h, w) input: every channel
        w = (shape[0], *w)
    if len(w) != len(shape) or any(a > d for a, d in zip(w, shape)):
        raise ArgumentError(f"Argument window should have one size per input dimension {list(shape)}, none larger; got {list(w)}")
    return w


def _stride(stride: object, window: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    if stride is None:
        return tuple(max(1, w // 2) for w in window)
    s = (stride,) * len(shape) if isinstance(stride, int) and not isinstance(stride, bool) else stride
    if not isinstance(s, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in s):
        raise ArgumentError(f"Argument stride should be an int >= 1 or one per input dimension; got {stride!r}")
    s = tuple(s)
    if len(s) == len(shape) - 1 and len(shape) >= 3:
        s = (window[0], *s)
    if len(s) != len(shape):
        raise ArgumentError(f"Argument stride should have one step per input dimension {list(shape)}; got {list(s)}")
    return s


def _groups(groups: object, shape: tuple[int, ...], names: Sequence[str] | None
            ) -> tuple[tuple[tuple[int, ...], ...], tuple[str, ...]]:
    """Groups given as ``{"name": [features]}`` or ``[[features], ...]``; a feature is a name or a flat index."""
    size = math.prod(shape)
    if isinstance(groups, Mapping):
        items = [(str(k), v) for k, v in groups.items()]
    elif isinstance(groups, (list, tuple)):
        items = [(f"group{i}", v) for i, v in enumerate(groups)]
    else:
        raise ArgumentError('Argument feature_groups should map group names to features, e.g. {"income": ["salary", "bonus"]}, '
                            f"or be a list of lists of features; got {type(groups).__name__}")
    index = {n: i for i, n in enumerate(names)} if names else {}
    seen: set[int] = set()
    out: list[tuple[int, ...]] = []
    for gname, members in items:
        if not isinstance(members, (list, tuple)) or not members:
            raise ArgumentError(f"Feature group {gname!r} should be a non-empty list of features; got {members!r}")
        ids: list[int] = []
        for m in members:
            if isinstance(m, str):
                if m not in index:
                    known = f"the model's features are {', '.join(list(index)[:12])}" if index else "the model has no feature names: use indices"
                    raise ArgumentError(f"Feature group {gname!r} names an unknown feature {m!r}; {known}")
                ids.append(index[m])
            elif isinstance(m, int) and not isinstance(m, bool) and 0 <= m < size:
                ids.append(m)
            else:
                raise ArgumentError(f"Feature group {gname!r} has {m!r}; a feature is a name or an index from 0 to {size - 1}")
        if seen & set(ids):
            raise ArgumentError(f"Feature group {gname!r} repeats a feature of another group; each feature belongs to one group")
        seen |= set(ids)
        out.append(tuple(ids))
    return tuple(out), tuple(name for name, _ in items)


def evaluations(method: object, row_shape: Sequence[int], **options: Any) -> int:
    """Forward passes over the batch ``method`` makes on rows of ``row_shape`` (see the module's table)."""
    return Options.make(method, row_shape, **options).evaluations(row_shape)


def cost(method: object, batch_shape: Sequence[int], **options: Any) -> int:
    """What the budget compares: evaluations x rows x input size, for a batch of ``batch_shape`` (rows first)."""
    shape = tuple(int(d) for d in batch_shape)
    if len(shape) < 2:
        raise ArgumentError(f"Argument batch_shape should be (rows, *input shape); got {list(shape)}")
    return evaluations(method, shape[1:], **options) * shape[0] * math.prod(shape[1:])
