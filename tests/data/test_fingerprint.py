"""Fingerprints: stable across sources and processes, sensitive to any change of content."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pandas as pd
import torch

from loopml.data import Dataset, fingerprint, from_arrays, from_frame, load


def test_definition_is_the_documented_hash() -> None:
    ds = from_arrays(np.array([[1.0, 2.0]]), [1])
    h = hashlib.sha256(b"loopml-dataset-v1\n")
    h.update(b"x f4 1x2\n" + np.array([[1.0, 2.0]], dtype="<f4").tobytes())
    h.update(b"y i8 1\n" + np.array([1], dtype="<i8").tobytes())
    assert fingerprint(ds) == ds.fingerprint == h.hexdigest()


def test_same_content_from_numpy_tensor_and_frame_agrees() -> None:
    x = np.random.default_rng(0).normal(size=(20, 3))
    y = np.arange(20) % 3
    df = pd.DataFrame(x, columns=["a", "b", "c"]).assign(label=y)

    fps = {
        from_arrays(x, y).fingerprint,
        from_arrays(torch.tensor(x), torch.tensor(y)).fingerprint,
        from_arrays(x.astype(np.float32), y.astype(np.int32)).fingerprint,
        from_frame(df, target="label").fingerprint,
        from_arrays(x, y, feature_names=["p", "q", "r"], name="renamed").fingerprint,  # names are not content
    }
    assert len(fps) == 1


def test_any_change_changes_it(digits: Dataset) -> None:
    base = digits.fingerprint
    x = digits.x.clone()
    x[100, 0, 3, 4] += 1 / 16
    y = digits.y.clone()
    y[5] = (y[5] + 1) % 10
    perm = torch.arange(len(digits)).roll(1)

    changed = {
        "pixel": Dataset(x, digits.y).fingerprint,
        "label": Dataset(digits.x, y).fingerprint,
        "order": digits.subset(perm).fingerprint,
        "row dropped": digits.subset(torch.arange(len(digits) - 1)).fingerprint,
        "shape": Dataset(digits.x.reshape(len(digits), -1), digits.y).fingerprint,
    }
    assert base not in changed.values() and len(set(changed.values())) == len(changed)
    assert Dataset(digits.x.clone(), digits.y.clone()).fingerprint == base  # a copy is the same data


def test_nan_payloads_do_not_matter() -> None:
    a = np.array([[np.nan, 1.0]], dtype=np.float32)
    b = a.copy()
    b.view(np.uint32)[0, 0] = 0x7FC00001  # another quiet NaN
    assert from_arrays(a, [0]).fingerprint == from_arrays(b, [0]).fingerprint


def test_stable_across_processes() -> None:
    code = "from loopml.data import load; print(load('wine').fingerprint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == load("wine").fingerprint
