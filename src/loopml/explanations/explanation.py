"""What an explanation holds, and the three ways a person reads it: a table, a picture, JSON.

:class:`Explanation` is what :func:`loopml.explain` returns: the attributions shaped
like the inputs, the class each row was explained for, the completeness delta, and
:meth:`~Explanation.top` (the strongest positive and negative features),
:meth:`~Explanation.plot` (a heat map blended over an image, signed bars for a table
row) and :meth:`~Explanation.to_dict` (the servers' JSON). The plots draw on a bare
``matplotlib.figure.Figure`` (no pyplot, no global state), so that a server thread
can draw one without a display.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["Explanation", "Faithfulness", "feature_names_for"]

POSITIVE = "#c0392b"  # red: pushes the output up (toward the explained class)
NEGATIVE = "#2471a3"  # blue: pushes it down


def feature_names_for(row_shape: tuple[int, ...], names: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """One name per flattened input value: the signature's names for a table, else positions.

    >>> feature_names_for((3,))
    ['x0', 'x1', 'x2']
    >>> feature_names_for((1, 2, 2))
    ['c0 y0 x0', 'c0 y0 x1', 'c0 y1 x0', 'c0 y1 x1']
    """
    size = math.prod(row_shape)
    if names is not None and len(names) == size:
        return [str(n) for n in names]
    if len(row_shape) == 1:
        return [f"x{i}" for i in range(size)]
    labels = "cyx" if len(row_shape) == 3 else ("yx" if len(row_shape) == 2 else None)
    out = []
    for pos in np.ndindex(*row_shape):
        if labels is None:
            out.append("[" + ", ".join(str(p) for p in pos) + "]")
        else:
            out.append(" ".join(f"{a}{p}" for a, p in zip(labels, pos)))
    return out


@dataclass(frozen=True, eq=False)
class Faithfulness:
    """The deletion test of an explanation (:meth:`~loopml.explanations.Explainer.faithfulness`), per row.

    ``top_drop``: how far the explained output fell when the ``removed`` values with the
    largest attributions were set to the baseline; ``random_drop`` and ``random_sd``: the
    mean and standard deviation of the fall over ``trials`` random sets of as many values.
    """

    fraction: float
    removed: int
    trials: int
    top_drop: np.ndarray
    random_drop: np.ndarray
    random_sd: np.ndarray

    @property
    def faithful(self) -> np.ndarray:
        """Per row: the top values moved the output more than random ones (beyond two standard deviations)."""
        return np.asarray(self.top_drop > self.random_drop + 2 * self.random_sd)

    def row_dict(self, row: int) -> dict[str, Any]:
        return {"fraction": self.fraction, "removed": self.removed, "top_drop": float(self.top_drop[row]),
                "random_drop": float(self.random_drop[row]), "random_sd": float(self.random_sd[row]),
                "faithful": bool(self.faithful[row])}

    def __str__(self) -> str:
        ok = int(self.faithful.sum())
        return (f"removing the top {self.fraction:.0%} of values ({self.removed}) lowers the explained output by "
                f"{float(np.mean(self.top_drop)):.3g} on average, {self.trials} random sets of as many by "
                f"{float(np.mean(self.random_drop)):.3g}: faithful on {ok} of {len(self.top_drop)} rows")


@dataclass(eq=False)
class Explanation:
    """Attributions of a batch of inputs (see :func:`loopml.explain`).

    ``attributions`` has the inputs' shape: each value says how much that input value
    moved the explained output (``target``'s raw output, a logit for a classifier) away
    from the output at the baseline. ``delta`` (integrated gradients, GradientSHAP,
    DeepLIFT) is, per row, ``sum(attributions) - (F(x) - F(baseline))``: near 0 when the
    attributions account for the whole change; a large one asks for more ``steps``.
    """

    method: str
    baseline: str
    inputs: np.ndarray
    attributions: np.ndarray
    outputs: np.ndarray
    target: np.ndarray | None
    target_names: list[str] | None
    delta: np.ndarray | None
    evaluations: int
    seconds: float
    options: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None
    format: str | None = None
    names: tuple[str, ...] | None = None
    class_names: list[str] | None = None
    baseline_values: np.ndarray | None = field(default=None, repr=False)
    faithfulness: "Faithfulness | None" = None

    @functools.cached_property
    def feature_names(self) -> list[str]:
        """One name per flattened input value: the signature's feature names, else positions (``c0 y3 x4``)."""
        return feature_names_for(tuple(self.inputs.shape[1:]), self.names)

    def __repr__(self) -> str:
        where = f" of {self.ref}" if self.ref else ""
        return f"<Explanation {self.method}{where}: {len(self.inputs)} rows of {list(self.inputs.shape[1:])}, baseline {self.baseline}>"

    @property
    def image(self) -> bool:
        """True when each row is an image (two or more dimensions)."""
        return self.inputs.ndim >= 3

    def _row(self, row: int) -> int:
        n = len(self.inputs)
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not -n <= row < n:
            raise ArgumentError(f"Argument row should be a row of the batch, 0 to {n - 1}; got {row!r}")
        return int(row) % n

    def target_label(self, row: int = 0) -> str | None:
        """The explained class of ``row`` as a person reads it (its name, else its index)."""
        row = self._row(row)
        if self.target is None:
            return None
        if self.target_names is not None:
            return self.target_names[row]
        return str(int(self.target[row]))

    def top(self, k: int = 5, row: int = 0) -> "pd.DataFrame":
        """The ``k`` strongest positive and the ``k`` strongest negative features of ``row``.

        Columns ``feature``, ``value`` (the input), ``attribution`` and ``sign`` (``+``
        or ``-``): the positive ones first, strongest first, then the negative ones.

        >>> e = loopml.explain(model, x[:1], method="saliency")
        >>> top = e.top(3)
        >>> list(top.columns), list(top.sign[:1])
        (['feature', 'value', 'attribution', 'sign'], ['+'])
        """
        import pandas as pd

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ArgumentError(f"Argument k should be an int >= 1; got {k!r}")
        pos, neg = self.top_indices(k, row)
        row = self._row(row)
        attr = self.attributions[row].reshape(-1)
        vals = self.inputs[row].reshape(-1)
        idx = pos + neg
        return pd.DataFrame({
            "feature": [self.feature_names[i] for i in idx],
            "value": vals[idx].astype(np.float64),
            "attribution": attr[idx].astype(np.float64),
            "sign": ["+"] * len(pos) + ["-"] * len(neg),
        })  # fmt: skip

    def top_indices(self, k: int, row: int = 0, *, order: np.ndarray | None = None) -> tuple[list[int], list[int]]:
        """Flat indices of the ``k`` strongest positive and negative attributions of ``row`` (strongest first);
        ``order``: the row's indices by attribution, strongest positive first, when already sorted."""
        attr = self.attributions[self._row(row)].reshape(-1)
        if order is None:
            order = np.argsort(-attr, kind="stable")
        pos = [int(i) for i in order[:k] if attr[i] > 0]
        neg = [int(i) for i in order[::-1][:k] if attr[i] < 0]
        return pos, neg

    def row_dict(self, row: int, *, k: int = 5, order: np.ndarray | None = None) -> dict[str, Any]:
        """One row as JSON: target, attributions (nested lists, the input's shape), delta and the top features."""
        row = self._row(row)
        pos, neg = self.top_indices(k, row, order=order)
        attr = self.attributions[row]
        vals = self.inputs[row].reshape(-1)
        flat = attr.reshape(-1)

        def entries(idx: list[int]) -> list[dict[str, Any]]:
            return [{"feature": self.feature_names[i], "value": float(vals[i]), "attribution": float(flat[i])} for i in idx]

        out = {
            "target": self.target_label(row),
            "target_index": None if self.target is None else int(self.target[row]),
            "attributions": attr.astype(np.float64).tolist(),
            "delta": None if self.delta is None else float(self.delta[row]),
            "top": {"positive": entries(pos), "negative": entries(neg)},
        }
        if self.faithfulness is not None:
            out["faithfulness"] = self.faithfulness.row_dict(row)
        return out

    def to_dict(self, *, k: int = 5) -> dict[str, Any]:
        """The whole explanation as JSON: method, baseline, options, cost and one entry per row."""
        # every row's order in one sort (the servers answer batches: one argsort per row cost 15 us each)
        orders = np.argsort(-self.attributions.reshape(len(self.inputs), -1), axis=1, kind="stable")
        return {
            "method": self.method,
            "baseline": self.baseline,
            "options": dict(self.options),
            "evaluations": self.evaluations,
            "seconds": self.seconds,
            "ref": self.ref,
            "format": self.format,
            "results": [self.row_dict(i, k=k, order=orders[i]) for i in range(len(self.inputs))],
        }

    def answer(self, head: Mapping[str, Any], items: Sequence[Mapping[str, Any]] | None = None, *, single: bool = False,
               k: int = 5) -> dict[str, Any]:
        """The servers' answer: ``head`` (request id, model, version), the method, baseline, options and cost, and per
        row its ``items`` fields (the prediction) with its attributions; ``single``: one row sent as one row, its
        fields at the top level (as predict answers), else a ``results`` list."""
        doc = self.to_dict(k=k)
        results = doc.pop("results")
        doc.pop("ref", None)
        out: dict[str, Any] = {**head, **doc}
        rows = [{**(items[i] if items is not None else {}), **r} for i, r in enumerate(results)]
        if single:
            out.update(rows[0])
        else:
            out["results"] = rows
        return out

    def plot(self, row: int = 0, *, k: int = 10) -> "Figure":
        """A matplotlib figure of ``row``: the heat map over the image, or the ``k`` strongest features as signed bars.

        Red pushes the explained output up, blue pushes it down; the title names the
        method, the explained class and the delta.
        """
        from matplotlib.figure import Figure

        row = self._row(row)
        fig = Figure(figsize=(4.2, 4.2) if self.image else (6.0, 0.35 * (2 * k) + 1.2), dpi=100)
        ax = fig.add_subplot()
        if self.image:
            ax.imshow(self.heatmap_rgba(row), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("red: toward the class, blue: against it", fontsize=8)
        else:
            pos, neg = self.top_indices(k, row)
            idx = pos + neg[::-1]
            flat = self.attributions[row].reshape(-1)
            values = [float(flat[i]) for i in idx]
            ax.barh(range(len(idx)), values, color=[POSITIVE if v > 0 else NEGATIVE for v in values])
            ax.set_yticks(range(len(idx)), [self.feature_names[i] for i in idx])
            ax.invert_yaxis()
            ax.axvline(0.0, color="#555555", linewidth=0.8)
            ax.set_xlabel("attribution")
        ax.set_title(self._title(row), fontsize=9)
        fig.tight_layout()
        return fig

    def _title(self, row: int) -> str:
        target = self.target_label(row)
        parts = [self.method.replace("_", " ")]
        if target is not None:
            parts.append(f"class {target}")
        if self.delta is not None:
            parts.append(f"delta {float(self.delta[row]):.2g}")
        return ", ".join(parts)

    def heatmap_rgba(self, row: int = 0, *, alpha: float = 0.75) -> np.ndarray:
        """The image of ``row`` in grey with its attributions blended over it: an (H, W, 4) float array.

        Channels are averaged (the image) and summed (the attributions); red is positive,
        blue negative, and each pixel's opacity grows with its magnitude (scaled to the
        row's largest), so that weak attributions leave the image visible.
        """
        row = self._row(row)
        if not self.image:
            raise ArgumentError("heatmap_rgba draws images; this explanation is of table rows: use plot() or top()")
        x = self.inputs[row].astype(np.float64)
        a = self.attributions[row].astype(np.float64)
        img = x if x.ndim == 2 else x.reshape(-1, *x.shape[-2:]).mean(axis=0)
        heat = a if a.ndim == 2 else a.reshape(-1, *a.shape[-2:]).sum(axis=0)
        lo, hi = float(img.min()), float(img.max())
        grey = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        out = np.empty((*img.shape, 4))
        out[..., :3] = grey[..., None]
        out[..., 3] = 1.0
        top = float(np.abs(heat).max())
        if top > 0:
            mag = np.abs(heat) / top
            colour = np.where(heat[..., None] > 0, _rgb(POSITIVE), _rgb(NEGATIVE))
            w = (alpha * mag)[..., None]
            out[..., :3] = (1 - w) * out[..., :3] + w * colour
        return out

    def heatmap_text(self, row: int = 0, *, max_width: int = 48) -> Any:
        """The attributions of an image row as coloured blocks for a terminal (a ``rich.text.Text``): red pushes the
        explained output up, blue down, stronger the deeper. None for a table row or an image wider than ``max_width``."""
        from rich.text import Text

        row = self._row(row)
        if not self.image:
            return None
        a = self.attributions[row].astype(np.float64)
        heat = a if a.ndim == 2 else a.reshape(-1, *a.shape[-2:]).sum(axis=0)
        if heat.shape[1] > max_width:
            return None
        top = float(np.abs(heat).max()) or 1.0
        text = Text()
        for line in heat:
            for v in line:
                level = int(255 * min(1.0, abs(float(v)) / top))
                colour = f"rgb(255,{255 - level},{255 - level})" if v > 0 else f"rgb({255 - level},{255 - level},255)"
                text.append("\u2588\u2588", style=colour)
            text.append("\n")
        return text

    def png(self, row: int = 0) -> bytes:
        """:meth:`plot` of ``row`` as PNG bytes (what ``loopml explain --png`` writes)."""
        buf = io.BytesIO()
        self.plot(row).savefig(buf, format="png")
        return buf.getvalue()


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) / 255.0 for i in (1, 3, 5)])
