"""The second seed's import path: ``from nas_queue import NASQueue`` is naq's NASQueue."""

from naq.nasqueue import NASQueue, QueueMessage

__all__ = ["NASQueue", "QueueMessage"]
