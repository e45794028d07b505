"""compute: index for the default server listing (project, deleted, newest first)

Revision ID: compute_0002
Revises: compute_0001
"""
from alembic import op


revision = 'compute_0002'
down_revision = 'compute_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_instances_project_listing', 'instances', ['project_id', 'deleted', 'created_at', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_instances_project_listing', table_name='instances')
