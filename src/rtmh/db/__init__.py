"""PostgreSQL, the single source of truth: connection pool, migrations and the named queries.

Stages never build SQL inline; they call the repository of their stage.
"""
