"""Fetching Fashion-MNIST and CIFAR-10 on first use: download, verify, extract.

Neither ships with minilottery (datasets.py reads them). ``fashion_mnist_folder`` and
``cifar10_folder`` return the folder that holds a dataset's files: a folder you name
(``--data-dir``), or else a cache folder (``cache_folder``: $MINILOTTERY_DATA or
~/.cache/minilottery, then the dataset's name) that they fill from the official URLs
the first time.

A download is written to a hidden temporary file beside its destination, checked
against the byte count the server announced and against the SHA-256 in ``SOURCES``,
and only then renamed into place (``os.replace``, atomic), so the cache never holds
a partial or corrupt file. The SHA-256 sums are those of the official files; the
dataset authors publish MD5s (CIFAR-10 binary c32a1d4ab5d03f1284b67883e8d87530;
Fashion-MNIST in its README), which are noted beside them. CIFAR-10 is read from its
*binary* distribution only (never the pickled one, which can run code on loading).
"""
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


from .idx import DataFileError

TIMEOUT = 60  # seconds of silence from the server before a download counts as dropped
CHUNK = 1 << 16


@dataclass(frozen=True)
class Source:
    """Where a dataset's files are published, and the SHA-256 each file must have."""
    base_url: str
    sha256: dict  # file name -> hex digest


SOURCES = {
    "fashion-mnist": Source("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        # MD5 8d4fb7e6c68d591d4c3dfef9ec88bf0d, 26,421,880 bytes
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        # MD5 25c81989df183df01b3e8a0aad5dffbe, 29,515 bytes
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        # MD5 bef4ecab320f06d8554ea6380940ec79, 4,422,102 bytes
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        # MD5 bb300cfdad3c16e7a12a480ee83cd310, 5,148 bytes
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    }),
    "cifar10": Source("https://www.cs.toronto.edu/~kriz/", {
        # MD5 c32a1d4ab5d03f1284b67883e8d87530, 170,052,171 bytes
        "cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    }),
}


class DownloadError(DataFileError):
    """A download failed: no connection, an HTTP error, a short read or a wrong checksum."""


# ---------------------------------------------------------------- downloading

class Progress:
    """One line on stderr, redrawn at each whole percent (or MB, when the size is unknown)."""

    def __init__(self, label, total):
        self.label, self.total, self.shown = label, total, None

    def update(self, done):
        step = done * 100 // self.total if self.total else done >> 20
        if step != self.shown:
            self.shown = step
            size = f"{done / 1e6:.1f} / {self.total / 1e6:.1f} MB ({step}%)" if self.total \
                else f"{done / 1e6:.1f} MB"
            print(f"\rdownloading {self.label}: {size}", end="", file=sys.stderr, flush=True)

    def close(self):
        print(file=sys.stderr, flush=True)


def download(url, destination, sha256, timeout=TIMEOUT):
    """Fetch ``url`` to ``destination`` if and only if all of it arrives with digest ``sha256``."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = tempfile.NamedTemporaryFile(dir=destination.parent, prefix=f".{destination.name}.",
                                          suffix=".part", delete=False)
    try:
        digest, received = hashlib.sha256(), 0
        with partial, urllib.request.urlopen(url, timeout=timeout) as response:
            announced = response.headers.get("Content-Length")
            announced = int(announced) if announced else None
            progress = Progress(destination.name, announced)
            try:
                while chunk := response.read(CHUNK):
                    partial.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.update(received)
            finally:
                progress.close()
        # http.client returns a short body without complaint when the server hangs
        # up early, so the byte count is the check that catches a dropped download.
        if announced is not None and received != announced:
            raise DownloadError(f"{url}: the connection closed after {received:,} of "
                                f"{announced:,} bytes")
        if digest.hexdigest() != sha256.lower():
            raise DownloadError(f"{url}: SHA-256 of the {received:,} bytes received is "
                                f"{digest.hexdigest()}, expected {sha256}; the file is "
                                "corrupt or not the official one")
        os.replace(partial.name, destination)
    except urllib.error.URLError as error:  # includes HTTPError (404 and the like)
        raise DownloadError(f"{url}: {getattr(error, 'reason', error)}") from None
    except (OSError, http.client.HTTPException) as error:  # reset, timeout, bad response
        raise DownloadError(f"{url}: download interrupted ({error!r})") from None
    finally:  # on any failure, Ctrl-C included, the partial file goes
        Path(partial.name).unlink(missing_ok=True)
    return destination


def how_to_get(name, folder, reason):
    """The one-line error for a dataset that is neither on disk nor downloadable."""
    source = SOURCES[name]
    urls = " ".join(source.base_url + file for file in source.sha256)
    return (f"{name}: {reason}. Download {urls} into {folder} (or into any folder and "
            f"pass --data-dir FOLDER), or use --dataset mnist, which ships with "
            f"minilottery and works offline")


def cache_folder(name):
    """Where downloaded datasets are kept: $MINILOTTERY_DATA or ~/.cache/minilottery, then the name."""
    root = os.environ.get("MINILOTTERY_DATA") or Path.home() / ".cache" / "minilottery"
    return Path(root) / name


def locate(name, data_dir, present):
    """The folder holding ``name``'s files: ``data_dir`` as given, or the cache, filled if need be.

    ``present(folder)`` says whether a folder already holds what the loader reads.
    """
    if data_dir is not None:
        folder = Path(data_dir)
        if not present(folder):
            raise DataFileError(how_to_get(name, folder, f"its files are not in {folder}"))
        return folder
    folder = cache_folder(name)
    if not present(folder):
        source = SOURCES[name]
        for file, sha256 in source.sha256.items():
            if not (folder / file).exists():
                try:
                    download(source.base_url + file, folder / file, sha256)
                except DownloadError as error:
                    raise DataFileError(how_to_get(name, folder, str(error))) from None
        if not present(folder):
            raise DataFileError(how_to_get(name, folder, f"its files are not in {folder}"))
    return folder


# ---------------------------------------------------------------- CIFAR-10

FASHION_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"]  # MNIST's names
CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-bin"  # what the archive unpacks to
CIFAR_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
CIFAR_TEST = ["test_batch.bin"]


def fashion_mnist_folder(data_dir=None):
    """The folder with Fashion-MNIST's four IDX files (MNIST's names), fetched if need be."""
    def present(folder):
        return all((folder / stem).exists() or (folder / (stem + ".gz")).exists() for stem in FASHION_FILES)

    return locate("fashion-mnist", data_dir, present)


def cifar10_folder(data_dir=None):
    """The folder with CIFAR-10's six binary batch files, fetched and extracted if need be."""
    def present(folder):
        return find_cifar_batches(folder) is not None or (folder / CIFAR_ARCHIVE).is_file()

    folder = locate("cifar10", data_dir, present)
    batches = find_cifar_batches(folder)
    if batches is None:
        extract_tar(folder / CIFAR_ARCHIVE, folder)
        batches = find_cifar_batches(folder)
        if batches is None:
            raise DataFileError(f"{folder / CIFAR_ARCHIVE} holds no {CIFAR_FOLDER}/ with "
                                f"{', '.join(CIFAR_TRAIN + CIFAR_TEST)}")
    return batches


