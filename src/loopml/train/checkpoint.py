"""Checkpoint files: atomic writes, RNG states as plain tensors and lists.

A checkpoint is a dict that ``torch.load(path, weights_only=True)`` reads
back: tensors, numbers, strings, lists and dicts only (no pickled objects).

::

    format      "loopml.checkpoint/1"
    model_class "package.module.ClassName" of the model
    model       model.state_dict()
    optimizer   optimizer.state_dict()
    trainer     {"epoch": completed epochs, "step": optimizer steps, "seed": ...}
    rng         {"torch", "numpy", "python", "loader"}: every random state the loop uses
    callbacks   {"EarlyStopping": {...}, "LRScheduler": {...}, ...}
    metrics     the metrics of the epoch it was written after
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ArgumentError, LoopMLError
from ..files import atomic_path

__all__ = ["FORMAT", "atomic_save", "get_rng_state", "load_checkpoint", "set_rng_state"]

FORMAT = "loopml.checkpoint/1"


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` whole or not at all (:func:`loopml.files.atomic_path`).

    Readers see the old file or the new one, never a partial one; on failure
    the temp file is removed and the old file is left as it was.
    """
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def get_rng_state(loader_generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every RNG state the loop draws from, as tensors and lists."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], loader_generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :class:`loopml.train.Checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise ArgumentError(f"Argument resume_from should be a checkpoint file, got {str(path)!r} (no such file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise LoopMLError(f"Could not read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise LoopMLError(f"{path} is not a loopml checkpoint (expected format {FORMAT!r})")
    return ckpt
