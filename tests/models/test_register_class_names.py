"""A classifier registered without class_names= takes them from its training data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import loopml
from loopml import data
from loopml.data.lineage import log_dataset
from loopml.errors import LoopMLWarning


def _model(n_out: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, n_out))


def _classes(n: int = 60, k: int = 3) -> data.Dataset:
    rng = np.random.default_rng(0)
    return data.Dataset(rng.normal(size=(n, 4)).astype(np.float32), np.arange(n) % k,
                        class_names=["ant", "bee", "cat"][:k])


@pytest.fixture(autouse=True)
def _store(use_store: str) -> None:
    pass


def test_class_names_come_from_train_data() -> None:
    ds = _classes()
    with pytest.warns(LoopMLWarning):  # an nn.Sequential keeps pt2 only
        v = loopml.register(_model(3), "cls", input_example=ds.x[:4], train_data=ds)
    assert v.signature["class_names"] == ["ant", "bee", "cat"]
    assert loopml.load_model("cls/1").predict(ds.x[:5]).shape == (5,)  # class indices: a classifier


def test_class_names_come_from_the_runs_logged_train_dataset() -> None:
    ds = _classes()
    with loopml.start_run(experiment="cls") as run:
        log_dataset(run, ds, "train")
        with pytest.warns(LoopMLWarning):
            v = loopml.register(_model(3), "cls", input_example=ds.x[:4], run=run)
    assert v.signature["class_names"] == ["ant", "bee", "cat"]


def test_explicit_class_names_win_and_a_width_mismatch_takes_none() -> None:
    ds = _classes()
    with pytest.warns(LoopMLWarning):
        v = loopml.register(_model(3), "cls", input_example=ds.x[:4], train_data=ds, class_names=["a", "b", "c"])
    assert v.signature["class_names"] == ["a", "b", "c"]
    with pytest.warns(LoopMLWarning):
        w = loopml.register(_model(5), "wide", input_example=ds.x[:4], train_data=ds)  # 5 outputs, 3 classes
    assert w.signature["class_names"] is None


def test_a_regression_set_gives_no_class_names() -> None:
    rng = np.random.default_rng(0)
    ds = data.Dataset(rng.normal(size=(30, 4)).astype(np.float32), rng.normal(size=30), task="regression")
    with pytest.warns(LoopMLWarning):
        v = loopml.register(_model(1), "reg", input_example=ds.x[:4], train_data=ds)
    assert v.signature["class_names"] is None
