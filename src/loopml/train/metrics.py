"""Metrics that accumulate over batches: classification, ROC-AUC, regression, costs.

Every metric has ``reset()``, ``update(output, target)``, ``compute()`` and
``state_dict()/load_state_dict()``. ``output`` is what the model returns:
logits of shape (N, C) for classification (the prediction is the arg max; a
single column or a 1-D output is one logit of the positive class), values of
shape (N,) or (N, 1) for regression.

>>> acc = Accuracy()
>>> acc.update(torch.tensor([[2.0, 0.1], [0.3, 1.0]]), torch.tensor([0, 0]))
>>> acc.compute()
0.5

They are tested against scikit-learn as an oracle (tests/train/test_metrics.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ..errors import ArgumentError

__all__ = [
    "F1",
    "MAE",
    "R2",
    "RMSE",
    "ROCAUC",
    "Accuracy",
    "ConfusionMatrix",
    "Metric",
    "Precision",
    "Recall",
    "RegressionMetric",
    "expected_cost",
    "get_metric",
]


def predicted_labels(output: torch.Tensor) -> torch.Tensor:
    """Class labels from logits: arg max over columns, or ``logit > 0`` for one column."""
    if output.ndim == 2 and output.shape[1] > 1:
        return output.argmax(dim=1)
    return (output.reshape(-1) > 0).long()


def positive_scores(output: torch.Tensor) -> torch.Tensor:
    """Scores of class 1 for a binary problem: softmax column 1, or the single logit."""
    if output.ndim == 2 and output.shape[1] == 2:
        return torch.softmax(output.double(), dim=1)[:, 1]
    if output.ndim == 2 and output.shape[1] > 2:
        raise ArgumentError(
            f"ROC-AUC and cost thresholds are for binary problems: the output has {output.shape[1]} columns"
        )
    return torch.sigmoid(output.double().reshape(-1))


class Metric:
    """Base class: a named value accumulated over batches."""

    name = "metric"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> Any:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v.clone())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ConfusionMatrix(Metric):
    """Counts ``cm[i, j]`` of samples of true class i predicted as j (grows to the classes seen)."""

    name = "confusion_matrix"

    def reset(self) -> None:
        self.cm = torch.zeros((0, 0), dtype=torch.int64)

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        pred = predicted_labels(output.detach().cpu())
        true = target.detach().cpu().reshape(-1).long()
        width = output.shape[1] if output.ndim == 2 and output.shape[1] > 1 else 2
        k = max(self.cm.shape[0], width, int(true.max()) + 1 if true.numel() else 0)
        if k > self.cm.shape[0]:
            grown = torch.zeros((k, k), dtype=torch.int64)
            n = self.cm.shape[0]
            grown[:n, :n] = self.cm
            self.cm = grown
        self.cm += torch.bincount(true * k + pred, minlength=k * k).reshape(k, k)

    def compute(self) -> Any:  # list[list[int]]; subclasses return a float
        return self.cm.tolist()


class _FromConfusion(ConfusionMatrix):
    """Per-class precision and recall, macro-averaged over the classes present in truth or predictions
    (as scikit-learn does without ``labels=``); 0 where undefined, as with ``zero_division=0``."""

    def _per_class(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cm = self.cm.double()
        tp = cm.diag()
        predicted, actual = cm.sum(0), cm.sum(1)
        present = (predicted + actual) > 0
        precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
        recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
        return precision[present], recall[present], present


class Accuracy(_FromConfusion):
    name = "accuracy"

    def compute(self) -> float:
        total = int(self.cm.sum())
        return float(self.cm.diag().sum()) / total if total else float("nan")


class Precision(_FromConfusion):
    """Macro-averaged precision."""

    name = "precision"

    def compute(self) -> float:
        p, _, _ = self._per_class()
        return float(p.mean()) if p.numel() else float("nan")


class Recall(_FromConfusion):
    """Macro-averaged recall."""

    name = "recall"

    def compute(self) -> float:
        _, r, _ = self._per_class()
        return float(r.mean()) if r.numel() else float("nan")


class F1(_FromConfusion):
    """Macro-averaged F1 (the mean of per-class F1 scores)."""

    name = "f1"

    def compute(self) -> float:
        p, r, _ = self._per_class()
        if not p.numel():
            return float("nan")
        f1 = torch.where(p + r > 0, 2 * p * r / (p + r).clamp(min=1e-300), torch.zeros_like(p))
        return float(f1.mean())


class ROCAUC(Metric):
    """Area under the ROC curve of a binary problem (keeps every score; exact, ties averaged)."""

    name = "roc_auc"

    def reset(self) -> None:
        self.scores = torch.zeros(0, dtype=torch.float64)
        self.targets = torch.zeros(0, dtype=torch.int64)

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self.scores = torch.cat([self.scores, positive_scores(output.detach().cpu())])
        self.targets = torch.cat([self.targets, target.detach().cpu().reshape(-1).long()])

    def compute(self) -> float:
        y = self.targets.numpy()
        pos = int((y == 1).sum())
        neg = len(y) - pos
        if pos == 0 or neg == 0:
            return float("nan")
        # Mann-Whitney U with average ranks for ties: the same number roc_auc_score gives
        _, inverse, counts = np.unique(self.scores.numpy(), return_inverse=True, return_counts=True)
        ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
        return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


class RegressionMetric(Metric):
    """The running sums MAE, RMSE and R2 share (n, sum|e|, sum e^2, sum y, sum y^2); merged across processes by summing."""

    def reset(self) -> None:
        # float64 sums: R2 from running sums loses digits in float32
        self.sums = torch.zeros(5, dtype=torch.float64)  # n, sum|e|, sum e^2, sum y, sum y^2

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        pred = output.detach().cpu().double().reshape(-1)
        true = target.detach().cpu().double().reshape(-1)
        if pred.shape != true.shape:
            raise ArgumentError(
                f"Regression metrics need one output per target: got {tuple(output.shape)} outputs "
                f"for {tuple(target.shape)} targets"
            )
        err = pred - true
        self.sums += torch.stack(
            [torch.tensor(float(len(true)), dtype=torch.float64), err.abs().sum(), (err**2).sum(),
             true.sum(), (true**2).sum()]
        )


class MAE(RegressionMetric):
    name = "mae"

    def compute(self) -> float:
        n = float(self.sums[0])
        return float(self.sums[1]) / n if n else float("nan")


class RMSE(RegressionMetric):
    name = "rmse"

    def compute(self) -> float:
        n = float(self.sums[0])
        return (float(self.sums[2]) / n) ** 0.5 if n else float("nan")


class R2(RegressionMetric):
    name = "r2"

    def compute(self) -> float:
        n, _, sse, sy, syy = (float(v) for v in self.sums)
        if n == 0:
            return float("nan")
        sst = syy - sy * sy / n
        return 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0)


_BY_NAME: dict[str, type[Metric]] = {
    cls.name: cls for cls in (Accuracy, Precision, Recall, F1, ConfusionMatrix, ROCAUC, MAE, RMSE, R2)
}


def get_metric(spec: Metric | str) -> Metric:
    """A metric instance from an instance or a name (``"accuracy"``, ``"f1"``, ``"rmse"``, ...)."""
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec]()
    raise ArgumentError(
        f"Argument metrics should hold Metric instances or names from {sorted(_BY_NAME)}, got {spec!r}; "
        f"e.g. Trainer(model, metrics=['accuracy', 'f1'])"
    )


def expected_cost(
    output: torch.Tensor, target: torch.Tensor, cost_matrix: Any
) -> dict[str, float]:
    """Mean cost per prediction, ``C[true, predicted]`` averaged over samples.

    For a binary problem also the threshold on the positive-class probability
    that minimises it on these samples (predict 1 when ``p >= threshold``) and
    the cost at that threshold.
    """
    cost = torch.as_tensor(cost_matrix, dtype=torch.float64)
    pred = predicted_labels(output)
    true = target.reshape(-1).long()
    k = int(max(int(pred.max()), int(true.max()))) + 1 if true.numel() else 0
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1] or cost.shape[0] < k:
        raise ArgumentError(
            f"Argument cost_matrix should be a square matrix with one row and column per class "
            f"(C[true, predicted]), at least {k}x{k}; got shape {tuple(cost.shape)}. "
            f"e.g. cost_matrix=[[0, 1], [5, 0]]"
        )
    result = {"expected_cost": float(cost[true, pred].mean())}
    if cost.shape[0] == 2:
        p = positive_scores(output)
        order = torch.argsort(p, descending=True)
        p_sorted, y_sorted = p[order], true[order]
        n = len(y_sorted)
        # predicting 1 for the top i samples (i = 0..n): cost of each choice in one pass
        tp = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((y_sorted == 1).double(), 0)])
        fp = torch.arange(n + 1, dtype=torch.float64) - tp
        pos, neg = float(tp[-1]), n - float(tp[-1])
        total = tp * cost[1, 1] + fp * cost[0, 1] + (pos - tp) * cost[1, 0] + (neg - fp) * cost[0, 0]
        # only cut between distinct scores
        valid = torch.ones(n + 1, dtype=torch.bool)
        valid[1:n] = p_sorted[1:] < p_sorted[:-1]
        total = torch.where(valid, total, torch.full_like(total, float("inf")))
        best = int(torch.argmin(total))
        threshold = float(p_sorted[best - 1]) if best > 0 else float(np.nextafter(float(p_sorted[0]), 2.0))
        result["best_threshold"] = threshold
        result["expected_cost_at_best_threshold"] = float(total[best]) / n
    return result
