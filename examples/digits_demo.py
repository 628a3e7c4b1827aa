"""The loopml demo: check and split digits, train a small CNN, track it, register, export and quantize it.

Run it with `make demo` (creates .venv, installs torch==2.13.0 and loopml), or
`python examples/digits_demo.py` inside that environment. Everything lands in
./.loopml (or LOOPML_HOME / LOOPML_TRACKING_URI).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import loopml
from loopml import data
from loopml.models import registry
from loopml.models.report import versions_table
from loopml.models.nets import DigitsCNN  # importable, so the version keeps its torch format (TQT fine-tunes it)
from loopml.train import Checkpoint, EarlyStopping, ProgressBar, Trainer

EPOCHS = int(os.environ.get("LOOPML_DEMO_EPOCHS", "8"))
BATCH_SIZE = 64
LR = 3e-3
SEED = 0


def serve_and_probe(x_test: "np.ndarray", console: Console) -> dict[str, dict[str, int]]:
    """Serve digits@production over HTTP and send normal, noisy and rotated digits: how many abstain?"""
    import httpx

    from loopml.serve import ModelServer

    rng = np.random.default_rng(SEED)
    probes = {
        "normal test digits": x_test,
        "Gaussian noise": rng.uniform(0, 1, size=x_test.shape).astype(np.float32),
        "digits rotated 90°": np.ascontiguousarray(np.rot90(x_test, k=1, axes=(2, 3))),
    }
    server = ModelServer("digits@production", port=0).start().wait_ready(120)
    counts: dict[str, dict[str, int]] = {}
    try:
        console.print(f"serving digits@production at {server.url} (POST /v1/models/digits/predict)")
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for name, x in probes.items():
                answers = client.post("/v1/models/digits/predict", json={"inputs": x.tolist()}).json()["results"]
                abstained = sum(a["status"] == "abstain" for a in answers)
                counts[name] = {"answered": len(answers) - abstained, "abstained": abstained}
    finally:
        server.stop()
    table = Table("inputs sent", "answered", "abstained (\"I don't know\")", title="the model server's OOD gate")
    for name, c in counts.items():
        table.add_row(name, str(c["answered"]), str(c["abstained"]))
    console.print(table)
    return counts


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    # piped output (make demo | tee, CI logs) gets the wide tables a terminal would
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    started = time.perf_counter()

    digits = data.load("digits")  # 1,797 images of 1 x 8 x 8, 10 classes
    parts = data.split(digits, val=0.15, test=0.15, stratify=True, seed=SEED)
    report = data.check(parts)  # missing values, duplicates, conflicting labels, imbalance, leakage between parts
    console.print(report)
    report.raise_if_errors(override_hint="fix the data, or pass check_data=False to Trainer.fit")

    model = DigitsCNN()
    with loopml.start_run(experiment="digits-demo", tags={"source": "examples/digits_demo.py"}) as run:
        console.print(f"run [bold]{run.id}[/bold] in experiment digits-demo, tracking at {loopml.get_tracking_uri()}")
        data.log_check(run, report, name="data_check_split.json")  # all three parts; fit logs its train/val check
        data.log_dataset(run, parts.test, role="test")  # train and val are linked by the Trainer
        with tempfile.TemporaryDirectory() as ckpt:
            trainer = Trainer(
                model,
                optimizer=torch.optim.Adam(model.parameters(), lr=LR),
                metrics=["accuracy"],
                callbacks=[ProgressBar(), Checkpoint(ckpt, monitor="val_accuracy", mode="max"),
                           EarlyStopping(monitor="val_loss", patience=3)],
                seed=SEED,
            )
            trainer.fit(parts.train, val=parts.val, epochs=EPOCHS, batch_size=BATCH_SIZE)
        test = trainer.evaluate(parts.test)
        run.log({f"test_{k}": v for k, v in test.items() if isinstance(v, float)})
        version = loopml.register(
            model, "digits", input_example=parts.train.x[:8], class_names=[str(d) for d in range(10)],
            init_args={"channels": 16}, formats=("pt2", "torch", "onnx", "pte"),
            description="examples/digits_demo.py",
            ood=(parts.train, parts.val),  # fit the out-of-distribution gate: "I don't know" instead of a guess
        )
    registry.set_alias("digits", "production", version.version)
    console.print(f"registered [bold]{version.ref}[/bold] (@production) with formats {', '.join(sorted(version.files))}")
    console.print("quantizing: static int8 (ONNX Runtime QDQ), TQT int4 (trained power-of-2 thresholds, fine-tuned)")
    # on the demo's own split; a file, (x, y), or nothing at all (the rows logged with the run) work too
    variants = [loopml.models.quantize(version.ref, method="static", bits=8, data=parts, seed=SEED),
                loopml.models.quantize(version.ref, method="tqt", bits=4, data=parts, seed=SEED)]

    served = serve_and_probe(parts.test.x.numpy(), console)
    run.refresh()
    console.print(versions_table(registry.list_versions("digits")))
    console.print(
        f"\n[bold green]done[/bold green] in {time.perf_counter() - started:.1f}s: run {run.id} {run.status}, "
        f"val_accuracy {run.metrics['val_accuracy']:.4f}, test_accuracy {run.metrics['test_accuracy']:.4f}"
    )
    home = Path(os.environ.get("LOOPML_HOME", ".loopml"))
    console.print("\nWhere to look:")
    console.print(f"  store      {loopml.get_tracking_uri()}")
    console.print(f"  artifacts  {home / 'artifacts' / run.id}")
    console.print(f"  this run   .venv/bin/loopml runs show {run.id}")
    console.print("  all runs   .venv/bin/loopml runs list --experiment digits-demo")
    console.print(f"  models     .venv/bin/loopml models show digits   ({', '.join(v.ref for v in [version, *variants])})")
    console.print("  serve it   .venv/bin/loopml serve digits@production   then POST http://127.0.0.1:8080/v1/models/digits/predict")
    console.print("  the UI/API .venv/bin/loopml ui   (experiments, runs, curves, models in a browser)")


if __name__ == "__main__":
    main()
