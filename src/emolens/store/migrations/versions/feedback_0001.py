"""feedback: one row per user statement about a face (a correction or a confirmation)

Revision ID: feedback_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "feedback_0001"
down_revision = None
branch_labels = ("feedback",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("uid", sa.String(32), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("crop_key", sa.String(128), nullable=False),
        sa.Column("image_key", sa.String(128)),
        sa.Column("box", sa.JSON),
        sa.Column("predicted", sa.String(32)),
        sa.Column("confidence", sa.Float),
        sa.Column("probs", sa.JSON),
        sa.Column("model_version", sa.String(64)),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("is_correction", sa.Boolean, nullable=False),
        sa.Column("holdout", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128)),
    )
    op.create_index("ix_feedback_created_at", "feedback", ["created_at"])
    op.create_index("ix_feedback_label", "feedback", ["label"])
    op.create_index("ix_feedback_crop_key", "feedback", ["crop_key"])


def downgrade() -> None:
    op.drop_table("feedback")
