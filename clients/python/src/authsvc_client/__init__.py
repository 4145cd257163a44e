"""Python client for authsvc."""
