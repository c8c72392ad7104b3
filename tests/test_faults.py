"""Faults and bad input, as a matrix (issue 12): no crash by signal, no silently wrong run,
every interruption resumable. The tally is printed at the end of the test session.

* kill -9, SIGTERM and SIGINT at six points of a run: during training, during an
  evaluation, while a checkpoint or final weights are written, between branches and
  between rounds. Every run resumes to files identical to an uninterrupted run's.
* the disk filling while a checkpoint, final weights, metrics or the summary is written:
  a one-line error naming the file, and every earlier file intact.
* every kind of run-folder file damaged, truncated or of the wrong shape: a one-line error
  that names the file and what to do, or a clean recomputation.
* data files truncated, not gzip, of the wrong magic or element type, with counts that
  disagree or labels out of range; CIFAR-10 batches of the wrong size.

The kill -9 runs need a process of their own (tests/faults.py); everything else runs in
this one, with the fault put in place by monkeypatch.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cli
import faults
from minilottery import datasets, downloads, files, idx, rundir
from minilottery.idx import DataFileError

POINTS = [("train", 150), ("evaluate", 14), ("write:checkpoint.npz", 2), ("write:final.npz", 2), ("job", 2),
          ("round", 1)]
MID_TRAINING = ("train", "evaluate", "write:checkpoint.npz")  # a branch is half trained there


@pytest.fixture(scope="module")
def arguments(small_mnist):
    # 4 jobs (ticket and reinit at rounds 0 and 1) of 200 steps, 11 evaluations and 2 checkpoints each
    return ["--rounds", "1", "--controls", "reinit", "--iterations", "200", "--eval-every", "50",
            "--checkpoint-every", "100", "--data-dir", str(small_mnist), "--quiet", "--workers", "1"]


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """Figures are tested elsewhere (test_plots_report.py); here they only cost time."""
    monkeypatch.setattr(cli, "write_figures_and_report", lambda root: None)


def imp(*arguments):
    return CliRunner().invoke(cli.main, ["imp", *map(str, arguments)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, arguments):
    root = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "write_figures_and_report", lambda root: None)
        result = imp(*arguments, "--out", root)
    assert result.exit_code == 0, result.output
    return root


def branch_files(root):
    return sorted(path.relative_to(root) for path in Path(root).glob("trial*/round*/*/*")
                  if path.suffix in (".npz", ".json"))


def without_wall_time(path):
    values = files.read_json(path)
    values.pop("wall_time_s", None)
    return values


def assert_identical_to(reference, root):
    """The same files: weights bit for bit, metrics and summary but for wall time."""
    assert branch_files(root) == branch_files(reference)
    for name in branch_files(reference):
        if name.name == "metrics.json":
            assert without_wall_time(Path(root) / name) == without_wall_time(Path(reference) / name), name
        elif name.suffix == ".npz":
            mine, theirs = files.read_npz(Path(root) / name), files.read_npz(Path(reference) / name)
            assert mine.keys() == theirs.keys()
            for key in mine:
                np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"{name}: {key}")
        else:
            assert (Path(root) / name).read_bytes() == (Path(reference) / name).read_bytes(), name
    strip = [c for c in rundir.SUMMARY_COLUMNS if c != "wall_time_s"]
    rows = [[{k: row[k] for k in strip} for row in files.read_csv(Path(r) / "summary.csv")] for r in (reference, root)]
    assert rows[0] == rows[1]
    assert not list(Path(root).glob("**/checkpoint.npz")) and not (Path(root) / ".stop").exists()


def one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and all(needle in lines[-1] for needle in needles), lines[-1]
    return lines[-1]


# ---------------------------------------------------------------------------- kill -9, SIGTERM, SIGINT

@pytest.mark.parametrize("point, count", POINTS, ids=[p for p, _ in POINTS])
def test_kill_9_then_resume(reference, arguments, tmp_path, point, count):
    root = tmp_path / "run"
    killed = subprocess.run([sys.executable, "tests/faults.py", "kill", point, str(count), "--", "imp", *arguments,
                             "--out", str(root)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert killed.returncode == -9, killed.stderr
    resumed = imp(*arguments, "--out", root)
    assert resumed.exit_code == 0, resumed.output
    assert_identical_to(reference, root)


@pytest.mark.parametrize("action", ["term", "int"])
@pytest.mark.parametrize("point, count", POINTS, ids=[p for p, _ in POINTS])
def test_sigterm_and_sigint_checkpoint_and_say_how_to_resume(reference, arguments, tmp_path, monkeypatch,
                                                            action, point, count):
    root = tmp_path / "run"
    with monkeypatch.context() as patch:
        faults.install(action, point, count, patch.setattr)
        stopped = imp(*arguments, "--out", root)
    one_line_error(stopped, "resume with: python cli.py imp --resume", str(root))
    if point in MID_TRAINING:
        assert list(root.glob("trial0/round*/*/checkpoint.npz")), "the running branch was not checkpointed"
    resumed = imp("--resume", root, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert_identical_to(reference, root)


# ---------------------------------------------------------------------------- a full disk

@pytest.mark.parametrize("name, count", [("checkpoint.npz", 3), ("final.npz", 2), ("metrics.json", 3),
                                         ("summary.csv", 2)])
def test_a_full_disk_is_one_line_naming_the_file_and_loses_nothing(reference, arguments, tmp_path, monkeypatch,
                                                                  name, count):
    root = tmp_path / "run"
    with monkeypatch.context() as patch:
        faults.install("full", f"write:{name}", count, patch.setattr)
        failed = imp(*arguments, "--out", root)
    one_line_error(failed, name, "cannot write (No space left on device)", "free some space")
    for path in root.glob("trial*/round*/*/metrics.json"):  # every finished branch is whole
        reference_path = reference / path.relative_to(root)
        assert without_wall_time(path) == without_wall_time(reference_path)
        final = files.read_npz(path.parent / "final.npz")
        assert all(np.array_equal(final[k], v) for k, v in files.read_npz(reference_path.parent / "final.npz").items())
    assert not list(root.glob("**/.*.tmp")), "a temporary file was left behind"
    resumed = imp(*arguments, "--out", root)
    assert resumed.exit_code == 0, resumed.output
    assert_identical_to(reference, root)


# ---------------------------------------------------------------------------- damaged run-folder files

def garbage(path):
    path.write_bytes(b"\x00garbage\xff" * 7)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def wrong_content(path):
    """A readable file that says the wrong thing: other weights' names, or JSON without its keys."""
    if path.suffix == ".npz":
        files.write_npz(path, {"fc9.weight": np.zeros((3, 3), np.float32)})
    elif path.suffix == ".json":
        path.write_text("{}")
    else:
        path.write_text("trial,round\n0,0\n")


