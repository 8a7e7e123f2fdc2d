"""A bounded FIFO mailbox: the pure queue discipline behind agent IPC.

Invariants (tests/test_mailbox_props.py checks them against a reference model):
messages come out in the order they went in; the box never holds more than ``capacity``
messages, nor more than ``max_bytes`` bytes (each put says how large its item is); a put
into a full box is refused with ``LimitExceeded`` and changes nothing; nothing is lost or
duplicated.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, TypeVar

from agentix.core.errors import LimitExceeded

__all__ = ["BoundedFifo"]

T = TypeVar("T")


class BoundedFifo(Generic[T]):
    def __init__(self, capacity: int, owner: str = "", max_bytes: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.owner = owner
        self._items: deque[tuple[T, int]] = deque()
        self.bytes = 0
        self.accepted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, size: int = 0) -> None:
        """Queue ``item`` (``size`` bytes, counted against ``max_bytes``) or refuse it."""
        if self.max_bytes is not None and self.bytes + size > self.max_bytes:
            self.refused += 1
            raise LimitExceeded(
                f"mailbox of {self.owner or 'the agent'} is full ({self.bytes} of {self.max_bytes} "
                f"bytes queued; this message is {size} bytes); the receiver must read its "
                "messages before more can be sent",
                limit="mailbox_bytes",
                max_bytes=self.max_bytes,
                queued_bytes=self.bytes,
                size=size,
                to=self.owner,
            )
        if len(self._items) >= self.capacity:
            self.refused += 1
            raise LimitExceeded(
                f"mailbox of {self.owner or 'the agent'} is full ({self.capacity} messages); "
                "the receiver must read its messages before more can be sent",
                limit="mailbox",
                capacity=self.capacity,
                to=self.owner,
            )
        self._items.append((item, size))
        self.bytes += size
        self.accepted += 1

    def get(self) -> T | None:
        """The oldest message, or None if empty."""
        if not self._items:
            return None
        item, size = self._items.popleft()
        self.bytes -= size
        return item

    def peek(self) -> list[T]:
        """Every queued message, oldest first, left queued (for a snapshot)."""
        return [item for item, _ in self._items]

    def drain(self) -> list[T]:
        out = [item for item, _ in self._items]
        self._items.clear()
        self.bytes = 0
        return out

    def statistics(self) -> dict[str, Any]:
        return {
            "queued": len(self._items),
            "capacity": self.capacity,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "accepted": self.accepted,
            "refused": self.refused,
        }
