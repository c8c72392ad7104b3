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
  that a resumed run sees exactly the same batches. For MNIST-format data it
  gathers them from the uint8 pixels (``Dataset.train_pixels``) and divides by 255
  then: the same float32 values from a quarter of the bytes.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import downloads
from .idx import DataFileError, read_image_label_pair
from .kernels import core

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
    train_pixels: np.ndarray = None  # uint8 (N_train, C, H, W) when x_train is exactly these / 255

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


def grey_dataset(name, arrays, validation_size=VALIDATION_SIZE):
    """A Dataset of MNIST-format grey images, uint8 (N, H, W), split as in the paper; it keeps the
    training pixels for ``Batches``."""
    (x, y), (x_test, y_test) = arrays["train"], arrays["test"]
    pixels, y_train, val_pixels, y_val = split_validation(x[:, None, :, :], y.astype(np.int64), validation_size)
    return Dataset(name, as_images(pixels), y_train, as_images(val_pixels), y_val, as_images(x_test),
                   y_test.astype(np.int64), train_pixels=np.ascontiguousarray(pixels))


def load_idx_dataset(name, folder):
    return grey_dataset(name, read_idx_folder(folder))


def load(name="mnist", data_dir=None):
    """Load dataset ``name`` split as in the paper; ``data_dir`` overrides where its files are."""
    name = name.lower()
    if name == "mnist":
        return load_idx_dataset(name, data_dir or SHIPPED_MNIST)
    if name in LOADERS:
        return LOADERS[name](data_dir)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}")


def dataset_names():
    return ["mnist", *LOADERS]


class Batches:
    """Minibatches of (x, y), reshuffled at every epoch from a seeded generator.

    The position is a plain dict (see ``state``), so a checkpoint can save it and a
    resumed run continues with the very next batch.
    """

    def __init__(self, x, y, batch_size, seed, pixels=None):
        """``pixels``: uint8 images with x == pixels / 255 (``Dataset.train_pixels``), to gather from."""
        if not 0 < batch_size <= len(x):
            raise ValueError(f"batch size {batch_size} must be between 1 and the "
                             f"training set size {len(x)}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.pixels = None if pixels is None else pixels.reshape(len(pixels), -1)   # (N, C*H*W)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))
        self.position = 0

    def next_index(self):
        """The positions in x of the next minibatch's images."""
        if self.position + self.batch_size > len(self.x):  # a new epoch: drop the remainder
            self.order = self.rng.permutation(len(self.x))
            self.position = 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return index

    def take(self, count):
        """The positions of the next ``count`` minibatches' images, (count, batch size): the
        batches ``next`` would give."""
        return np.stack([self.next_index() for _ in range(count)])

    def next(self):
        index = self.next_index()
        if self.pixels is None:
            return self.x[index], self.y[index]
        x = np.empty((len(index), *self.x.shape[1:]), self.x.dtype)
        core.gather_pixels(self.pixels, index, self.x.dtype.type(255), x.reshape(len(index), -1))
        return x, self.y[index]

    def state(self):
        return {"order": self.order.copy(), "position": self.position,
                "rng": self.rng.bit_generator.state}

    def load_state(self, state):
        self.order = np.asarray(state["order"]).copy()
        self.position = int(state["position"])
        self.rng.bit_generator.state = state["rng"]


# ---------------------------------------------------------------- Fashion-MNIST and CIFAR-10

def load_fashion_mnist(data_dir=None, validation_size=VALIDATION_SIZE):
    """Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): a drop-in harder MNIST for Lenet,
    60K/10K grey 28x28 images in MNIST's IDX format; pixels / 255 like MNIST."""
    return grey_dataset("fashion-mnist", read_idx_folder(downloads.fashion_mnist_folder(data_dir)), validation_size)


CIFAR_RECORD = 1 + 3 * 32 * 32  # a label byte, then the red, green and blue 32x32 planes
CIFAR_BATCH = 10_000  # records in each of the five training batches and the test batch


def read_cifar_batches(paths):
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from CIFAR-10 binary batch files."""
    records = []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % CIFAR_RECORD:
            raise DataFileError(f"{path}: {raw.size:,} bytes is not a whole number of "
                                f"{CIFAR_RECORD}-byte records; the file is truncated or not "
                                "a CIFAR-10 binary batch")
        if raw.size != CIFAR_BATCH * CIFAR_RECORD:
            raise DataFileError(f"{path}: holds {raw.size // CIFAR_RECORD:,} records, a CIFAR-10 batch holds "
                                f"{CIFAR_BATCH:,}; the file is truncated or not a CIFAR-10 binary batch")
        records.append(raw.reshape(-1, CIFAR_RECORD))
    records = np.concatenate(records)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataFileError(f"{paths[0].parent}: label {labels.max()} found, CIFAR-10 has 0..9; "
                            "these are not CIFAR-10 batch files")
    # Each record stores whole colour planes one after another, which is already NCHW.
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def channel_statistics(images):
    """Per-channel mean and standard deviation of uint8 images (N, 3, H, W), in [0, 1] units.

    Counting the 256 pixel values per channel gives exact statistics without a
    float copy of the training set.
    """
    values = np.arange(256) / 255.0
    mean, std = np.empty(3), np.empty(3)
    for channel in range(3):
        counts = np.bincount(images[:, channel].ravel(), minlength=256)
        mean[channel] = counts @ values / counts.sum()
        std[channel] = np.sqrt(counts @ (values - mean[channel]) ** 2 / counts.sum())
    return mean, std


def load_cifar10(data_dir=None, validation_size=VALIDATION_SIZE):
    """CIFAR-10 (Krizhevsky 2009): 50K/10K colour 32x32 images in 10 classes, 5,000 of the
    training images held out for validation as in the paper (Appendix C and H), read from
    the *binary* distribution only (never the pickled one, which can run code on loading),
    and normalised per channel.

    Each channel has the training split's mean subtracted and is divided by its
    standard deviation, both computed on the 45K images left after holding out the
    validation set (never on validation or test images). On the full 50K training set
    they are mean (0.4914, 0.4822, 0.4465) and std (0.2470, 0.2435, 0.2616) for red,
    green and blue; the 45K split agrees to about three decimals.
    """
    batches = downloads.cifar10_folder(data_dir)
    x, y = read_cifar_batches([batches / file for file in downloads.CIFAR_TRAIN])
    x_test, y_test = read_cifar_batches([batches / file for file in downloads.CIFAR_TEST])
    x_train, y_train, x_val, y_val = split_validation(x, y, validation_size)
    mean, std = channel_statistics(x_train)

    def normalise(pixels):  # (N, 3, 32, 32) uint8 -> float32, in place to spare memory
        out = pixels.astype(np.float32)
        out /= 255.0
        out -= mean.astype(np.float32)[:, None, None]
        out /= std.astype(np.float32)[:, None, None]
        return out

    return Dataset("cifar10", normalise(x_train), y_train, normalise(x_val), y_val,
                            normalise(x_test), y_test)


LOADERS = {"fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10}
