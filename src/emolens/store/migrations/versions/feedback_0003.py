"""feedback: a 256-bit perceptual hash, and whether the model answered "uncertain"

The hash only catches the same photo stored again (groups of the held-out split follow people),
so it is longer and stricter; hashes of the earlier, 64-bit kind are recomputed from the crops
when the feedback is next split. ``uncertain`` keeps a face the model did not commit to
correctable: ``predicted`` holds its top class.

Revision ID: feedback_0003
Revises: feedback_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "feedback_0003"
down_revision = "feedback_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.alter_column("phash", type_=sa.String(64), existing_type=sa.String(16))
        batch.add_column(sa.Column("uncertain", sa.Boolean))


def downgrade() -> None:
    op.execute("UPDATE feedback SET phash = NULL")  # today's hashes do not fit 16 characters
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("uncertain")
        batch.alter_column("phash", type_=sa.String(16), existing_type=sa.String(64))
