"""Datasets and the runs that used them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("task", sa.String(16), nullable=False),
        sa.Column("n_rows", sa.BigInteger, nullable=False),
        sa.Column("schema", sa.Text, nullable=False),
        sa.Column("profile", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", name="pk_datasets"),
    )
    op.create_table(
        "run_datasets",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "role", name="pk_run_datasets"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_run_datasets_run_id_runs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["fingerprint"], ["datasets.fingerprint"], name="fk_run_datasets_fingerprint_datasets"
        ),
    )
    op.create_index("ix_run_datasets_fingerprint", "run_datasets", ["fingerprint"])


def downgrade() -> None:
    op.drop_index("ix_run_datasets_fingerprint", table_name="run_datasets")
    op.drop_table("run_datasets")
    op.drop_table("datasets")
