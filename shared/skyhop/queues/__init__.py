"""Control-plane queues: the protocol in :mod:`skyhop.queues.base`."""

from skyhop.queues.base import Message, Queue, open_queue

__all__ = ["Message", "Queue", "open_queue"]
