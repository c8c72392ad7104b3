"""The IDX file format of MNIST, read and written from its description.

LeCun et al. describe IDX as: two zero bytes, one byte giving the element type
(0x08 = unsigned byte, the only type MNIST uses), one byte giving the number of
dimensions d, then d big-endian uint32 sizes, then the elements in C order.
Files may be gzip-compressed (the ``.gz`` the dataset is distributed as).

Every check names the file and what is wrong with it, so that a truncated
download or a mismatched pair of image/label files never trains silently.
"""
import gzip
import os
import struct

import numpy as np

# Type codes of the IDX format and the NumPy dtypes they map to (big-endian).
IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataFileError(ValueError):
    """A data file is missing, truncated, corrupt or inconsistent with its partner."""


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":  # gzip magic
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataFileError(f"{path}: file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataFileError(f"{path}: cannot decompress ({error}); the file is "
                            "truncated or corrupt, replace it") from None
    return raw


def read_idx(path):
    """Read one IDX file (gzipped or not) into a NumPy array of its own shape."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataFileError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise DataFileError(f"{path}: bad magic number (first two bytes are "
                            f"{raw[:2].hex()}, expected 0000); not an IDX file")
    if type_code not in IDX_TYPES:
        raise DataFileError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    if ndim == 0:
        raise DataFileError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path}: truncated inside its header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataFileError(f"{path}: {what}: header says shape {shape} "
                            f"({expected:,} data bytes) but the file holds {actual:,}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path, array):
    """Write an array as IDX (gzipped when ``path`` ends in .gz). Used by tests and tools."""
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
    code = codes[array.dtype.newbyteorder("=")]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(IDX_TYPES[code], copy=False).tobytes()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


def read_image_label_pair(images_path, labels_path, classes=10):
    """Read an images file (N, H, W) of bytes and its labels file (N,) of classes 0..classes-1,
    and check they belong together. The kernels index by label, so a label out of range
    must stop here, never reach them."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DataFileError(f"{images_path}: expected 3 dimensions (N, H, W), found shape {images.shape}")
    if images.dtype != np.uint8:
        raise DataFileError(f"{images_path}: pixels are {images.dtype}, expected unsigned bytes (IDX type "
                            "0x08) as in MNIST; convert the images to 0..255 bytes")
    if labels.ndim != 1:
        raise DataFileError(f"{labels_path}: expected 1 dimension (N,), found shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataFileError(f"{labels_path}: labels are {labels.dtype}, expected integers 0..{classes - 1}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        bad = labels[(labels < 0) | (labels >= classes)][0]
        raise DataFileError(f"{labels_path}: label {bad} found, a {classes}-class dataset has 0..{classes - 1}; "
                            "the file is damaged or belongs to another dataset")
    if len(images) != len(labels):
        raise DataFileError(f"{images_path} has {len(images):,} images but {labels_path} has "
                            f"{len(labels):,} labels; the two files do not belong together")
    return images, labels
