"""loopml.quiet: native writes to fd 2 go to $LOOPML_HOME/logs/native.log, unless the call fails; noisy loggers
are raised to ERROR only inside the block; a module-level logging.warning leaves no stderr handler behind."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopml.quiet import NATIVE_LOG, native_output, quiet_loggers
from tests.deps import need

CHILD = r"""
import os, sys
from loopml.quiet import native_output
print("before", file=sys.stderr, flush=True)
with native_output("probe"):
    os.write(2, b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n")  # as C++ would
    print("python stderr inside", file=sys.stderr)
if sys.argv[1] == "fail":
    with native_output("failing call"):
        os.write(2, b"native diagnostic of the failure\n")
        raise RuntimeError("the call failed")
print("after", file=sys.stderr, flush=True)
"""


def run_child(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOOPML_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env=env, timeout=60)


def test_native_writes_go_to_the_log_not_the_terminal(tmp_path: Path) -> None:
    proc = run_child(tmp_path, "ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["before", "after"]
    log = (tmp_path / "home" / NATIVE_LOG).read_text()
    assert "probe (pid" in log and "[cpuinfo_utils.cpp:71] Reading file" in log and "python stderr inside" in log


def test_a_failing_call_keeps_its_native_diagnostics_on_stderr(tmp_path: Path) -> None:
    proc = run_child(tmp_path, "fail")
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0] == "before" and "cpuinfo" not in proc.stderr
    assert "native diagnostic of the failure" in lines and lines[-1] == "RuntimeError: the call failed"
    assert "native diagnostic of the failure" in (tmp_path / "home" / NATIVE_LOG).read_text()


def test_native_output_nests_and_restores_fd_2(capfd: pytest.CaptureFixture[str]) -> None:
    with native_output("outer"):
        with native_output("inner"):
            os.write(2, b"inner noise\n")
        os.write(2, b"outer noise\n")
    os.write(2, b"visible\n")
    assert capfd.readouterr().err == "visible\n"


def test_quiet_loggers_only_inside_the_block() -> None:
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    noisy, keep = logging.getLogger("torchao"), Keep()
    noisy.addHandler(keep)
    try:
        with quiet_loggers(["torchao"]):
            noisy.warning("Failed to load _C_mxfp8.so")
            noisy.error("a real error")
        noisy.warning("after the block")
    finally:
        noisy.removeHandler(keep)
    assert seen == ["a real error", "after the block"]


def test_ort_errors_only_leaves_no_root_handler_behind() -> None:
    need("onnxruntime", extra="export")
    code = (
        "import logging\n"
        "from loopml.quiet import ort_errors_only\n"
        "with ort_errors_only():\n"
        "    logging.warning('Please consider to run pre-processing before quantization')\n"
        "logging.getLogger('someone.else').warning('a later library warning')\n"
        "print(len(logging.getLogger().handlers))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # nothing from inside the block; the later warning reaches stderr through logging's last-resort handler only
    assert proc.stdout.strip() == "0" and proc.stderr == "a later library warning\n"


ORT_CHILD = r"""
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
unused = numpy_helper.from_array(np.zeros(3, np.float32), "unused")  # ONNX Runtime warns that it removes it
graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y], initializer=[unused])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
model.ir_version = 9
onnx.save(model, sys.argv[2])
if sys.argv[1] == "loopml":
    from loopml.quiet import import_onnxruntime

    ort = import_onnxruntime()
    assert import_onnxruntime() is ort is sys.modules["onnxruntime"]
else:
    import onnxruntime as ort
ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
print("ok")
"""


def test_onnxruntime_imported_by_loopml_logs_errors_only(tmp_path: Path) -> None:
    need("onnxruntime", extra="export")
    need("onnx", extra="export")

    def stderr_of(mode: str) -> str:
        proc = subprocess.run([sys.executable, "-c", ORT_CHILD, mode, str(tmp_path / "unused.onnx")],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
        return proc.stderr

    assert "Removing initializer 'unused'" in stderr_of("plain")  # the oracle: ONNX Runtime does warn here
    assert stderr_of("loopml") == ""
