"""Distributed data parallel: the same :class:`~loopml.train.Trainer` under ``torchrun``.

``torchrun --nproc_per_node=2 train.py`` starts the script twice; each process
finds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` in its environment. With ``Trainer(distributed="auto")`` (the
default) the trainer then joins the process group (gloo on the CPU; gloo and
nccl on GPUs) and

- wraps the model in ``DistributedDataParallel`` for the training steps, so the
  gradients are averaged over the ranks; ``trainer.model`` stays the plain module,
  which is what checkpoints save;
- trains each rank on its shard of the data: a ``DistributedSampler`` seeded with
  the trainer's seed, ``set_epoch`` at every epoch;
- evaluates each rank on a strided shard without padding (every sample once) and
  combines the metric states: sums of losses, counts, confusion matrices and
  regression sums; ROC-AUC scores (of different lengths) are gathered. Every rank
  gets the global value, so ``EarlyStopping`` stops all ranks at the same epoch;
- runs callbacks marked ``rank_zero_only`` (``Tracking``, ``ProgressBar``,
  ``Checkpoint``) on rank 0 alone: one run, one line per epoch, one writer.

>>> from loopml.train import Trainer
>>> trainer = Trainer(model, metrics=["accuracy"])   # under torchrun: DDP over the ranks
>>> trainer.world_size                               # here: one process, no process group
1
>>> trainer = trainer.fit((x_train, y_train), val=(x_val, y_val), epochs=1)
"""

from __future__ import annotations

import atexit
import datetime
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import ArgumentError, ArgumentTypeError, LoopMLError
from .metrics import ROCAUC, ConfusionMatrix, Metric, RegressionMetric

__all__ = ["ENV_VARS", "Distributed", "reduce_metric", "set_epoch", "setup"]

ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # what env:// initialisation reads

_TORCHRUN = "torchrun --nproc_per_node=2 train.py"

# Teardown order (a hang measured under load, torch 2.13): a DistributedDataParallel wrapper's C++
# Reducer holds a reference to the process group. When the Reducer drops the *last* one (the script
# called destroy_process_group() and then the trainer was freed), ~ProcessGroupGloo runs in the
# freeing thread with the GIL held and joins gloo's worker threads; a worker that is still retiring
# a finished collective whose tensors Python created needs the GIL to release them, so both wait
# forever (gdb: main thread in ~ProcessGroupGloo -> thread::join, pt_gloo_runloop in take_gil from
# ~AsyncAllreduceWork). On an idle machine the worker is done first; on a loaded one it is not.
# So loopml keeps a Python reference to every group it wraps a model for, and at exit first drops
# the Reducers of its wrappers and then those references: the last reference then goes through
# the ProcessGroup binding, which releases the GIL while it joins the workers.
_GROUPS: list[Any] = []
_WRAPPERS: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_TEARDOWN_LOCK = threading.Lock()


def _release_groups() -> None:
    """Drop the Reducers of loopml's DDP wrappers, then loopml's references to their process groups."""
    with _TEARDOWN_LOCK:
        wrappers, groups = list(_WRAPPERS), list(_GROUPS)
        _WRAPPERS.clear()
        _GROUPS.clear()
    for ddp in wrappers:  # while `groups` still holds each group, so no Reducer drops the last reference
        if "reducer" in ddp.__dict__:
            del ddp.reducer  # the wrapper cannot train after this: it runs at exit
    del wrappers
    groups.clear()  # the last references, if the script destroyed the groups: freed with the GIL released


def _mergeable(metric: Metric) -> bool:
    return isinstance(metric, (ROCAUC, ConfusionMatrix, RegressionMetric)) or callable(getattr(metric, "merge_states", None))


