"""``loopml explain``: a registered version explained from a shell, as text, JSON and a picture."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.deps import need

need("captum.attr", extra="explain")

import loopml  # noqa: E402
from loopml.cli import app  # noqa: E402

from ..models.nets import CNN, MLP  # noqa: E402

WIDE = {"COLUMNS": "200"}


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=WIDE)
    return result.exit_code, result.output


@pytest.fixture
def versions(use_store: str, tmp_path: Path) -> dict[str, object]:
    torch.manual_seed(0)
    cnn = CNN().eval()
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    loopml.register(cnn, "cnn", input_example=x, class_names=[str(i) for i in range(10)], formats=["torch"])
    mlp = MLP(n_in=3, hidden=8, n_out=2).eval()
    rows = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    loopml.register(mlp, "churn", input_example=rows, class_names=["no", "yes"], feature_names=["age", "plan", "spend"],
                    init_args={"n_in": 3, "hidden": 8, "n_out": 2}, formats=["torch"])
    np.save(tmp_path / "x.npy", x)
    return {"cnn": cnn, "x": x, "mlp": mlp, "rows": rows}


def test_explain_prints_the_class_delta_and_top_features(versions: dict[str, object], tmp_path: Path) -> None:
    code, out = _cli("explain", "cnn@latest", "--input", str(tmp_path / "x.npy"), "--method", "ig", "--row", "1",
                     "--png", str(tmp_path / "why.png"), "--check", "--store", loopml.get_tracking_uri())
    assert code == 0, out
    e = loopml.explain(versions["cnn"], versions["x"], method="ig")  # type: ignore[arg-type]
    assert f"row 1: explained class {e.target_label(1)}" in out and "delta" in out
    best = e.top(5, row=1)
    assert best.feature.iloc[0] in out  # the strongest feature is listed
    assert (tmp_path / "why.png").read_bytes().startswith(b"\x89PNG")
    assert re.search(r"faithfulness: removing the top 10% of values \(6\) lowers .* faithful on \d of 4 rows", out)


def test_explain_json_is_the_servers_shape_and_equals_the_library(versions: dict[str, object], tmp_path: Path) -> None:
    csv = tmp_path / "rows.csv"
    import pandas as pd

    pd.DataFrame(versions["rows"], columns=["age", "plan", "spend"]).to_csv(csv, index=False)  # type: ignore[call-overload]
    code, out = _cli("explain", "churn/1", "-i", str(csv), "-m", "feature_ablation", "--target", "yes", "--json")
    assert code == 0, out
    doc = json.loads(out)
    want = loopml.explain(versions["mlp"], versions["rows"], method="feature_ablation", target=1)  # type: ignore[arg-type]
    assert doc["method"] == "feature_ablation" and doc["ref"] == "churn/1" and len(doc["results"]) == 5
    got = np.array([r["attributions"] for r in doc["results"]])
    np.testing.assert_allclose(got, want.attributions, atol=1e-6)
    assert {r["target"] for r in doc["results"]} == {"yes"}
    assert doc["results"][0]["top"]["positive"][0]["feature"] in {"age", "plan", "spend"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "missing.npy"], "should be an existing file"),
        (["--method", "lime"], "should be one of saliency"),
        (["--target", "42"], "class index from 0 to 9"),
        (["--row", "9"], "--row should be a row of the input, 0 to 3"),
        (["--window", "2,x", "--method", "occlusion"], "--window should be sizes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(versions: dict[str, object], tmp_path: Path, args: list[str], message: str) -> None:
    base = ["explain", "cnn/1", "--input", str(tmp_path / "x.npy")]
    if args[0] == "--input":
        base = base[:3]
        args = [str(tmp_path / args[1])]
    code, out = _cli(*base, *args)
    assert code == 2 and message in out and "Traceback" not in out
