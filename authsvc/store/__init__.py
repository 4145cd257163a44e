"""PostgreSQL access. Every SQL string of the service lives in this package."""
