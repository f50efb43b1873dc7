"""Storage: SQLAlchemy 2 (async) tables, engine creation and Alembic migrations."""
