"""Every Numba kernel agrees with its NumPy twin, and runs without the JIT too."""

import numpy as np
import pytest

from minilottery.kernels import FLUSH_BELOW, core
from twins import assert_twins_agree, run_without_jit


def arguments(kernel_name, rng, dtype):
    f = dtype.type
    n, features = 8, 13
    if kernel_name == "gather_pixels":
        pixels = rng.integers(0, 256, (20, features), dtype=np.uint8)
        pixels[3] = [0, 255, *range(1, features - 1)]             # both ends of the range
        return [pixels, np.array([3, 0, 19, 3]), f(255), np.zeros((4, features), dtype)]
    if kernel_name == "add_bias":
        return [rng.standard_normal((n, features)).astype(dtype), rng.standard_normal(features).astype(dtype)]
    if kernel_name in ("relu_forward",):
        return [rng.standard_normal(n * features).astype(dtype)]
    if kernel_name in ("relu_backward", "add_relu_forward"):
        return [rng.standard_normal(50).astype(dtype), rng.standard_normal(50).astype(dtype)]
    if kernel_name == "bias_grad":
        return [rng.standard_normal((n, features)).astype(dtype), np.zeros(features, dtype)]
    if kernel_name == "dropout_forward":
        return [rng.standard_normal(40).astype(dtype), rng.random(40).astype(dtype), f(0.3), np.zeros(40, dtype)]
    if kernel_name == "softmax_cross_entropy":
        return [rng.standard_normal((n, 10)).astype(dtype) * 4, rng.integers(0, 10, n), np.zeros((n, 10), dtype)]
    size = 300
    w, g = rng.standard_normal(size).astype(dtype), rng.standard_normal(size).astype(dtype)
    mask = (rng.random(size) < 0.7).astype(dtype)
    w *= mask
    state = [np.abs(rng.standard_normal(size)).astype(dtype) * mask for _ in range(2)]
    state[0][:5] = FLUSH_BELOW / 2  # values that must be flushed to zero
    if kernel_name == "adam_update":
        return [w, g, state[0], state[1], mask, f(1e-3), f(0.9), f(0.999), f(1e-8), f(1e-4), f(0.1)]
    return [w, g, state[0], mask, f(0.1), f(0.9), f(1e-4), True]  # momentum_update


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)])
@pytest.mark.parametrize("fast, reference", core.TWINS, ids=[k.__name__ for k, _ in core.TWINS])
def test_kernel_matches_numpy_twin(fast, reference, dtype):
    name = reference.__name__.removesuffix("_numpy")
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    assert_twins_agree(fast, reference, lambda: arguments(name, np.random.default_rng(0), dtype), tolerance)


def test_optimizer_state_never_holds_denormals():
    """A weight with no gradient: its Adam moments decay but are flushed, never denormal."""
    w, g = np.ones(4, np.float32), np.zeros(4, np.float32)
    m, v, mask = np.full(4, 1e-3, np.float32), np.full(4, 1e-6, np.float32), np.ones(4, np.float32)
    f = np.float32
    for _ in range(3000):
        core.adam_update(w, g, m, v, mask, f(1e-3), f(0.9), f(0.999), f(1e-8), f(0), f(1))
        tiny = np.finfo(np.float32).tiny
        assert not np.any((np.abs(m) < tiny) & (m != 0)) and not np.any((v < tiny) & (v != 0))
    assert np.all(m == 0)


def test_training_runs_without_the_jit(tmp_path):
    code = ("import numpy as np; from minilottery import nets, optim, losses;"
            "net = nets.build('lenet', seed=0); opt = optim.Adam(net);"
            "x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32); y = np.arange(8);"
            "l0, d = losses.softmax_cross_entropy(net.forward(x, True), y);"
            "[(net.backward(losses.softmax_cross_entropy(net.forward(x, True), y)[1]), opt.step(1e-3)) for _ in range(5)];"
            "l1 = losses.softmax_cross_entropy(net.forward(x), y)[0]; assert l1 < l0, (l0, l1); print('ok')")
    result = run_without_jit(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_minibatch_gathered_from_pixels_is_the_dataset_s_floats_exactly(mnist):
    """Batches divides MNIST's uint8 pixels by 255 itself: bit for bit what as_images gave,
    for every pixel value."""
    from minilottery import datasets
    assert mnist.train_pixels.dtype == np.uint8 and mnist.train_pixels.shape == mnist.x_train.shape
    every_value = np.arange(256, dtype=np.uint8).reshape(1, 256)
    out = np.empty((1, 256), np.float32)
    core.gather_pixels(every_value, np.array([0]), np.float32(255), out)
    assert np.array_equal(out, datasets.as_images(every_value[:, :, None])[:, 0, :, 0])
    with_pixels = datasets.Batches(mnist.x_train, mnist.y_train, 60, seed=5, pixels=mnist.train_pixels)
    without = datasets.Batches(mnist.x_train, mnist.y_train, 60, seed=5)
    for _ in range(3):
        (x, y), (x_float, y_float) = with_pixels.next(), without.next()
        assert x.dtype == np.float32 and x.shape == (60, 1, 28, 28)
        assert np.array_equal(x, x_float) and np.array_equal(y, y_float)


def test_compiled_kernels_are_dropped_when_any_kernel_source_changes(tmp_path):
    """Numba keys a cached kernel by its own module's source only; the package drops its whole
    cache when any of its modules changes, so a caller never runs a changed helper's old code."""
    from minilottery.kernels import forget_stale_compilations
    (tmp_path / "caller.py").write_text("def f(): return helper()\n")
    (tmp_path / "helper.py").write_text("def helper(): return 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()

    def compile_caller():  # what Numba leaves on disk: an index and a data file
        (cache / "caller.f-1.py311.nbi").write_bytes(b"index")
        (cache / "caller.f-1.py311.1.nbc").write_bytes(b"code")

    def cached():
        return len(list(cache.glob("*.nb?")))

    compile_caller()
    forget_stale_compilations(str(tmp_path))  # nothing recorded yet: dropped, the digest recorded
    assert cached() == 0 and (cache / "kernel-sources.sha256").exists()
    compile_caller()
    forget_stale_compilations(str(tmp_path))  # the same sources: kept
    assert cached() == 2
    (tmp_path / "helper.py").write_text("def helper(): return 2\n")
    forget_stale_compilations(str(tmp_path))  # only the helper changed: dropped
    assert cached() == 0
