"""serve: state that every server worker shares — recent analyses (for feedback by analysis id)
and background jobs with a one-job slot

Revision ID: serve_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "serve_0001"
down_revision = None
branch_labels = ("serve",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analyses",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("results", sa.JSON, nullable=False),
        sa.Column("upload", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_analyses_created_at", "analyses", ["created_at"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", sa.JSON),
        sa.Column("error", sa.JSON),
    )
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_table(
        "job_slots",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("job_id", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_slots")
    op.drop_table("jobs")
    op.drop_table("analyses")