DAMAGE = {"garbage": garbage, "truncated": truncate, "wrong content": wrong_content}
# file, the command that reads it, and what must come of it (None: a clean recomputation)
FILES = [
    ("config.json", "rerun", "config.json: damaged"),
    ("trial0/theta0.npz", "extend", "theta0.npz"),
    ("trial0/round01/ticket/mask.npz", "extend", "mask.npz"),
    ("trial0/round01/ticket/final.npz", "extend", "final.npz"),
    ("trial0/round01/reinit/checkpoint.npz", "rerun", "checkpoint.npz"),
    ("trial0/round01/ticket/curve.json", "plot", "curve.json"),
    ("trial0/round01/reinit/metrics.json", "rerun", "metrics.json"),
    ("summary.csv", "rerun", None),
]


@pytest.mark.parametrize("how", list(DAMAGE))
@pytest.mark.parametrize("name, command, message", FILES, ids=[f[0].split("/")[-1] for f in FILES])
def test_a_damaged_run_file_is_one_line_or_recomputed(reference, arguments, tmp_path, name, command, message, how):
    if how == "wrong content" and name == "config.json":
        message = "config.json: damaged (KeyError"
    root = tmp_path / "run"
    shutil.copytree(reference, root)
    path = root / name
    if path.name == "checkpoint.npz":  # an unfinished branch with its checkpoint
        (path.parent / "metrics.json").unlink()
        shutil.copy(path.parent / "final.npz", path)
    DAMAGE[how](path)
    before = {p: p.read_bytes() for p in root.glob("trial*/round*/*/final.npz") if p != path}
    if command == "plot":
        result = CliRunner().invoke(cli.main, ["plot", str(root)])
    else:
        rounds = ["--rounds", "2"] if command == "extend" else []
        result = imp(*arguments, *rounds, "--out", root)
    if message is None:
        assert result.exit_code == 0, result.output
        assert_identical_to(reference, root)
        return
    line = one_line_error(result, message)
    assert "delete" in line or "restore it" in line, line
    assert {p: p.read_bytes() for p in before} == before  # nothing else was touched


# ---------------------------------------------------------------------------- damaged data files

def mnist_folder(tmp_path, train=6000, test=1000):
    arrays = datasets.read_idx_folder(datasets.SHIPPED_MNIST)
    written = {}
    for part, count in (("train", train), ("test", test)):
        images, labels = arrays[part]
        for stem, array in zip(datasets.IDX_NAMES[part], (images[:count], labels[:count])):
            idx.write_idx(tmp_path / stem, array)
            written[stem] = (tmp_path / stem, array)
    return written


def images_file(written):
    return written["train-images-idx3-ubyte"]


def labels_file(written):
    return written["train-labels-idx1-ubyte"]


