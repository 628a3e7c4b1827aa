"""measure: file size, accuracy (scikit-learn as the oracle) and latency's shape and arguments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.deps import need

from loopml.models import measure


def test_file_size_of_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.bin").write_bytes(b"x" * 100)
    (tmp_path / "m" / "b.bin").write_bytes(b"y" * 23)
    assert measure.file_size(tmp_path / "m" / "a.bin") == 100
    assert measure.file_size(tmp_path / "m") == 123
    with pytest.raises(FileNotFoundError, match="Argument path should be a model file"):
        measure.file_size(tmp_path / "missing.onnx")


def test_accuracy_matches_sklearn() -> None:
    metrics = need("sklearn.metrics", extra="data")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 5)).astype(np.float32)
    y = rng.integers(0, 5, size=1000)
    got = measure.accuracy(lambda b: b * 2.0, x, y, batch_size=64)  # predicted class: argmax of the row
    assert got == pytest.approx(metrics.accuracy_score(y, x.argmax(1)))


def test_accuracy_takes_tensors_and_lists_of_outputs() -> None:
    import torch
    x = torch.eye(3)
    assert measure.accuracy(lambda b: [b], x, torch.tensor([0, 1, 0])) == pytest.approx(2 / 3)


def test_latency_per_batch_size() -> None:
    seen: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        assert batch.dtype == np.float32 and batch.flags.c_contiguous
        return batch

    out = measure.latency(predict, np.ones((10, 3)), batch_sizes=(1, 64), repeats=3, warmup=2)
    assert sorted(out) == [1, 64] and all(v > 0 for v in out.values())
    assert seen == [1] * 5 + [64] * 5  # warm-up + timed calls; 10 rows repeated up to 64


def test_bad_arguments() -> None:
    x, y = np.ones((4, 2), dtype=np.float32), np.zeros(3)
    with pytest.raises(ValueError, match="Argument y should have one label per row"):
        measure.accuracy(lambda b: b, x, y)
    with pytest.raises(ValueError, match=r"Argument predict should return class scores of shape"):
        measure.accuracy(lambda b: b[:, 0], x, np.zeros(4))
    with pytest.raises(TypeError, match="Argument predict should be callable"):
        measure.latency("model", x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Argument batch_sizes should be integers >= 1"):
        measure.latency(lambda b: b, x, batch_sizes=(0,))
    with pytest.raises(ValueError, match="Argument repeats should be an integer >= 1"):
        measure.latency(lambda b: b, x, repeats=0)
