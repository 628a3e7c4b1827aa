"""The loopml demo: check and split digits, train a small CNN, track it, register, export, quantize and serve it,
then close the loop on shifted traffic.

The loop: a new office starts sending a quarter of the traffic, its digits slanted and written with a thicker
pen; the server's OOD gate abstains on most of them, the monitor's check fires an alert on the abstention rate,
the labeling queue picks the answers to label, a simulated annotator labels them from the ground truth over
POST /v1/feedback, the champion is fine-tuned on the labels (the alert as the cause), compared with the challenger
on the same rows, and the challenger promoted: the server, following digits@production, swaps to it. Accuracy is
measured before and after on digits held out from everything.

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
from typing import TYPE_CHECKING, Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import loopml
from loopml import data
from loopml.models import registry
from loopml.models.nets import DigitsCNN
from loopml.models.report import versions_table
from loopml.train import Checkpoint, EarlyStopping, ProgressBar, Trainer

EPOCHS = int(os.environ.get("LOOPML_DEMO_EPOCHS", "8"))
# the champion's formats; tests/test_demo.py leaves out pte (its ExecuTorch export alone takes 10-17 s here;
# tests/models/test_export_pte.py tests it)
FORMATS = tuple(os.environ.get("LOOPML_DEMO_FORMATS", "pt2,torch,onnx,pte").split(","))
BATCH_SIZE = 64
LR = 3e-3
SEED = 0
FUTURE = 0.3            # digits kept apart from training: the traffic of the future and the held-out digits
SHARE = 0.25            # the new office's share of the traffic after the shift
REQUEST_ROWS = 4        # digits per request
AFTER_REPEAT = 3        # the traffic after the shift sends each traffic digit this many times
ABSTAIN_ALERT = 0.05    # the alert line on the abstention rate (the gate abstains on 1% of normal digits)
QUEUE_SIZE = 300        # items the labeling queue aims for (10% of them the random audit slice)
RETRAIN_EPOCHS = 10     # fine-tuning the champion on the labels plus a replay of its training rows
ANNOTATOR = "simulated-annotator"

if TYPE_CHECKING:
    import httpx

    from loopml.serve import ModelServer


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def serve_and_probe(server: "ModelServer", x_test: "np.ndarray", console: Console) -> dict[str, dict[str, int]]:
    """Send normal, noisy and rotated digits to the served digits@production: how many abstain?"""
    import httpx

    rng = np.random.default_rng(SEED)
    probes = {
        "normal test digits": x_test,
        "Gaussian noise": rng.uniform(0, 1, size=x_test.shape).astype(np.float32),
        "digits rotated 90°": np.ascontiguousarray(np.rot90(x_test, k=1, axes=(2, 3))),
    }
    counts: dict[str, dict[str, int]] = {}
    console.print(f"serving digits@production at {server.url} (POST /v1/models/digits/predict), following the alias")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for name, x in probes.items():
            answers = client.post("/v1/models/digits/predict", json={"inputs": x.tolist()}).json()["results"]
            abstained = sum(a["status"] == "abstain" for a in answers)
            counts[name] = {"answered": len(answers) - abstained, "abstained": abstained}
    table = Table("inputs sent", "answered", "abstained (\"I don't know\")", title="the model server's OOD gate")
    for name, c in counts.items():
        table.add_row(name, str(c["answered"]), str(c["abstained"]))
    console.print(table)
    return counts


# ---------------------------------------------------------------- the closed loop

def new_office(img: "np.ndarray", *, slant: float = 0.3) -> "np.ndarray":
    """An 8x8 digit as the new office writes it: slanted (a shear of ``slant``) and with a thicker pen (2x2 grey dilation).

    The same shift as benchmarks/loop.py's: the champion's accuracy on such digits falls to about half.
    """
    from scipy import ndimage

    c = (img.shape[1] - 1) / 2.0
    slanted = ndimage.affine_transform(img, np.array([[1.0, 0.0], [slant, 1.0]]), offset=(0.0, -slant * c), order=1,
                                       mode="grid-constant")
    return np.clip(np.maximum(slanted, ndimage.grey_dilation(slanted, size=(2, 2))), 0.0, 1.0)


def shifted(x: "np.ndarray", rng: "np.random.Generator", share: float) -> "tuple[np.ndarray, np.ndarray]":
    """``x`` (N x 1 x 8 x 8) with ``share`` of its rows written by the new office; (inputs, which rows are new)."""
    new = rng.random(len(x)) < share
    out = x.copy()
    for i in np.flatnonzero(new):
        out[i, 0] = new_office(x[i, 0])
    return out, new


def send(client: "httpx.Client", x: "np.ndarray", progress: Progress, what: str) -> list[dict[str, Any]]:
    """Send ``x`` as requests of REQUEST_ROWS rows; one dict per row: request id, row, version, status, prediction."""
    rows: list[dict[str, Any]] = []
    task = progress.add_task(what, total=len(x))
    for start in range(0, len(x), REQUEST_ROWS):
        batch = x[start : start + REQUEST_ROWS]
        answer = client.post("/v1/models/digits/predict", json={"inputs": batch.tolist()})
        answer.raise_for_status()
        body = answer.json()
        for r, item in enumerate(body["results"]):
            rows.append({"request_id": body["request_id"], "row": r, "version": body["version"], **item})
        progress.advance(task, len(batch))
    return rows


def follow_swap(server: "ModelServer", x: "np.ndarray", version: int) -> dict[str, Any]:
    """Keep sending requests (rows of ``x``) until one is answered by ``version``: how long, how many, how many failed.

    The server polls the alias (``poll_interval``) and swaps in the new version once loaded and warmed up; the
    requests are the poll, no sleep.
    """
    import httpx

    started = time.perf_counter()
    sent = failed = 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while True:
            k = sent % (len(x) - REQUEST_ROWS)
            answer = client.post("/v1/models/digits/predict", json={"inputs": x[k : k + REQUEST_ROWS].tolist()})
            sent += 1
            if answer.status_code != 200:
                failed += 1
            elif answer.json()["version"] == version:
                return {"seconds": time.perf_counter() - started, "requests": sent, "failed": failed}
            if time.perf_counter() - started > 120:
                raise SystemExit(f"the server did not swap to version {version} within 2 minutes")


def accuracy(ref: str, x: "np.ndarray", y: "np.ndarray") -> float:
    return float((loopml.load_model(ref).predict(x) == y).mean())


def closed_loop(server: "ModelServer", traffic: "data.Dataset", held: "data.Dataset", console: Console) -> dict[str, Any]:
    """Shifted traffic -> the monitor's alert -> the queue -> labels -> retrain -> compare -> promote -> served."""
    import httpx

    from loopml.loop.compare import compare
    from loopml.loop.promote import promote
    from loopml.loop.queue import build_queue, queue_items
    from loopml.loop.retrain import retrain
    from loopml.monitor import alerts
    from loopml.monitor.watch import check
    from loopml.store.monitoring import MonitorLog
    from loopml.tracking.api import database_for

    rng = np.random.default_rng(SEED + 1)
    x_traffic, y_traffic = traffic.x.numpy(), traffic.y.numpy()
    x_held, y_held = held.x.numpy(), held.y.numpy()
    x_office = np.stack([new_office(img[0])[None] for img in x_held]).astype(np.float32)
    console.rule("[bold]the closed loop[/bold]")
    console.print(f"a new office starts sending {SHARE:.0%} of the traffic: digits slanted and written with a thicker pen")
    rule = alerts.add_rule("digits@production", "abstentions", metric="abstention_rate", above=ABSTAIN_ALERT)
    console.print(f"alert rule [bold]{rule.name}[/bold]: abstention_rate above {rule.threshold:g} on digits@production "
                  "(the gate is calibrated to abstain on 1% of normal digits)")

    before_order = rng.permutation(len(x_traffic))
    after_order = rng.permutation(np.tile(np.arange(len(x_traffic)), AFTER_REPEAT))
    x_after, is_new = shifted(x_traffic[after_order], rng, SHARE)
    truth: dict[tuple[str, int], int] = {}
    with httpx.Client(base_url=server.url, timeout=30) as client, _progress(console) as progress:
        before = send(client, x_traffic[before_order], progress, "traffic before the shift")
        since = time.time()  # the shift begins
        after = send(client, x_after, progress, f"traffic after the shift ({SHARE:.0%} new office)")
    for answer, y in zip(before + after, np.concatenate([y_traffic[before_order], y_traffic[after_order]])):
        truth[(answer["request_id"], answer["row"])] = int(y)
    abstained = sum(a["status"] == "abstain" for a in after)
    console.print(f"sent {len(before)} digits before the shift and {len(after)} after ({int(is_new.sum())} from the new "
                  f"office) in requests of {REQUEST_ROWS}; {abstained} answers after the shift were \"I don't know\"")

    server.requestlog.flush(timeout=30)  # the request log is written in the background: all of it, before the check
    result = check("digits@production", window=None, last=-(-len(after) // REQUEST_ROWS))  # the requests after the shift
    table = Table("metric", "value", title=f"monitor: one check cycle over the newest {result.requests} requests")
    for metric, value in result.values.items():
        table.add_row(metric, "-" if value is None else f"{value:.3f}")
    console.print(table)
    for alert in result.alerts:
        console.print(f"[bold red]alert[/bold red] {escape(alert.message)}")
    if not result.alerts:
        raise SystemExit("the monitor fired no alert: the demo's shift is too weak for its rule")
    alert = result.alerts[0]

    queue = build_queue("digits@production", size=QUEUE_SIZE, audit=0.1, since=since, seed=SEED)
    console.print(f"labeling queue: {sum(queue.open.values())} items, by reason: "
                  + ", ".join(f"{reason} {n}" for reason, n in queue.open.items() if n))

    items = queue_items("digits", status="open", limit=QUEUE_SIZE + 50)
    with httpx.Client(base_url=server.url, timeout=30) as client, _progress(console) as progress:
        task = progress.add_task("the simulated annotator labels the queue (POST /v1/feedback)", total=len(items))
        for item in items:
            y = truth[(item["request_id"], item["row"])]
            client.post("/v1/feedback", json={"request_id": item["request_id"], "row": item["row"], "label": str(y),
                                              "annotator": ANNOTATOR}).raise_for_status()
            progress.advance(task)
    console.print(f"{len(items)} labels by {ANNOTATOR}, answered from the ground truth")

    # the cause, as `loopml loop run` records it: the alert (its stored id) that started the loop
    (fired,) = [a for a in MonitorLog(database_for(None, "The demo's loop")).alerts("digits", version=alert.version)
                if a["name"] == alert.rule]
    cause = {"alerts": [{"id": int(fired["id"]), "rule": alert.rule, "metric": alert.metric, "value": alert.value}]}
    # labels=None: the champion's agreed labels with their logged inputs (stored as a dataset, lineage both ways)
    challenger, report = retrain("digits@production", None, epochs=RETRAIN_EPOCHS, cause=cause, seed=SEED,
                                 progress=True)
    console.print(f"retrained [bold]{challenger.ref}[/bold] from {report.champion}: fine-tuned on {report.labels - report.recent} "
                  f"labels + {report.replay} replayed training rows ({report.recent} labels held out to compare on)")

    comparison = compare("digits@production", challenger.ref, cause=cause)
    table = Table("set", "rows", f"{comparison.champion}", f"{comparison.challenger}", "only champion right",
                  "only challenger right", "p-value", "passed", title="champion vs challenger (exact McNemar, one-sided)")
    for part in (comparison.test, comparison.recent):
        if part is not None:
            table.add_row(part.set, str(part.rows), f"{part.champion_accuracy:.3f}", f"{part.challenger_accuracy:.3f}",
                          str(part.champion_only), str(part.challenger_only), f"{part.p_value:.2g}",
                          "yes" if part.passed else "no")
    console.print(table)
    console.print(f"decision: [bold]{comparison.decision}[/bold] ({escape('; '.join(comparison.reasons))})")
    swap: dict[str, Any] = {}
    if comparison.promote:
        event = promote(comparison, cause=cause)
        console.print(f"promoted: digits@production {event.from_version} -> {event.to_version} (recorded in the alias history)")
        swap = follow_swap(server, x_office, challenger.version)
        console.print(f"the server swapped to version {challenger.version} after {swap['seconds']:.1f} s: traffic kept flowing "
                      f"meanwhile ({swap['requests']} requests, {swap['failed']} failed)")
    else:
        console.print(f"{challenger.ref} is not promoted: digits@production stays at {comparison.champion}")
    champion_ref, challenger_ref = comparison.champion, challenger.ref
    table = Table("held-out digits", "rows", champion_ref, challenger_ref, title="accuracy before and after the loop")
    mixed_new = rng.random(len(x_held)) < SHARE
    x_mixed = np.where(mixed_new[:, None, None, None], x_office, x_held)
    scores: dict[str, tuple[float, float]] = {}
    for name, x in (("the new office's", x_office), (f"the traffic after the shift ({SHARE:.0%} new office)", x_mixed),
                    ("the other offices' (as before)", x_held)):
        scores[name] = (accuracy(champion_ref, x, y_held), accuracy(challenger_ref, x, y_held))
        table.add_row(name, str(len(x)), f"{scores[name][0]:.3f}", f"{scores[name][1]:.3f}")
    console.print(table)
    why(server, after, x_after, is_new, comparison.champion, challenger_ref, console)
    return {"alert": alert, "queue": queue, "labels": len(items), "challenger": challenger, "comparison": comparison,
            "swap": swap, "accuracy": scores}


def why(server: "ModelServer", after: list[dict[str, Any]], x_after: "np.ndarray", is_new: "np.ndarray", champion: str,
        challenger: str, console: Console) -> None:
    """One of the new office's digits the champion said "I don't know" to, explained by both versions (integrated
    gradients): the pixels that pushed each toward its answer (red) and against it (blue).

    The server explains the logged request with the version that answered it (the champion, swapped out since); the
    library gives the same numbers and draws them."""
    import httpx

    picks = [i for i, a in enumerate(after) if is_new[i] and a["status"] == "abstain"] or [int(np.flatnonzero(is_new)[0])]
    i = picks[0]
    row = x_after[i : i + 1]
    logged = httpx.get(f"{server.url}/v1/predictions/{after[i]['request_id']}/explanation",
                       params={"method": "ig", "row": after[i]["row"]}, timeout=60)
    logged.raise_for_status()
    served = logged.json()
    served = served["results"][0] if "results" in served else served
    home = Path(os.environ.get("LOOPML_HOME", ".loopml"))
    np.save(home / "new_office_digit.npy", row)
    table = Table(title=f"why: a digit from the new office (request {after[i]['request_id']}, row {after[i]['row']}), "
                  "integrated gradients; red pushed toward the answer, blue against it")
    cells = []
    for ref in (champion, challenger):
        e = loopml.explain(ref, row, method="integrated_gradients")
        p = np.exp(e.outputs[0] - e.outputs[0].max())
        table.add_column(f"{ref} answers {e.target_label(0)} ({p[int(e.target[0])] / p.sum():.2f}), delta {e.delta[0]:.1e}")
        cells.append(e.heatmap_text(0))
        (home / f"why-{ref.replace('/', '-')}.png").write_bytes(e.png(0))
        if ref == champion:
            diff = float(np.abs(np.asarray(served["attributions"], dtype=np.float32) - e.attributions[0]).max())
    table.add_row(*cells)
    console.print(table)
    console.print(f"GET /v1/predictions/{after[i]['request_id']}/explanation?method=ig&row={after[i]['row']} explained the "
                  f"logged request with {served.get('ref', champion)}, the version that answered it: the same attributions "
                  f"(largest difference {diff:.1e})")


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    # piped output (make demo | tee, CI logs) gets the wide tables a terminal would
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    started = time.perf_counter()

    digits = data.load("digits")  # 1,797 images of 1 x 8 x 8, 10 classes
    # 30% kept apart: the digits of the future, half sent as traffic, half held out to measure accuracy on
    collected, _, future = data.split(digits, val=0.0, test=FUTURE, stratify=True, seed=SEED)
    assert future is not None
    traffic, _, held = data.split(future, val=0.0, test=0.5, stratify=True, seed=SEED)
    assert held is not None
    parts = data.split(collected, val=0.15, test=0.15, stratify=True, seed=SEED)
    report = data.check(parts)  # missing values, duplicates, conflicting labels, imbalance, leakage between parts
    console.print(report)
    report.raise_if_errors(override_hint="fix the data, or pass check_data=False to Trainer.fit")

    model = DigitsCNN()  # importable, so the version keeps its torch format (TQT and retrain rebuild it)
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
            init_args={"channels": 16}, formats=FORMATS,
            description="examples/digits_demo.py",
            ood=(parts.train, parts.val),  # fit the out-of-distribution gate: "I don't know" instead of a guess
        )
    registry.set_alias("digits", "production", version.version)
    console.print(f"registered [bold]{version.ref}[/bold] (@production) with formats {', '.join(sorted(version.files))}")
    console.print("quantizing: static int8 (ONNX Runtime QDQ), TQT int4 (trained power-of-2 thresholds, fine-tuned)")
    # on the demo's own split; a file, (x, y), or nothing at all (the rows logged with the run) work too
    variants = [loopml.models.quantize(version.ref, method="static", bits=8, data=parts, seed=SEED),
                loopml.models.quantize(version.ref, method="tqt", bits=4, data=parts, seed=SEED)]

    from loopml.serve import ModelServer

    # follows the alias: a promotion swaps the served version (polled every 0.2 s; the default is 5 s)
    server = ModelServer("digits@production", port=0, poll_interval=0.2).start().wait_ready(120)
    try:
        serve_and_probe(server, parts.test.x.numpy(), console)
        loop = closed_loop(server, traffic, held, console)
    finally:
        server.stop()
    run.refresh()
    console.print(versions_table(registry.list_versions("digits")))
    office = loop["accuracy"]["the new office's"]
    mixed = next(v for k, v in loop["accuracy"].items() if k.startswith("the traffic after"))
    old = loop["accuracy"]["the other offices' (as before)"]
    challenger = loop["challenger"]
    console.print(
        f"\n[bold green]done[/bold green] in {time.perf_counter() - started:.1f}s: run {run.id} {run.status}, "
        f"val_accuracy {run.metrics['val_accuracy']:.4f}, test_accuracy {run.metrics['test_accuracy']:.4f}"
    )
    console.print(
        f"the loop: accuracy on the new office's digits {office[0]:.3f} -> {office[1]:.3f}, on the traffic after the shift "
        f"{mixed[0]:.3f} -> {mixed[1]:.3f}, on the other offices' {old[0]:.3f} -> {old[1]:.3f} "
        f"(digits/{version.version} -> {challenger.ref}, held-out digits)"
    )
    home = Path(os.environ.get("LOOPML_HOME", ".loopml"))
    alert = loop["alert"]
    console.print("\nWhere to look:")
    console.print(f"  store      {loopml.get_tracking_uri()}")
    console.print(f"  artifacts  {home / 'artifacts' / run.id}")
    console.print(f"  this run   .venv/bin/loopml runs show {run.id}")
    console.print("  all runs   .venv/bin/loopml runs list --experiment digits-demo")
    console.print(f"  models     .venv/bin/loopml models show digits   ({', '.join(v.ref for v in [version, *variants, challenger])})")
    console.print("  serve it   .venv/bin/loopml serve digits@production   then POST http://127.0.0.1:8080/v1/models/digits/predict")
    console.print("  the UI/API .venv/bin/loopml ui --port 5000   (experiments, runs, curves, models in a browser), then:")
    console.print("    labeling   http://127.0.0.1:5000/ui/labeling?name=digits   (the queue, the labels, keyboard only)")
    console.print(f"    monitoring http://127.0.0.1:5000/ui/monitoring?name=digits&version={alert.version}   (the alert, the drift)")
    console.print(f"    model      http://127.0.0.1:5000/ui/model?name=digits&version={challenger.version}   "
                  "(the challenger, its comparison, the alias history)")
    console.print(f"  why        .venv/bin/loopml explain digits@production --input {home / 'new_office_digit.npy'} --png why.png"
                  f"   (and {home}/why-digits-*.png)")
    console.print("  the loop   .venv/bin/loopml loop history digits@production   (each step, its cause)")
    console.print(f"             .venv/bin/loopml compare digits/{version.version} {challenger.ref}   (the comparison, with 95% intervals)")
    console.print("             .venv/bin/loopml loop run digits@production   (all the steps at once, from cron)")
    console.print("  labels     .venv/bin/loopml label list digits --status labelled")


if __name__ == "__main__":
    main()
