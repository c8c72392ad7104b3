"""Lenet's layers skip the zeros of their input (kernels/sparse_input.py): the same
numbers as BLAS, whatever the thread count, and only when the input has zeros to skip."""
import numba
import numpy as np
import pytest

from minilottery import gradcheck, layers, nets, optim
from minilottery.kernels import single_threaded
from minilottery.kernels import sparse_input as kernels
from minilottery.layers import Dense
from minilottery.losses import softmax_cross_entropy
from twins import assert_twins_agree, both_ways, on_threads, run_without_jit, zero_rich


# (samples, inputs, outputs): the paper's batch; a shifted last group of samples and of pixels
# and a shifted last block of columns; exactly one group and one block (the block's size is the CPU's)
GROUP, COLUMNS = kernels.GROUP, kernels.COLUMNS
SHAPES = [(60, 784, 300), (2 * GROUP - 1, 2 * GROUP + 1, COLUMNS + 1), (GROUP, GROUP, COLUMNS)]


def kernel_arguments(name, shape, rng, dtype, transposed=False):
    """Arguments of a kernel, or of the layer's two products; ``transposed``: the product of dW,
    whose a is x^T, a view of x as it lies."""
    samples, inputs, outputs = shape
    x = zero_rich(rng, (samples, inputs), 0.2, dtype)
    x[1] = 0                                                    # a sample with no pixel at all
    w, b = rng.standard_normal((inputs, outputs)).astype(dtype), rng.standard_normal(outputs).astype(dtype)
    dy = rng.standard_normal((samples, outputs)).astype(dtype)
    y, g = np.full((samples, outputs), np.nan, dtype), np.full((inputs, outputs), np.nan, dtype)  # NaN: all written
    if name == "nonzero_fraction":
        return [x.reshape(-1)]
    if name == "matmul_skipping_zeros":
        return [x.T, dy, b, g] if transposed else [x, w, b, y]
    if name == "forward_skipping_zeros":
        return [x, w, b, y]
    if name == "transpose":
        return [w, np.full(w.shape[::-1], np.nan, dtype)]
    if name == "input_grad_skipping_zeros":                      # dx = dy W^T, W read as (out, in)
        return [x, w.T.copy(), np.full((samples, outputs), np.nan, dtype)]
    return [x, dy, g]                                           # weight_grad_skipping_zeros


@pytest.mark.parametrize("transposed", [False, True], ids=["x", "x^T"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)])
@pytest.mark.parametrize("fast, reference", kernels.TWINS, ids=[k.__name__ for k, _ in kernels.TWINS])
def test_kernel_matches_numpy_twin(fast, reference, dtype, shape, transposed):
    name = reference.__name__.removesuffix("_numpy")
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    assert_twins_agree(fast, reference,
                       lambda: kernel_arguments(name, shape, np.random.default_rng(0), dtype, transposed),
                       tolerance, run=single_threaded)


@pytest.mark.parametrize("shape", SHAPES)
def test_the_layer_s_three_products_are_the_matrix_products(rng, shape):
    """y = x W + b, dW = x^T dy and dx = dy W^T through the one kernel, at every shape of the
    twin test (for dx the layer is read backwards: x stands for dy, W^T for W)."""
    x, w, b, y = kernel_arguments("forward_skipping_zeros", shape, rng, np.dtype(np.float64))
    _, dy, g = kernel_arguments("weight_grad_skipping_zeros", shape, rng, np.dtype(np.float64))
    _, w_t, dx = kernel_arguments("input_grad_skipping_zeros", shape, rng, np.dtype(np.float64))
    single_threaded(kernels.forward_skipping_zeros, x, w, b, y)
    single_threaded(kernels.weight_grad_skipping_zeros, x, dy, g)
    single_threaded(kernels.input_grad_skipping_zeros, x, w_t, dx)
    np.testing.assert_allclose(y, x @ w + b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g, x.T @ dy, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, x @ w_t.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", [kernels.forward_skipping_zeros, kernels.weight_grad_skipping_zeros,
                                    kernels.input_grad_skipping_zeros])
def test_the_numbers_do_not_depend_on_the_thread_count(rng, kernel):
    """Each output is summed by one loop iteration in one order: equal bit for bit."""
    name = kernel.__name__
    args = kernel_arguments(name, (62, 102, 130), rng, np.dtype(np.float32))
    one = [a.copy() for a in args]
    single_threaded(kernel, *one)
    on_threads(numba.config.NUMBA_NUM_THREADS, kernel, *args)
    assert np.array_equal(one[-1], args[-1]) and not np.isnan(args[-1]).any()


def test_a_dense_layer_skips_zeros_only_when_there_are_enough(rng):
    layer = Dense(784, 300)
    layer.initialize(rng)
    assert layer.skips_zeros(zero_rich(rng, (60, 784), 0.19))           # MNIST's density
    assert not layer.skips_zeros(zero_rich(rng, (60, 784), 0.5))        # too few zeros to pay
    assert not layer.skips_zeros(zero_rich(rng, (GROUP - 1, 784), 0.1))  # smaller than one group
    assert not Dense(784, 10).skips_zeros(zero_rich(rng, (60, 784), 0.1))  # narrower than one block
    assert not layer.skips_zeros(zero_rich(rng, (60, 1568), 0.1)[:, ::2])  # not contiguous
    assert layers.SKIP_ZEROS_BELOW == 0.3


