"""``loopml explain``: why a registered version answered what it answered, from a shell (see :mod:`loopml.explanations`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from .cli_common import StoreOpt, console, friendly
from .errors import ArgumentError
from .files import atomic_write

if TYPE_CHECKING:
    from .explanations import Explanation

__all__ = ["explain_command", "read_inputs"]

INPUT_HELP = ("The inputs: a .npy array (one row or a batch), an .npz with an array 'x', a .json file (a list of rows, "
              "records by column name, or a predict body {\"inputs\": ...}) or a .csv table whose columns are the "
              "model's features.")


def read_inputs(path: str) -> Any:
    """What ``--input`` names, as the version's signature will parse it (an array, rows or records)."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise ArgumentError(f"--input should be an existing file; {path!r} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as archive:
                if "x" not in archive.files:
                    raise ArgumentError(f"--input {path!r} should hold an array named 'x'; it has {sorted(archive.files)}")
                return archive["x"]
        if suffix == ".json":
            doc = json.loads(p.read_text(encoding="utf-8"))
            return doc["inputs"] if isinstance(doc, dict) and "inputs" in doc else doc
        if suffix == ".csv":
            import pandas as pd

            return pd.read_csv(p)
    except ArgumentError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # a damaged file: say which and why
        raise ArgumentError(f"--input {path!r} does not read as a {suffix} file: {exc}") from exc
    raise ArgumentError(f"--input should be a .npy, .npz, .json or .csv file; got {path!r}")


def _parse_target(value: Optional[str]) -> Any:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def _show(e: "Explanation", rows: list[int], k: int) -> None:
    import numpy as np
    from rich.table import Table

    con = console()
    options = ", ".join(f"{key} {val}" for key, val in e.options.items())
    con.print(f"{e.method.replace('_', ' ')} of {e.ref or 'the model'} ({e.format}), baseline {e.baseline}"
              + (f", {options}" if options else "") + f": {e.evaluations} evaluations, {e.seconds * 1000:.1f} ms",
              markup=False)
    for row in rows:
        head = f"row {row}"
        label = e.target_label(row)
        if label is not None:
            head += f": explained class {label}"
            if e.outputs.ndim == 2 and e.outputs.shape[1] > 1:
                z = e.outputs[row].astype(np.float64)
                p = np.exp(z - z.max())
                head += f" (probability {p[int(e.target[row])] / p.sum():.3f})"  # type: ignore[index]
        if e.delta is not None:
            head += f", delta {float(e.delta[row]):.3g}"
        con.print(head, markup=False)
        heat = e.heatmap_text(row)
        if heat is not None:
            con.print(heat, end="")
        top = e.top(k, row)
        t = Table("", "feature", "value", "attribution")
        for r in top.itertuples():
            style = "red" if r.sign == "+" else "blue"
            t.add_row(f"[{style}]{r.sign}[/{style}]", str(r.feature), f"{r.value:.4g}", f"[{style}]{r.attribution:+.4g}[/{style}]")
        con.print(t)


@friendly
def explain_command(
    ref: str = typer.Argument(..., help="The version: NAME@ALIAS, NAME/VERSION or NAME (the newest)."),
    input: str = typer.Option(..., "--input", "-i", help=INPUT_HELP),
    method: str = typer.Option("integrated_gradients", "--method", "-m",
                               help="saliency, integrated_gradients (ig), gradient_shap (shap), deeplift, occlusion, feature_ablation."),
    target: Optional[str] = typer.Option(None, "--target", help="The class to explain: a name or an index (default: each row's predicted class)."),
    baseline: str = typer.Option("zeros", "--baseline", help="zeros, mean (the training mean) or blur (images)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Integrated gradients' steps (default 50)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="GradientSHAP's samples (default 20)."),
    window: Optional[str] = typer.Option(None, "--window", help="Occlusion's window, e.g. 2,2 (default: a quarter of each side)."),
    row: int = typer.Option(0, "--row", help="The row to show and draw (--png); --json has them all."),
    top: int = typer.Option(5, "--top", help="Strongest positive and negative features to list."),
    check: bool = typer.Option(False, "--check", help="Also test the attributions' faithfulness: does removing the top 10% "
                               "of values move the output more than removing random ones?"),
    as_json: bool = typer.Option(False, "--json", help="Print the explanation as JSON (the servers' shape)."),
    png: Optional[Path] = typer.Option(None, "--png", help="Write --row's picture here: the heat map over the image, or signed bars."),
    fmt: Optional[str] = typer.Option(None, "--format", help="The stored format to explain (default: torch, else pt2, else the first)."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Explain a registered version's answers: which input values moved the output, and which way.

    Examples:

      loopml explain digits@production --input x.npy --method ig

      loopml explain digits@production -i x.npy -m occlusion --png why.png --check

      loopml explain churn/3 -i customers.csv -m feature_ablation --target yes --json
    """
    from .explanations import explain

    inputs = read_inputs(input)
    win: Any = None
    if window is not None:
        try:
            win = [int(v) for v in window.split(",")]
        except ValueError:
            raise ArgumentError(f"--window should be sizes separated by commas, e.g. 2,2; got {window!r}") from None
    from rich.console import Console

    with Console(stderr=True).status(f"explaining with {method}...", spinner="dots"):  # silent when not a terminal
        e = explain(ref, inputs, method=method, target=_parse_target(target), baseline=baseline, steps=steps,
                    samples=samples, window=win, check=check, format=fmt, tracking_uri=store)
    if not 0 <= row < len(e.inputs):
        raise ArgumentError(f"--row should be a row of the input, 0 to {len(e.inputs) - 1}; got {row}")
    if png is not None:
        atomic_write(png, e.png(row))
    if as_json:
        typer.echo(json.dumps(e.to_dict(k=top)))
    else:
        _show(e, [row], top)
        if e.faithfulness is not None:
            console().print(f"faithfulness: {e.faithfulness}", markup=False)
        if png is not None:
            console().print(f"wrote {png}", markup=False)
