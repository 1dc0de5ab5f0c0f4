"""feedback: what ties records together (person, source photo or video, upload session, perceptual hash)

The promotion gate holds feedback out by group rather than by crop, so that near-identical faces
(a burst of photos, frames of one video) never sit on both sides of the split.

Revision ID: feedback_0002
Revises: feedback_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "feedback_0002"
down_revision = "feedback_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("person", sa.String(128)))
        batch.add_column(sa.Column("origin", sa.String(128)))
        batch.add_column(sa.Column("upload_session", sa.String(128)))
        batch.add_column(sa.Column("phash", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        for name in ("phash", "upload_session", "origin", "person"):
            batch.drop_column(name)
