"""shadow: one row per face a shadow model classified beside the active model in serving

Revision ID: shadow_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "shadow_0001"
down_revision = None
branch_labels = ("shadow",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadow_results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("analysis_id", sa.String(64), nullable=False),
        sa.Column("face", sa.Integer, nullable=False),
        sa.Column("active_model", sa.String(256), nullable=False),
        sa.Column("shadow_model", sa.String(256), nullable=False),
        sa.Column("active_label", sa.String(32)),
        sa.Column("shadow_label", sa.String(32)),
        sa.Column("agree", sa.Boolean, nullable=False),
        sa.Column("active_probs", sa.JSON),
        sa.Column("shadow_probs", sa.JSON),
        sa.Column("crop_key", sa.String(128)),
        sa.UniqueConstraint("analysis_id", "face", "shadow_model", name="uq_shadow_results_face"),
    )
    op.create_index("ix_shadow_results_pair", "shadow_results", ["active_model", "shadow_model"])
    op.create_index("ix_shadow_results_crop_key", "shadow_results", ["crop_key"])


def downgrade() -> None:
    op.drop_table("shadow_results")
