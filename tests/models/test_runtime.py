"""Loading stored formats: without the model's code, safely, with clear errors.

Tolerance: loaded models must match eager fp32 within ATOL = 1e-4 (max abs diff).
"""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.deps import need

need("onnxruntime", extra="export")
need("onnxscript", extra="export")

from loopml.errors import ExportError
from loopml.models.exporting import FILE_NAMES, export_onnx, export_pt2
from loopml.models.runtime import check_importable, class_path_of, load_predictor

torch.set_num_threads(1)

ATOL = 1e-4
MODULE_NAME = "loopml_test_usercode_net"
USER_CODE = textwrap.dedent(
    """
    import torch


    class Net(torch.nn.Module):
        def __init__(self, hidden: int = 32) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

        def forward(self, x):
            return self.net(x)
    """
)


class Stored:
    def __init__(self, folder: Path, model: torch.nn.Module, spec: dict[str, object]) -> None:
        self.folder = folder
        self.model = model
        self.spec = spec

    def path(self, fmt: str) -> Path:
        return self.folder / FILE_NAMES[fmt]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    """A model whose class lives in a module written to a temp dir, stored as torch/pt2/onnx."""
    code = tmp_path_factory.mktemp("usercode")
    (code / f"{MODULE_NAME}.py").write_text(USER_CODE)
    sys.path.insert(0, str(code))
    try:
        module = importlib.import_module(MODULE_NAME)
        torch.manual_seed(0)
        model = module.Net(hidden=16).eval()
        out = tmp_path_factory.mktemp("stored")
        example = torch.rand(4, 64)
        torch.save(model.state_dict(), out / FILE_NAMES["torch"])
        export_pt2(model, example, out / FILE_NAMES["pt2"])
        export_onnx(model, example, out / FILE_NAMES["onnx"])
        spec = {"class_path": class_path_of(model), "init_args": {"hidden": 16}}
        yield Stored(out, model, spec)
    finally:
        sys.path.remove(str(code))
        sys.modules.pop(MODULE_NAME, None)


def test_class_path_of(stored: Stored) -> None:
    assert stored.spec["class_path"] == f"{MODULE_NAME}:Net"


def test_torch_format_with_the_code_importable(stored: Stored) -> None:
    predict = load_predictor("torch", stored.path("torch"), model_spec=stored.spec)
    x = np.random.default_rng(0).random((7, 64), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(predict(x), stored.model(torch.from_numpy(x)).numpy(), rtol=0, atol=ATOL)


FRESH = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from loopml.errors import ExportError
    from loopml.models.runtime import load_predictor

    folder, spec = sys.argv[1], json.loads(sys.argv[2])
    try:
        import {module}
        raise SystemExit("the model's module should not be importable here")
    except ModuleNotFoundError:
        pass
    x = np.load(folder + "/x.npy")
    result = {{}}
    for fmt, name in (("pt2", "model.pt2"), ("onnx", "model.onnx")):
        result[fmt] = load_predictor(fmt, folder + "/" + name)(x).tolist()
    try:
        load_predictor("torch", folder + "/state_dict.pt", model_spec=spec)
    except ExportError as exc:
        result["torch_error"] = str(exc)
    print(json.dumps(result))
    """
)


def test_pt2_and_onnx_load_in_a_fresh_interpreter_without_the_model_code(stored: Stored, tmp_path: Path) -> None:
    x = np.random.default_rng(1).random((5, 64), dtype=np.float32)
    np.save(stored.folder / "x.npy", x)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", FRESH.format(module=MODULE_NAME), str(stored.folder), json.dumps(stored.spec)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    with torch.no_grad():
        want = stored.model(torch.from_numpy(x)).numpy()
    for fmt in ("pt2", "onnx"):
        np.testing.assert_allclose(np.array(result[fmt], dtype=np.float32), want, rtol=0, atol=ATOL)
    message = result["torch_error"]
    assert f"module '{MODULE_NAME}' cannot be imported" in message
    assert "pt2 or onnx" in message


def test_torch_format_needs_a_model_spec(stored: Stored) -> None:
    with pytest.raises(ValueError, match="Argument model_spec should be a mapping with the model's class"):
        load_predictor("torch", stored.path("torch"))
    with pytest.raises(ExportError, match="has no class 'Nope'.*pt2 or onnx"):
        load_predictor("torch", stored.path("torch"), model_spec={"class_path": "loopml.errors:Nope"})
    with pytest.raises(ExportError, match="Could not load the state_dict"):
        load_predictor("torch", stored.path("onnx"), model_spec={"class_path": "torch.nn:Identity"})


def test_class_path_refuses_main_and_locals() -> None:
    class Local(torch.nn.Module):
        pass

    with pytest.raises(ValueError, match="defined inside a function: move the class to an importable module"):
        class_path_of(Local())
    with pytest.raises(ValueError, match="defined in __main__.*pt2/onnx"):
        check_importable("__main__:Net")
    with pytest.raises(ValueError, match="should look like 'package.module:ClassName'"):
        check_importable("Net")
    assert class_path_of(torch.nn.Linear(2, 2)) == "torch.nn.modules.linear:Linear"


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Argument format should be one of torch, pt2, onnx, pte, mlflow; got 'tflite'"):
        load_predictor("tflite", tmp_path / "m")
    with pytest.raises(ExportError, match="No onnx model file at"):
        load_predictor("onnx", tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="Argument threads should be an int >= 1"):
        load_predictor("onnx", tmp_path / "m", threads=0)


@pytest.mark.parametrize(
    ("fmt", "match"),
    [
        ("onnx", "ONNX Runtime could not load"),
        ("pt2", "is not a valid .pt2 file"),
        ("pte", "The ExecuTorch runtime could not load"),
        ("torch", "Could not load the state_dict"),
    ],
)
def test_garbage_files_give_a_loopml_error(tmp_path: Path, fmt: str, match: str) -> None:
    if fmt == "pte":
        need("executorch", extra="edge")
    path = tmp_path / FILE_NAMES[fmt]
    path.write_bytes(b"this is not a model\x00\x01\x02" * 10)
    with pytest.raises(ExportError, match=match):
        load_predictor(fmt, path, model_spec={"class_path": "torch.nn:Identity"})


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_truncated_files_give_a_loopml_error(stored: Stored, tmp_path: Path, fmt: str) -> None:
    data = stored.path(fmt).read_bytes()
    path = tmp_path / FILE_NAMES[fmt]
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError):
        load_predictor(fmt, path)


class _Payload:
    """Unpickling this would run code: a .pt2 holding it must be refused."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_pt2_with_pickled_objects_is_refused(stored: Stored, tmp_path: Path) -> None:
    tampered = tmp_path / "model.pt2"
    with zipfile.ZipFile(stored.path("pt2")) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data/sample_inputs/model.pt"):
                buf = io.BytesIO()
                torch.save({"evil": _Payload()}, buf)
                data = buf.getvalue()
            dst.writestr(item, data)
    with pytest.raises(ExportError, match="pickled data that is not plain tensors"):
        load_predictor("pt2", tampered)


def test_predictor_sets_torch_threads_in_each_calling_thread(stored: Stored) -> None:
    predict = load_predictor("pt2", stored.path("pt2"), threads=1)
    seen: list[int] = []

    def work() -> None:
        torch.set_num_threads(2)  # a worker thread left at another count
        predict(np.zeros((2, 64), dtype=np.float32))
        seen.append(torch.get_num_threads())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [1]
