"""payment intent review, charge fraud details, fraud labels by time

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 22:05:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('payment_intents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_id', sa.String(length=40), nullable=True))
    # Intents held for review before this revision name their charge's review.
    op.execute(
        "UPDATE payment_intents SET review_id = (SELECT charges.review_id FROM charges "
        "WHERE charges.id = payment_intents.latest_charge_id) "
        "WHERE latest_charge_id IS NOT NULL"
    )
    with op.batch_alter_table('charges', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fraud_user_report', sa.String(length=16), nullable=True))
    with op.batch_alter_table('fraud_labels', schema=None) as batch_op:
        batch_op.create_index('ix_fraud_labels_created', ['created'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('fraud_labels', schema=None) as batch_op:
        batch_op.drop_index('ix_fraud_labels_created')
    with op.batch_alter_table('charges', schema=None) as batch_op:
        batch_op.drop_column('fraud_user_report')
    with op.batch_alter_table('payment_intents', schema=None) as batch_op:
        batch_op.drop_column('review_id')
