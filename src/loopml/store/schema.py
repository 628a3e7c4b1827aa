"""The store's tables, as SQLAlchemy Core metadata.

One schema for SQLite and PostgreSQL. The Alembic migrations in
``store/migrations`` create exactly these tables (a test checks that
``metadata`` and the migrated database agree). Later stages (datasets, model
versions, predictions, feedback, alerts) add their tables through new
migrations; runs already carry the columns they will point at (ids are
strings, so a prediction or a dataset can refer to a run without a join
table).

Conventions:
- times are float seconds since the epoch (UTC);
- metric points are float64 values stored bit-exactly in blocks
  (``metric_blocks``); in ``latest_metrics`` a NaN is stored as NULL (SQLite
  cannot store NaN in a REAL column) and read back as NaN;
- run ids are 32-character hex UUIDs.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "HEAD_REVISION",
    "RUN_STATUSES",
    "alert_rules",
    "alerts",
    "artifacts",
    "dataset_predictions",
    "datasets",
    "experiment_tags",
    "experiments",
    "alias_events",
    "feedback",
    "label_queue",
    "latest_metrics",
    "loop_events",
    "metadata",
    "metric_blocks",
    "mlflow_logged_models",
    "model_aliases",
    "model_files",
    "model_versions",
    "models",
    "monitor_results",
    "params",
    "predictions",
    "run_datasets",
    "run_links",
    "runs",
    "tags",
]

# The newest Alembic revision. Opening a database at another revision asks
# the user to run `loopml db upgrade`. Kept here (not read from the migration
# scripts) so that opening a store does not import Alembic; a test pins it to
# the script directory's head.
HEAD_REVISION = "0008"

from .validation import KEY_LENGTH, RUN_STATUSES  # noqa: E402 - one number for columns and checks; one status list

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only aliases INTEGER PRIMARY KEY to the rowid; BIGINT would not autoincrement.
BigId = BigInteger().with_variant(Integer(), "sqlite")

experiments = Table(
    "experiments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(KEY_LENGTH), nullable=False),
    Column("description", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("deleted_at", Double, nullable=True),  # revision 0007: deleted (MLflow's lifecycle), restorable
    UniqueConstraint("name"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("experiment_id", BigId, ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(KEY_LENGTH), nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", Double, nullable=False),
    Column("end_time", Double, nullable=True),
    Column("heartbeat_at", Double, nullable=False),
    Column("parent_id", String(32), ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
    Column("git_commit", String(64), nullable=True),
    Column("git_dirty", Boolean, nullable=True),
    Column("host", String(KEY_LENGTH), nullable=True),
    Column("user", String(KEY_LENGTH), nullable=True),
    Column("command", Text, nullable=True),
    Column("deleted_at", Double, nullable=True),  # revision 0007: deleted (MLflow's lifecycle), restorable
    Index(None, "experiment_id", "start_time"),
    Index(None, "parent_id"),
)

params = Table(
    "params",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(KEY_LENGTH), primary_key=True),
    Column("value", Text, nullable=False),
)

tags = Table(
    "tags",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(KEY_LENGTH), primary_key=True),
    Column("value", Text, nullable=False),
)

# An experiment's tags (revision 0007; MLflow's clients set them, e.g. its note).
experiment_tags = Table(
    "experiment_tags",
    metadata,
    Column("experiment_id", BigId, ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(KEY_LENGTH), primary_key=True),
    Column("value", Text, nullable=False),
)

# What a run used and made besides loopml's datasets (revision 0007): MLflow's logged models as
# inputs and outputs (`ref` the model id, `step` an output's step) and MLflow's dataset inputs
# (`ref` "<digest>/<name>", `details` the dataset's JSON with its tags).
run_links = Table(
    "run_links",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(16), primary_key=True),  # "model_input", "model_output", "dataset_input"
    Column("ref", String(512), primary_key=True),
    Column("step", BigInteger, nullable=True),
    Column("details", Text, nullable=True),
)

# Every logged point, in blocks: one row per (run, key) per batch the writer
# wrote, `data` holding n int64 steps, n float64 timestamps and n float64
# values, little-endian (see store/points.py for why). No foreign key on
# purpose: the run's existence is checked when the run is opened.
metric_blocks = Table(
    "metric_blocks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("key", String(KEY_LENGTH), nullable=False),
    Column("n", Integer, nullable=False),
    Column("min_step", BigInteger, nullable=False),
    Column("max_step", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index(None, "run_id", "key", "id"),
)

# One row per (run, key): the newest point and the running min/max/count, kept
# by the writer so that filtering, sorting and the runs table never read
# `metric_blocks`.
latest_metrics = Table(
    "latest_metrics",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(KEY_LENGTH), primary_key=True),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", Double, nullable=False),
    Column("value", Double, nullable=True),  # NULL means NaN
    Column("min_value", Double, nullable=True),  # NULL: only NaN seen
    Column("max_value", Double, nullable=True),
    Column("count", BigInteger, nullable=False),
    Index(None, "key", "value"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", Double, nullable=False),
)

# One row per distinct dataset content (revision 0002). The fingerprint is
# the sha256 of the inputs and labels (loopml.data.fingerprint); schema and
# profile are JSON documents (NaN and infinities stored as null), the profile
# being the reference that drift monitoring compares against.
datasets = Table(
    "datasets",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("name", String(KEY_LENGTH), nullable=False),
    Column("task", String(16), nullable=False),
    Column("n_rows", BigInteger, nullable=False),
    Column("schema", Text, nullable=False),
    Column("profile", Text, nullable=False),
    Column("source", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    # revision 0006: the rows themselves, once per content, in the artifact store
    # (`_datasets/<fingerprint>.npz`, relative to the artifact root); NULL when not kept
    Column("stored_path", String(1024), nullable=True),
    Column("stored_size", BigInteger, nullable=True),
    Column("stored_sha256", String(64), nullable=True),  # of the file's bytes
    Column("origin", Text, nullable=True),  # JSON: how it was made (a file, labels of a model's requests, a merge)
)

# Which logged predictions (request id, row of its batch) a dataset's rows came from (revision
# 0006): a label dataset knows its answers, and a request knows the datasets it went into.
dataset_predictions = Table(
    "dataset_predictions",
    metadata,
    Column("fingerprint", String(64), ForeignKey("datasets.fingerprint", ondelete="CASCADE"), primary_key=True),
    Column("request_id", String(64), primary_key=True),
    Column("row", Integer, primary_key=True),
    Index(None, "request_id"),
)

# Which dataset a run used in which role (train, val, test, eval, ...).
run_datasets = Table(
    "run_datasets",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), primary_key=True),
    Column("fingerprint", String(64), ForeignKey("datasets.fingerprint"), nullable=False),
    Index(None, "fingerprint"),
)


# -- the model registry (revision 0003) -----------------------------------------
# A model is a name; a version is an immutable set of files (one per format:
# state dict, torch.export program, ONNX, ExecuTorch, quantized variants) with
# the JSON documents that describe it. Files live under the artifact root in
# `_models/<name>/<version>-<random>/`, copied from the source run's artifacts, so a
# version outlives its run (no foreign key to runs on purpose).
models = Table(
    "models",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("description", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("last_version", Integer, nullable=False),  # versions are never reused, even after a delete
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("name", String(128), ForeignKey("models.name", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("created_at", Double, nullable=False),
    Column("created_by", String(KEY_LENGTH), nullable=True),
    Column("run_id", String(32), nullable=True),
    Column("parent_version", Integer, nullable=True),  # a quantized variant's fp32 parent
    Column("description", Text, nullable=True),
    Column("tags", Text, nullable=False),  # JSON object of strings
    Column("signature", Text, nullable=False),  # JSON (loopml.models.signature)
    Column("model_spec", Text, nullable=True),  # JSON {"class_path", "init_args"}: rebuilds the torch module
    Column("metrics", Text, nullable=False),  # JSON: the source run's metrics when registered
    Column("lineage", Text, nullable=False),  # JSON: run id, dataset fingerprints by role, parent
    Column("profile", Text, nullable=True),  # JSON: the training data's profile (the drift reference)
    Column("measurements", Text, nullable=False),  # JSON: accuracy, latency, ... measured later
    Index(None, "run_id"),
)

model_files = Table(
    "model_files",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("format", String(32), primary_key=True),
    Column("path", String(1024), nullable=False),  # relative to the artifact root
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("details", Text, nullable=False),  # JSON
    Column("created_at", Double, nullable=False),
    ForeignKeyConstraint(
        ["name", "version"], ["model_versions.name", "model_versions.version"], ondelete="CASCADE"
    ),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("name", String(128), ForeignKey("models.name", ondelete="CASCADE"), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# Every alias move: from -> to (NULL from: created; NULL to: removed).
alias_events = Table(
    "alias_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=True),
    Column("at", Double, nullable=False),
    Column("by", String(KEY_LENGTH), nullable=True),
    Index(None, "name", "alias", "id"),
)


# -- the model server's request log (revision 0004) -----------------------------
# One row per answered prediction request (loopml.serve): `inputs` holds the
# request's input batch as .npy bytes (NULL when not sampled), `outputs` the
# JSON answer that was sent. No foreign key to model_versions on purpose: the
# log outlives a deleted version, and the server writes it in the background.
predictions = Table(
    "predictions",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("status", String(16), nullable=False),  # ok | abstain
    Column("rows", Integer, nullable=False),
    Column("latency_ms", Double, nullable=False),
    Column("ood_score", Double, nullable=True),  # the largest row score when a gate ran
    Column("inputs", LargeBinary, nullable=True),
    Column("outputs", Text, nullable=False),
    Index(None, "model", "version", "created_at"),
)

# True labels for past predictions (POST /v1/feedback); a later label for the
# same request is another row, the newest one counts.
feedback = Table(
    "feedback",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("label", Text, nullable=False),  # JSON
    Column("created_at", Double, nullable=False),
    # revision 0006: who labelled which row, how
    Column("row", Integer, nullable=True),  # the row of the request's batch; NULL: the whole request
    Column("annotator", String(KEY_LENGTH), nullable=True),
    Column("kind", String(8), nullable=False, server_default="label"),  # label | skip | none (none of the classes) | undo (withdraws the annotator's answer: store.labels)
    Column("seconds", Double, nullable=True),  # time the annotator took (the labeling page)
    Column("source", String(16), nullable=True),  # api | http | file | page
    Index(None, "request_id"),
)

# The labeling queue (revision 0006): one row per (model, request, row of the batch) picked for a
# person to label, with why it was picked; building the queue again never adds an item twice.
label_queue = Table(
    "label_queue",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("row", Integer, nullable=False),
    Column("reason", String(16), nullable=False),  # abstained | uncertain | disagreement | audit
    Column("score", Double, nullable=True),  # the uncertainty (margin or entropy) or disagreement that picked it
    Column("status", String(16), nullable=False),  # open | labelled | disputed | skipped
    Column("details", Text, nullable=False),  # JSON
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    UniqueConstraint("model", "request_id", "row"),
    Index(None, "model", "status", "id"),
)


# -- monitoring: results per window, alert rules and fired alerts (revision 0005) ---------
# One row per computed result of one kind (drift, performance, estimate, abstention, ...) for
# one window of a version's request log; `payload` is the result as JSON. `target` is what a
# rule watches, as the user wrote it ("digits@production" follows the alias, "digits/3" one
# version). No foreign keys to model_versions: results and alerts outlive a deleted version.
monitor_results = Table(
    "monitor_results",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("window_start", Double, nullable=False),
    Column("window_end", Double, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("flagged", Boolean, nullable=True),  # drifted / below the line; NULL: not enough data
    Column("payload", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Index(None, "model", "version", "kind", "window_end"),
)

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("target", String(160), nullable=False),
    Column("name", String(128), nullable=False),
    Column("metric", String(32), nullable=False),
    Column("op", String(2), nullable=False),  # "<" or ">"
    Column("threshold", Double, nullable=False),
    Column("webhook", Text, nullable=True),
    Column("allow", Text, nullable=False),  # JSON list of hosts/networks the webhook may reach
    Column("enabled", Boolean, nullable=False),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("target", "name"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("rule_id", BigId, ForeignKey("alert_rules.id", ondelete="CASCADE"), nullable=False),
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("fired_at", Double, nullable=False),
    Column("value", Double, nullable=False),
    Column("message", Text, nullable=False),
    Column("delivered", Boolean, nullable=True),  # NULL: no webhook
    Column("delivery_error", Text, nullable=True),
    Index(None, "model", "fired_at"),
)


# -- the closed loop (revision 0006) ----------------------------------------------------
# One row per step of `loopml loop run`, `loopml retrain`, a comparison, a promotion or a
# rollback: what was done to which target, why (`cause`: the alert, the command, the rule),
# and its outcome; the cooldown and the label budget are read from here.
loop_events = Table(
    "loop_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("target", String(160), nullable=False),  # as the user wrote it: "digits@production"
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=True),
    Column("step", String(32), nullable=False),  # monitor | queue | retrain | compare | promote | rollback | shadow
    Column("status", String(16), nullable=False),  # done | skipped | failed
    Column("cause", Text, nullable=False),  # JSON
    Column("details", Text, nullable=False),  # JSON
    Column("at", Double, nullable=False),
    Index(None, "target", "id"),
)


# -- MLflow 3's logged models (revision 0008) ----------------------------------------------
# What `mlflow.<flavor>.log_model` creates through the MLflow-compatible API
# (loopml.server.mlflow_models). Its files are artifacts of the run `storage_run_id`
# (the source run, or a run made to hold a model logged outside any run) under
# `_mlflow_models/<model_id>/` (loopml.store.mlflow_models), so they go through the
# artifact store like every other file. tags and params are JSON objects.
mlflow_logged_models = Table(
    "mlflow_logged_models",
    metadata,
    Column("model_id", String(64), primary_key=True),
    Column("experiment_id", BigId, ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(250), nullable=False),
    Column("source_run_id", String(32), nullable=True),
    Column("storage_run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("model_type", String(250), nullable=True),
    Column("status", String(32), nullable=False),
    Column("status_message", Text, nullable=True),
    Column("deleted", Boolean, nullable=False),
    Column("tags", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Index(None, "experiment_id", "created_at"),
    Index(None, "source_run_id"),
)
