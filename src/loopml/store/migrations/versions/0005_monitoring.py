"""Monitoring: results per window of the request log, alert rules and fired alerts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "monitor_results",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("window_start", sa.Double, nullable=False),
        sa.Column("window_end", sa.Double, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("flagged", sa.Boolean, nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_monitor_results"),
    )
    op.create_index(
        "ix_monitor_results_model_version_kind_window_end", "monitor_results", ["model", "version", "kind", "window_end"]
    )
    op.create_table(
        "alert_rules",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("target", sa.String(160), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("op", sa.String(2), nullable=False),
        sa.Column("threshold", sa.Double, nullable=False),
        sa.Column("webhook", sa.Text, nullable=True),
        sa.Column("allow", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
        sa.UniqueConstraint("target", "name", name="uq_alert_rules_target_name"),
    )
    op.create_table(
        "alerts",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("rule_id", _ID, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("fired_at", sa.Double, nullable=False),
        sa.Column("value", sa.Double, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("delivered", sa.Boolean, nullable=True),
        sa.Column("delivery_error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(["rule_id"], ["alert_rules.id"], name="fk_alerts_rule_id_alert_rules", ondelete="CASCADE"),
    )
    op.create_index("ix_alerts_model_fired_at", "alerts", ["model", "fired_at"])


def downgrade() -> None:
    op.drop_index("ix_alerts_model_fired_at", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("alert_rules")
    op.drop_index("ix_monitor_results_model_version_kind_window_end", table_name="monitor_results")
    op.drop_table("monitor_results")
