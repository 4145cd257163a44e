"""Tests of the service at scale: behind PgBouncer in transaction pooling mode."""
