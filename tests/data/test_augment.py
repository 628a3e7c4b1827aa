"""Augmentation: shapes and dtypes kept, deterministic under a seed, inputs actually changed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from loopml.data import Compose, Dataset, GaussianNoise, Mixup, RandomErasing, RandomRotation, RandomShift

IMAGE_TRANSFORMS = [RandomShift(2), RandomRotation(20), GaussianNoise(0.1), RandomErasing(p=1.0)]


@pytest.mark.parametrize("t", IMAGE_TRANSFORMS, ids=lambda t: type(t).__name__)
def test_image_transforms_keep_shape_change_values_and_repeat(t, digits: Dataset) -> None:  # type: ignore[no-untyped-def]
    x = digits.x[:64]
    a = t(x, generator=torch.Generator().manual_seed(0))
    b = t(x, generator=torch.Generator().manual_seed(0))
    c = t(x, generator=torch.Generator().manual_seed(1))

    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)
    assert torch.equal(digits.x[:64], x)  # the input is not modified in place


def test_shift_moves_pixels_exactly() -> None:
    x = torch.arange(2 * 1 * 5 * 6, dtype=torch.float32).reshape(2, 1, 5, 6) + 1
    g = torch.Generator().manual_seed(0)
    shifts = torch.randint(-2, 3, (2, 2), generator=torch.Generator().manual_seed(0))
    out = RandomShift(2)(x, generator=g)
    for i, (dx, dy) in enumerate(shifts.tolist()):
        want = torch.zeros(5, 6)
        src = x[i, 0]
        want[max(dy, 0) : 5 + min(dy, 0), max(dx, 0) : 6 + min(dx, 0)] = src[max(-dy, 0) : 5 - max(dy, 0), max(-dx, 0) : 6 - max(dx, 0)]
        torch.testing.assert_close(out[i, 0], want, atol=1e-5, rtol=0)


def test_zero_rotation_and_zero_noise_are_identity(digits: Dataset) -> None:
    x = digits.x[:8]
    torch.testing.assert_close(RandomRotation(0)(x), x, atol=1e-6, rtol=0)
    assert torch.equal(GaussianNoise(0.0)(x), x)
    assert torch.equal(RandomErasing(p=0.0)(x), x)


def test_erasing_zeroes_a_rectangle() -> None:
    x = torch.ones(16, 1, 10, 10)
    out = RandomErasing(p=1.0, scale=(0.1, 0.1))(x, generator=torch.Generator().manual_seed(0))
    erased = (out == 0).sum(dim=(1, 2, 3))
    assert bool(((erased >= 4) & (erased <= 20)).all())


def test_compose_is_deterministic_and_resumable(digits: Dataset) -> None:
    x = digits.x[:32]
    a = Compose(IMAGE_TRANSFORMS, seed=0)
    b = Compose(IMAGE_TRANSFORMS, seed=0)
    first = a(x)
    assert torch.equal(first, b(x))
    state = a.state_dict()
    second = a(x)
    assert not torch.equal(first, second)  # the generator moves on between batches
    c = Compose(IMAGE_TRANSFORMS, seed=99)
    c.load_state_dict(state)
    assert torch.equal(c(x), second)


def test_tabular_noise_per_feature() -> None:
    x = torch.zeros(2000, 3)
    out = GaussianNoise([0.0, 1.0, 10.0])(x, generator=torch.Generator().manual_seed(0))
    std = out.std(dim=0)
    assert std[0] == 0 and 0.9 < std[1] < 1.1 and 9 < std[2] < 11
    with pytest.raises(ValueError, match="Argument x of GaussianNoise should have 3 features"):
        GaussianNoise([0.0, 1.0, 10.0])(torch.zeros(4, 2))


def test_mixup_returns_soft_targets() -> None:
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    y = torch.arange(64) % 4
    xm, ys = Mixup(alpha=0.4, num_classes=4)(x, y, generator=torch.Generator().manual_seed(0))
    xm2, ys2 = Mixup(alpha=0.4, num_classes=4)(x, y, generator=torch.Generator().manual_seed(0))

    assert torch.equal(xm, xm2) and torch.equal(ys, ys2)
    assert xm.shape == x.shape and ys.shape == (64, 4) and ys.dtype == torch.float32
    torch.testing.assert_close(ys.sum(dim=1), torch.ones(64))
    assert not torch.equal(xm, x)
    # the same lam and partner mix inputs and labels: recover them from the labels
    lam = ys[torch.arange(64), y].min()  # rows mixed with another class keep lam of their own
    assert 0 <= float(lam) <= 1
    F.cross_entropy(torch.randn(64, 4), ys)  # usable as a target as it is


def test_mixup_regression_and_bad_arguments() -> None:
    x, y = torch.randn(8, 2), torch.linspace(0, 1, 8)
    _, ym = Mixup(alpha=1.0)(x, y, generator=torch.Generator().manual_seed(0))
    assert ym.shape == (8,) and float(ym.min()) >= 0 and float(ym.max()) <= 1
    with pytest.raises(ValueError, match="Argument alpha should be a positive number"):
        Mixup(alpha=0)
    with pytest.raises(ValueError, match="N x C x H x W"):
        RandomShift(1)(torch.zeros(3, 4))
