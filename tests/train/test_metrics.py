"""Metrics accumulated over batches agree with scikit-learn on the whole set (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from loopml.train import (
    F1,
    MAE,
    R2,
    RMSE,
    ROCAUC,
    Accuracy,
    ConfusionMatrix,
    Precision,
    Recall,
    expected_cost,
)


def _feed(metric, output: torch.Tensor, target: torch.Tensor, batch: int = 37):
    for i in range(0, len(target), batch):
        metric.update(output[i : i + batch], target[i : i + batch])
    return metric.compute()


@pytest.mark.parametrize("classes", [2, 3, 7, 10])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(classes: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 500
    target = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g)
    logits[torch.arange(n), target] += 1.0  # better than chance, not perfect
    if classes > 3:
        target[target == classes - 1] = 0  # a class that is never true (but may be predicted)
    y, pred = target.numpy(), logits.argmax(1).numpy()
    assert _feed(Accuracy(), logits, target) == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    for metric, oracle in ((Precision(), skm.precision_score), (Recall(), skm.recall_score), (F1(), skm.f1_score)):
        expected = oracle(y, pred, average="macro", zero_division=0)
        assert _feed(metric, logits, target) == pytest.approx(expected, abs=1e-12), type(metric).__name__
    cm = np.array(_feed(ConfusionMatrix(), logits, target))
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred, labels=list(range(classes))))


@pytest.mark.parametrize("columns", [1, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_roc_auc_matches_sklearn_with_ties(columns: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 2, (400,), generator=g)
    scores = torch.round(torch.randn(400, columns, generator=g) + target[:, None] * 0.7, decimals=1)  # many ties
    if columns == 1:
        probs = torch.sigmoid(scores.double()).squeeze(1)
    else:
        probs = torch.softmax(scores.double(), 1)[:, 1]
    expected = skm.roc_auc_score(target.numpy(), probs.numpy())
    assert _feed(ROCAUC(), scores, target) == pytest.approx(expected, abs=1e-12)
    acc = Accuracy()
    np.testing.assert_allclose(_feed(acc, scores, target),
                               skm.accuracy_score(target.numpy(), (probs > 0.5).numpy()), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_metrics_match_sklearn(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(300, generator=g) * 3 + 10
    output = (target + torch.randn(300, generator=g)).unsqueeze(1)  # (N, 1) like a Linear(.., 1)
    y, p = target.double().numpy(), output.squeeze(1).double().numpy()
    assert _feed(MAE(), output, target) == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-10)
    assert _feed(RMSE(), output, target) == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), rel=1e-10)
    assert _feed(R2(), output, target) == pytest.approx(skm.r2_score(y, p), rel=1e-9)


def test_metric_state_dict_round_trip_resumes_accumulation() -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(100, 4, generator=g), torch.randint(0, 4, (100,), generator=g)
    for cls in (F1, ROCAUC, R2):
        out = logits[:, :2] if cls is ROCAUC else (logits[:, :1] if cls is R2 else logits)
        tgt = target % 2 if cls is ROCAUC else (target.float() if cls is R2 else target)
        whole = _feed(cls(), out, tgt)
        first = cls()
        first.update(out[:50], tgt[:50])
        second = cls()
        second.load_state_dict(first.state_dict())
        second.update(out[50:], tgt[50:])
        assert second.compute() == pytest.approx(whole, abs=1e-12)


def test_expected_cost_and_best_threshold_match_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 2, (300,), generator=g)
    logits = torch.randn(300, 2, generator=g)
    logits[:, 1] += target * 1.2
    cost = np.array([[0.0, 1.0], [5.0, 0.0]])  # a missed positive costs 5 false alarms
    result = expected_cost(logits, target, cost)
    y, pred = target.numpy(), logits.argmax(1).numpy()
    assert result["expected_cost"] == pytest.approx(cost[y, pred].mean(), abs=1e-12)
    p = torch.softmax(logits.double(), 1)[:, 1].numpy()
    candidates = np.concatenate([np.unique(p), [1.1]])
    brute = [cost[y, (p >= t).astype(int)].mean() for t in candidates]
    assert result["expected_cost_at_best_threshold"] == pytest.approx(min(brute), abs=1e-12)
    assert cost[y, (p >= result["best_threshold"]).astype(int)].mean() == pytest.approx(min(brute), abs=1e-12)
    assert result["best_threshold"] < 0.5  # misses are dear: flag positives earlier
    # multi-class: expected cost only
    multi = expected_cost(torch.eye(3)[[0, 1, 2, 2]], torch.tensor([0, 1, 1, 2]), 1 - np.eye(3))
    assert multi == {"expected_cost": 0.25}
    with pytest.raises(ValueError, match=r"Argument cost_matrix should be a square matrix .* got shape \(2, 3\)"):
        expected_cost(logits, target, np.ones((2, 3)))
