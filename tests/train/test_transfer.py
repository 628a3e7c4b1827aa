"""Transfer learning: freeze by name and glob, per-group learning rates, weights from a checkpoint, the example."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from loopml.errors import LoopMLError
from loopml.train import (
    Checkpoint,
    LoadReport,
    Trainer,
    freeze,
    load_weights,
    param_groups,
    trainable_parameters,
    unfreeze,
)

ROOT = Path(__file__).resolve().parents[2]


class Net(nn.Module):
    def __init__(self, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_and_unfreeze_by_module_name() -> None:
    model = Net()
    assert freeze(model, "features") == ["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"]
    assert _trainable(model) == {"head.weight", "head.bias"}
    assert trainable_parameters(model) == [model.head.weight, model.head.bias]
    assert unfreeze(model, "features.2") == ["features.2.weight", "features.2.bias"]
    assert _trainable(model) == {"features.2.weight", "features.2.bias", "head.weight", "head.bias"}
    freeze(model)  # no names: everything
    assert trainable_parameters(model) == []
    unfreeze(model)
    assert len(trainable_parameters(model)) == 6


def test_freeze_by_glob_and_exact_parameter_name() -> None:
    model = Net()
    assert freeze(model, "*.bias") == ["features.0.bias", "features.2.bias", "head.bias"]
    assert _trainable(model) == {"features.0.weight", "features.2.weight", "head.weight"}
    unfreeze(model)
    freeze(model, "features.[0]", "head.weight")
    assert _trainable(model) == {"features.2.weight", "features.2.bias", "head.bias"}
    unfreeze(model)
    freeze(model, "features.*")
    assert _trainable(model) == {"head.weight", "head.bias"}
    # a prefix selects whole name parts only: "feat" is not "features"
    with pytest.raises(ValueError, match=r"'feat' matches none; the model's top-level modules are \['features', 'head'\]"):
        freeze(model, "feat")


def test_freeze_rejects_unknown_names_and_non_strings() -> None:
    model = Net()
    with pytest.raises(ValueError, match=r"Arguments of unfreeze should name modules .* 'backbone' matches none"):
        unfreeze(model, "head", "backbone")
    assert _trainable(model) == {n for n, _ in model.named_parameters()}  # nothing changed on error
    with pytest.raises(TypeError, match="Arguments of freeze should be module names or globs"):
        freeze(model, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Argument model of freeze should be a torch.nn.Module"):
        freeze("features")  # type: ignore[arg-type]


def test_frozen_parameters_do_not_change_in_a_fit() -> None:
    model = Net()
    freeze(model, "features.0")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the optimizer holds every parameter: frozen ones get no gradient, so Adam (with weight decay) skips them
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    Trainer(model, optimizer=opt, track=False).fit((x, y), epochs=2, batch_size=16)
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (not name.startswith("features.0.")), name


def test_param_groups_give_each_module_its_learning_rate() -> None:
    model = Net()
    opt = torch.optim.Adam(param_groups(model, {"features": 1e-4, "head": 1e-2}), lr=1e-3)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-2]
    assert opt.param_groups[0]["params"] == list(model.features.parameters())
    assert opt.param_groups[1]["params"] == list(model.head.parameters())

    # the most specific name wins; parameters no name selects take default_lr, or the optimizer's lr
    groups = param_groups(model, {"features": 1e-4, "features.2": 1e-3}, default_lr=5e-2)
    assert [(g["lr"], len(g["params"])) for g in groups] == [(1e-4, 2), (1e-3, 2), (5e-2, 2)]
    opt = torch.optim.SGD(param_groups(model, {"features": 1e-4}), lr=0.3)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 0.3]

    # frozen parameters are left out; a group left empty is dropped
    freeze(model, "features")
    groups = param_groups(model, {"features": 1e-4, "head": 1e-2})
    assert [(g["lr"], g["params"]) for g in groups] == [(1e-2, [model.head.weight, model.head.bias])]
    assert len(param_groups(model, {"features": 1e-4}, trainable_only=False)) == 2


def test_param_groups_reject_unknown_names_and_bad_rates() -> None:
    model = Net()
    with pytest.raises(ValueError, match=r"'backbone' matches none; the model's top-level modules are \['features', 'head'\]"):
        param_groups(model, {"backbone": 1e-4, "head": 1e-2})
    with pytest.raises(ValueError, match="Argument lrs should map names to learning rates >= 0, got 'head': -1"):
        param_groups(model, {"head": -1})
    with pytest.raises(TypeError, match="Argument lrs should be a non-empty dict"):
        param_groups(model, {})
    freeze(model)
    with pytest.raises(ValueError, match="every parameter is frozen"):
        param_groups(model, {"head": 1e-2})


@pytest.fixture
def pretrained_checkpoint(tmp_path: Path) -> Path:
    model = Net(classes=5, seed=1)
    x, y = torch.randn(40, 8), torch.randint(0, 5, (40,))
    ckpt = Checkpoint(tmp_path / "ck", monitor="train_loss", save_best=False)
    Trainer(model, callbacks=[ckpt], track=False).fit((x, y), epochs=1, batch_size=20)
    return ckpt.last_path


def test_load_weights_excludes_the_head_and_reports_keys(pretrained_checkpoint: Path) -> None:
    source = torch.load(pretrained_checkpoint, weights_only=True)["model"]
    model = Net(classes=2, seed=2)  # a new task: another number of classes
    head_before = model.head.weight.detach().clone()
    report = load_weights(model, pretrained_checkpoint)
    assert isinstance(report, LoadReport) and report.ok
    assert report.loaded == ["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"]
    assert report.excluded == ["head.weight", "head.bias"]
    assert report.missing == report.unexpected == report.mismatched == []
    assert report.model_class.endswith("test_transfer.Net")
    for key in report.loaded:
        assert torch.equal(model.state_dict()[key], source[key])
    assert torch.equal(model.head.weight, head_before)

    # without exclude the head's shape differs: reported, skipped, and fatal only with strict=True
    report = load_weights(model, pretrained_checkpoint, exclude=())
    assert report.mismatched == ["head.weight", "head.bias"] and not report.ok
    assert "mismatched 2: head.weight, head.bias" in str(report)
    with pytest.raises(LoopMLError, match="does not fit Net .strict=True.: .*mismatched 2"):
        load_weights(model, pretrained_checkpoint, exclude=(), strict=True)


def test_load_weights_reports_missing_and_unexpected_keys(pretrained_checkpoint: Path) -> None:
    class Wider(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Linear(8, 16), nn.ReLU())  # no features.2
            self.extra = nn.Linear(16, 16)
            self.head = nn.Linear(16, 2)

    model = Wider()
    report = load_weights(model, pretrained_checkpoint)
    assert report.loaded == ["features.0.weight", "features.0.bias"]
    assert report.unexpected == ["features.2.weight", "features.2.bias"]
    assert report.missing == ["extra.weight", "extra.bias"]
    with pytest.raises(LoopMLError, match="missing 2: extra.weight, extra.bias; unexpected 2"):
        load_weights(model, pretrained_checkpoint, strict=True)


def test_load_weights_rejects_what_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Argument checkpoint_path should be a loopml checkpoint file"):
        load_weights(Net(), tmp_path / "nope.pt")
    torch.save(Net().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(LoopMLError, match="is not a loopml checkpoint"):
        load_weights(Net(), tmp_path / "bare.pt")
    with pytest.raises(TypeError, match="Argument exclude should be a tuple"):
        load_weights(Net(), tmp_path / "bare.pt", exclude="head.")  # type: ignore[arg-type]


def _example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("transfer_digits", ROOT / "examples" / "transfer_digits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["transfer_digits"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["transfer_digits"]
    return module


def test_example_fine_tuned_beats_scratch_and_logs_runs(sqlite_store: str, tmp_path: Path) -> None:
    td = _example()
    few, test = td.digit_tasks(seed=2, shots=20)[1:]
    assert len(few) == 100 and sorted(few.y.tolist()) == [c for c in range(5) for _ in range(20)]
    assert len(test) == 896 - 100 and few.class_names == ["5", "6", "7", "8", "9"]

    # reduced: 5 epochs of fine-tuning; at this seed the margin is about 5 points (0.946 vs 0.893)
    cfg = td.Config(seed=2, pretrain_epochs=15, finetune_epochs=5)
    result = td.run_transfer(cfg, workdir=tmp_path)
    assert result.pretrain_accuracy > 0.95
    assert result.finetuned_accuracy > 0.92
    assert result.margin > 0.03, result

    from loopml.store import TrackingStore

    store = TrackingStore(sqlite_store, artifact_root=tmp_path / "artifacts")
    runs = {r.name: r for r in store.search_runs(experiments=["transfer-digits"])}
    store.close()
    assert set(runs) == {"pretrain-0-4", "finetuned-5-9", "scratch-5-9"}
    assert all(r.status == "FINISHED" for r in runs.values())
    assert runs["finetuned-5-9"].metrics["test_accuracy"].value == pytest.approx(result.finetuned_accuracy)
    assert runs["scratch-5-9"].metrics["test_accuracy"].value == pytest.approx(result.scratch_accuracy)
