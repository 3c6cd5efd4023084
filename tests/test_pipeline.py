"""The pipelined predict loop: bit-identical to the serial loop, bounded queues, errors stop every stage."""

import threading
import time

import numpy as np
import pytest
import torch

from eoseg.classes import NODATA_CLASS
from eoseg.grid import Tile, TileGrid
from eoseg.pipeline import Cancelled, Stages
from eoseg.predict import Forward, Predictor, PredictSettings, run_tiles, strip_tile_reader
from eoseg.scene import SceneReader
from eoseg.stitch import blend_weights

# ------------------------------------------------------------------ the serial loop (reference, tests only)


def serial_reference(grid: TileGrid, read_tile, forward, k: int, batch_size: int):
    """The loop eoseg ran before the pipeline: tile rows one after another, batches inside a row, blending in
    numpy, rows emitted as each tile row completes. Returns (classes, probabilities) of the whole scene."""
    h, w = grid.height, grid.width
    classes = np.full((h, w), 77, np.uint8)
    probs_out = np.full((k, h, w), -1.0, np.float32)
    cap = min(grid.size, h)
    state = {"base": 0}
    acc_p, acc_w, acc_v = np.zeros((k, cap, w), np.float32), np.zeros((cap, w), np.float32), np.zeros((cap, w), bool)

    def flush_until(scene_row):
        base = state["base"]
        n = min(scene_row, h) - base
        if n <= 0:
            return
        weight, probs = acc_w[:n], acc_p[:, :n]
        covered = (weight > 0) & acc_v[:n]
        np.divide(probs, np.maximum(weight, 1e-12), out=probs)
        cls = np.argmax(probs, axis=0).astype(np.uint8)
        cls[~covered] = NODATA_CLASS
        probs[:, ~covered] = 0.0
        classes[base:base + n], probs_out[:, base:base + n] = cls, probs
        for buf in (acc_p, acc_w, acc_v):
            tail = buf[..., n:, :].copy()
            buf[..., :tail.shape[-2], :] = tail
            buf[..., tail.shape[-2]:, :] = 0
        state["base"] = base + n

    def add(tile, p, valid):
        r0 = tile.row_off - state["base"]
        rows, cols = slice(r0, r0 + tile.height), slice(tile.col_off, tile.col_off + tile.width)
        weight = blend_weights(grid, tile)
        acc_p[:, rows, cols] += p[:, :tile.height, :tile.width] * weight
        acc_w[rows, cols] += weight
        acc_v[rows, cols] |= valid[:tile.height, :tile.width]

    def run(pending):
        if pending:
            for (tile, _, valid), p in zip(pending, forward(np.stack([x for _, x, _ in pending])), strict=True):
                add(tile, p, valid)
            pending.clear()

    for row in range(grid.shape[0]):
        flush_until(grid.row_offsets[row])
        pending = []
        for tile in grid.row_tiles(row):
            x, valid = read_tile(tile)
            if valid.any():
                pending.append((tile, x, valid))
            if len(pending) == batch_size:
                run(pending)
        run(pending)
    flush_until(h)
    return classes, probs_out


# ------------------------------------------------------------------ helpers


def array_reader(data: np.ndarray, valid: np.ndarray):
    def read(tile: Tile):
        r, c, h, w = tile.row_off, tile.col_off, tile.height, tile.width
        pads = ((0, 0), (0, tile.pad_bottom), (0, tile.pad_right))
        return (np.pad(data[:, r:r + h, c:c + w], pads, mode="reflect"),
                np.pad(valid[r:r + h, c:c + w], pads[1:], constant_values=False))

    return read

def random_run(seed: int, h: int, w: int, overlap: int = 0, net_seed: int = 1):
    """A random 2-band scene of ``h`` × ``w``, its 32 px tile grid, a reader of it and a small 3-class net."""
    data = np.random.default_rng(seed).normal(size=(2, h, w)).astype(np.float32)
    grid = TileGrid(h, w, 32, overlap)
    return grid, array_reader(data, np.ones((h, w), bool)), Forward([small_net(2, 3, net_seed)],
                                                                   torch.device("cpu"), "fp32")


