"""A Dense layer's BLAS products two at a time on Numba's threads (kernels/blas.py): NumPy's
numbers, whatever the thread count, and only in a pass on Numba's threads."""
import numba
import numpy as np
import pytest

from minilottery import gradcheck, nets
from minilottery.kernels import blas
from minilottery.layers import Dense
from twins import assert_twins_agree, both_ways, on_threads, zero_rich

pytestmark = pytest.mark.skipif(not blas.AVAILABLE, reason="NumPy's BLAS is not its bundled 64-bit OpenBLAS")


def product_arguments(rng, dtype, layout):
    """Two products of the shapes of fc2's forward and backward, their operands as a layer
    passes them: "rows" (C order), "transposed" (x^T and W^T, views as they lie) or "columns"
    (the two parts of the forward's columns, views into one array)."""
    x, w = rng.standard_normal((60, 300)).astype(dtype), rng.standard_normal((300, 100)).astype(dtype)
    dy = rng.standard_normal((60, 100)).astype(dtype)
    y, dw, dx = (np.full(shape, np.nan, dtype) for shape in ((60, 100), (300, 100), (60, 300)))
    head = [blas.GEMM[np.dtype(dtype)], blas.SET_THREADS, True]
    if layout == "rows":
        return head + [x, w, y, dy, w.T.copy(), dx]
    if layout == "transposed":
        return head + [x.T, dy, dw, dy, w.T, dx]
    return head + [x, w[:, :48], y[:, :48], x, w[:, 48:], y[:, 48:]]


@pytest.mark.parametrize("layout", ["rows", "transposed", "columns"])
@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)])
@pytest.mark.parametrize("fast, reference", blas.TWINS, ids=[k.__name__ for k, _ in blas.TWINS])
def test_kernel_matches_numpy_twin(fast, reference, dtype, layout):
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    assert_twins_agree(fast, reference, lambda: product_arguments(np.random.default_rng(0), dtype, layout),
                       tolerance)


@pytest.mark.parametrize("columns, split", [(100, 48), (300, 144), (16, 8), (15, 0), (10, 0), (1, 0)])
def test_the_columns_are_cut_near_the_middle_on_a_register(columns, split):
    assert blas.column_split(columns) == split


def test_a_product_too_narrow_to_cut_is_numpys_own(rng):
    """fc3's 10 columns: one call, NumPy's numbers bit for bit."""
    x, w = rng.standard_normal((60, 100)).astype(np.float32), rng.standard_normal((100, 10)).astype(np.float32)
    y = np.full((60, 10), np.nan, np.float32)
    blas.by_columns(x, w, y)
    np.testing.assert_array_equal(y, x @ w)


@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)])
def test_a_dense_layer_side_by_side_gives_what_blas_gives(rng, need_dx, dtype):
    """y, dW, db and dx against the layer's own BLAS path; the backward's two products are
    BLAS's own calls, equal bit for bit."""
    layer = Dense(300, 100, dtype)
    layer.initialize(rng)
    layer.params["bias"][...] = rng.standard_normal(100)
    x, dy = rng.standard_normal((60, 300)).astype(dtype), rng.standard_normal((60, 100)).astype(dtype)
    (y, dx, dw, db), (y_side, dx_side, dw_side, db_side) = both_ways(layer, "side_by_side", x, dy, need_dx)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y_side, y, rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(db_side, db)
    if need_dx:
        np.testing.assert_array_equal(dw_side, dw)
        np.testing.assert_array_equal(dx_side, dx)
    else:
        np.testing.assert_allclose(dw_side, dw, rtol=tolerance, atol=tolerance)
        assert dx is None and dx_side is None


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two of Numba's threads")
@pytest.mark.parametrize("need_dx", [True, False])
def test_the_numbers_do_not_depend_on_the_thread_count(rng, need_dx):
    """The same two calls on one thread or two: equal bit for bit (and nothing left unwritten)."""
    x, w = rng.standard_normal((60, 300)).astype(np.float32), rng.standard_normal((300, 100)).astype(np.float32)
    dy = rng.standard_normal((60, 100)).astype(np.float32)
    results = []
    for count in (1, 2):
        y, dw = np.full((60, 100), np.nan, np.float32), np.full((300, 100), np.nan, np.float32)
        dx = np.full((60, 300), np.nan, np.float32) if need_dx else None
        on_threads(count, blas.by_columns, x, w, y)
        on_threads(count, blas.backward, x, dy, w, dw, dx)
        results.append([a for a in (y, dw, dx) if a is not None])
    for one, two in zip(*results):
        assert not np.isnan(two).any()
        np.testing.assert_array_equal(one, two)


def test_a_lenet_pass_on_numbas_threads_runs_fc2_and_fc3_side_by_side(rng):
    """On MNIST-like images fc1 skips their zeros (on Numba's threads) and the products left
    to BLAS run side by side; on images without zeros, all three are OpenBLAS's own."""
    net = nets.build("lenet", seed=0)
    net.forward(zero_rich(rng, (60, 1, 28, 28), 0.19), train=True)
    side_by_side = [name for name, layer in net.layers if getattr(layer, "side_by_side", False)]
    assert net.numba_passes and side_by_side == (["fc3"] if net.hidden_layers_skip else ["fc2", "fc3"])
    net.forward(rng.random((60, 1, 28, 28), dtype=np.float32), train=True)
    assert not net.numba_passes and not any(getattr(layer, "side_by_side", False) for _, layer in net.layers)


def test_lenet_with_products_side_by_side_passes_the_gradient_check(rng, monkeypatch):
    """Every parameter and the input, float64, with fc2 and fc3 side by side (fc2 too where
    the CPU's blocks would have it skip ReLU's zeros instead)."""
    net = nets.build("lenet", seed=6, dtype=np.float64)
    monkeypatch.setattr(net, "hidden_layers_skip", False)
    net.flat_params[net.slices["fc1.bias"]] = rng.standard_normal(300) * 0.1
    x = zero_rich(rng, (8, 1, 28, 28), 0.2, np.float64)
    net.forward(x, train=True)
    assert [name for name, layer in net.layers if getattr(layer, "side_by_side", False)] == ["fc2", "fc3"]
    gradcheck.check_network(net, x, rng.integers(0, 10, 8))
