"""Kill a process at a random point of its run whatever the machine's load.

The kill tests (gc on a datadir and on S3) start the same command many times
and SIGKILL it after a random delay.  A delay drawn once from a first timed
run goes stale when the load changes: on a busy machine a test once killed 6
of 50 runs because every later run ended before its delay.  `KillAim` watches
each run instead: a run that ends before its kill tells how long a whole run
takes now, and the next delays are drawn within that."""

from __future__ import annotations

import random
import signal
import time


class KillAim:
    """Delays within `start` (the interpreter and imports, before any work)
    plus up to `spread` times the work's length, re-aimed by every run that
    ends before its kill."""

    def __init__(
        self, start: float, work: float, seed: int, spread: float = 1.0, least: float = 0.005
    ):
        self.start, self.work, self.spread, self.least = start, max(work, least), spread, least
        self.rnd = random.Random(seed)
        self.killed = self.finished = 0

    def run(self, p, poll: float = 0.005) -> bool:
        """Kill `p` (a Popen just started) at a random point, or let it end
        first; True if it was killed."""
        t = time.monotonic()
        delay = self.start + self.rnd.uniform(0.0, self.spread) * self.work
        while p.poll() is None:
            if time.monotonic() - t >= delay:
                p.send_signal(signal.SIGKILL)
                self.killed += 1
                return True
            time.sleep(poll)
        took = time.monotonic() - t
        self.finished += 1
        if took <= self.start:  # even the start is quicker now than measured
            self.start = took * 0.6
        self.work = max(took - self.start, self.least)
        return False
