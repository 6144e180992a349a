"""alembic environment: feedwatch passes the connection and table prefix in."""

from alembic import context

config = context.config
connection = config.attributes["connection"]
prefix = config.attributes.get("prefix", "")

context.configure(
    connection=connection,
    version_table=f"{prefix}alembic_version",
    transactional_ddl=connection.dialect.name != "mysql",
)
with context.begin_transaction():
    context.run_migrations(prefix=prefix)