def find_cifar_batches(folder):
    """The folder with the six binary batch files: ``folder/cifar-10-batches-bin`` or ``folder``."""
    for candidate in (folder / CIFAR_FOLDER, folder):
        if all((candidate / file).is_file() for file in CIFAR_TRAIN + CIFAR_TEST):
            return candidate
    return None


def check_tar_member(member, archive):
    """Refuse an archive entry that could write outside the folder it is extracted into."""
    path = PurePosixPath(member.name)
    if path.is_absolute():
        why = "it is an absolute path"
    elif ".." in path.parts:
        why = "it climbs out of the folder with '..'"
    elif member.issym() or member.islnk():
        why = f"it is a link (to {member.linkname!r}); the official archive has none"
    elif not (member.isfile() or member.isdir()):
        why = "it is a device, pipe or other special file"
    else:
        return
    raise DataFileError(f"{archive}: refusing to extract {member.name!r}: {why}. This is not "
                        "the official archive; delete it")


def extract_tar(archive, folder):
    """Unpack ``archive`` into ``folder``, entry by entry after checking every entry.

    Entries are written into a hidden staging folder and moved into place only when
    all of them are out, so an interrupted extraction leaves nothing half-written.
    """
    folder = Path(folder)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".extracting-"))
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                check_tar_member(member, archive)
            for member in members:
                target = staging / member.name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
        for entry in staging.iterdir():
            if (folder / entry.name).exists():
                raise DataFileError(f"{folder / entry.name} already exists but is incomplete; "
                                    f"delete it so that it is extracted again from {archive}")
            os.replace(entry, folder / entry.name)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataFileError(f"{archive}: cannot extract ({error}); the archive is truncated "
                            "or corrupt, delete it") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