@dataclass(frozen=True)
class Distributed:
    """This process's place in the process group; ``owns_group``: the trainer initialised it."""

    rank: int
    world_size: int
    local_rank: int
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``DistributedDataParallel(model)``: broadcasts rank 0's weights, averages gradients."""
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index if device.index is not None else self.local_rank] if device.type == "cuda" else None
        try:
            ddp = DistributedDataParallel(model, device_ids=device_ids)
        except (RuntimeError, ValueError) as exc:
            raise LoopMLError(f"Could not wrap the model in DistributedDataParallel: {exc}") from exc
        with _TEARDOWN_LOCK:  # see _release_groups: the group must outlive the wrapper's Reducer
            if not _GROUPS:
                atexit.register(_release_groups)
            _GROUPS.append(ddp.process_group)
            _WRAPPERS.add(ddp)
        return ddp

    def train_sampler(self, seed: int) -> Any:
        """A function of the dataset: the rank's shuffled shard (padded so that every rank steps as often)."""
        def sampler(dataset: Dataset[Any]) -> DistributedSampler[Any]:
            return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed)
        return sampler

    def eval_sampler(self, dataset: Dataset[Any]) -> list[int]:
        """The rank's strided shard, without padding: every sample is evaluated exactly once over the ranks."""
        return list(range(self.rank, len(dataset), self.world_size))  # type: ignore[arg-type]

    def sum(self, values: Sequence[float]) -> list[float]:
        """The element-wise sum of ``values`` over the ranks (float64)."""
        import torch.distributed as dist

        t = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (pickled: for small or ragged things)."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def reduce(self, metrics: Sequence[Metric], sums: Sequence[float]) -> list[float]:
        """Combine every metric's state over the ranks (in place) and return the summed ``sums``."""
        for m in metrics:
            reduce_metric(m, self.gather(m.state_dict()))
        return self.sum(sums)


def setup(distributed: bool | str, device: torch.device, metrics: Sequence[Metric] = ()) -> Distributed | None:
    """Join the process group torchrun describes; ``None`` when not distributed.

    ``"auto"``: distributed when the group is already initialised or the
    environment names more than one process; ``True``: the environment must be
    there; ``False``: never.
    """
    if distributed not in ("auto", True, False):
        raise ArgumentError(f"Argument distributed should be 'auto', True or False, got {distributed!r}")
    if distributed is False:
        return None
    import torch.distributed as dist

    if not dist.is_available():
        if distributed is True:
            raise LoopMLError("distributed=True: this build of torch has no torch.distributed")
        return None
    if dist.is_initialized():
        ctx = Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False)
    else:
        missing = [v for v in ENV_VARS if v not in os.environ]
        if missing:
            if distributed is True:
                raise ArgumentError(f"Argument distributed=True needs a torch.distributed environment (missing "
                                 f"{', '.join(missing)}); start the script with torchrun, e.g. {_TORCHRUN}")
            return None
        world_size = int(os.environ["WORLD_SIZE"])
        if world_size < 2 and distributed == "auto":
            return None
        # gloo carries the CPU tensors of metric reductions on GPU machines too
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=10))
        except (RuntimeError, ValueError) as exc:
            raise LoopMLError(f"Could not join the process group ({backend}) at "
                              f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: {exc}") from exc
        ctx = Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True)
    if ctx.world_size < 2 and distributed == "auto":
        return None
    bad = [m for m in metrics if not _mergeable(m)]
    if bad:
        raise ArgumentTypeError(f"Argument metrics should hold metrics that can be combined over ranks, got {bad!r}: "
                        f"give the metric a merge_states(states) method that returns one state_dict "
                        f"from every rank's, or train with distributed=False")
    return ctx


def reduce_metric(metric: Metric, states: Sequence[dict[str, Any]]) -> None:
    """Load into ``metric`` the state that combines every rank's ``state_dict()``."""
    if isinstance(metric, ROCAUC):
        merged = {"scores": torch.cat([s["scores"] for s in states]),
                  "targets": torch.cat([s["targets"] for s in states])}
    elif isinstance(metric, ConfusionMatrix):
        k = max(s["cm"].shape[0] for s in states)  # each rank's matrix grew to the classes it saw
        cm = torch.zeros((k, k), dtype=torch.int64)
        for s in states:
            n = s["cm"].shape[0]
            cm[:n, :n] += s["cm"]
        merged = {"cm": cm}
    elif isinstance(metric, RegressionMetric):
        merged = {"sums": torch.stack([s["sums"] for s in states]).sum(0)}
    else:
        merged = metric.merge_states(list(states))  # type: ignore[attr-defined]
    metric.load_state_dict(merged)


def set_epoch(loader: Any, epoch: int) -> None:
    """Reshuffle a ``DistributedSampler`` (the trainer's, or one in a DataLoader you built) for ``epoch``."""
    sampler = getattr(loader, "sampler", None) if isinstance(loader, DataLoader) else None
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
