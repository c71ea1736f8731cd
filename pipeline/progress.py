"""Progress bars for long work (rich) on a terminal; plain timed lines in a log file or pipe."""

from __future__ import annotations

import sys
import time
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
    if not sys.stderr.isatty():
        # rich draws nothing into a file until the end, so a cluster job's log would show no sign of life
        # for hours: one plain line every LOG_INTERVAL_S seconds instead, and one at the end.
        yield _log_lines(description)
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


LOG_INTERVAL_S = 30.0


def _log_lines(description: str, clock: Callable[[], float] = time.monotonic) -> Callable[[int, int], None]:
    start = clock()
    last = [start]

    def advance(done: int, total: int) -> None:
        now = clock()
        if now - last[0] >= LOG_INTERVAL_S or done >= total:
            last[0] = now
            pct = f" ({100 * done / total:.0f}%)" if total else ""
            print(f"{description}: {done}/{total}{pct}, {now - start:.0f} s", file=sys.stderr, flush=True)

    return advance
