"""Stage 4-5 of the loop: the model registry, export and quantization.

- :mod:`loopml.models.signature`: what goes in and comes out (inferred from an input example)
- :mod:`loopml.models.exporting`: ONNX, ``torch.export`` (.pt2) and ExecuTorch (.pte) files, checked against eager
- :mod:`loopml.models.runtime`: run a stored format without the code that defined the model
- :mod:`loopml.models.quantization`, :mod:`loopml.models.tqt`: int8 / int4 variants, incl. trained quantization thresholds
- :mod:`loopml.models.registry`: versions, aliases, ``register``, ``load_model``, ``export`` (add formats);
  its ``register`` stores the model only: :func:`loopml.register` and :class:`loopml.Client` also fit its OOD gate
- :mod:`loopml.models.variants`: ``quantize`` a version into a measured variant version
- :mod:`loopml.models.reference`: a version's stored drift reference (``store_reference`` rebuilds it)
- :mod:`loopml.models.evaldata`: which data a version is calibrated, fine-tuned and measured on
- :mod:`loopml.models.nets`: the demo's digits CNN and an MLP, importable from any process
- :mod:`loopml.models.gnn`: graph neural networks (GCN, GraphSAGE, GAT from PyG) and their baselines
  (``NodeMLP``, ``propagate_labels``)
- :mod:`loopml.models.rebuild`: ``keep_init_args``, so that a class's ``torch`` format rebuilds without ``init_args=``

The calls on registered versions are attributes of this package::

    loopml.models.export("digits/1", ["onnx"])                  # add formats to a version
    loopml.models.quantize("digits/1", method="static", data="train.npz")   # a measured int8 variant

(The modules behind them are named ``exporting`` and ``quantization`` so that no
submodule import can replace these functions.)

Submodules import torch, ONNX and friends; this package imports nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_LAZY = {
    "GAT": "loopml.models.gnn",
    "GCN": "loopml.models.gnn",
    "GraphSAGE": "loopml.models.gnn",
    "NodeMLP": "loopml.models.gnn",
    "LoadedModel": "loopml.models.registry",
    "alias_history": "loopml.models.registry",
    "delete_alias": "loopml.models.registry",
    "delete_version": "loopml.models.registry",
    "export": "loopml.models.registry",
    "get_version": "loopml.models.registry",
    "input_example": "loopml.models.registry",
    "keep_init_args": "loopml.models.rebuild",
    "list_models": "loopml.models.registry",
    "list_versions": "loopml.models.registry",
    "load_model": "loopml.models.registry",
    "node_accuracy": "loopml.models.gnn",
    "propagate_labels": "loopml.models.gnn",
    "register": "loopml.models.registry",
    "quantize": "loopml.models.variants",
    "set_alias": "loopml.models.registry",
    "store_reference": "loopml.models.reference",
    "Signature": "loopml.models.signature",
    "ModelVersion": "loopml.store.registry",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from ..store.registry import ModelVersion
    from .gnn import GAT, GCN, GraphSAGE, NodeMLP, node_accuracy, propagate_labels
    from .registry import (
        LoadedModel,
        alias_history,
        delete_alias,
        delete_version,
        export,
        get_version,
        input_example,
        list_models,
        list_versions,
        load_model,
        register,
        set_alias,
    )
    from .rebuild import keep_init_args
    from .reference import store_reference
    from .signature import Signature
    from .variants import quantize


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
