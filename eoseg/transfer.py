"""Feeding tiles to the model's device: reusable host batch buffers and asynchronous copies.

:class:`HostBatches` keeps a ring of ``slots`` host buffers of one batch each (pinned on CUDA, so the copy to
the device is a DMA that overlaps the model), fills the next one with a batch's tiles, and starts its copy on
a side stream. The rules that make this safe are kept in one place, for every device:

- the compute stream waits for a batch's copy event before the model reads it (``ops.wait``);
- a slot is refilled only after the copy out of it has landed (``ops.synchronize`` on its event), so no copy
  ever reads a half-overwritten buffer.

:class:`DeviceOps` is what a device offers for this (streams, events, pinned memory). On the CPU there is
nothing to copy: the batch is the host buffer itself, events are no-ops, and the same code runs; the tests
drive the CUDA rules with a fake device whose copies land late, on another thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch


class DeviceOps:
    """Streams, events and pinned memory of one device (the CPU's: synchronous, nothing to do)."""

    pinned = False
    pad_batches = False  # a fixed batch shape (cuDNN's benchmark and compiled models choose kernels per shape)

    def __init__(self, device: torch.device):
        self.device = device

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, pin_memory=self.pinned)

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        yield

    def to_device(self, host: torch.Tensor) -> torch.Tensor:
        return host

    def record(self) -> Any:
        """An event marking the work queued so far on the current stream."""
        return None

    def wait(self, event: Any) -> None:
        """The compute stream waits for ``event`` (the host does not)."""

    def synchronize(self, event: Any) -> None:
        """The host waits for ``event``."""


class CudaOps(DeviceOps):
    """CUDA: pinned host buffers, copies on a side stream, events between the streams."""

    pinned = True
    pad_batches = True

    def __init__(self, device: torch.device):
        super().__init__(device)
        self.stream = torch.cuda.Stream(device)
        self.compute = torch.cuda.current_stream(device)

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        with torch.cuda.stream(self.stream):
            yield

    def to_device(self, host: torch.Tensor) -> torch.Tensor:
        out = host.to(self.device, non_blocking=True)
        out.record_stream(self.compute)  # allocated on the side stream, used on the compute stream
        return out

    def record(self) -> torch.cuda.Event:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return event

    def wait(self, event: torch.cuda.Event) -> None:
        self.compute.wait_event(event)

    def synchronize(self, event: torch.cuda.Event) -> None:
        event.synchronize()


def device_ops(device: torch.device) -> DeviceOps:
    return CudaOps(device) if device.type == "cuda" else DeviceOps(device)


class HostBatches:
    """A ring of reusable host batch buffers (tiles and their validity) copied to the device asynchronously."""

    def __init__(self, ops: DeviceOps, batch_size: int, slots: int = 2):
        self.ops, self.batch_size, self.slots = ops, batch_size, slots
        self._x: list[torch.Tensor] = []
        self._valid: list[torch.Tensor] = []
        self._copied: list[Any] = [None] * slots
        self._next = 0
        self.loads = 0  # batches loaded (tests)

    def _allocate(self, x: np.ndarray, valid: np.ndarray) -> None:
        n = self.batch_size
        self._x = [self.ops.empty((n, *x.shape), torch.float32) for _ in range(self.slots)]
        self._valid = [self.ops.empty((n, *valid.shape), torch.bool) for _ in range(self.slots)]

    @property
    def buffers(self) -> list[torch.Tensor]:
        """The host buffers (allocated once, at the first batch)."""
        return [*self._x, *self._valid]

    def load(self, tiles: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill the next slot with ``tiles`` ((C, H, W) float32, (H, W) bool each) and start its copy; returns
        the batch and its validity on the device (padded with empty tiles to the batch size where the device
        wants one shape). The compute stream waits for the copy; the host does not."""
        if not 0 < len(tiles) <= self.batch_size:
            raise ValueError(f"a batch holds 1 to {self.batch_size} tiles, not {len(tiles)}")
        if not self._x:
            self._allocate(*tiles[0])
        i, self._next = self._next, (self._next + 1) % self.slots
        if self._copied[i] is not None:
            self.ops.synchronize(self._copied[i])  # the copy out of this slot has landed: it may be refilled
        host_x, host_valid = self._x[i], self._valid[i]
        xs, valids = host_x.numpy(), host_valid.numpy()
        for j, (x, valid) in enumerate(tiles):
            xs[j] = x
            valids[j] = valid
        n = len(tiles)
        if self.ops.pad_batches:
            xs[n:] = 0
            valids[n:] = False
            n = self.batch_size
        with self.ops.side_stream():
            x_dev = self.ops.to_device(host_x[:n])
            valid_dev = self.ops.to_device(host_valid[:n])
            self._copied[i] = self.ops.record()
        self.ops.wait(self._copied[i])
        if valid_dev.data_ptr() == host_valid.data_ptr():
            valid_dev = valid_dev.clone()  # no copy on this device: blending reads it after the slot is refilled
        self.loads += 1
        return x_dev, valid_dev
