"""docs/explain.md's examples run, in order, as a reader would type them (as tests/test_readme.py runs the README's).

The guide trains a small digits CNN and a table MLP, registers them and explains them every
way it describes, so a renamed option, a changed default or a message that no longer says
what the guide quotes fails here rather than in a reader's notebook.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import pytest

from tests.deps import need
from tests.test_readme import _loopml_on_path, readme_blocks

need("captum.attr", extra="explain")

DOC = Path(__file__).resolve().parents[1] / "docs" / "explain.md"


def test_the_explain_guide_runs_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loopml.tracking import api

    blocks = readme_blocks(DOC.read_text())
    runnable = [b for b in blocks if b.not_run is None]
    assert len(runnable) >= 10 and all(b.not_run for b in blocks if b.not_run is not None)
    monkeypatch.setenv("LOOPML_HOME", str(tmp_path / "home"))
    for var in ("LOOPML_TRACKING_URI", "LOOPML_ARTIFACT_ROOT", "LOOPML_SERVER_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    env = _loopml_on_path(tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    try:
        for block in runnable:
            where = f"docs/explain.md:{block.line} ({block.section})"
            if block.lang == "python":
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # the guide's examples warn about nothing
                    warnings.filterwarnings("ignore", category=DeprecationWarning, module="(?!loopml)")
                    exec(compile(block.code, where, "exec"), namespace)  # noqa: S102 - the guide's own example
                continue
            proc = subprocess.run(["bash", "-eu", "-c", block.code], check=False, cwd=work, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == 0, f"{where} failed:\n{block.code}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            assert "Traceback" not in proc.stderr, f"{where} printed a traceback:\n{proc.stderr}"
    finally:
        active = api.active_run()
        if active is not None:
            active.finish("FAILED")
        api.close_all()
    assert (work / "why.png").stat().st_size > 1000  # the CLI wrote the picture
