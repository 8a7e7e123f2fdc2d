"""A bounded FIFO mailbox: the pure queue discipline behind agent IPC.

Invariants (tests/test_mailbox_props.py checks them against a reference model):
messages come out in the order they went in; the box never holds more than ``capacity``
messages; a put into a full box is refused with ``LimitExceeded`` and changes nothing;
nothing is lost or duplicated.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, TypeVar

from agentix.core.errors import LimitExceeded

__all__ = ["BoundedFifo"]

T = TypeVar("T")


class BoundedFifo(Generic[T]):
    def __init__(self, capacity: int, owner: str = "") -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.owner = owner
        self._items: deque[T] = deque()
        self.accepted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        if len(self._items) >= self.capacity:
            self.refused += 1
            raise LimitExceeded(
                f"mailbox of {self.owner or 'the agent'} is full ({self.capacity} messages); "
                "the receiver must read its messages before more can be sent",
                limit="mailbox",
                capacity=self.capacity,
                to=self.owner,
            )
        self._items.append(item)
        self.accepted += 1

    def get(self) -> T | None:
        """The oldest message, or None if empty."""
        return self._items.popleft() if self._items else None

    def peek(self) -> list[T]:
        """Every queued message, oldest first, left queued (for a snapshot)."""
        return list(self._items)

    def drain(self) -> list[T]:
        out = list(self._items)
        self._items.clear()
        return out

    def statistics(self) -> dict[str, Any]:
        return {
            "queued": len(self._items),
            "capacity": self.capacity,
            "accepted": self.accepted,
            "refused": self.refused,
        }
