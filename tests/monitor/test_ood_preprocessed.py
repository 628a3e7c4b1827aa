"""The OOD gate of a model whose Preprocessor imputes missing values: a gap is not "out of distribution"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.deps import need

import torch  # noqa: E402
import pandas as pd  # noqa: E402
need("sklearn", extra="data")

from loopml import data  # noqa: E402
from loopml.models.nets import MLP  # noqa: E402
from loopml.monitor import OODGate, fit_ood  # noqa: E402
from loopml.monitor.detectors import VAEDetector  # noqa: E402
from loopml.train import Trainer  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fitted() -> tuple[torch.nn.Module, data.Split]:
    rng = np.random.default_rng(0)
    n = 1000
    frame = pd.DataFrame({
        "a": rng.normal(5, 2, n),
        "b": rng.lognormal(8, 1, n),
        "c": rng.choice(["x", "y", "z"], n),
        "t": rng.integers(0, 2, n),
    })
    frame.loc[rng.random(n) < 0.1, "a"] = np.nan
    frame.loc[rng.random(n) < 0.1, "c"] = None
    parts = data.split(data.from_frame(frame, target="t"), val=0.2, test=0.2, seed=0)
    torch.manual_seed(0)
    pre = data.Preprocessor().fit(parts.train)
    model = pre.then(MLP(pre.n_features_out, 2, hidden=[16]))
    Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), seed=0, track=False).fit(
        parts.train, epochs=3, batch_size=32)
    return model.eval(), parts


def test_rows_with_imputed_gaps_are_not_abstained_and_far_rows_are(fitted: tuple[torch.nn.Module, data.Split],
                                                                   tmp_path: Path) -> None:
    model, parts = fitted
    gate = fit_ood(model, train=parts.train, val=parts.val)  # training rows with NaN: fitted, not refused
    x = parts.test.x.numpy()
    gaps = np.isnan(x).any(axis=1)
    assert gaps.sum() >= 30
    scores = gate.score(x)
    assert np.isfinite(scores).all()
    # Measured: 2 of 200 test rows abstain (1.0%), none of the 38 with a gap. Before the fill, the
    # autoencoder scored every row with a gap as infinity and the gate abstained on all of them.
    assert (scores[gaps] > gate.threshold).mean() <= 0.05
    far = x.copy()
    far[:, 1] = 1e7  # b is lognormal around 3,000
    assert (gate.score(far) > gate.threshold).all()

    gate.save(tmp_path / "gate")
    again = OODGate.load(tmp_path / "gate")
    np.testing.assert_allclose(again.score(x), scores, rtol=1e-6)
    pre = model[0]
    medians = {c["name"]: c["fill"] for c in pre.to_dict()["numeric"]}
    assert again.detectors["vae"].fill == pytest.approx([medians["a"], medians["b"], 1.0])  # c: code of the most frequent


def test_the_fill_is_the_same_as_scoring_the_imputed_rows(fitted: tuple[torch.nn.Module, data.Split]) -> None:
    _, parts = fitted
    x = parts.train.x.numpy()
    fill = [float(np.nanmedian(x[:, 0])), None, 0.0]
    with_fill = VAEDetector(epochs=2, variational=False, fill=fill).fit(x)
    filled = x.copy()
    filled[:, 0] = np.where(np.isnan(filled[:, 0]), fill[0], filled[:, 0])
    filled[:, 2] = np.where(np.isnan(filled[:, 2]), 0.0, filled[:, 2])
    plain = VAEDetector(epochs=2, variational=False).fit(filled)  # the oracle: imputed beforehand, same seed
    np.testing.assert_array_equal(with_fill.score(x), plain.score(filled))
    np.testing.assert_allclose(with_fill.score(x), with_fill.score_torch(x), rtol=1e-5)
    gap_in_b = x[:3].copy()
    gap_in_b[:, 1] = np.nan  # b has no fill: a gap there is as unusual as it gets
    assert np.isinf(with_fill.score(gap_in_b)).all()
