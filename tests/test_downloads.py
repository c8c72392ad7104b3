"""Downloading and reading Fashion-MNIST and CIFAR-10 (minilottery.downloads).

The real download code runs against a local HTTP server on 127.0.0.1 that serves
tiny files in the real formats, generated here: IDX files written by
``minilottery.idx.write_idx`` and a CIFAR-10 binary archive with a few 3,073-byte
records per batch. The server can also misbehave: announce more bytes than it
sends, or reset the connection half way.
"""
import hashlib
import http.server
import io
import socket
import struct
import tarfile
import threading

import numpy as np
import pytest

from minilottery import datasets, downloads
from minilottery.idx import DataFileError, write_idx

CIFAR_FILES = downloads.CIFAR_TRAIN + downloads.CIFAR_TEST


class Server:
    """Files served at http://127.0.0.1:PORT/NAME; ``behaviour[NAME]`` makes one misbehave."""

    def __init__(self):
        self.files, self.behaviour = {}, {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                if name not in server.files:
                    self.send_error(404)
                    return
                body, how = server.files[name], server.behaviour.get(name)
                self.send_response(200)
                if how != "no-length":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if how in ("truncate", "reset", "no-length"):
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    if how == "reset":  # abortive close: the client sees a TCP reset
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   struct.pack("ii", 1, 0))
                        self.connection.close()
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    served = Server()
    yield served
    served.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILOTTERY_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def serve(monkeypatch, server, name, files, sha256=None):
    """Serve ``files`` as dataset ``name``'s source, with their true SHA-256 unless given."""
    server.files.update(files)
    sums = sha256 or {file: hashlib.sha256(body).hexdigest() for file, body in files.items()}
    monkeypatch.setitem(downloads.SOURCES, name, downloads.Source(server.url, sums))


def dead_url():
    """A URL on a local port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def leftovers(folder):
    return sorted(path.name for path in folder.rglob("*")) if folder.exists() else []


# ---------------------------------------------------------------- tiny datasets

TINY_BATCH = 4  # records per tiny batch file, in place of CIFAR-10's 10,000


@pytest.fixture(autouse=True)
def tiny_cifar_batches(monkeypatch):
    monkeypatch.setattr(datasets, "CIFAR_BATCH", TINY_BATCH)


def tiny_cifar(seed=0, per_batch=TINY_BATCH):
    """Records of each batch file: (labels (n,) uint8, pixels (n, 3, 32, 32) uint8)."""
    rng = np.random.default_rng(seed)
    batches = {}
    for file in CIFAR_FILES:
        n = per_batch
        batches[file] = (rng.integers(0, 10, n, dtype=np.uint8),
                         rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))
    return batches


def cifar_bytes(labels, pixels):
    return np.column_stack([labels, pixels.reshape(len(labels), -1)]).tobytes()


def tar_bytes(files, extra=()):
    """A .tar.gz holding ``files`` (name -> bytes) and any extra hand-made TarInfo entries."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buffer.getvalue()


def cifar_archive(batches):
    return tar_bytes({f"{downloads.CIFAR_FOLDER}/{file}": cifar_bytes(*records)
                      for file, records in batches.items()})


