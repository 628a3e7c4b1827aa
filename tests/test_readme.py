"""The README's examples run, in order, as a reader would type them.

Every fenced ```python and ```bash block of README.md runs on a fresh
``LOOPML_HOME`` in an empty working directory: the Python blocks in one
namespace, in order (a later block sees an earlier block's names), the shell
blocks with ``bash -eu`` where ``loopml`` is this checkout's CLI. A block that
cannot run as it stands (it sets up the machine, starts a server that runs
until stopped, or holds a placeholder) is preceded in the README by
``<!-- not run: REASON -->``; the test skips exactly those and checks the
reasons are given.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

import loopml
from loopml.errors import LoopMLWarning

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>[^>]*?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")

@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # of the opening fence
    section: str
    code: str
    not_run: str | None  # the reason, for a block marked <!-- not run: ... -->


def readme_blocks(text: str) -> list[Block]:
    """The fenced python and bash blocks, with their section and not-run marker."""
    blocks: list[Block] = []
    lines = text.splitlines()
    section, i = "", 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i][3:].strip()
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.search(before)
        if fence["lang"] in ("python", "bash"):
            blocks.append(Block(fence["lang"], i + 1, section, "\n".join(lines[i + 1:end]) + "\n",
                                marker["reason"] if marker else None))
        i = end + 1
    return blocks


def _loopml_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``loopml`` is this checkout's CLI, run by this interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "loopml"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m loopml "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    src = str(Path(loopml.__file__).resolve().parents[1])
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}


def run_blocks(blocks: list[Block], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loopml.tracking import api

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    env = _loopml_on_path(tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    try:
        for block in blocks:
            where = f"README.md:{block.line} ({block.section})"
            if block.lang == "python":
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always", LoopMLWarning)
                    exec(compile(block.code, where, "exec"), namespace)  # noqa: S102 - the README's own example
                for w in seen:  # what loopml warns a README reader about must be what the README says it will
                    if issubclass(w.category, LoopMLWarning):
                        assert "the 'torch' format was left out" in str(w.message), f"{where} warned: {w.message}"
                        assert "cannot be rebuilt from its state dict" in README.read_text(), "the README should say why"
                    else:
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)  # others as before
                continue
            proc = subprocess.run(["bash", "-eu", "-c", block.code], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"{where} failed:\n{block.code}\n{proc.stdout}\n{proc.stderr}"
            assert "Traceback" not in proc.stderr, f"{where} printed a traceback:\n{proc.stderr}"
    finally:
        active = api.active_run()
        if active is not None:
            active.finish("FAILED")
        api.close_all()


BLOCKS = readme_blocks(README.read_text())


def test_the_readme_has_runnable_blocks_and_few_marked_not_run() -> None:
    runnable = [b for b in BLOCKS if b.not_run is None]
    skipped = [b for b in BLOCKS if b.not_run is not None]
    assert {b.lang for b in runnable} == {"python", "bash"}
    assert all(b.not_run for b in skipped), "a <!-- not run: --> marker needs its reason"
    assert len(skipped) <= 4, [f"README.md:{b.line}: {b.not_run}" for b in skipped]


def test_every_readme_block_runs_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_blocks([b for b in BLOCKS if b.not_run is None], tmp_path, monkeypatch)
