"""What a stop request means to a supervisor: the first drains, the second stops hard.

``naq-supervise`` turns SIGTERM and SIGINT into :meth:`Stopping.request` (see
``naq.cli.common.run_role``); an embedding program calls ``Supervisor.request_stop``.
Two stages, as gunicorn and dramatiq do: an orchestrator's SIGTERM lets running jobs
finish within ``shutdown_grace``, and an impatient operator's second Ctrl-C cuts them
short at once (they are handed back, not lost).
"""

from __future__ import annotations

import asyncio

from naq.settings import Settings

STOP_MARGIN = 3.0
"""Seconds past ``shutdown_grace`` that a stop may take in all (settling what the
grace cut short, removing the heartbeat, closing the connection): the process
exits by then whatever NATS does, well inside Kubernetes' 30 s default with a grace
of 25 s or less."""
CLOSE_TIME = 1.0
"""Seconds of the margin kept for closing the connection."""


class Stopping:
    """The supervisor's stop state, set from a signal handler or any coroutine."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        """Set by the first request: pull nothing more, let running jobs finish."""
        self.hard = asyncio.Event()
        """Set by the second request: cut running jobs short now."""
        self.draining = False
        """True from the moment the drain starts: jobs that arrive are handed back."""
        self.requested_at: float | None = None
        """The loop's time of the first request."""

    def deadline(self, settings: Settings) -> float:
        """The loop time by which the process exits: the first request, plus
        ``shutdown_grace``, plus ``STOP_MARGIN``."""
        assert self.requested_at is not None, "no stop was requested"
        return self.requested_at + settings.shutdown_grace + STOP_MARGIN

    def request(self) -> bool:
        """Record one stop request; True when it is the second (stop hard)."""
        if self.requested.is_set():
            self.hard.set()
            return True
        self.requested_at = asyncio.get_running_loop().time()
        self.requested.set()
        return False
