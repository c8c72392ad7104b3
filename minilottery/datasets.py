"""Datasets and the paper's data protocol (Appendix C).

MNIST ships inside the package (four IDX files, CC BY-SA 3.0, LeCun, Cortes and
Burges), so nothing is downloaded. The paper holds out 5,000 training images for
validation (55K train, 5K validation, 10K test) and reshuffles the training data
every epoch. Here:

* pixels become float32 in [0, 1] (x / 255), no other normalisation for MNIST;
* the 5,000 validation images are chosen by a permutation drawn from
  ``np.random.default_rng(SPLIT_SEED)``, the same for every run and every seed;
* ``Batches`` draws minibatches from a fresh permutation each epoch, from a
  generator seeded by the run's seed, and can save and restore its position so
  that a resumed run sees exactly the same batches.
"""
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .idx import DataFileError, read_image_label_pair

SHIPPED_MNIST = Path(__file__).parent / "data" / "mnist"
SPLIT_SEED = 0  # the fixed seed that picks the validation images
VALIDATION_SIZE = 5000
IMAGE_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # (C, H, W)
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class Dataset:
    """Arrays of one dataset, split as in the paper. Images are float32 NCHW."""
    name: str
    x_train: np.ndarray  # (N_train, C, H, W) float32
    y_train: np.ndarray  # (N_train,) int64
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 10

    @property
    def input_shape(self):
        return self.x_train.shape[1:]


def find_idx_file(folder, stem):
    """The path of ``stem`` in ``folder``, gzipped or not."""
    for candidate in (Path(folder) / stem, Path(folder) / (stem + ".gz")):
        if candidate.exists():
            return candidate
    raise DataFileError(f"{Path(folder) / stem}[.gz]: file not found; a data folder needs the "
                        "four standard IDX files (train/t10k images and labels)")


def read_idx_folder(folder):
    """Read the four standard IDX files of an MNIST-format dataset from ``folder``."""
    arrays = {}
    for part, (images_stem, labels_stem) in IDX_NAMES.items():
        images, labels = read_image_label_pair(find_idx_file(folder, images_stem),
                                               find_idx_file(folder, labels_stem))
        arrays[part] = (images, labels)
    return arrays


def split_validation(x, y, size=VALIDATION_SIZE, seed=SPLIT_SEED):
    """Hold out ``size`` training examples, chosen by a fixed permutation, for validation."""
    if not 0 < size < len(x):
        raise ValueError(f"validation size {size} must be between 1 and {len(x) - 1}")
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:size], np.sort(order[size:])
    return x[train], y[train], x[val], y[val]


def as_images(pixels):
    """uint8 (N, H, W) or (N, H, W, C) pixels to float32 NCHW in [0, 1]."""
    x = pixels.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[:, None, :, :]
    return np.ascontiguousarray(x)


def load_idx_dataset(name, folder):
    arrays = read_idx_folder(folder)
    (x, y), (x_test, y_test) = arrays["train"], arrays["test"]
    x_train, y_train, x_val, y_val = split_validation(as_images(x), y.astype(np.int64))
    return Dataset(name, x_train, y_train, x_val, y_val, as_images(x_test), y_test.astype(np.int64))


def load(name="mnist", data_dir=None):
    """Load dataset ``name`` split as in the paper; ``data_dir`` overrides where its files are."""
    name = name.lower()
    if name == "mnist":
        return load_idx_dataset(name, data_dir or SHIPPED_MNIST)
    from . import downloads  # the datasets that are fetched on first use
    if name in downloads.LOADERS:
        return downloads.LOADERS[name](data_dir)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}")


def dataset_names():
    try:
        from . import downloads
        return ["mnist", *downloads.LOADERS]
    except ImportError:
        return ["mnist"]


class Batches:
    """Minibatches of (x, y), reshuffled at every epoch from a seeded generator.

    The position is a plain dict (see ``state``), so a checkpoint can save it and a
    resumed run continues with the very next batch.
    """

    def __init__(self, x, y, batch_size, seed):
        if not 0 < batch_size <= len(x):
            raise ValueError(f"batch size {batch_size} must be between 1 and the "
                             f"training set size {len(x)}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))
        self.position = 0

    def next(self):
        if self.position + self.batch_size > len(self.x):  # a new epoch: drop the remainder
            self.order = self.rng.permutation(len(self.x))
            self.position = 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return self.x[index], self.y[index]

    def state(self):
        return {"order": self.order.copy(), "position": self.position,
                "rng": self.rng.bit_generator.state}

    def load_state(self, state):
        self.order = np.asarray(state["order"]).copy()
        self.position = int(state["position"])
        self.rng.bit_generator.state = state["rng"]


def data_dir_from_env(name):
    """Where downloaded datasets are cached: $MINILOTTERY_DATA or ~/.cache/minilottery."""
    root = os.environ.get("MINILOTTERY_DATA") or Path.home() / ".cache" / "minilottery"
    return Path(root) / name