@pytest.mark.parametrize("need_dx", [True, False])
def test_skipping_zeros_gives_what_blas_gives(rng, need_dx):
    layer = Dense(784, 300)
    layer.initialize(rng)
    layer.params["bias"][...] = rng.standard_normal(300)
    x, dy = zero_rich(rng, (60, 784), 0.19), rng.standard_normal((60, 300)).astype(np.float32)
    (y, dx, dw, db), (y_skip, dx_skip, dw_skip, db_skip) = both_ways(layer, "skipping", x, dy, need_dx)
    np.testing.assert_allclose(y_skip, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw_skip, dw, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(db_skip, db)
    if need_dx:
        np.testing.assert_allclose(dx_skip, dx, rtol=1e-5, atol=1e-5)
    else:
        assert dx is None and dx_skip is None


def test_lenet_skipping_zeros_passes_the_gradient_check(rng):
    """Every parameter and the input, in float64, on a batch that is mostly zeros: 6 samples,
    so the last group of 4 is shifted back over samples the first one wrote."""
    net = nets.build("lenet", seed=3, dtype=np.float64)
    net.flat_params[net.slices["fc2.bias"]] = rng.standard_normal(100) * 0.1
    x = zero_rich(rng, (6, 1, 28, 28), 0.2, np.float64)
    net.forward(x, train=True)
    assert net.skipping and net.input_layer is net.layers[1][1]
    gradcheck.check_network(net, x, rng.integers(0, 10, 6))


@pytest.mark.parametrize("hidden, skipping", [(False, ["fc1"]), (True, ["fc1", "fc2"])])
def test_a_network_skips_zeros_from_its_first_layer_on_images_with_zeros(rng, monkeypatch, hidden, skipping):
    """The first layer skips the zeros of an MNIST-like image; where the kernel's blocks are
    AVX-512's, fc2 runs by the same kernel too; fc3 (10 outputs) is narrower than a block."""
    net = nets.build("lenet", seed=0)
    assert net.hidden_layers_skip == kernels.AVX512
    monkeypatch.setattr(net, "hidden_layers_skip", hidden)
    net.forward(zero_rich(rng, (60, 1, 28, 28), 0.19), train=True)
    assert net.skipping and [name for name, layer in net.layers if getattr(layer, "skipping", False)] == skipping
    net.forward(rng.random((60, 1, 28, 28), dtype=np.float32), train=True)  # no zeros: OpenBLAS's threads
    assert not net.numba_passes and not any(getattr(layer, "skipping", False) for _, layer in net.layers)
    assert nets.build("conv2", seed=0).input_layer is None  # a conv net's first layer is a convolution


def test_a_pass_on_numbas_threads_gives_blas_numbers(rng, monkeypatch):
    """fc1 and fc2 by the zero-skipping kernel, against the same network by BLAS: logits and
    every gradient, float64."""
    x = zero_rich(rng, (60, 1, 28, 28), 0.19, np.float64)
    labels, bias = rng.integers(0, 10, 60), rng.standard_normal(300) * 0.1
    results = []
    for skipping in (True, False):
        net = nets.build("lenet", seed=4, dtype=np.float64)
        net.flat_params[net.slices["fc1.bias"]] = bias  # ReLU's zeros, not all at one sign
        monkeypatch.setattr(net, "hidden_layers_skip", skipping)
        if not skipping:
            monkeypatch.setattr(dict(net.layers)["fc1"], "skips_zeros", lambda x, train: False)
        from minilottery.losses import softmax_cross_entropy
        logits = net.forward(x, train=True)
        net.backward(softmax_cross_entropy(logits, labels)[1])
        results.append((logits, net.flat_grads.copy(), [getattr(layer, "skipping", False) for _, layer in net.layers]))
    (logits, grads, skipped), (blas_logits, blas_grads, blas_skipped) = results
    assert sum(skipped) == 2 and not any(blas_skipped)
    np.testing.assert_allclose(logits, blas_logits, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads, blas_grads, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two of Numba's threads")
def test_a_dense_lenet_trains_to_the_same_numbers_on_one_or_two_of_numbas_threads(rng):
    """Bit for bit: no product's path may depend on the thread count (a Dask worker's task thread
    has Numba's count of its own, and an imp on Dask trained to other weights than in one process)."""
    x = zero_rich(rng, (60, 1, 28, 28), 0.19)
    labels = rng.integers(0, 10, 60)
    weights = []
    for count in (1, 2):
        net = nets.build("lenet", seed=5)
        optimizer = optim.make("adam", net)

        def train(net=net, optimizer=optimizer):
            for _ in range(3):
                net.backward(softmax_cross_entropy(net.forward(x, train=True), labels)[1])
                optimizer.step(1e-2)
        on_threads(count, train)
        assert net.skipping
        weights.append(net.flat_params.copy())
    np.testing.assert_array_equal(weights[0], weights[1])


def test_the_kernels_run_without_the_jit():
    code = """
import numpy as np
from minilottery.kernels import sparse_input as k
rng = np.random.default_rng(0)
x = ((rng.random((5, 6)) < 0.3) * rng.random((5, 6))).astype(np.float32)
w, b, dy = rng.standard_normal((6, 64)).astype(np.float32), np.ones(64, np.float32), rng.standard_normal((5, 64)).astype(np.float32)
y, g, dx = np.empty((5, 64), np.float32), np.empty((6, 64), np.float32), np.empty((5, 64), np.float32)
k.forward_skipping_zeros(x, w, b, y)
k.weight_grad_skipping_zeros(x, dy, g)
k.input_grad_skipping_zeros(x, w.T.copy(), dx)
assert np.allclose(y, x @ w + b, atol=1e-5) and np.allclose(g, x.T @ dy, atol=1e-5)
assert np.allclose(dx, x @ w, atol=1e-5)
print("ok")
"""
    result = run_without_jit(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