def small_net(channels: int, classes: int, seed: int) -> torch.nn.Module:
    """A little convolutional net: its output depends on the tile's neighbourhood, not just the pixel."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(channels, 6, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(6, classes, 3, padding=1))


def pipelined(grid, read_tile, forward, k, batch_size, probabilities="float32", **kwargs):
    classes = np.full((grid.height, grid.width), 77, np.uint8)
    probs = np.full((k, grid.height, grid.width), -1.0, np.float32)
    seen = []

    def sink(r0, cls, p):
        seen.append((r0, cls.shape[0], threading.current_thread().name))
        classes[r0:r0 + cls.shape[0]] = cls
        if p is not None:
            probs[:, r0:r0 + cls.shape[0]] = p

    counts = run_tiles(grid, read_tile, forward, k, sink, batch_size=batch_size, probabilities=probabilities,
                       **kwargs)
    return classes, probs, seen, counts


def run_in_thread(fn, seconds: float = 60):
    """Run ``fn`` in a thread; returns (finished, error) — a hang shows as finished False, not a stuck test."""
    out = {}

    def target():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), out.get("error")


def live_stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("eoseg-")]


# ------------------------------------------------------------------ bit-identical to the serial loop


@pytest.mark.parametrize("mode", ["batched", "tile by tile"])
@pytest.mark.parametrize("seed", range(6))
def test_pipelined_equals_the_serial_loop_bit_for_bit(seed, mode):
    """Random scene sizes, tile sizes, overlaps and batch sizes (batches now span tile rows), with nodata
    patches that empty whole tiles: the class raster is identical, bit for bit; so are the probabilities when
    each tile's forward does not depend on its batch (the model's own batching is the only difference)."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(30, 260)), int(rng.integers(30, 260))
    size = int(rng.choice([32, 64, 96]))
    overlap = int(rng.integers(0, size // 2 + 1))
    batch_size = int(rng.integers(1, 6))
    data = rng.normal(size=(3, h, w)).astype(np.float32)
    valid = np.ones((h, w), bool)
    valid[: h // 3, : w // 2] = False  # empty tiles (skipped) in the first rows
    valid[rng.random((h, w)) < 0.02] = False
    grid = TileGrid(h, w, size, overlap)
    batched = Forward([small_net(3, 4, seed)], torch.device("cpu"), "fp32")

    def tile_by_tile(batch):  # each tile's probabilities do not depend on the batch it shares
        return np.concatenate([batched(batch[i:i + 1]) for i in range(len(batch))])

    forward = batched if mode == "batched" else tile_by_tile
    want_cls, want_p = serial_reference(grid, array_reader(data, valid), forward, 4, batch_size)
    got_cls, got_p, seen, counts = pipelined(grid, array_reader(data, valid), forward, 4, batch_size)
    np.testing.assert_array_equal(got_cls, want_cls)
    if mode == "batched":  # oneDNN may pick another kernel for another batch size: the last bit can differ
        np.testing.assert_allclose(got_p, want_p, rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(got_p, want_p)
    assert (got_cls[~valid] == NODATA_CLASS).all() and counts.total == len(grid)
    assert [r for r, _, _ in seen] == sorted(r for r, _, _ in seen) and sum(n for _, n, _ in seen) == h
    assert {name for _, _, name in seen} == {"eoseg-writer"}  # the sinks run in the writer thread


def test_pipelined_equals_the_serial_loop_on_a_real_scene(s2_scene, random_bundle):
    """The real strip reader (standardization in the reader thread) on a real Sentinel-2 cut, 64/16 tiles."""
    predictor = Predictor(random_bundle, PredictSettings(precision="fp32", tile_size=64, overlap=16, batch_size=3))
    scene = predictor.open(s2_scene)
    grid = predictor.scene_grid(scene)
    std = predictor.scene_standardization(scene)
    k = len(predictor.scheme)
    with SceneReader(scene) as reader:
        want_cls, _ = serial_reference(grid, strip_tile_reader(reader, grid, std), predictor.forward, k, 3)
    with SceneReader(scene) as reader:
        got_cls, _, _, _ = pipelined(grid, strip_tile_reader(reader, grid, std), predictor.forward, k, 3,
                                     probabilities=None)
    assert grid.shape[0] > 2 and len(np.unique(want_cls)) > 1
    np.testing.assert_array_equal(got_cls, want_cls)


def test_uint8_probabilities_are_the_rounded_float_ones():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(3, 90, 120)).astype(np.float32)
    valid = np.ones((90, 120), bool)
    valid[:10] = False
    grid = TileGrid(90, 120, 64, 16)
    forward = Forward([small_net(3, 4, 3)], torch.device("cpu"), "fp32")
    _, p32, _, _ = pipelined(grid, array_reader(data, valid), forward, 4, 2, probabilities="float32")
    _, p8, _, _ = pipelined(grid, array_reader(data, valid), forward, 4, 2, probabilities="uint8")
    np.testing.assert_array_equal(p8, np.clip(np.rint(p32 * 255), 0, 255).astype(np.uint8))


def test_every_sink_gets_every_row_in_order():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, 150, 70)).astype(np.float32)
    grid = TileGrid(150, 70, 32, 8)
    forward = Forward([small_net(2, 3, 0)], torch.device("cpu"), "fp32")
    got: dict[str, list] = {"a": [], "b": []}
    run_tiles(grid, array_reader(data, np.ones((150, 70), bool)), forward, 3,
              [lambda r0, c, p: got["a"].append((r0, c.copy())), lambda r0, c, p: got["b"].append((r0, c.copy()))],
              batch_size=5)
    assert [r for r, _ in got["a"]] == [r for r, _ in got["b"]] == sorted(r for r, _ in got["a"])
    assert sum(c.shape[0] for _, c in got["a"]) == 150
    assert all((ca == cb).all() for (_, ca), (_, cb) in zip(got["a"], got["b"], strict=True))


# ------------------------------------------------------------------ bounded memory: the reader stays close


def test_the_reader_runs_at_most_one_tile_row_ahead():
    """While the forward pass works on tile row r, the reader reads row r + 1, never r + 2 (one strip queued,
    one in the model: the queue depth is the only new buffer)."""
    grid, read, net = random_run(1, 400, 80)
    tiles_per_row = len(grid.col_offsets)
    state = {"forwarded": 0, "ahead": []}

    class Progress:  # the forward stage reports each batch (here: one tile row) once it is handed on
        def update(self, n):
            state["forwarded"] += n

    def read_tile(tile):
        state["ahead"].append(tile.row - state["forwarded"] // tiles_per_row)
        return read(tile)

    def slow_forward(batch):
        time.sleep(0.01)  # a slow model: the reader has every chance to run ahead
        return net(batch)

    run_tiles(grid, read_tile, slow_forward, 3, lambda *a: None, batch_size=tiles_per_row, progress=Progress())
    assert max(state["ahead"]) == 1  # the next row is read while the model runs, and no further


def test_on_a_wide_scene_the_reader_holds_blocks_not_strips():
    """A tile row 30 tiles wide is read READ_BLOCK_TILES tiles at a time, about a batch ahead of the model: what
    is held (a block being read, under a batch queued plus one block, a partial batch and the batch in the
    model) does not grow with the scene's width."""
    from eoseg.predict import READ_BLOCK_TILES

    grid, read, net = random_run(4, 100, 30 * 32)
    state = {"read": 0, "forwarded": 0, "ahead": []}

    class Progress:
        def update(self, n):
            state["forwarded"] += n

    def read_tile(tile):
        state["read"] += 1
        state["ahead"].append(state["read"] - state["forwarded"])
        return read(tile)

    def slow_forward(batch):
        time.sleep(0.005)
        return net(batch)

    run_tiles(grid, read_tile, slow_forward, 3, lambda *a: None, batch_size=READ_BLOCK_TILES, progress=Progress())
    assert READ_BLOCK_TILES < max(state["ahead"]) <= 4 * READ_BLOCK_TILES - 2 < len(grid.col_offsets) // 2


def test_a_rows_narrow_last_block_does_not_leave_the_model_waiting():
    """Tile rows of 5 tiles are read as a block of 4 and a block of 1; batches of 4. The reader counts what it
    has queued in tiles, not blocks, so while the model runs a batch the next full batch is read (a 1-tile
    block alone would leave the model waiting on the reader at every row)."""
    from eoseg.predict import READ_BLOCK_TILES

    grid, read, net = random_run(5, 6 * 32, 5 * 32)
    batch = READ_BLOCK_TILES
    assert len(grid.col_offsets) == batch + 1
    state = {"read": 0, "forwarded": 0, "ready": []}

    def read_tile(tile):
        state["read"] += 1
        return read(tile)

    def slow_forward(x):
        # a forward long enough for the reader to queue the next batch: wait for it (up to 2 s, so a loaded
        # machine does not fail the test), then record what the reader has queued
        state["forwarded"] += x.shape[0]
        wanted = min(batch, len(grid) - state["forwarded"])
        deadline = time.monotonic() + 2.0
        while state["read"] - state["forwarded"] < wanted and time.monotonic() < deadline:
            time.sleep(0.005)
        state["ready"].append(min(state["read"] - state["forwarded"], batch))
        return net(x)

    run_tiles(grid, read_tile, slow_forward, 3, lambda *a: None, batch_size=batch)
    assert state["forwarded"] == len(grid) == 30
    assert state["ready"] == [4, 4, 4, 4, 4, 4, 2, 0]  # after each batch the next one is read, or what is left


@pytest.mark.parametrize("block_tiles", [1, 2, 3, 4])
def test_the_strip_reader_gives_the_same_tiles_whatever_its_block(s2_scene, random_bundle, block_tiles):
    """Reading a tile row in blocks of columns (the pipeline's reader) or whole cuts the same standardized tiles."""
    predictor = Predictor(random_bundle, PredictSettings(precision="fp32", tile_size=64, overlap=16))
    scene = predictor.open(s2_scene)
    grid = predictor.scene_grid(scene)
    std = predictor.scene_standardization(scene)
    with SceneReader(scene) as reader:
        whole = [strip_tile_reader(reader, grid, std, block_tiles=0)(t) for t in grid]
        blocks = [strip_tile_reader(reader, grid, std, block_tiles=block_tiles)(t) for t in grid]
    assert len(grid.col_offsets) > 3
    for (x0, v0), (x1, v1) in zip(whole, blocks, strict=True):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(v0, v1)


# ------------------------------------------------------------------ errors stop every stage, no hang


@pytest.mark.parametrize("where", ["reader", "forward", "writer", "first sink of two"])
def test_an_error_in_any_stage_stops_the_others_and_reaches_the_caller(where):
    grid, read, net = random_run(2, 600, 90, overlap=8, net_seed=2)
    calls = {"read": 0, "forward": 0, "rows": 0, "second sink": 0}

    class Boom(RuntimeError):
        pass

    def read_tile(tile):
        calls["read"] += 1
        if where == "reader" and tile.row == 5:
            raise Boom("reader failed on tile row 5")
        return read(tile)

    def forward(batch):
        calls["forward"] += 1
        if where == "forward" and calls["forward"] == 4:
            raise Boom("forward failed on batch 4")
        return net(batch)

    def sink(r0, cls, p):
        calls["rows"] += 1
        if where in ("writer", "first sink of two") and r0 > 100:
            raise Boom(f"writer failed at row {r0}")

    def second(r0, cls, p):
        calls["second sink"] += 1

    sinks = [sink, second] if where == "first sink of two" else sink
    finished, error = run_in_thread(lambda: run_tiles(grid, read_tile, forward, 3, sinks, batch_size=2))
    assert finished, "the pipeline hung"
    assert isinstance(error, Boom), error
    assert live_stage_threads() == []  # every stage thread was joined
    assert calls["read"] < len(grid)  # the reader stopped early instead of reading the whole scene
    if where == "first sink of two":
        assert calls["second sink"] == calls["rows"] - 1  # the failing block went no further


def test_stages_raise_the_first_error_not_the_cancellation():
    def waits_forever(ch):
        for _ in ch:
            pass

    def fails():
        raise ValueError("first")

    def run():
        with Stages() as stages:
            ch = stages.channel(1)
            stages.start("waiter", waits_forever, ch)
            stages.start("failer", fails)
            ch.wait_for_room()
            while True:  # the caller blocks on a full channel until cancelled
                ch.put(1)

    finished, error = run_in_thread(run, 20)
    assert finished and isinstance(error, ValueError) and str(error) == "first"
    assert not isinstance(error, Cancelled)


def test_predict_with_a_failing_writer_leaves_nothing(s2_scene, random_bundle, tmp_path, monkeypatch):
    """A failing output write in the writer thread removes every output and is the error the caller gets."""
    from eoseg.outputs import cog

    def failing_write(self, array, window):
        if window.row_off > 40:
            raise OSError("disk full in the writer thread")
        return real(self, array, window)

    real = cog.RasterSink.write
    monkeypatch.setattr(cog.RasterSink, "write", failing_write)
    predictor = Predictor(random_bundle, PredictSettings(precision="fp32", tile_size=64, overlap=16))
    finished, error = run_in_thread(lambda: predictor.predict(s2_scene, tmp_path, progress=False))
    assert finished and error is not None and "disk full" in str(error)
    assert list(tmp_path.iterdir()) == [] and live_stage_threads() == []
