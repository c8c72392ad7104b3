"""The shared checks that a Numba kernel and its NumPy twin agree (STYLE.md, point 4), and
that the kernels still run as plain Python with the JIT switched off; and the inputs and
runs that the tests of Lenet's Dense paths share (a layer's two ways, a thread count)."""
import os
import subprocess
import sys

import numba
import numpy as np


def assert_twins_agree(fast, reference, make_arguments, tolerance, run=None):
    """Run both on copies of the same arguments; every array must end equal within
    ``tolerance`` and return values must match. ``make_arguments()`` builds fresh
    arguments (deterministically); ``run(kernel, *args)`` calls the fast kernel."""
    args_fast = make_arguments()
    args_reference = [copy(a) for a in args_fast]
    out_fast = run(fast, *args_fast) if run else fast(*args_fast)
    out_reference = reference(*args_reference)
    if out_reference is not None:
        np.testing.assert_allclose(out_fast, out_reference, rtol=tolerance)
    changed = 0
    for a, b, before in zip(flat(args_fast), flat(args_reference), flat(make_arguments())):
        if isinstance(a, np.ndarray):
            np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)
            changed += not np.array_equal(a, before)
    assert changed or out_reference is not None, "the kernel had no visible effect"


def copy(argument):
    """A copy of an array, or of a tuple of arrays (one per layer of a stack); else the value."""
    if isinstance(argument, tuple):
        return tuple(copy(a) for a in argument)
    return argument.copy() if isinstance(argument, np.ndarray) else argument


def flat(arguments):
    """The arguments with tuples opened up, in order."""
    return [a for argument in arguments for a in (flat(argument) if isinstance(argument, tuple) else [argument])]


def run_without_jit(code, timeout=120):
    """Run ``code`` in a fresh interpreter with NUMBA_DISABLE_JIT=1 (every kernel as Python)."""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


def zero_rich(rng, shape, density, dtype=np.float32):
    """Values in (0, 1] at a fraction ``density`` of the entries, 0 elsewhere (like MNIST's pixels)."""
    return ((rng.random(shape) < density) * (1 - rng.random(shape))).astype(dtype)


def both_ways(layer, switch, x, dy, need_dx):
    """A Dense layer's forward and backward with its attribute ``switch`` off, then on:
    [(y, dx, dW, db)] for each (dx None where not needed)."""
    results = []
    for on in (False, True):
        setattr(layer, switch, on)
        y = layer.forward(x, train=True)
        dx = layer.backward(dy.copy(), need_dx)
        results.append((y, dx, layer.grads["weight"].copy(), layer.grads["bias"].copy()))
    return results


def on_threads(count, function, *args):
    """``function(*args)`` on ``count`` of Numba's threads (at most its pool's)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    try:
        return function(*args)
    finally:
        numba.set_num_threads(previous)
