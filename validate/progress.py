"""Progress of a validation run: one line per trial segment that ends, readable in a log.

    [asha g=1]    42.1 s of ~60.3 s predicted | running 2 finished 5 failed 0 | trial 7 stop @3 acc=0.9412
"""

from __future__ import annotations

import sys
import time
from typing import Optional

from nasalloc.simulator.labels import duration

HEARTBEAT_S = 60.0  # with nothing else to say, a line at least this often


class Progress:
    def __init__(self, label: str, predicted_s: Optional[float] = None, quiet: bool = False, stream=None):
        self.label = label
        self.predicted_s = predicted_s
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.running = self.finished = self.failed = self.paused = 0
        self._printed = time.monotonic()

    def _clock(self, now_s: float) -> str:
        # each in the unit that reads best (s, min or h), as simulate's tables and progress do
        if self.predicted_s:
            return f"{duration(now_s):>9} of ~{duration(self.predicted_s)} predicted"
        return f"{duration(now_s):>9}"

    def line(self, now_s: float, what: str) -> None:
        if self.quiet:
            return
        print(f"[{self.label}] {self._clock(now_s)} | running {self.running} paused {self.paused} "
              f"finished {self.finished} failed {self.failed} | {what}", file=self.stream, flush=True)
        self._printed = time.monotonic()

    def heartbeat(self, now_s: float, what: str) -> None:
        """A line when none was printed for HEARTBEAT_S (long epochs stay visible in logs)."""
        if time.monotonic() - self._printed >= HEARTBEAT_S:
            self.line(now_s, what)

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"[{self.label}] {text}", file=self.stream, flush=True)
