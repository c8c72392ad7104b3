"""Files of a run: JSON, CSV and NPZ only, written atomically, read with clear errors.

Every write goes to a temporary file in the same folder and is renamed into place
(``os.replace`` is atomic on POSIX), so a run killed at any moment leaves either
the old file or the new one, never half of one. NPZ files are read with
``allow_pickle=False``: a run folder never executes code when loaded.
"""
import csv
import errno
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np


class RunFileError(ValueError):
    """A file of a run folder is missing or damaged."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, payload):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise RunFileError(f"{path}: cannot write ({error.strerror}); {_what_to_do(error)}") from None
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError):  # disk full, quota, read-only: the old file is still whole
            raise RunFileError(f"{path}: cannot write ({error.strerror}); {_what_to_do(error)}") from None
        raise


def _what_to_do(error):
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space and run the same command again: finished results are kept"
    return "check the folder's permissions, or choose another --out"


def write_json(path, value):
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunFileError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFileError(f"{path}: damaged JSON ({error}); delete it to recompute") from None


def write_npz(path, arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise RunFileError(f"{path}: file not found") from None
    except Exception as error:  # zipfile, pickle refusal, truncated data: all mean damaged
        raise RunFileError(f"{path}: damaged NPZ file ({type(error).__name__}: {error}); "
                           "delete it to recompute") from None


def write_csv(path, rows, columns):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def read_csv(path):
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise RunFileError(f"{path}: file not found") from None
