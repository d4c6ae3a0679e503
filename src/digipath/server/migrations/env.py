"""Alembic environment: runs on the connection :func:`digipath.server.db.migrate` passes."""

from alembic import context

from digipath.server.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # the alembic command line: connect to sqlalchemy.url
    from sqlalchemy import create_engine

    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    connection = engine.connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
