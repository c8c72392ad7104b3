"""Gradient checking by central differences, in float64.

For a scalar function L of an array a, the central difference

    dL/da_i ≈ (L(a + h e_i) - L(a - h e_i)) / 2h

has error O(h²), so with h = 1e-6 in float64 it agrees with a correct analytic
gradient to about 1e-7 relative. A layer is checked through the scalar
L = sum(forward(x) * r) for a fixed random r, whose gradient with respect to the
output is r itself: ``backward(r)`` must then give dL/dx and fill dL/dθ.

On a mismatch the checker raises an AssertionError that lists the worst entries
with their analytic and numeric values side by side.
"""
import numpy as np


def numeric_gradient(loss, array, indices, h=1e-6):
    """Central differences of ``loss()`` with respect to ``array.flat[i]`` for each i in indices.

    ``array`` is perturbed in place and restored; ``loss`` must read it each call.
    """
    flat = array.reshape(-1)  # a view: writing to it perturbs the array loss() reads
    assert np.shares_memory(flat, array), "array must be contiguous so that perturbing it works"
    numeric = np.empty(len(indices))
    for j, i in enumerate(indices):
        original = flat[i]
        flat[i] = original + h
        plus = loss()
        flat[i] = original - h
        minus = loss()
        flat[i] = original
        numeric[j] = (plus - minus) / (2 * h)
    return numeric


def sample_indices(size, limit, rng):
    """Every index when the array is small, else ``limit`` of them at random."""
    return np.arange(size) if size <= limit else np.sort(rng.choice(size, limit, replace=False))


def assert_close(name, analytic, numeric, rtol=1e-5, atol=1e-7):
    """Raise with a side-by-side table of the worst entries if the gradients disagree."""
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    error = np.abs(analytic - numeric)
    bound = atol + rtol * np.maximum(np.abs(analytic), np.abs(numeric))
    if np.all(error <= bound):
        return
    worst = np.argsort(-(error - bound))[:8]
    rows = "\n".join(f"  [{i:6d}] analytic {analytic[i]: .8e}   numeric {numeric[i]: .8e}   "
                     f"|diff| {error[i]:.2e}" for i in worst)
    raise AssertionError(f"gradient of {name} disagrees with central differences "
                         f"({int(np.sum(error > bound))} of {len(error)} entries):\n{rows}")


def compare(loss, params, grads, x, dx, rng, limit, rtol, atol):
    """Analytic gradients (``grads``, ``dx``) against central differences of ``loss``."""
    analytic = {name: grad.copy() for name, grad in grads.items()}
    for name, param in params.items():
        index = sample_indices(param.size, limit, rng)
        assert_close(name, analytic[name].reshape(-1)[index], numeric_gradient(loss, param, index), rtol, atol)
    index = sample_indices(x.size, limit, rng)
    assert_close("input", dx.reshape(-1)[index], numeric_gradient(loss, x, index), rtol, atol)


def check_layer(layer, x, seed=0, limit=60, train=True, rtol=1e-5, atol=1e-7):
    """Check every parameter of ``layer`` and its input gradient (all float64)."""
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    r = rng.standard_normal(layer.forward(x.copy(), train).shape)

    def loss():
        return float(np.sum(layer.forward(x.copy(), train) * r))

    layer.forward(x.copy(), train)
    dx = layer.backward(r.copy())
    compare(loss, layer.params, layer.grads, x, dx, rng, limit, rtol, atol)


def check_network(net, x, labels, seed=0, limit=30, train=True, rtol=1e-5, atol=1e-7):
    """Check every parameter of a float64 network and its input under the cross-entropy loss."""
    from .losses import softmax_cross_entropy
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    dropout_state = net.dropout_rng.bit_generator.state

    def loss():
        net.dropout_rng.bit_generator.state = dropout_state  # the same dropout draw each time
        return softmax_cross_entropy(net.forward(x.copy(), train), labels)[0]

    loss()
    net.dropout_rng.bit_generator.state = dropout_state
    _, dlogits = softmax_cross_entropy(net.forward(x.copy(), train), labels)
    dx = net.backward(dlogits, input_grad=True)
    compare(loss, net.params, net.grads, x, dx, rng, limit, rtol, atol)