def tiny_fashion(folder, n_train=20, n_test=10, seed=1, suffix=".gz"):
    """Write the four IDX files into ``folder``; returns the pixels and labels written."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        images_stem, labels_stem = datasets.IDX_NAMES[part]
        write_idx(folder / (images_stem + suffix), images)
        write_idx(folder / (labels_stem + suffix), labels)
        arrays[part] = (images, labels)
    return arrays


def unnormalise(x, mean, std):
    return np.rint((x * std[:, None, None] + mean[:, None, None]) * 255).astype(np.uint8)


# ---------------------------------------------------------------- CIFAR-10

def test_cifar10_is_downloaded_verified_extracted_and_cached(server, cache, monkeypatch, capsys):
    batches = tiny_cifar()
    serve(monkeypatch, server, "cifar10", {downloads.CIFAR_ARCHIVE: cifar_archive(batches)})
    data = datasets.load_cifar10(validation_size=5)
    assert "downloading cifar-10-binary.tar.gz" in capsys.readouterr().err

    assert data.x_train.shape == (15, 3, 32, 32) and data.x_val.shape == (5, 3, 32, 32)
    assert data.x_test.shape == (4, 3, 32, 32) and data.input_shape == (3, 32, 32)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    # The split is the datasets module's fixed permutation of the 20 training records.
    labels = np.concatenate([batches[file][0] for file in downloads.CIFAR_TRAIN])
    pixels = np.concatenate([batches[file][1] for file in downloads.CIFAR_TRAIN])
    x_train, y_train, x_val, y_val = datasets.split_validation(pixels, labels, 5)
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_val, y_val)
    np.testing.assert_array_equal(data.y_test, batches["test_batch.bin"][0])
    # Normalised by the training split's own per-channel statistics...
    mean = x_train.mean(axis=(0, 2, 3)) / 255
    std = x_train.std(axis=(0, 2, 3)) / 255
    np.testing.assert_allclose(data.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(axis=(0, 2, 3)), 1, atol=1e-4)
    # ...and every pixel, once un-normalised, is the record's byte in NCHW order.
    np.testing.assert_array_equal(unnormalise(data.x_train, mean, std), x_train)
    np.testing.assert_array_equal(unnormalise(data.x_val, mean, std), x_val)
    np.testing.assert_array_equal(unnormalise(data.x_test, mean, std), batches["test_batch.bin"][1])

    folder = cache / "cifar10"
    assert sorted(path.name for path in folder.iterdir()) == [downloads.CIFAR_FOLDER,
                                                              downloads.CIFAR_ARCHIVE]
    server.files.clear()  # the second load must come from the cache alone
    again = datasets.load_cifar10(validation_size=5)
    np.testing.assert_array_equal(again.x_train, data.x_train)


def test_cifar10_reads_a_data_dir_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setitem(downloads.SOURCES, "cifar10", downloads.Source(dead_url(), {}))
    batches = tiny_cifar(seed=3)
    (tmp_path / downloads.CIFAR_ARCHIVE).write_bytes(cifar_archive(batches))
    from_archive = datasets.load_cifar10(tmp_path, validation_size=5)
    # The extracted folder itself, named directly, is read the same way.
    from_folder = datasets.load_cifar10(tmp_path / downloads.CIFAR_FOLDER, validation_size=5)
    np.testing.assert_array_equal(from_archive.x_test, from_folder.x_test)
    np.testing.assert_array_equal(from_archive.y_test, batches["test_batch.bin"][0])


def test_cifar10_refuses_a_batch_file_that_is_not_whole_records(tmp_path):
    folder = tmp_path / downloads.CIFAR_FOLDER
    folder.mkdir()
    for file, records in tiny_cifar().items():
        (folder / file).write_bytes(cifar_bytes(*records))
    with open(folder / "data_batch_3.bin", "ab") as f:
        f.write(b"\0" * 100)
    with pytest.raises(DataFileError, match="data_batch_3.bin: 12,392 bytes is not a whole number"):
        datasets.load_cifar10(tmp_path, validation_size=5)


def test_cifar10_refuses_a_batch_of_the_wrong_size(tmp_path):
    folder = tmp_path / downloads.CIFAR_FOLDER
    folder.mkdir()
    for file, (labels, pixels) in tiny_cifar().items():
        keep = 3 if file == "data_batch_2.bin" else TINY_BATCH
        (folder / file).write_bytes(cifar_bytes(labels[:keep], pixels[:keep]))
    with pytest.raises(DataFileError, match="data_batch_2.bin: holds 3 records, a CIFAR-10 batch holds 4"):
        datasets.load_cifar10(tmp_path, validation_size=5)


def hostile_entry(kind):
    if kind in ("dotdot", "absolute"):
        info = tarfile.TarInfo("../evil" if kind == "dotdot" else "/tmp/minilottery-evil")
        info.size = 1
        return info
    info = tarfile.TarInfo(f"{downloads.CIFAR_FOLDER}/link")
    info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
    info.linkname = "/etc/passwd" if kind == "symlink" else "../../outside"
    return info


@pytest.mark.parametrize("kind, why", [("dotdot", "'..'"), ("absolute", "absolute path"),
                                       ("symlink", "is a link"), ("hardlink", "is a link")])
def test_tar_extraction_refuses_entries_that_leave_the_folder(tmp_path, kind, why):
    folder = tmp_path / "inside"
    folder.mkdir()
    archive = folder / downloads.CIFAR_ARCHIVE
    good = {f"{downloads.CIFAR_FOLDER}/readme.txt": b"fine"}
    archive.write_bytes(tar_bytes(good, extra=[hostile_entry(kind)]))
    with pytest.raises(DataFileError, match=f"refusing to extract .*{why}"):
        downloads.extract_tar(archive, folder)
    # Nothing at all was extracted, not even the harmless entry before the bad one.
    assert leftovers(tmp_path) == [downloads.CIFAR_ARCHIVE, "inside"]


def test_a_hostile_download_is_refused_by_the_loader(server, cache, monkeypatch):
    archive = tar_bytes({}, extra=[hostile_entry("dotdot")])
    serve(monkeypatch, server, "cifar10", {downloads.CIFAR_ARCHIVE: archive})
    with pytest.raises(DataFileError, match="refusing to extract '../evil'"):
        datasets.load_cifar10(validation_size=5)
    assert not (cache / "evil").exists()


# ---------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_is_downloaded_and_scaled_like_mnist(server, cache, monkeypatch, tmp_path):
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    arrays = tiny_fashion(upstream)
    serve(monkeypatch, server, "fashion-mnist",
          {path.name: path.read_bytes() for path in upstream.iterdir()})
    data = datasets.load_fashion_mnist(validation_size=5)
    assert data.name == "fashion-mnist" and data.input_shape == (1, 28, 28)
    assert len(data.x_train) == 15 and len(data.x_val) == 5 and len(data.x_test) == 10
    np.testing.assert_array_equal(data.x_test[:, 0], arrays["test"][0] / np.float32(255))
    np.testing.assert_array_equal(data.y_test, arrays["test"][1])
    assert leftovers(cache / "fashion-mnist") == sorted(path.name for path in upstream.iterdir())


def test_fashion_mnist_reads_uncompressed_files_through_datasets_load(tmp_path, monkeypatch):
    monkeypatch.setitem(downloads.SOURCES, "fashion-mnist", downloads.Source(dead_url(), {}))
    assert datasets.dataset_names() == ["mnist", "fashion-mnist", "cifar10"]
    arrays = tiny_fashion(tmp_path, n_train=5003, n_test=4, suffix="")
    data = datasets.load("fashion-mnist", tmp_path)  # the paper's 5,000-image validation set
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (3, 5000, 4)
    np.testing.assert_array_equal(data.x_test[:, 0] * 255, arrays["test"][0])


# ---------------------------------------------------------------- failed downloads

def fashion_files(tmp_path):
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    tiny_fashion(upstream)
    return {path.name: path.read_bytes() for path in upstream.iterdir()}


def test_a_wrong_checksum_keeps_nothing(server, cache, monkeypatch, tmp_path):
    files = fashion_files(tmp_path)
    sums = {file: hashlib.sha256(body).hexdigest() for file, body in files.items()}
    sums["t10k-labels-idx1-ubyte.gz"] = hashlib.sha256(b"something else").hexdigest()
    serve(monkeypatch, server, "fashion-mnist", files, sums)
    with pytest.raises(DataFileError, match="t10k-labels-idx1-ubyte.gz: SHA-256 .* expected "
                       + sums["t10k-labels-idx1-ubyte.gz"]):
        datasets.load_fashion_mnist(validation_size=5)
    # The three good files stay; the bad one, and no partial file, is there.
    assert "t10k-labels-idx1-ubyte.gz" not in leftovers(cache / "fashion-mnist")
    assert not any(name.endswith(".part") for name in leftovers(cache / "fashion-mnist"))


@pytest.mark.parametrize("how, message", [("truncate", r"closed after [\d,]+ of [\d,]+ bytes"),
                                          ("reset", "closed after|interrupted"),
                                          ("no-length", "SHA-256")])
def test_a_broken_download_keeps_nothing(server, cache, monkeypatch, how, message):
    archive = cifar_archive(tiny_cifar(per_batch=2))
    serve(monkeypatch, server, "cifar10", {downloads.CIFAR_ARCHIVE: archive})
    server.behaviour[downloads.CIFAR_ARCHIVE] = how
    with pytest.raises(DataFileError, match=message):
        datasets.load_cifar10(validation_size=5)
    assert leftovers(cache / "cifar10") == []


def test_ctrl_c_during_a_download_keeps_nothing(server, cache, monkeypatch):
    serve(monkeypatch, server, "cifar10", {downloads.CIFAR_ARCHIVE: cifar_archive(tiny_cifar())})

    def interrupt(self, done):
        raise KeyboardInterrupt
    monkeypatch.setattr(downloads.Progress, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        datasets.load_cifar10(validation_size=5)
    assert leftovers(cache / "cifar10") == []


def test_an_http_error_is_reported(server, cache, monkeypatch):
    serve(monkeypatch, server, "cifar10", {}, {downloads.CIFAR_ARCHIVE: "0" * 64})
    with pytest.raises(DataFileError, match="cifar-10-binary.tar.gz: Not Found"):
        datasets.load_cifar10()


@pytest.mark.parametrize("name", ["cifar10", "fashion-mnist"])
def test_unreachable_dataset_says_how_to_get_it(cache, monkeypatch, name):
    real = downloads.SOURCES[name]
    monkeypatch.setitem(downloads.SOURCES, name, downloads.Source(dead_url(), real.sha256))
    with pytest.raises(DataFileError) as caught:
        datasets.LOADERS[name]()
    message = str(caught.value)
    assert "\n" not in message
    for file in real.sha256:
        assert downloads.SOURCES[name].base_url + file in message
    assert str(cache / name) in message and "--data-dir" in message
    assert "--dataset mnist" in message and "offline" in message
    assert leftovers(cache / name) == []


def test_a_data_dir_without_the_files_says_how_to_get_them(tmp_path):
    with pytest.raises(DataFileError, match=f"not in {tmp_path}.*www.cs.toronto.edu/~kriz/"
                       "cifar-10-binary.tar.gz into .*--dataset mnist"):
        datasets.load_cifar10(tmp_path)
