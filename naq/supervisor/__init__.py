"""The supervisor process: see ``supervisor.py`` for its data flow."""

from naq.supervisor.supervisor import Supervisor

__all__ = ["Supervisor"]
