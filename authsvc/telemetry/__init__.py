"""Telemetry: what the service tells its operators beyond logs (metrics; traces)."""
