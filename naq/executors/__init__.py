"""Executors run jobs; the supervisor owns all NATS I/O. See ``base.py`` for the contract."""

from naq.executors.base import Call, Executor, NoFreeSlot, Outcome, SlotInfo
from naq.executors.registry import available_executors, load_executor

__all__ = [
    "Call",
    "Executor",
    "NoFreeSlot",
    "Outcome",
    "SlotInfo",
    "available_executors",
    "load_executor",
]
