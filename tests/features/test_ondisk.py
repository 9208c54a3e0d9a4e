"""Reading a .npy feature file by row blocks: same rows as np.load, bad files named, the
streamed mean and normalisation equal the in-memory ones, a file changed while streamed stops
the reader."""

import os

import numpy as np
import pytest
import torch

from sealab.features.ondisk import FileChangedError, NpyRows, StreamedFeatures, file_signature
from sealab.heads.normalize import FeatureNormalizer


def write(path, array):
    np.save(path, array)
    return path


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_blocks_are_the_rows_np_load_gives(tmp_path, dtype):
    x = np.random.default_rng(0).normal(size=(23, 5)).astype(dtype)
    rows = NpyRows(write(tmp_path / "f.npy", x))
    assert rows.shape == (23, 5) and rows.dtype == dtype
    got = [(start, block.copy()) for start, block in rows.blocks(7)]  # each block reuses one buffer
    assert [start for start, _ in got] == [0, 7, 14, 21]
    assert [len(block) for _, block in got] == [7, 7, 7, 2]  # the last block is short
    np.testing.assert_array_equal(np.concatenate([b for _, b in got]), x)
    np.testing.assert_array_equal(rows.read(20, 100), x[20:])  # clipped to the file


def test_mean_is_accumulated_in_float64(tmp_path):
    x = (np.random.default_rng(1).normal(size=(1000, 4)) + 100).astype(np.float16)
    rows = NpyRows(write(tmp_path / "f.npy", x))
    expected = x.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(rows.mean(block_rows=64).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("array, message", [
    (np.zeros(5, np.float32), "2-d"),
    (np.zeros((4, 3), np.int64), "float16 or float32"),
    (np.asfortranarray(np.zeros((4, 3), np.float32)), "Fortran order"),
])
def test_unstreamable_arrays_are_named_with_the_fix(tmp_path, array, message):
    path = write(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=message) as err:
        NpyRows(path)
    assert "bad.npy" in str(err.value) and "np.save" in str(err.value)


def test_truncated_and_foreign_files_fail_early(tmp_path):
    path = write(tmp_path / "f.npy", np.zeros((10, 4), np.float32))
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ValueError, match="truncated"):
        NpyRows(path)
    (tmp_path / "x.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match="not a .npy file"):
        NpyRows(tmp_path / "x.npy")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        NpyRows(tmp_path / "missing.npy")


@pytest.mark.parametrize("norm", ["l2", "center_l2", "none"])
def test_streamed_normalisation_equals_in_memory(tmp_path, norm):
    x = (np.random.default_rng(2).normal(size=(50, 6)) + 3).astype(np.float16)
    rows = NpyRows(write(tmp_path / "f.npy", x))
    in_memory = torch.from_numpy(x).float()
    fitted = FeatureNormalizer(norm).fit(in_memory)
    streamed = FeatureNormalizer(norm).fit_rows(rows, block_rows=8)
    torch.testing.assert_close(streamed.mean, fitted.mean, rtol=1e-6, atol=1e-6)
    streamed.mean = fitted.mean  # the same mean: then the blocks are bit-identical
    data = StreamedFeatures(rows, torch.zeros(50), block_rows=8, transform=streamed.normalize_)
    blocks = torch.cat([data.read([(start, start + 8)]) for start in range(0, 50, 8)])
    assert torch.equal(blocks, fitted(in_memory))


def test_streamed_features_check_their_targets_and_block_size(tmp_path):
    rows = NpyRows(write(tmp_path / "f.npy", np.zeros((10, 4), np.float16)))
    with pytest.raises(ValueError, match="10 feature rows but 9 targets"):
        StreamedFeatures(rows, torch.zeros(9), block_rows=4)
    with pytest.raises(ValueError, match="features.block_rows=0 must be a positive multiple"):
        StreamedFeatures(rows, torch.zeros(10), block_rows=0)
    with pytest.raises(ValueError, match="block_rows=6 must be a positive multiple of features.chunk_rows=4"):
        StreamedFeatures(rows, torch.zeros(10), block_rows=6, chunk_rows=4)


def test_ranges_are_read_one_after_the_other_into_the_buffers(tmp_path):
    x = np.arange(40, dtype=np.float16).reshape(10, 4)
    data = StreamedFeatures(NpyRows(write(tmp_path / "f.npy", x)), torch.zeros(10), block_rows=6, chunk_rows=3)
    raw, out = np.full((6, 4), -1, np.float16), torch.full((6, 4), -1.0)
    got = data.read([(0, 3), (7, 10)], raw, out)
    assert got.data_ptr() == out.data_ptr()  # the buffer itself, no copy
    assert torch.equal(got, torch.from_numpy(x[[0, 1, 2, 7, 8, 9]]).float())


def made_an_hour_ago(path):
    """A file written well before it is read, as a cache entry is: a write now changes its
    modification time even on filesystems whose clock ticks every few milliseconds."""
    past = path.stat().st_mtime_ns - 3600 * 10**9
    os.utime(path, ns=(past, past))
    return path


@pytest.mark.parametrize("change", ["in_place", "replaced", "appended"])
def test_a_file_changed_while_streamed_stops_the_reader_naming_it(tmp_path, change):
    x = np.arange(40, dtype=np.float16).reshape(10, 4)
    path = made_an_hour_ago(write(tmp_path / "f.npy", x))
    rows = NpyRows(path)
    np.testing.assert_array_equal(rows.read(0, 10), x)
    if change == "in_place":  # same size and inode: only the modification time tells
        with path.open("r+b") as f:
            f.seek(-8, os.SEEK_END)
            f.write(b"\x00" * 8)
    elif change == "replaced":  # another file renamed over it, as a cache entry made again is
        write(tmp_path / "new.npy", x).replace(path)
    else:
        with path.open("ab") as f:
            f.write(b"\x00" * 8)
    with pytest.raises(FileChangedError, match="changed on disk after its rows were checked") as err:
        rows.read(0, 1)
    assert str(path) in str(err.value) and "Run again" in str(err.value)
    assert NpyRows(path).read(0, 1) is not None  # a new reader takes the file as it now is


def test_a_reader_given_the_signature_of_the_verified_file_refuses_another(tmp_path):
    path = made_an_hour_ago(write(tmp_path / "f.npy", np.zeros((10, 4), np.float16)))
    with path.open("rb") as f:
        verified = file_signature(f.fileno())
    assert NpyRows(path, verified).signature == verified
    write(tmp_path / "f.npy", np.ones((10, 4), np.float16))  # rewritten between check and stream
    with pytest.raises(FileChangedError, match="f.npy changed on disk"):
        NpyRows(path, verified)
