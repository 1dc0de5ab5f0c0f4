"""identity: people, their face embeddings, recognizer versions, attendance sessions and records

Every table that holds something about a person points at ``people`` with ON DELETE CASCADE, so
deleting a person's row deletes everything recorded about them in one statement.

Revision ID: identity_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "identity_0001"
down_revision = None
branch_labels = ("identity",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("uid", sa.String(32), nullable=False, unique=True),
        sa.Column("key", sa.String(128), nullable=False, unique=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "face_embeddings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id", ondelete="CASCADE"), nullable=False),
        sa.Column("embedder", sa.String(64), nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("image_key", sa.String(128)),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("box", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("person_id", "embedder", "image_sha256", name="uq_face_person_embedder_image"),
    )
    op.create_index("ix_face_embeddings_person_id", "face_embeddings", ["person_id"])
    op.create_index("ix_face_embeddings_embedder", "face_embeddings", ["embedder"])
    op.create_table(
        "recognizer_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("embedder", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("min_similarity", sa.Float, nullable=False),
        sa.Column("n_people", sa.Integer, nullable=False),
        sa.Column("n_embeddings", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("report_dir", sa.String(512)),
    )
    op.create_table(
        "recognizer_version_faces",
        sa.Column(
            "version_id",
            sa.Integer,
            sa.ForeignKey("recognizer_versions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("face_id", sa.Integer, sa.ForeignKey("face_embeddings.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_recognizer_version_faces_face_id", "recognizer_version_faces", ["face_id"])
    op.create_table(
        "recognizer_active",
        sa.Column("slot", sa.String(16), primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("recognizer_versions.id", ondelete="CASCADE")),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "attendance_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("uid", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True)),
        sa.Column("version", sa.Integer),
        sa.Column("threshold", sa.Float),
        sa.Column("frames", sa.Integer, nullable=False),
        sa.Column("undecodable", sa.Integer, nullable=False),
        sa.Column("faces", sa.Integer, nullable=False),
        sa.Column("unknown_faces", sa.Integer, nullable=False),
    )
    op.create_index("ix_attendance_sessions_started_at", "attendance_sessions", ["started_at"])
    op.create_table(
        "attendance_records",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "session_id", sa.Integer, sa.ForeignKey("attendance_sessions.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id", ondelete="CASCADE"), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_seen_source", sa.String(512), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("best_confidence", sa.Float, nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sightings", sa.Integer, nullable=False),
        sa.Column("emotions", sa.JSON, nullable=False),
        sa.UniqueConstraint("session_id", "person_id", name="uq_attendance_session_person"),
    )
    op.create_index("ix_attendance_records_person_id", "attendance_records", ["person_id"])


def downgrade() -> None:
    for table in (
        "attendance_records",
        "attendance_sessions",
        "recognizer_active",
        "recognizer_version_faces",
        "recognizer_versions",
        "face_embeddings",
        "people",
    ):
        op.drop_table(table)
