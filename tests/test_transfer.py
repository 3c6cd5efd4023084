"""Host batch buffers and asynchronous copies, driven by a fake device whose copies land late.

No GPU is needed: the fake device keeps CUDA's rules (a non-blocking copy reads its source when it runs, not
when it is queued; the compute stream sees it only after waiting for its event), so a missing wait or a
buffer refilled too early shows as wrong data.
"""

import threading
import time

import numpy as np
import pytest
import torch

from eoseg.grid import TileGrid
from eoseg.predict import Forward, run_tiles
from eoseg.transfer import DeviceOps, HostBatches, device_ops


class FakeEvent:
    def __init__(self, copies):
        self.copies = list(copies)

    def synchronize(self):
        for thread in self.copies:
            thread.join()


class LateCopies(DeviceOps):
    """A device whose copies run on another thread after ``delay`` seconds (reading the host buffer then)."""

    pinned = False

    def __init__(self, delay=0.03, pad_batches=True):
        super().__init__(torch.device("cpu"))
        self.delay, self.pad_batches = delay, pad_batches
        self.allocations = 0
        self._queued: list[threading.Thread] = []  # copies since the last event
        self._compute_waits: list[FakeEvent] = []  # events the compute stream waits for

    def empty(self, shape, dtype):
        self.allocations += 1
        return torch.full(shape, 99, dtype=dtype) if dtype != torch.bool else torch.ones(shape, dtype=dtype)

    def to_device(self, host):
        out = torch.full(host.shape, -7, dtype=host.dtype) if host.dtype != torch.bool else \
            torch.zeros(host.shape, dtype=host.dtype)

        def copy():
            time.sleep(self.delay)
            out.copy_(host)

        thread = threading.Thread(target=copy)
        thread.start()
        self._queued.append(thread)
        return out

    def record(self):
        event, self._queued = FakeEvent(self._queued), []
        return event

    def wait(self, event):
        self._compute_waits.append(event)  # like a stream: the host goes on at once

    def synchronize(self, event):
        event.synchronize()

    def compute(self):
        """What a kernel on the compute stream sees: everything it was told to wait for has landed."""
        for event in self._compute_waits:
            event.synchronize()
        self._compute_waits.clear()


def tiles(seed, n, shape=(3, 8, 8)):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=shape).astype(np.float32), rng.random(shape[1:]) > 0.3) for _ in range(n)]


def test_a_slot_is_refilled_only_after_its_copy_landed():
    """Three batches into two slots without waiting: the third refills the first slot while its copy may still
    be queued; each device batch must still hold its own tiles."""
    ops = LateCopies()
    host = HostBatches(ops, batch_size=2, slots=2)
    batches = [tiles(i, 2) for i in range(3)]
    on_device = [host.load(b) for b in batches]
    ops.compute()
    for batch, (x, valid) in zip(batches, on_device, strict=True):
        np.testing.assert_array_equal(x.numpy(), np.stack([t for t, _ in batch]))
        np.testing.assert_array_equal(valid.numpy(), np.stack([v for _, v in batch]))


def test_buffers_are_allocated_once_and_reused():
    ops = LateCopies(delay=0)
    host = HostBatches(ops, batch_size=3, slots=2)
    host.load(tiles(0, 3))
    first = [b.data_ptr() for b in host.buffers]
    for i in range(1, 7):
        host.load(tiles(i, 1 + i % 3))
    assert [b.data_ptr() for b in host.buffers] == first and ops.allocations == 4  # 2 slots × (tiles, validity)
    assert host.loads == 7


def test_a_short_batch_is_padded_to_the_batch_shape_where_the_device_wants_one():
    ops = LateCopies(delay=0)
    host = HostBatches(ops, batch_size=4)
    x, valid = host.load(tiles(0, 4))
    x, valid = host.load(tiles(1, 1))  # a slot that held four tiles before: the rest must be emptied
    ops.compute()
    assert x.shape[0] == 4 and (x[1:] == 0).all() and not valid[1:].any()
    cpu = HostBatches(device_ops(torch.device("cpu")), batch_size=4)
    assert cpu.load(tiles(1, 1))[0].shape[0] == 1  # the CPU runs what it has


def test_too_many_tiles_for_a_batch_is_an_error():
    with pytest.raises(ValueError, match="1 to 2 tiles"):
        HostBatches(device_ops(torch.device("cpu")), batch_size=2).load(tiles(0, 3))


class WaitsLikeAStream:
    """A Forward whose kernels run after the compute stream's waits, as on a GPU."""

    def __init__(self, forward, ops):
        self.forward, self.ops, self.device = forward, ops, forward.device

    def probabilities(self, x):
        self.ops.compute()
        return self.forward.probabilities(x)


def test_the_predict_loop_on_a_fake_device_matches_the_cpu():
    """The whole pipeline with late copies and padded batches gives the CPU's classes and probabilities."""
    rng = np.random.default_rng(5)
    h, w = 150, 130
    data = rng.normal(size=(3, h, w)).astype(np.float32)
    valid = rng.random((h, w)) > 0.05
    grid = TileGrid(h, w, 32, 8)

    def read(tile):
        r, c = tile.row_off, tile.col_off
        return data[:, r:r + 32, c:c + 32].copy(), valid[r:r + 32, c:c + 32].copy()

    torch.manual_seed(0)
    net = Forward([torch.nn.Conv2d(3, 4, 3, padding=1)], torch.device("cpu"), "fp32")

    def run(**kwargs):
        out = {}
        run_tiles(grid, read, kwargs.pop("forward", net), 4,
                  lambda r0, c, p: out.setdefault(r0, (c.copy(), p.copy())), batch_size=5,
                  probabilities="float32", **kwargs)
        return out

    want = run()
    ops = LateCopies(delay=0.005)
    got = run(forward=WaitsLikeAStream(net, ops), ops=ops)
    assert got.keys() == want.keys()
    for r0 in want:
        np.testing.assert_array_equal(got[r0][0], want[r0][0])
        np.testing.assert_allclose(got[r0][1], want[r0][1], rtol=0, atol=1e-6)


@pytest.mark.gpu
def test_the_predict_loop_on_cuda_matches_the_cpu(s2_scene, random_bundle, tmp_path):
    """On a real GPU (skipped without one): pinned buffers, side-stream copies and the device strip give the
    CPU's class raster (up to near-ties between cuDNN's and oneDNN's kernels)."""
    import rasterio

    from eoseg.predict import Predictor, PredictSettings

    rasters = {}
    for device in ("cpu", "cuda"):
        predictor = Predictor(random_bundle, PredictSettings(device=device, precision="fp32", tile_size=64,
                                                             overlap=16, batch_size=3, probabilities=True))
        result = predictor.predict(s2_scene, tmp_path / device, progress=False)
        with rasterio.open(result.outputs["classes"]) as ds:
            rasters[device] = ds.read(1)
    assert isinstance(device_ops(torch.device("cuda")), DeviceOps) and device_ops(torch.device("cuda")).pinned
    assert (rasters["cpu"] == rasters["cuda"]).mean() > 0.999
