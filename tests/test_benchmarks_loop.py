"""The helpers behind benchmarks/loop.py's figures: the scenario's images, the queue's rule, labels needed."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from tests.benchmark_modules import load_benchmark



@pytest.fixture(scope="module")
def loop() -> ModuleType:
    return load_benchmark("loop")


def test_labels_needed_interpolates_in_log_budget_and_smooths_a_dip(loop: ModuleType) -> None:
    # halfway between 0.80 and 0.90 in accuracy is halfway between 10 and 20 in log: sqrt(200)
    assert loop.labels_needed([10, 20, 40], [0.80, 0.90, 0.95], 0.85) == pytest.approx(200 ** 0.5)
    assert loop.labels_needed([10, 20, 40], [0.90, 0.91, 0.95], 0.85) == 10.0  # reached at the first budget
    assert loop.labels_needed([10, 20, 40], [0.80, 0.82, 0.84], 0.85) is None  # never reached
    # a noisy dip (0.88 then 0.86) is pooled to 0.87, 0.87: the crossing of 0.87 is the first of the two
    assert loop.labels_needed([10, 20, 40, 80], [0.80, 0.88, 0.86, 0.95], 0.87) == pytest.approx(20.0)


def test_ratio_line_needs_every_seed_at_most_half(loop: ModuleType) -> None:
    assert loop.ratio(None, 64.0, 320) == (0.2, True)  # random never reached: an upper bound
    assert loop.ratio_line([(0.3, False), (0.5, False)])[0] is True
    met, words = loop.ratio_line([(0.3, False), (1.2, False)])
    assert not met and "ABOVE 1" in words
    met, words = loop.ratio_line([(0.3, False), (0.2, True)])
    assert met and "<0.20" in words
    assert loop.ratio_line([(0.3, False), (None, False)])[0] is False


def test_farthest_first_spreads_out_and_plain_queue_follows_the_rule(loop: ModuleType) -> None:
    features = np.array([[0.0], [0.1], [0.2], [5.0], [9.0], [9.1]])
    assert loop.farthest_first(features, np.arange(6), 3).tolist() == [0, 5, 3]
    rng = np.random.default_rng(0)
    n = 200
    abstained = np.zeros(1000, dtype=bool)
    abstained[100:150] = True
    margin = np.linspace(0, 1, 1000)
    features = rng.random((1000, 4))
    picked = loop.plain_queue(n, abstained, margin, features, rng)
    assert len(picked) == n and len(set(picked.tolist())) == n
    audit, first, uncertain = picked[:20], picked[20:70], picked[70:]
    assert not abstained[audit].any()  # the audit slice: answered rows only
    assert first.tolist() == list(range(100, 150))  # every abstained row, oldest first
    assert not abstained[uncertain].any() and not set(uncertain.tolist()) & set(audit.tolist())
    assert np.sort(uncertain)[-1] < 150 + 5 * 130 + 20  # among the 5x lowest margins (after the audit's)


def test_the_new_office_writes_thicker_and_slanted_and_jitter_stays_small(loop: ModuleType) -> None:
    from sklearn.datasets import load_digits

    img = (load_digits().images[0] / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    jittered = [loop.jitter(img, rng) for _ in range(50)]
    assert all(j.shape == img.shape and j.min() >= 0 and j.max() <= 1 for j in jittered)
    # a placement, not another image: mean absolute change 0.063 (measured, seed 0), ink kept at the border
    assert np.mean([np.abs(j - img).mean() for j in jittered]) < 0.1
    assert np.mean([j.sum() for j in jittered]) > 0.9 * img.sum()
    shifted = loop.new_office(img)
    assert shifted.sum() > 1.3 * img.sum()  # a thicker pen: more ink
    x = np.stack([img, img])[:, None]
    inputs, labels, new = loop.traffic(x, np.array([3, 3]), np.array([0, 1]), 2000, 0.2, rng)
    assert inputs.shape == (2000, 1, 8, 8) and inputs.dtype == np.float32 and set(labels.tolist()) == {3}
    assert 0.17 < new.mean() < 0.23  # the share, within 3 binomial sds of 2,000 draws
