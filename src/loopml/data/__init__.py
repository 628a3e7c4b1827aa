"""Datasets: load, fingerprint, profile, check, split, augment, and log them with a run.

>>> from loopml import data
>>> ds = data.load("digits")                         # 1,797 x 1 x 8 x 8, 10 classes
>>> report = data.check(ds)                          # report.ok, report.errors, report.warnings
>>> parts = data.split(ds, val=0.15, test=0.15, seed=0)
>>> data.check(parts).ok                             # also looks for rows shared between parts
True
>>> pre = data.Preprocessor().fit(data.load("wine"))   # tabular: impute, standardise, one-hot, in the model
>>> with loopml.start_run(experiment="digits") as run:
...     data.log_dataset(run, parts.train, role="train")        # its fingerprint; the rows stored once
'701273ed...'
>>> data.lineage("701273ed1131")["runs"][0]["role"]            # which runs used it, which predictions made it
'train'

See docs/data.md. This package needs torch (and scikit-learn for ``load``).
"""

from __future__ import annotations

from .augment import Compose, GaussianNoise, Mixup, RandomErasing, RandomRotation, RandomShift, Transform
from .checks import CODES, CheckReport, Issue, check
from .dataset import Dataset, fingerprint, from_arrays, from_frame
from .graph import Graph, NeighborNodes, Nodes
from .graph_sources import from_edges, from_pyg, karate_club, knn_graph, sbm
from .lineage import dataset_record, log_check, log_dataset
from .loaders import NAMES, load
from .preprocess import Preprocessor
from .profile import profile
from .sources import read_file, resolve
from .split import NodeSplit, Split, split, split_nodes
from .stored import datasets_of_request, lineage, store_dataset, stored_graph  # after .lineage: the function wins

__all__ = [
    "CODES",
    "CheckReport",
    "Compose",
    "Dataset",
    "GaussianNoise",
    "Graph",
    "Issue",
    "Mixup",
    "NAMES",
    "NeighborNodes",
    "NodeSplit",
    "Nodes",
    "Preprocessor",
    "RandomErasing",
    "RandomRotation",
    "RandomShift",
    "Split",
    "Transform",
    "check",
    "dataset_record",
    "datasets_of_request",
    "fingerprint",
    "from_arrays",
    "from_edges",
    "from_frame",
    "from_pyg",
    "karate_club",
    "knn_graph",
    "lineage",
    "load",
    "log_check",
    "log_dataset",
    "profile",
    "read_file",
    "resolve",
    "sbm",
    "split",
    "split_nodes",
    "store_dataset",
    "stored_graph",
]
