"""The benchmark's phases as a rich progress bar on stderr, with its log lines above it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

CONSOLE = Console(stderr=True, highlight=False)


@contextmanager
def phases(total: int) -> Iterator[Callable[[str], None]]:
    """``next_phase(name)``: the previous phase is done, ``name`` starts."""
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=CONSOLE,
    )
    started = False

    def next_phase(name: str) -> None:
        nonlocal started
        bar.update(task, description=name, advance=1 if started else 0)
        started = True

    with bar:
        task = bar.add_task("benchmark", total=total)
        yield next_phase
        bar.update(task, completed=total, description="benchmark done")
