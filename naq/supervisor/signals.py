"""What a stop request means to a supervisor: the first drains, the second stops hard.

``naq-supervise`` turns SIGTERM and SIGINT into :meth:`Stopping.request` (see
``naq.cli.common.run_role``); an embedding program calls ``Supervisor.request_stop``.
Two stages, as gunicorn and dramatiq do: an orchestrator's SIGTERM lets running jobs
finish within ``shutdown_grace``, and an impatient operator's second Ctrl-C cuts them
short at once (they are handed back, not lost).
"""

from __future__ import annotations

import asyncio


class Stopping:
    """The supervisor's stop state, set from a signal handler or any coroutine."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        """Set by the first request: pull nothing more, let running jobs finish."""
        self.hard = asyncio.Event()
        """Set by the second request: cut running jobs short now."""
        self.draining = False
        """True from the moment the drain starts: jobs that arrive are handed back."""

    def request(self) -> bool:
        """Record one stop request; True when it is the second (stop hard)."""
        if self.requested.is_set():
            self.hard.set()
            return True
        self.requested.set()
        return False
