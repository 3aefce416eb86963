"""Ctrl-C and SIGTERM during a sweep: finish the step, checkpoint the pack, stop cleanly.

``StopRequest`` turns the first SIGINT or SIGTERM into a flag that the training loop reads after
each step; the loop then checkpoints and raises ``Interrupted``, and a rerun resumes from that
step. A second Ctrl-C stops at once (KeyboardInterrupt), as a user pressing it twice expects.
stdlib only, so the CLI can catch ``Interrupted`` without importing torch.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A sweep stopped by a signal after checkpointing; `step` is where its pack resumes."""

    def __init__(self, step: int, signum: int, cells: Sequence[str] = ()):
        self.step, self.signum, self.cells = step, signum, tuple(cells)
        super().__init__(f"interrupted at step {step}; rerun to resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process killed by the signal


class StopRequest:
    """While active, SIGINT/SIGTERM set `signum` instead of stopping the process (main thread only:
    Python delivers signals there; elsewhere the default handling stays)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
