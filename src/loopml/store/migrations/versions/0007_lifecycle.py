"""Deleted runs and experiments, experiment tags, a run's links to models and datasets (MLflow's clients need them).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER TABLE ADD COLUMN with every constraint; on PostgreSQL it is plain ALTERs
    with op.batch_alter_table("runs") as t:
        t.add_column(sa.Column("deleted_at", sa.Double, nullable=True))
    with op.batch_alter_table("experiments") as t:
        t.add_column(sa.Column("deleted_at", sa.Double, nullable=True))
    op.create_table(
        "experiment_tags",
        sa.Column("experiment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", "key", name="pk_experiment_tags"),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"],
                                name="fk_experiment_tags_experiment_id_experiments", ondelete="CASCADE"),
    )
    op.create_table(
        "run_links",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(512), nullable=False),
        sa.Column("step", sa.BigInteger, nullable=True),
        sa.Column("details", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("run_id", "kind", "ref", name="pk_run_links"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_run_links_run_id_runs", ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("run_links")
    op.drop_table("experiment_tags")
    with op.batch_alter_table("experiments") as t:
        t.drop_column("deleted_at")
    with op.batch_alter_table("runs") as t:
        t.drop_column("deleted_at")
