"""The IDX reader: round trip, and every kind of broken file gives one clear error."""
import gzip

import numpy as np
import pytest

from minilottery import datasets
from minilottery.idx import DataFileError, read_idx, read_image_label_pair, write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, rng, suffix):
    images = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    write_idx(tmp_path / f"x{suffix}", images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"x{suffix}"), images)


def test_truncated_file(tmp_path, rng):
    write_idx(tmp_path / "x", rng.integers(0, 256, (10, 3, 3), dtype=np.uint8))
    raw = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(raw[:-5])
    with pytest.raises(DataFileError, match=r"x: truncated.*shape \(10, 3, 3\)"):
        read_idx(tmp_path / "x")


def test_truncated_gzip(tmp_path, rng):
    write_idx(tmp_path / "x.gz", rng.integers(0, 256, (100, 28, 28), dtype=np.uint8))
    raw = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "x.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFileError, match="x.gz: cannot decompress"):
        read_idx(tmp_path / "x.gz")


def test_wrong_magic(tmp_path):
    (tmp_path / "x").write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataFileError, match="bad magic number"):
        read_idx(tmp_path / "x")


def test_unknown_type_code(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataFileError, match="unknown IDX type code 0x07"):
        read_idx(tmp_path / "x")


def test_count_mismatch(tmp_path, rng):
    write_idx(tmp_path / "images", rng.integers(0, 256, (6, 2, 2), dtype=np.uint8))
    write_idx(tmp_path / "labels", rng.integers(0, 10, 5, dtype=np.uint8))
    with pytest.raises(DataFileError, match="6 images but .*labels has 5 labels"):
        read_image_label_pair(tmp_path / "images", tmp_path / "labels")


def test_data_dir_reads_any_mnist_format_folder(tmp_path, rng):
    for stem, n in [("train", 6000), ("t10k", 50)]:
        write_idx(tmp_path / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        with gzip.open(tmp_path / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\x00\x00\x08\x01" + n.to_bytes(4, "big") + rng.integers(0, 10, n, dtype=np.uint8).tobytes())
    data = datasets.load("mnist", data_dir=tmp_path)
    assert data.x_train.shape == (1000, 1, 28, 28) and data.x_val.shape == (5000, 1, 28, 28)
    assert data.x_test.shape == (50, 1, 28, 28) and data.x_train.dtype == np.float32


def test_missing_file_names_the_folder(tmp_path):
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte.*not found"):
        datasets.load("mnist", data_dir=tmp_path)


def test_shipped_mnist_split(mnist):
    assert (len(mnist.x_train), len(mnist.x_val), len(mnist.x_test)) == (55000, 5000, 10000)
    assert mnist.x_train.dtype == np.float32 and 0 <= mnist.x_train.min() and mnist.x_train.max() <= 1
    assert np.bincount(mnist.y_test).tolist()[:2] == [980, 1135]  # the canonical test set
    assert np.bincount(mnist.y_val).min() > 400  # the held-out images cover every class


def test_batches_reshuffle_every_epoch_and_resume():
    x = np.arange(10, dtype=np.float32)[:, None]
    batches = datasets.Batches(x, np.arange(10), 4, seed=3)
    epoch1 = [batches.next()[1] for _ in range(2)]
    saved = batches.state()
    epoch2 = [batches.next()[1] for _ in range(2)]
    assert len(set(np.concatenate(epoch1))) == 8
    assert not np.array_equal(np.concatenate(epoch1), np.concatenate(epoch2))
    batches.load_state(saved)
    np.testing.assert_array_equal(np.concatenate([batches.next()[1] for _ in range(2)]), np.concatenate(epoch2))
    with pytest.raises(ValueError, match="batch size 11"):
        datasets.Batches(x, np.arange(10), 11, seed=0)
