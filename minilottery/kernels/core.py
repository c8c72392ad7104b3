"""Element-wise kernels of a training step: bias and ReLU, dropout, the loss, optimizers.

Matrix products stay with NumPy's BLAS; these are the remaining per-step passes
over memory, which in plain NumPy cost more than the products themselves at the
paper's batch size of 60 (each NumPy expression is a separate pass plus
temporaries). Each kernel works in place and has a NumPy twin ``<name>_numpy``.
"""
import numba
import numpy as np
from numba import prange

from . import CACHE_LINE, FLUSH_BELOW, jit, jit_inline, jit_nogil, jit_parallel


# ----------------------------------------------------------------------------- the minibatch

@numba.njit(cache=True, error_model="numpy")
def gather_pixels(pixels, index, scale, out):
    """out[r] = pixels[index[r]] / scale: a minibatch of uint8 images as floats.

    pixels (N, F) uint8, index (B,), scale of out's dtype (255), out (B, F). MNIST's 60 images
    are 47 KB as pixels against 188 KB as float32, gathered from rows scattered over 43 MB
    instead of 172 MB. Each value is multiplied by 1 / scale in float64 and rounded to out's
    precision: for every uint8 value, exactly the float32 that ``pixels.astype(np.float32) /
    255.0`` gives (datasets.as_images). A float32 division was not safe: called from a
    fast-math kernel (kernels/stretch.py), this one was compiled, and cached, with the
    division turned into a product by a rounded 1 / 255, one ulp off in 126 of the 256 values.

    The rows lie anywhere in memory. A first pass reads one byte of each of their cache
    lines, independent loads whose misses the core overlaps, where the copy would wait for
    one row after another: 64 -> 47 us for 60 images after other work evicted them, 20 ->
    15 us when not. It returns the sum of those bytes only so that the compiler keeps them.
    """
    touched = 0
    for r in range(index.size):
        row = pixels[index[r]]
        for i in range(0, row.size, CACHE_LINE):
            touched += row[i]
    inverse = 1.0 / np.float64(scale)
    for r in range(index.size):
        row = pixels[index[r]]
        for i in range(row.size):
            out[r, i] = np.float64(row[i]) * inverse
    return touched


def gather_pixels_numpy(pixels, index, scale, out):
    out[...] = pixels[index].astype(out.dtype) / scale


# ----------------------------------------------------------------------------- bias, ReLU

@jit
def add_bias(y, b):
    """y[n, j] += b[j] for a (N, F) activation."""
    for n in range(y.shape[0]):
        for j in range(y.shape[1]):
            y[n, j] += b[j]


def add_bias_numpy(y, b):
    y += b


@jit_nogil
def relu_forward(x):
    """x = max(x, 0), in place on a flat array.

    Every element is stored, a select rather than a branch: half of a layer's signs are
    random, and a branch mispredicted on them (Resnet-18's 16-channel maps, 2M values:
    190 -> 150 µs on one core, and the backward 890 -> 470 µs).
    """
    for i in range(x.size):
        v = x[i]
        x[i] = 0 if v < 0 else v  # NaN stays NaN, as in np.maximum


def relu_forward_numpy(x):
    np.maximum(x, 0, out=x)


@jit_nogil
def add_relu_forward(x, other):
    """x = max(x + other, 0), in place on flat arrays: the end of a residual block."""
    for i in range(x.size):
        v = x[i] + other[i]
        x[i] = 0 if v < 0 else v


def add_relu_forward_numpy(x, other):
    x += other
    np.maximum(x, 0, out=x)


@jit_nogil
def relu_backward(dy, y):
    """dy = dy * (y > 0), in place on flat arrays; y is the ReLU's output. A select, as above."""
    for i in range(dy.size):
        dy[i] = dy[i] if y[i] > 0 else 0


def relu_backward_numpy(dy, y):
    dy *= y > 0


@jit
def bias_grad(dy, db):
    """db[j] = sum over n of dy[n, j]."""
    db[:] = 0
    for n in range(dy.shape[0]):
        for j in range(dy.shape[1]):
            db[j] += dy[n, j]


def bias_grad_numpy(dy, db):
    np.sum(dy, axis=0, out=db)


# ----------------------------------------------------------------------------- dropout

@jit
def dropout_forward(x, u, p, scale):
    """Inverted dropout: scale = (u >= p) / (1 - p); x *= scale. Flat arrays, u ~ U[0, 1)."""
    keep = 1.0 / (1.0 - p)
    for i in range(x.size):
        scale[i] = keep if u[i] >= p else 0.0
        x[i] *= scale[i]


def dropout_forward_numpy(x, u, p, scale):
    scale[:] = (u >= p) / (1.0 - p)
    x *= scale


# ----------------------------------------------------------------------------- loss

@jit
def softmax_cross_entropy(logits, labels, dlogits):
    """Mean cross-entropy of softmax(logits) against integer labels; fills dlogits.

    Stable form: log softmax(z)_k = z_k - max(z) - log sum_j exp(z_j - max(z)).
    The gradient of the mean loss is (softmax(z) - onehot(label)) / N.
    """
    n_rows = logits.shape[0]
    total = 0.0
    for n in range(n_rows):
        total += example_cross_entropy(logits[n], labels[n], dlogits[n], n_rows)
    return total / n_rows


