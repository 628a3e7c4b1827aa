"""loopml.files: a file appears whole or not at all, with the stated mode, and nothing is left behind."""

from __future__ import annotations

import ast
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from loopml.files import FILE_MODE, atomic_path, atomic_write


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_creates_the_file_and_its_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "doc.json"
    assert atomic_write(target, b'{"a": 1}') == target
    assert target.read_bytes() == b'{"a": 1}'
    assert _names(target.parent) == ["doc.json"]


def test_an_existing_file_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old content, longer than the new one")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"newer")
        assert target.read_bytes() == b"new"  # the old file stays whole until the block ends
    assert target.read_bytes() == b"newer"
    assert _names(tmp_path) == ["model.onnx"]


def test_an_error_inside_the_block_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"the good checkpoint")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a checkp")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"the good checkpoint"
    assert _names(tmp_path) == ["checkpoint.pt"]


def test_an_error_before_any_file_existed_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "out.npz"):
        raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_the_temp_file_sits_beside_the_target_with_its_suffix(tmp_path: Path) -> None:
    target = tmp_path / "program.pt2"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.exists()
        assert tmp.suffix == ".pt2" and tmp.name.startswith(".program.")  # hidden, and writers that check the suffix accept it
        assert not target.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_the_mode_is_the_stated_one_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)  # a umask that would make a plain open() file 0o600
    try:
        atomic_write(tmp_path / "a.bin", b"x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"y")
        atomic_write(tmp_path / "secret", b"s3cret", mode=0o600)
    finally:
        os.umask(old)
    assert FILE_MODE == 0o644
    assert _mode(tmp_path / "a.bin") == 0o644
    assert _mode(tmp_path / "b.bin") == 0o644
    assert _mode(tmp_path / "secret") == 0o600


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_replacing_a_file_gives_the_stated_mode_not_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    target.chmod(0o600)
    atomic_write(target, b"new")
    assert _mode(target) == 0o644


def test_a_writer_that_needs_a_file_name(tmp_path: Path) -> None:
    target = tmp_path / "arrays.npz"
    with atomic_path(target) as tmp:
        np.savez(tmp, w=np.arange(3))
    with np.load(target) as npz:
        assert npz["w"].tolist() == [0, 1, 2]
    assert _names(tmp_path) == ["arrays.npz"]


def test_bad_arguments_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"Argument data should be bytes, e.g. text.encode\('utf-8'\); got str"):
        atomic_write(tmp_path / "a.txt", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Argument mode should be a file mode between 0o000 and 0o777"):
        atomic_write(tmp_path / "a.txt", b"x", mode=0o1777)
    assert _names(tmp_path) == []


def test_files_is_base_layer_only_stdlib_and_errors() -> None:
    # loopml.files sits in the base layer (docs/architecture.md): every layer may use it, so it uses none
    source = Path(__file__).resolve().parents[1] / "src" / "loopml" / "files.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or "").split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"__future__", ".errors"}
    assert imported <= allowed, f"loopml.files should import only the stdlib and loopml.errors; got {sorted(imported - allowed)}"
