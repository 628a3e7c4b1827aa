"""register() takes any module: what the torch format cannot rebuild is left out with one warning.

Covers nn.Sequential, a class with required constructor arguments, a class defined in
``__main__`` (a script run as a subprocess), a module with buffers (BatchNorm running
statistics), loopml's own networks (which record their constructor arguments) and
``keep_init_args`` for a user's class.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import loopml
from loopml.errors import LoopMLWarning
from loopml.models import keep_init_args
from loopml.models.nets import MLP, DigitsCNN
from loopml.models.rebuild import init_args_of
from tests.deps import need

torch.set_num_threads(1)
LEFT_OUT = "the 'torch' format was left out"


class Required(nn.Module):
    """Importable (tests.models.test_register_any_module:Required), but its constructor needs arguments."""

    def __init__(self, n_in: int, n_out: int, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@keep_init_args
class Recorded(Required):
    """The same network, recording its constructor arguments."""


class UndecoratedChild(Recorded):
    """A subclass that does not opt in: the parent's recorded arguments must not be used for it."""

    def __init__(self, width: int) -> None:
        super().__init__(64, 10, hidden=width)


@keep_init_args
class WithBuffers(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@keep_init_args
class TakesAModule(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture(autouse=True)
def _fresh_store() -> Iterator[None]:
    """Tests without use_store register into the SQLite store of their own LOOPML_HOME."""
    from loopml.tracking import api

    yield
    api.close_all()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(8, 64, generator=torch.Generator().manual_seed(1))


def _register_warned(model: nn.Module, name: str, x: torch.Tensor, **kw: object) -> tuple[loopml.models.ModelVersion, str]:
    """Register and return the version with the one LoopMLWarning it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = loopml.register(model, name, input_example=x, **kw)  # type: ignore[arg-type]
    ours = [w for w in caught if issubclass(w.category, LoopMLWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]  # said once
    assert ours[0].filename == __file__  # it points at the caller's line, not into loopml
    return v, str(ours[0].message)


def _outputs(ref: str, fmt: str, x: torch.Tensor) -> np.ndarray:
    return loopml.load_model(ref, format=fmt)(x.numpy())


def test_sequential_registers_without_the_torch_format(use_store: str, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    v, message = _register_warned(model, "seq", x)
    assert LEFT_OUT in message and "Sequential() with no arguments does not rebuild it" in message
    assert "init_args=" in message and "keep_init_args" in message  # how to keep it
    assert set(v.files) == {"pt2", "input_example"} and v.model_spec is None
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(_outputs(v.ref, "pt2", x), want, rtol=1e-6, atol=1e-6)


def test_the_warning_names_the_formats_kept_when_onnx_is_asked(x: torch.Tensor) -> None:
    need("onnxruntime", extra="export")
    model = nn.Sequential(nn.Linear(64, 10))
    with pytest.warns(LoopMLWarning, match=r"The version keeps pt2, onnx, which load without the model's code"):
        v = loopml.register(model, "seq", input_example=x, formats=("pt2", "torch", "onnx"))
    assert set(v.files) == {"pt2", "onnx", "input_example"}
    with pytest.warns(LoopMLWarning, match=LEFT_OUT):
        only = loopml.register(model, "seq", input_example=x, formats=("torch",))
    assert set(only.files) == {"pt2", "input_example"}  # nothing else was asked: the program needs no code


def test_required_constructor_arguments(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = Required(64, 10)
    v, message = _register_warned(model, "req", x)
    assert "Required() with no arguments does not rebuild it (TypeError:" in message and "missing 2 required" in message
    assert "torch" not in v.files
    # the arguments given: the torch format is kept and rebuilds the same outputs
    kept = loopml.register(model, "req", input_example=x, init_args={"n_in": 64, "n_out": 10})
    assert kept.model_spec == {"class_path": "tests.models.test_register_any_module:Required", "init_args": {"n_in": 64, "n_out": 10}}
    with torch.no_grad():
        np.testing.assert_allclose(_outputs(kept.ref, "torch", x), model(x).numpy(), rtol=0, atol=0)


def test_explicit_wrong_init_args_are_still_an_error(x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"Required\(\*\*\{'n_in': 64, 'n_out': 3\}\) does not rebuild this model \(RuntimeError"):
        loopml.register(Required(64, 10), "req", input_example=x, init_args={"n_in": 64, "n_out": 3})
    with pytest.raises(ValueError, match="Argument init_args should be JSON-serialisable"):
        loopml.register(Required(64, 10), "req", input_example=x, init_args={"n_in": torch.tensor(64)})
    assert loopml.models.list_models() == []  # nothing half-registered


def test_keep_init_args_records_the_arguments_and_the_torch_format_rebuilds(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = Recorded(64, n_out=10, hidden=8)
    assert init_args_of(model) == {"n_in": 64, "n_out": 10, "hidden": 8}
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoopMLWarning)  # no warning: nothing is left out
        v = loopml.register(model, "rec", input_example=x)
    assert set(v.files) == {"pt2", "torch", "input_example"}
    assert v.model_spec == {"class_path": "tests.models.test_register_any_module:Recorded",
                            "init_args": {"n_in": 64, "n_out": 10, "hidden": 8}}
    with torch.no_grad():
        np.testing.assert_allclose(_outputs(v.ref, "torch", x), model(x).numpy(), rtol=0, atol=0)


def test_a_subclass_that_does_not_opt_in_records_nothing(x: torch.Tensor) -> None:
    child = UndecoratedChild(8)
    assert init_args_of(child) is None  # the parent's (64, 10, hidden=8) would not rebuild UndecoratedChild
    _, message = _register_warned(child, "child", x)
    assert "UndecoratedChild() with no arguments does not rebuild it" in message


def test_arguments_that_are_not_json_leave_the_torch_format_out(x: torch.Tensor) -> None:
    model = TakesAModule(nn.Linear(64, 10))
    assert init_args_of(model) is None
    v, message = _register_warned(model, "body", x)
    assert "its constructor arguments are not JSON-serialisable" in message and "'body': 'Linear'" in message
    assert "torch" not in v.files


def test_keep_init_args_refuses_what_cannot_be_passed_by_name() -> None:
    class Star(nn.Module):
        def __init__(self, *layers: int) -> None:
            super().__init__()

    with pytest.raises(TypeError, match=r"arguments can be passed by name .*Star.__init__ takes layers positionally only"):
        keep_init_args(Star)
    with pytest.raises(TypeError, match="keep_init_args decorates a class"):
        keep_init_args(lambda: None)  # type: ignore[arg-type]


def test_a_passed_list_changed_later_does_not_change_the_record() -> None:
    hidden = [32, 16]
    model = MLP(64, 10, hidden=hidden)
    hidden.append(8)
    assert init_args_of(model) == {"n_in": 64, "n_out": 10, "hidden": [32, 16]}


@pytest.mark.parametrize(
    ("make", "shape"),
    [(lambda: MLP(30, 2, hidden=[64]), (8, 30)), (lambda: DigitsCNN(channels=4), (8, 1, 8, 8))],
    ids=["MLP", "DigitsCNN"],
)
def test_loopmls_own_networks_register_without_init_args(use_store: str, make: object, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = make()  # type: ignore[operator]
    xs = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoopMLWarning)
        v = loopml.register(model, "own", input_example=xs)
    assert "torch" in v.files and v.model_spec is not None
    assert v.model_spec["class_path"].startswith("loopml.models.nets:")
    with torch.no_grad():
        np.testing.assert_allclose(_outputs(v.ref, "torch", xs), model(xs).numpy(), rtol=0, atol=0)


def test_a_module_with_buffers_matches_the_live_module_in_eval_mode(x: torch.Tensor) -> None:
    need("onnxruntime", extra="export")
    torch.manual_seed(0)
    model = WithBuffers(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):  # a few training steps move the BatchNorm running statistics away from (0, 1)
        batch = torch.randn(32, 64) * 3 + 1
        loss = model(batch).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    bn = model.net[1]
    assert not torch.allclose(bn.running_mean, torch.zeros(32)) and int(bn.num_batches_tracked) == 5
    assert model.training
    v = loopml.register(model, "bn", input_example=x, formats=("pt2", "torch", "onnx"))
    assert model.training  # registration leaves the live module's mode as it was
    model.eval()
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(_outputs(v.ref, "torch", x), want, rtol=0, atol=0)
    np.testing.assert_allclose(_outputs(v.ref, "pt2", x), want, rtol=0, atol=0)
    # ONNX Runtime runs its own float32 kernels (and may fold BatchNorm): measured max abs diff 1.2e-7 here
    np.testing.assert_allclose(_outputs(v.ref, "onnx", x), want, rtol=0, atol=1e-5)
    # same running statistics in the stored state dict
    rebuilt = loopml.load_model(v.ref, format="torch").module()
    assert torch.equal(rebuilt.net[1].running_var, bn.running_var)


SCRIPT = """
import json, sys, warnings
import numpy as np
import torch
from torch import nn
import loopml

class Net(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.body(x)

torch.manual_seed(0)
model = Net().eval()
x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    v = loopml.register(model, "script", input_example=x, init_args={"hidden": 16})
np.save(sys.argv[1], model(x).detach().numpy())
print(json.dumps({"files": sorted(v.files), "warnings": [str(w.message) for w in caught if w.category.__name__ == "LoopMLWarning"]}))
"""


def test_a_class_defined_in_main_registers_from_a_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(loopml.__file__).parents[1]), *sys.path])}
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "want.npy")], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["files"] == ["input_example", "pt2"]
    assert len(result["warnings"]) == 1
    assert "The model class Net is defined in __main__ (a script or notebook)" in result["warnings"][0]
    # this process has no Net class: the pt2 program loads without it and gives the script's outputs
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(_outputs("script/1", "pt2", x), np.load(tmp_path / "want.npy"), rtol=1e-6, atol=1e-6)


def test_bad_ood_arguments_fail_before_anything_is_stored(x: torch.Tensor) -> None:
    model = MLP(64, 10)
    with pytest.raises(TypeError, match=r"Argument ood should be a \(train, val\) pair or a mapping"):
        loopml.register(model, "m", input_example=x, ood=x)
    with pytest.raises(ValueError, match=r"Argument ood should name train and val.*got keys \['target', 'train', 'val'\]"):
        loopml.register(model, "m", input_example=x, ood={"train": x, "val": x, "target": 0.05})
    with pytest.raises(ValueError, match=r"Argument ood\['target_false_abstain'\] should be a fraction"):
        loopml.register(model, "m", input_example=x, ood={"train": x, "val": x, "target_false_abstain": 5})
    assert loopml.models.list_models() == []
