"""The closed loop: stored dataset rows and their source predictions, labels by annotator and row, the labeling queue, loop events.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER TABLE ADD COLUMN with every constraint; on PostgreSQL it is plain ALTERs
    with op.batch_alter_table("datasets") as t:
        t.add_column(sa.Column("stored_path", sa.String(1024), nullable=True))
        t.add_column(sa.Column("stored_size", sa.BigInteger, nullable=True))
        t.add_column(sa.Column("stored_sha256", sa.String(64), nullable=True))
        t.add_column(sa.Column("origin", sa.Text, nullable=True))
    with op.batch_alter_table("feedback") as t:
        t.add_column(sa.Column("row", sa.Integer, nullable=True))
        t.add_column(sa.Column("annotator", sa.String(250), nullable=True))
        t.add_column(sa.Column("kind", sa.String(8), nullable=False, server_default="label"))
        t.add_column(sa.Column("seconds", sa.Double, nullable=True))
        t.add_column(sa.Column("source", sa.String(16), nullable=True))
    op.create_table(
        "dataset_predictions",
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", "request_id", "row", name="pk_dataset_predictions"),
        sa.ForeignKeyConstraint(["fingerprint"], ["datasets.fingerprint"],
                                name="fk_dataset_predictions_fingerprint_datasets", ondelete="CASCADE"),
    )
    op.create_index("ix_dataset_predictions_request_id", "dataset_predictions", ["request_id"])
    op.create_table(
        "label_queue",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("score", sa.Double, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_label_queue"),
        sa.UniqueConstraint("model", "request_id", "row", name="uq_label_queue_model_request_id_row"),
    )
    op.create_index("ix_label_queue_model_status_id", "label_queue", ["model", "status", "id"])
    op.create_table(
        "loop_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("target", sa.String(160), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_loop_events"),
    )
    op.create_index("ix_loop_events_target_id", "loop_events", ["target", "id"])


def downgrade() -> None:
    op.drop_index("ix_loop_events_target_id", table_name="loop_events")
    op.drop_table("loop_events")
    op.drop_index("ix_label_queue_model_status_id", table_name="label_queue")
    op.drop_table("label_queue")
    op.drop_index("ix_dataset_predictions_request_id", table_name="dataset_predictions")
    op.drop_table("dataset_predictions")
    with op.batch_alter_table("feedback") as t:
        for c in ("source", "seconds", "kind", "annotator", "row"):
            t.drop_column(c)
    with op.batch_alter_table("datasets") as t:
        for c in ("origin", "stored_sha256", "stored_size", "stored_path"):
            t.drop_column(c)
