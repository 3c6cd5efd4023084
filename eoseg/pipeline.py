"""Stages joined by bounded channels: threads that stop together and hand the first error to the caller.

The predict loop (:func:`eoseg.predict.run_tiles`) runs as a reader thread, the forward pass in the caller's
thread, a blending thread and a writer thread. Each pair of stages is joined by a :class:`Channel` holding at
most ``depth`` items, so memory is bounded by the depths; a stage that fails cancels every other one (each
blocked ``put`` / ``get`` wakes up and raises :class:`Cancelled`), the threads are joined, and the first error
is raised in the caller's thread unchanged (its own type and message).

>>> with Stages() as stages:
...     strips = stages.channel(1)
...     stages.start("reader", read_strips, strips)
...     for item in strips:          # the caller's own stage
...         ...
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any


class Cancelled(Exception):  # noqa: N818  (not an error of its own: another stage failed)
    """Raised inside a stage when another stage failed (or the caller left early)."""


_END = object()


class Channel:
    """A FIFO between two threads holding at most ``depth`` items; ``close()`` ends the iteration on the far
    side. With ``weight`` (item → a count, e.g. the tiles in a block) the depth counts that instead: an item
    is taken while the items held weigh less than ``depth``, so small items (a tile row's last, narrow block)
    do not leave the consumer waiting on a half-empty channel."""

    def __init__(self, depth: int, cancelled: threading.Event, weight: Callable[[Any], int] | None = None):
        if depth < 1:
            raise ValueError("a channel holds at least one item")
        self.depth = depth
        self._items: deque = deque()
        self._weight = weight or (lambda item: 1)
        self._load = 0  # the items' total weight
        self._cond = threading.Condition()
        self._cancelled = cancelled
        self.max_seen = 0  # the most items it ever held (tests check the bound)

    def _check(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled

    def wait_for_room(self) -> None:
        """Block until a ``put`` would not block: a producer calls it *before* building its next item, so an
        item is only built when it can be handed on at once (``depth`` items plus the consumer's, no more)."""
        with self._cond:
            while self._load >= self.depth:
                self._check()
                self._cond.wait(0.1)
            self._check()

    def put(self, item: Any) -> None:
        with self._cond:
            while self._load >= self.depth:
                self._check()
                self._cond.wait(0.1)
            self._check()
            self._items.append(item)
            self._load += self._weight(item)
            self.max_seen = max(self.max_seen, len(self._items))
            self._cond.notify_all()

    def close(self) -> None:
        """No more items (the end marker does not count against the depth)."""
        with self._cond:
            self._items.append(_END)
            self._cond.notify_all()

    def get(self) -> Any:
        """The next item, or the end marker :data:`_END` once the channel is closed and drained."""
        with self._cond:
            while not self._items:
                self._check()
                self._cond.wait(0.1)
            self._check()
            item = self._items.popleft()
            if item is not _END:
                self._load -= self._weight(item)
            self._cond.notify_all()
            return item

    def __iter__(self) -> Iterator[Any]:
        while (item := self.get()) is not _END:
            yield item

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


BACKGROUND_NICE = 19


def lower_thread_priority(nice: int = BACKGROUND_NICE) -> bool:
    """Give the calling thread a lower scheduling priority (Linux: a thread has its own nice value).

    When a CPU model's OpenMP team holds every core, a helper thread that preempts one of its workers makes
    the whole team wait (spinning) at the next barrier; measured on 2 cores, a pipelined forward pass ran 3×
    slower. At low priority the helpers run in the gaps the model leaves, and when the model waits for them.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):  # not Linux, or not allowed
        return False
    return True


class Stages:
    """Threads of one pipeline run; leaving the ``with`` block joins them and raises the first error.
    ``background``: the stage threads run at low priority (:func:`lower_thread_priority`)."""

    def __init__(self, background: bool = False) -> None:
        self.background = background
        self.cancelled = threading.Event()
        self._channels: list[Channel] = []
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self.cpu_seconds: dict[str, float] = {}  # CPU time of each stage thread (where the time goes)

    def channel(self, depth: int, weight: Callable[[Any], int] | None = None) -> Channel:
        ch = Channel(depth, self.cancelled, weight)
        self._channels.append(ch)
        return ch

    def start(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=self._run, args=(name, target, args), name=f"eoseg-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def _run(self, name: str, target: Callable[..., None], args: tuple) -> None:
        if self.background:
            lower_thread_priority()
        start = time.thread_time()
        try:
            target(*args)
        except Cancelled:
            pass
        except BaseException as exc:  # handed to the caller's thread
            self.fail(exc)
        finally:
            self.cpu_seconds[name] = time.thread_time() - start

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` (the first one wins) and cancel every stage."""
        with self._lock:
            self._errors.append(exc)
        self.cancel()

    def cancel(self) -> None:
        self.cancelled.set()
        for ch in self._channels:
            ch.wake()

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None and not isinstance(exc, Cancelled):
            self.fail(exc)
        elif exc is not None:
            self.cancel()
        for thread in self._threads:
            thread.join()
        if self._errors:
            first = self._errors[0]
            if first is exc:
                return False  # the caller's own error propagates as it is
            raise first
        return False