@jit_inline
def example_cross_entropy(z, label, dz, samples):
    """One example's term of ``softmax_cross_entropy``, from its logits z (classes,): fills
    dz = (softmax(z) - onehot(label)) / samples and returns its loss (in float64). Also the
    loss of kernels/parts.py, whose logits are a column of a part's tile."""
    top = z[0]
    for k in range(1, z.size):
        top = max(top, z[k])
    norm = 0.0
    for k in range(z.size):
        dz[k] = np.exp(z[k] - top)
        norm += dz[k]
    for k in range(z.size):
        dz[k] = dz[k] / norm / samples
    dz[label] -= 1.0 / samples
    return np.log(norm) + top - z[label]


def softmax_cross_entropy_numpy(logits, labels, dlogits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    rows = np.arange(len(labels))
    dlogits[:] = np.exp(log_probs) / len(labels)
    dlogits[rows, labels] -= 1.0 / len(labels)
    return float(-log_probs[rows, labels].mean())


# ----------------------------------------------------------------------------- optimizers

@jit_inline
def adam_element(w, g, m, v, step_size, beta1, beta2, eps, weight_decay, bias2_root):
    """Adam's update of one weight: returns the new (w, m, v). The equations are in
    ``adam_update``; moments below FLUSH_BELOW become 0 so they never turn denormal.

    In the weights' own precision, as the NumPy twin and PyTorch compute it: a bare 1.0
    or 0.0 is a float64 and would turn the whole update, its square root and division
    included, into float64 arithmetic. FLUSH_BELOW is compared in that precision too, so the
    loop converts nothing (Lenet's 266,610 weights: 178-183 -> 71-73 us on one core).
    """
    one, zero, flush = type(w)(1), type(w)(0), type(w)(FLUSH_BELOW)
    grad = g + weight_decay * w
    m = beta1 * m + (one - beta1) * grad
    v = beta2 * v + (one - beta2) * grad * grad
    m = m if abs(m) >= flush else zero
    v = v if v >= flush else zero
    return w - step_size * m / (np.sqrt(v) / bias2_root + eps), m, v


@jit_inline
def momentum_element(w, g, buf, lr, momentum, weight_decay, nesterov):
    """Heavy-ball (or Nesterov) momentum's update of one weight: returns the new (w, buf),
    in the weights' own precision (as adam_element)."""
    grad = g + weight_decay * w
    buf = momentum * buf + grad
    buf = buf if abs(buf) >= type(w)(FLUSH_BELOW) else type(w)(0)
    step = grad + momentum * buf if nesterov else buf
    return w - lr * step, buf


@jit_parallel
def adam_update(w, g, m, v, mask, step_size, beta1, beta2, eps, weight_decay, bias2_root):
    """One Adam step (Kingma & Ba, Algorithm 1) on flat arrays, under the mask.

        g <- g + weight_decay * w
        m <- beta1 m + (1 - beta1) g            v <- beta2 v + (1 - beta2) g^2
        w <- w - step_size * m / (sqrt(v) / bias2_root + eps)

    with step_size = lr / (1 - beta1^t) and bias2_root = sqrt(1 - beta2^t), which is
    Algorithm 1's m_hat / (sqrt(v_hat) + eps) with the corrections folded in.
    Everything is multiplied by the mask, so where m = 0 the weight and its state
    stay exactly 0. The loop has no branches, so LLVM vectorises it.
    """
    for i in prange(w.size):
        keep = mask[i]
        w_i, m_i, v_i = adam_element(w[i], g[i], m[i], v[i], step_size, beta1, beta2, eps,
                                     weight_decay, bias2_root)
        m[i] = m_i * keep
        v[i] = v_i * keep
        w[i] = w_i * keep


def adam_update_numpy(w, g, m, v, mask, step_size, beta1, beta2, eps, weight_decay, bias2_root):
    kept = mask != 0
    grad = g + weight_decay * w
    m_new = beta1 * m + (1 - beta1) * grad
    v_new = beta2 * v + (1 - beta2) * grad * grad
    m_new[np.abs(m_new) < FLUSH_BELOW] = 0
    v_new[v_new < FLUSH_BELOW] = 0
    w_new = w - step_size * m_new / (np.sqrt(v_new) / bias2_root + eps)
    m[kept], v[kept], w[kept] = m_new[kept], v_new[kept], w_new[kept]


@jit_parallel
def momentum_update(w, g, buf, mask, lr, momentum, weight_decay, nesterov):
    """SGD with heavy-ball momentum on flat arrays, under the mask (branch-free, as Adam).

        g <- g + weight_decay * w;   buf <- momentum * buf + g
        w <- w - lr * (g + momentum * buf)   if nesterov else   w - lr * buf

    With momentum = 0 this is plain SGD.
    """
    for i in prange(w.size):
        keep = mask[i]
        w_i, b = momentum_element(w[i], g[i], buf[i], lr, momentum, weight_decay, nesterov)
        buf[i] = b * keep
        w[i] = w_i * keep


def momentum_update_numpy(w, g, buf, mask, lr, momentum, weight_decay, nesterov):
    kept = mask != 0
    grad = g + weight_decay * w
    b = momentum * buf + grad
    b[np.abs(b) < FLUSH_BELOW] = 0
    w_new = w - lr * (grad + momentum * b if nesterov else b)
    buf[kept], w[kept] = b[kept], w_new[kept]


TWINS = [
    (gather_pixels, gather_pixels_numpy),
    (add_bias, add_bias_numpy),
    (relu_forward, relu_forward_numpy),
    (add_relu_forward, add_relu_forward_numpy),
    (relu_backward, relu_backward_numpy),
    (bias_grad, bias_grad_numpy),
    (dropout_forward, dropout_forward_numpy),
    (softmax_cross_entropy, softmax_cross_entropy_numpy),
    (adam_update, adam_update_numpy),
    (momentum_update, momentum_update_numpy),
]
