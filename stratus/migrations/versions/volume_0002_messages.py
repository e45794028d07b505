"""volume messages

Revision ID: volume_0002
Revises: volume_0001
Create Date: 2026-11-21 07:35:00
"""
from alembic import op
import sqlalchemy as sa
import stratus.common.db


revision = 'volume_0002'
down_revision = 'volume_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('messages',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('resource_type', sa.String(length=32), nullable=False),
    sa.Column('resource_uuid', sa.String(length=64), nullable=True),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('message_level', sa.String(length=16), nullable=False),
    sa.Column('user_message', sa.Text(), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', stratus.common.db.UTCDateTime(), nullable=False),
    sa.Column('expires_at', stratus.common.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_messages_project_id'), 'messages', ['project_id'], unique=False)
    op.create_index(op.f('ix_messages_resource_uuid'), 'messages', ['resource_uuid'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_messages_resource_uuid'), table_name='messages')
    op.drop_index(op.f('ix_messages_project_id'), table_name='messages')
    op.drop_table('messages')
