"""Distributed data parallel: the Trainer under torchrun with 2 CPU processes (gloo) logs one run of global metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.deps import need

import loopml
from loopml.train import Trainer

from . import ddp_script
from .conftest import mlp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_torchrun_two_processes_log_one_run_of_global_metrics(sqlite_store: str, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true"}
    # --standalone: torchrun's rendezvous store binds a free port itself (a port picked here beforehand
    # can be taken by another process before torchrun binds it, and the workers then wait forever)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           ddp_script.__file__, str(tmp_path)]
    # its own session: on a timeout the whole tree goes (killing torchrun alone left a hung worker behind)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in 180 s; its output so far:\n{out[-3000:]}\n{err[-3000:]}")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert stdout.count("epoch 1/2") == 1 and stdout.count("epoch 2/2") == 1  # rank 0 prints

    runs = loopml.runs("ddp")
    assert len(runs) == 1 and runs.loc[0, "status"] == "FINISHED"
    run = loopml.get_run(runs.loc[0, "run_id"])
    assert run.params["world_size"] == "2"
    for key in ("val_accuracy", "val_f1", "val_loss", "train_loss", "train_accuracy", "epoch"):
        assert len(run.history(key).values) == 2, key  # once per epoch, not once per rank
    assert list(run.history("epoch").values) == [1, 2]
    assert [a.path for a in run.artifacts()] == ["checkpoints/best.pt"]

    # the saved final model, evaluated in this one process on the whole val set, gives the logged numbers
    ckpt = loopml.train.load_checkpoint(tmp_path / "ck" / "last.pt")
    assert all(not k.startswith("module.") for k in ckpt["model"])  # the unwrapped module was saved
    model = ddp_script.model()
    model.load_state_dict(ckpt["model"])
    _, _, x_val, y_val = ddp_script.data()
    single = Trainer(model, metrics=["accuracy", "f1"], track=False, distributed=False).evaluate((x_val, y_val))
    assert run.history("val_accuracy").values[-1] == pytest.approx(single["accuracy"], abs=1e-6)
    assert run.history("val_f1").values[-1] == pytest.approx(single["f1"], abs=1e-6)
    assert run.history("val_loss").values[-1] == pytest.approx(single["loss"], abs=1e-5)
    assert single["accuracy"] > 0.8


def test_without_torchrun_auto_trains_in_one_process_and_true_says_how_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    trainer = Trainer(mlp(), track=False)
    assert trainer.world_size == 1 and trainer.is_main_process
    trainer.fit((torch.randn(20, 64), torch.randint(0, 10, (20,))), epochs=1, batch_size=10)
    with pytest.raises(ValueError, match="distributed=True needs a torch.distributed environment.*torchrun"):
        Trainer(mlp(), track=False, distributed=True)
    with pytest.raises(ValueError, match="Argument distributed should be 'auto', True or False"):
        Trainer(mlp(), track=False, distributed="yes")


def test_reduced_metric_states_equal_the_metric_of_all_samples() -> None:
    sk = need("sklearn.metrics", extra="data")
    from loopml.train import MAE, ROCAUC, ConfusionMatrix
    from loopml.train.distributed import reduce_metric

    g = torch.Generator().manual_seed(0)
    shards = [(torch.randn(n, 2, generator=g), torch.randint(0, 2, (n,), generator=g)) for n in (7, 12)]
    shards.append((torch.randn(3, 2, generator=g), torch.zeros(3, dtype=torch.int64)))  # a shard with one class
    out, y = torch.cat([o for o, _ in shards]), torch.cat([t for _, t in shards])
    for metric, oracle in ((ROCAUC(), sk.roc_auc_score(y, torch.softmax(out, 1)[:, 1])),
                           (MAE(), sk.mean_absolute_error(y.double(), out[:, 0]))):
        states = []
        for o, t in shards:
            local = type(metric)()
            local.update(o if isinstance(metric, ROCAUC) else o[:, 0], t)
            states.append(local.state_dict())
        reduce_metric(metric, states)
        assert metric.compute() == pytest.approx(oracle, abs=1e-12)

    small, big = ConfusionMatrix(), ConfusionMatrix()  # grown to different sizes on different ranks
    small.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    big.update(torch.eye(4), torch.tensor([0, 1, 3, 3]))
    merged = ConfusionMatrix()
    reduce_metric(merged, [small.state_dict(), big.state_dict()])
    assert merged.compute() == [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]]


def test_in_a_process_group_the_model_is_wrapped_and_unmergeable_metrics_are_refused(tmp_path: Path) -> None:
    import torch.distributed as dist

    from loopml.train import Checkpoint, Metric

    class Max(Metric):
        name = "max"

        def reset(self) -> None:
            self.value = torch.tensor(float("-inf"))

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        with pytest.raises(TypeError, match="combined over ranks.*merge_states"):
            Trainer(mlp(), track=False, metrics=[Max()], distributed=True)
        trainer = Trainer(mlp(), track=False, metrics=["accuracy"], distributed=True,
                          callbacks=[Checkpoint(tmp_path, monitor="val_accuracy", mode="max")])
        assert trainer.world_size == 1 and trainer.is_main_process
        assert isinstance(trainer._wrapped, torch.nn.parallel.DistributedDataParallel)
        x, y = torch.randn(30, 64), torch.randint(0, 10, (30,))
        trainer.fit((x, y), val=(x[:11], y[:11]), epochs=2, batch_size=8)
        ckpt = loopml.train.load_checkpoint(tmp_path / "last.pt")
        assert set(ckpt["model"]) == set(mlp().state_dict())  # no "module." prefix
    finally:
        dist.destroy_process_group()


def test_the_group_outlives_the_wrappers_reducer_until_exit(tmp_path: Path) -> None:
    """The teardown order that removed a hang under load (see loopml.train.distributed._release_groups).

    A script that destroys the group and then frees its trainer must not leave the DDP Reducer holding
    the last reference to the group: ~ProcessGroupGloo would then join gloo's workers with the GIL held.
    """
    import torch.distributed as dist

    from loopml.train import distributed

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    trainer = Trainer(mlp(), track=False, distributed=True)
    x, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
    trainer.fit((x, y), epochs=1, batch_size=8)
    ddp = trainer._wrapped
    group = ddp.process_group
    dist.destroy_process_group()
    assert any(g is group for g in distributed._GROUPS), "loopml must hold the group the Reducer uses"
    distributed._release_groups()  # what runs at exit
    assert not hasattr(ddp, "reducer") and not distributed._GROUPS
