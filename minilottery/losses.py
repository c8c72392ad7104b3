"""The loss: softmax cross-entropy, computed stably, with its gradient.

For logits z of one example and its label y,

    L = -log softmax(z)_y = log sum_j exp(z_j - max z) - (z_y - max z)
    dL/dz = softmax(z) - onehot(y)

averaged over the batch. Subtracting max z changes nothing mathematically and keeps
exp() from overflowing. The fused kernel is ``kernels.core.softmax_cross_entropy``.
"""
import numpy as np

from .kernels import core


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of a batch and dL/dlogits: returns ``(mean_loss, dlogits)``."""
    logits = np.ascontiguousarray(logits)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits must be (N, classes) and labels (N,); got {logits.shape} and {labels.shape}")
    dlogits = np.empty_like(logits)
    loss = core.softmax_cross_entropy(logits, labels, dlogits)
    return float(loss), dlogits

