"""The supervisor's side of multiprocess metrics: the directory its workers share.

prometheus-client decides at import whether a process keeps its values in files, from
PROMETHEUS_MULTIPROC_DIR in its environment; so the supervisor sets it for each worker
it starts, never for itself.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

__all__ = ["ENVIRONMENT_VARIABLE", "forget_process", "shared_dir"]

ENVIRONMENT_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def shared_dir(configured: Path | None) -> Iterator[Path]:
    """The workers' directory for the block: `configured`, created if missing and emptied
    of an earlier run's files (counters would otherwise resume from a dead run's values),
    or else a private temporary one, removed afterwards."""
    if configured is None:
        with tempfile.TemporaryDirectory(prefix="authsvc-metrics-") as private:
            yield Path(private)
        return
    configured.mkdir(parents=True, exist_ok=True)
    # Only the client's own files: the directory is the operator's.
    for stale in configured.glob("*.db"):
        stale.unlink()
    yield configured


def forget_process(pid: int, directory: Path) -> None:
    """A worker has exited: drop its live gauges (pool, feed, database up), which would
    otherwise go on being added into every scrape. Its counters stay, so totals never
    go backwards."""
    mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
