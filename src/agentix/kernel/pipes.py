"""A pipe the kernel reads on its event loop: the one shape behind an agent's log and an exec's output.

The kernel makes the pipe, hands the write end to a child, and reads the read end without ever
blocking the loop: a readable callback takes what is there, EOF (or a read error) closes both
ends and wakes whoever waits. What to do with the bytes is the subclass's one job (``take``).
"""

from __future__ import annotations

import asyncio
import os


class PipeReader:
    """Owns a close-on-exec pipe; ``start`` reads it on the running loop until EOF."""

    chunk = 65536

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        self.total = 0                # bytes received
        self._eof = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Read from now on (before the child starts: nothing it writes waits for the kernel)."""
        os.set_blocking(self.read_fd, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.read_fd, self._readable)

    def take(self, data: bytes) -> None:
        """What this reader does with the bytes it read (``total`` already counts them)."""
        raise NotImplementedError

    def close_write_end(self) -> None:
        """The child has its copy: drop the kernel's, so EOF comes when the child's last one closes."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        """Stop reading; a writer still running gets EPIPE from now on (never blocks forever)."""
        if self._loop is not None and self.read_fd >= 0:
            self._loop.remove_reader(self.read_fd)
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1
        self.close_write_end()
        self._eof.set()

    async def drained(self, timeout: float | None = None) -> bool:
        """Wait until every writer has closed and all output is taken (False after ``timeout``)."""
        try:
            await asyncio.wait_for(self._eof.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def _readable(self) -> None:
        try:
            data = os.read(self.read_fd, self.chunk)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self.total += len(data)
        self.take(data)
