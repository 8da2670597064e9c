import logging
from logging.config import fileConfig

from flask import current_app

from alembic import context
from alembic.util import CommandError

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Interpret the config file for Python logging.
# This line sets up loggers basically.
# Keep the application's loggers: by default fileConfig disables every logger that exists
# already, so after `db upgrade` in a process (the tests, a shell) its warnings went nowhere.
fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")


def get_engine():
    # Flask-SQLAlchemy 3: `db.engine` (get_engine() is deprecated and warns).
    return current_app.extensions["migrate"].db.engine


def get_engine_url():
    try:
        return get_engine().url.render_as_string(hide_password=False).replace("%", "%%")
    except AttributeError:
        return str(get_engine().url).replace("%", "%%")


# add your model's MetaData object here
# for 'autogenerate' support
# from myapp import mymodel
# target_metadata = mymodel.Base.metadata
config.set_main_option("sqlalchemy.url", get_engine_url())
target_db = current_app.extensions["migrate"].db

# other values from the config, defined by the needs of env.py,
# can be acquired:
# my_important_option = config.get_main_option("my_important_option")
# ... etc.


def get_metadata():
    if hasattr(target_db, "metadatas"):
        return target_db.metadatas[None]
    return target_db.metadata


def run_migrations_offline():
    """Run migrations in 'offline' mode.

    This configures the context with just a URL
    and not an Engine, though an Engine is acceptable
    here as well.  By skipping the Engine creation
    we don't even need a DBAPI to be available.

    Calls to context.execute() here emit the given string to the
    script output.

    """
    if get_engine().dialect.name == "sqlite":
        # Alembic's batch mode rebuilds a SQLite table from the table it reads in the database,
        # which a script cannot do: say so before any SQL, rather than fail at the first rebuild.
        raise CommandError(
            "--sql (offline) works on PostgreSQL only: on SQLite the migrations rebuild tables from the "
            "database itself. Run `flask db upgrade` (on a copy of the database, to try it first)."
        )
    url = config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=get_metadata(), literal_binds=True)

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    """Run migrations in 'online' mode.

    In this scenario we need to create an Engine
    and associate a connection with the context.

    """

    # this callback is used to prevent an auto-migration from being generated
    # when there are no changes to the schema
    # reference: http://alembic.zzzcomputing.com/en/latest/cookbook.html
    def process_revision_directives(context, revision, directives):
        if getattr(config.cmd_opts, "autogenerate", False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logger.info("No changes in schema detected.")

    conf_args = current_app.extensions["migrate"].configure_args
    if conf_args.get("process_revision_directives") is None:
        conf_args["process_revision_directives"] = process_revision_directives

    connectable = get_engine()

    with connectable.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        broken_before: set[tuple] = set()
        if sqlite:
            # SQLite changes a table by copying it into a new one and dropping the old (batch
            # mode): with foreign keys enforced, dropping a table other rows refer to fails. They
            # are off while the migrations run (the PRAGMA only works outside a transaction) and
            # checked at the end, inside the migrations' transaction: a reference they broke fails
            # the run (references already broken before it are reported, not blamed on it).
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            broken_before = {tuple(row) for row in connection.exec_driver_sql("PRAGMA foreign_key_check")}
            connection.commit()
            if broken_before:
                logger.warning("foreign keys already broken before the migrations: %s", sorted(broken_before)[:10])
            # One transaction for the whole run, so that a failed check undoes every migration and
            # its record: Alembic takes SQLite's DDL for non-transactional and commits after each
            # migration unless the transaction is the caller's, and pysqlite begins none before
            # DDL. SQLite's DDL is transactional; IMMEDIATE takes the write lock at once, as
            # services.sql.begin_snapshot does (pysqlite then begins nothing itself).
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            if sqlite:  # (what the log says; the transaction being ours, Alembic begins and commits none)
                conf_args = {**conf_args, "transactional_ddl": True}
            context.configure(connection=connection, target_metadata=get_metadata(), **conf_args)

            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = {tuple(row) for row in connection.exec_driver_sql("PRAGMA foreign_key_check")} - broken_before
                    if broken:
                        raise RuntimeError(f"the migrations broke foreign keys: {sorted(broken)[:10]}")
            if sqlite:
                connection.commit()
        finally:
            if sqlite:
                connection.rollback()
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
