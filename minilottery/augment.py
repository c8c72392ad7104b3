"""Data augmentation for Resnet-18 and VGG-19 on CIFAR-10 (the paper's Figure 2 table).

The paper trains its two deep networks with "flip + 4-pixel pad/crop" augmentation,
the standard CIFAR recipe: every training image, independently,

* is padded with ``pad`` = 4 zero pixels on each side (32x32 -> 40x40),
* is cropped back to 32x32 at an offset (dy, dx) drawn uniformly from 0..2·pad,
* is mirrored left-right with probability 1/2.

The images reaching here are already normalised (``datasets.load_cifar10``), so the
zero padding is the training-set mean colour rather than black.

``flip_and_crop`` draws the random choices from a NumPy ``Generator`` (so a run's
seed fixes them, and the trainer can checkpoint the generator); ``shift_and_flip``
applies given choices and is what the tests check pixel by pixel.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def flip_and_crop(x, rng, pad=4):
    """Randomly pad-crop and flip each image of the batch ``x`` (N, C, H, W)."""
    n = len(x)
    offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))  # (N, 2): dy, dx
    flips = rng.random(n) < 0.5  # (N,)
    return shift_and_flip(x, offsets, flips, pad)


def shift_and_flip(x, offsets, flips, pad=4):
    """Crop image i of ``x`` at ``offsets[i]`` of its zero-padded copy; mirror it if ``flips[i]``.

    An offset of (pad, pad) leaves the image where it was; (0, 0) moves it ``pad``
    pixels down and right, letting zeros in at the top and left.
    """
    n, channels, height, width = x.shape
    padded = np.zeros((n, channels, height + 2 * pad, width + 2 * pad), dtype=x.dtype)
    padded[:, :, pad:pad + height, pad:pad + width] = x  # (N, C, H + 2·pad, W + 2·pad)
    # Every HxW window of every padded image, as a view: (N, C, 2·pad+1, 2·pad+1, H, W).
    # Indexing it with one (dy, dx) per image copies exactly the N crops, nothing more.
    windows = sliding_window_view(padded, (height, width), axis=(2, 3))
    offsets = np.asarray(offsets)
    out = windows[np.arange(n), :, offsets[:, 0], offsets[:, 1]]  # (N, C, H, W)
    flips = np.asarray(flips, dtype=bool)
    out[flips] = out[flips, :, :, ::-1]
    return out
