"""MLflow 3's logged models (the MLflow-compatible API's /logged-models routes).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mlflow_logged_models",
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("experiment_id", _ID, nullable=False),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("source_run_id", sa.String(32), nullable=True),
        sa.Column("storage_run_id", sa.String(32), nullable=False),
        sa.Column("model_type", sa.String(250), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("status_message", sa.Text, nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("model_id", name="pk_mlflow_logged_models"),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"],
                                name="fk_mlflow_logged_models_experiment_id_experiments", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["storage_run_id"], ["runs.id"],
                                name="fk_mlflow_logged_models_storage_run_id_runs", ondelete="CASCADE"),
    )
    op.create_index("ix_mlflow_logged_models_experiment_id_created_at", "mlflow_logged_models",
                    ["experiment_id", "created_at"])
    op.create_index("ix_mlflow_logged_models_source_run_id", "mlflow_logged_models", ["source_run_id"])


def downgrade() -> None:
    op.drop_index("ix_mlflow_logged_models_source_run_id", table_name="mlflow_logged_models")
    op.drop_index("ix_mlflow_logged_models_experiment_id_created_at", table_name="mlflow_logged_models")
    op.drop_table("mlflow_logged_models")
