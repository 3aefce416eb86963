"""Progress of a pack's training: tqdm bars on a terminal; elsewhere (a log file, a pipe, nohup) a
plain line at most every ``every`` seconds and at the end, so that long work shows progress there
too; nothing in CI or with LOWRANK_LAB_PROGRESS=0."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from tqdm.auto import tqdm


def quiet() -> bool:
    return os.environ.get("LOWRANK_LAB_PROGRESS") == "0" or bool(os.environ.get("CI"))


class LineProgress:
    """tqdm's update/close for a stream that is not a terminal: "pack of 5: step 120/500 (24%), 1 min 10 s"."""

    def __init__(self, total: int, initial: int, desc: str, echo: Callable[[str], None], every: float = 30.0):
        self.total, self.n, self.desc, self.echo, self.every = total, initial, desc, echo, every
        self.start = self.last = time.monotonic()

    def update(self, steps: int = 1) -> None:
        self.n += steps
        if time.monotonic() - self.last >= self.every:
            self._line()

    def close(self) -> None:
        self._line()

    def _line(self) -> None:
        self.last = time.monotonic()
        minutes, seconds = divmod(int(self.last - self.start), 60)
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        self.echo(f"{self.desc}: step {self.n}/{self.total}{share}, {minutes} min {seconds:02d} s")


def step_progress(total: int, initial: int, desc: str, every: float = 30.0):
    """A bar on a terminal, plain lines on stderr elsewhere, None when quiet."""
    if quiet():
        return None
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit="step", position=1, leave=False)
    return LineProgress(total, initial, desc, lambda line: print(line, file=sys.stderr, flush=True), every)


def cell_progress(total: int):
    """The sweep's bar over cells: on a terminal only (the packs' lines say enough elsewhere)."""
    return tqdm(total=total, desc="sweep", unit="cell", disable=quiet() or not sys.stderr.isatty(), position=0)