def truncated(written):
    path, _ = images_file(written)
    path.write_bytes(path.read_bytes()[:-100])
    return path, "truncated"


def gzipped_labels(written, damage):
    """The labels file as .gz (in place of the plain one), then ``damage(gzipped bytes)``."""
    path, labels = labels_file(written)
    path.unlink()
    path = path.with_name(path.name + ".gz")
    idx.write_idx(path, labels)
    path.write_bytes(damage(path.read_bytes()))
    return path, "cannot decompress"


def truncated_gzip(written):
    return gzipped_labels(written, lambda raw: raw[:-20])


def not_gzip(written):
    return gzipped_labels(written, lambda raw: b"\x1f\x8b" + b"not really gzip" * 10)


def wrong_magic(written):
    path, _ = images_file(written)
    raw = bytearray(path.read_bytes())
    raw[0] = 0x42
    path.write_bytes(bytes(raw))
    return path, "bad magic number"


def float_pixels(written):
    path, images = images_file(written)
    idx.write_idx(path, images.astype(np.float32))
    return path, "pixels are float32"


def float_labels(written):
    path, labels = labels_file(written)
    idx.write_idx(path, labels.astype(np.float32))
    return path, "labels are float32"


def counts_disagree(written):
    path, labels = labels_file(written)
    idx.write_idx(path, labels[:-1])
    return path, "do not belong together"


def label(value):
    def damage(written):
        path, labels = labels_file(written)
        labels = labels.copy()
        labels[123] = value
        idx.write_idx(path, labels)
        return path, f"label {value} found"
    damage.__name__ = f"label_{value}"
    return damage


DATA_DAMAGE = [truncated, truncated_gzip, not_gzip, wrong_magic, float_pixels, float_labels, counts_disagree, label(10),
               label(255)]


@pytest.mark.parametrize("damage", DATA_DAMAGE, ids=[d.__name__ for d in DATA_DAMAGE])
def test_a_damaged_data_file_is_refused_naming_it(tmp_path, damage):
    path, message = damage(mnist_folder(tmp_path))
    with pytest.raises(DataFileError) as caught:
        datasets.load("mnist", tmp_path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_a_label_out_of_range_never_reaches_a_kernel(tmp_path):
    """A label of 255 once crashed the process with a segmentation fault (exit 139)."""
    label(255)(mnist_folder(tmp_path))
    result = subprocess.run([sys.executable, "cli.py", "train", "--iterations", "10", "--quiet", "--data-dir",
                             str(tmp_path)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 1 and "label 255 found" in result.stderr and "Traceback" not in result.stderr


CIFAR = [("not whole records", lambda raw: raw[:-100], "not a whole number of"),
         ("a record short", lambda raw: raw[:-datasets.CIFAR_RECORD], "holds 3 records, a CIFAR-10 batch holds 4"),
         ("a record too many", lambda raw: raw + raw[:datasets.CIFAR_RECORD], "holds 5 records"),
         ("label 11", lambda raw: bytes([11]) + raw[1:], "label 11 found")]


@pytest.mark.parametrize("change, message", [c[1:] for c in CIFAR], ids=[c[0] for c in CIFAR])
def test_a_damaged_cifar10_batch_is_refused_naming_it(tmp_path, monkeypatch, change, message):
    monkeypatch.setattr(datasets, "CIFAR_BATCH", 4)
    rng = np.random.default_rng(0)
    paths = []
    for file in downloads.CIFAR_TRAIN:
        records = np.column_stack([rng.integers(0, 10, 4), rng.integers(0, 256, (4, 3072))]).astype(np.uint8)
        paths.append(tmp_path / file)
        paths[-1].write_bytes(records.tobytes())
    paths[2].write_bytes(change(paths[2].read_bytes()))
    with pytest.raises(DataFileError, match=message) as caught:
        datasets.read_cifar_batches(paths)
    assert str(paths[2]) in str(caught.value) or str(tmp_path) in str(caught.value)


@pytest.mark.parametrize("arguments, message", [
    (["--unpruned", "convv"], "unknown kind of layer 'convv' in unpruned; choose from conv, fc, output, shortcut"),
    (["--milestones", "100,x"], "--milestones takes comma-separated iterations"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--checkpoint-every", "0"], "checkpoint interval must be positive"),
    (["--eval-every", "0"], "eval interval must be positive"),
    (["--batch-size", "7000"], "batch size 7000 is larger than the training set"),
    (["--pruning", "random"], "unknown pruning 'random'"),
    (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
])
def test_every_option_is_checked_against_its_allowed_values(arguments, tmp_path, small_mnist, message):
    result = imp("--rounds", "0", "--iterations", "10", "--quiet", "--data-dir", small_mnist, "--out",
                 tmp_path / "run", *arguments)
    one_line_error(result, message)
