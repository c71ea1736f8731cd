"""Progress bars for long work (rich), quiet when output is not a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None] | None]:
    """Yield `advance(done, total)`; the bar shows counts, elapsed and remaining time. Not enabled:
    yield None, which the library's `progress` arguments take as "report nothing"."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


@contextmanager
def counting_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None] | None]:
    """`advance(n)` adds n done units to a progress bar of `total` (None when disabled): for library loops
    that report increments rather than running totals."""
    if not enabled:
        yield None
        return
    with progress_bar(description) as update:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            update(done, total)

        yield advance
