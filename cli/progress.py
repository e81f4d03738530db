"""Progress on stderr for the CLI's long work (rich): a bar on a terminal, the lines
printed above it everywhere (also in logs and CI, where the bar itself is not drawn
until it finishes)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


def progress(*, counted: bool = True) -> Progress:
    """A progress display on stderr: ``counted`` shows "n/total", else a running count."""
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if counted else TextColumn("{task.completed:,.0f}"),
        TimeElapsedColumn(),
    ]
    return Progress(*columns, console=Console(stderr=True, highlight=False))
