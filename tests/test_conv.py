"""Convolutional layers: fast paths equal the direct loop, kernels equal their twins, gradients check."""
import numpy as np
import pytest

from minilottery import conv, gradcheck, nets, threads
from minilottery.kernels import batchnorm
from minilottery.kernels import conv as conv_kernels
from minilottery.kernels import convolution
from minilottery.kernels import layout, taps, winograd, winograd_tiles
from minilottery.layers import Layer
from twins import assert_twins_agree, run_without_jit


# ----------------------------------------------------------------------------- kernels and twins

def kernel_arguments(name, rng, dtype, channels=(3, 4), relu=True):
    """Inputs for a kernel, on awkward sizes (H, W not multiples of the tile or the window;
    ``channels`` (C, K) below, or beyond and not multiples of, layout.py's blocks of 8);
    ``relu``: the batch-norm kernels' fused ReLU."""
    (c, k), n, h, w = channels, 2, 7, 10
    normal = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    th, tw = winograd.tile_grid(h, w)
    tiles = n * th * tw
    if name == "filter_transform":
        return [normal(k, c, 3, 3), np.zeros((36, k, c), dtype)]
    if name == "filter_transform_adjoint":
        return [normal(36, k, c), np.zeros((k, c, 3, 3), dtype)]
    if name == "input_transform":
        return [normal(n, c, h, w), np.zeros((36, tiles, c), dtype), th, tw]
    if name == "output_transform":
        return [normal(36, tiles, k), normal(k), np.zeros((n, k, h, w), dtype), th, tw]
    if name == "output_transform_adjoint":
        return [normal(n, k, h, w), np.zeros((36, tiles, k), dtype), np.zeros((n, k), dtype), th, tw]
    if name == "input_transform_adjoint":
        return [normal(36, tiles, c), np.zeros((n, c, h, w), dtype), th, tw]
    if name == "to_tile_columns":  # with the padding of 1, as the input transform: span = TW + 1
        return [normal(c, h, w), np.zeros((h + 2, 4 * (tw + 1) * c), dtype), 1, tw + 1]
    if name == "from_tile_columns":
        return [normal(h + 2, 4 * (tw + 1) * k), 1, tw + 1, normal(k), np.zeros((k, h, w), dtype)]
    if name == "im2col":  # 3x3, stride 2, padding 1: output 4 x 5
        return [normal(n, c, h, w), np.zeros((n, c * 9, 4 * 5), dtype), 3, 3, 2, 1]
    if name == "col2im":
        return [normal(n, c * 9, 4 * 5), np.zeros((n, c, h, w), dtype), 3, 3, 2, 1]
    if name == "taps_last":
        return [normal(k, c, 3, 2), np.zeros((3, k, 2, c), dtype)]
    if name == "taps_first":
        return [normal(3, k, 2, c), np.zeros((k, c, 3, 2), dtype)]
    if name == "maxpool_forward":
        return [normal(n, c, h, w), np.zeros((n, c, h // 2, w // 2), dtype), np.zeros((n, c, h // 2, w // 2), np.uint8), 2]
    if name == "maxpool_backward":
        argmax = rng.integers(0, 4, (n, c, h // 2, w // 2)).astype(np.uint8)
        return [normal(n, c, h // 2, w // 2), argmax, np.full((n, c, h, w), 7, dtype), 2]
    # the batch-norm kernels work on channels first .. stop - 1: all but the first here
    if name == "channel_statistics":
        return [normal(n, c, h, w) * 3 + 1, np.zeros(c, dtype), np.zeros(c, dtype), 1, c]
    if name == "channel_affine":
        return [normal(n, c, h, w), normal(c), normal(c), relu, np.zeros((n, c, h, w), dtype), 1, c]
    if name == "batchnorm_backward_sums":
        return [normal(n, c, h, w), normal(n, c, h, w), normal(c), normal(c), normal(c), normal(c), relu,
                np.zeros(c, dtype), np.zeros(c, dtype), 1, c]
    if name == "batchnorm_input_grad":
        return ([normal(n, c, h, w), normal(n, c, h, w)] + [normal(c) for _ in range(5)] + [relu]
                + [normal(c) for _ in range(2)] + [np.zeros((n, c, h, w), dtype), 1, c])
    raise KeyError(name)


TWINS = conv_kernels.TWINS + taps.TWINS + batchnorm.TWINS + winograd.TWINS + winograd_tiles.TWINS + layout.TWINS
CHANNELS_LAST = winograd_tiles.TWINS + layout.TWINS  # the kernels that vectorise across channels


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)])
@pytest.mark.parametrize("fast, reference", TWINS, ids=[k.__name__ for k, _ in TWINS])
def test_kernel_matches_numpy_twin(fast, reference, dtype):
    name = reference.__name__.removesuffix("_numpy")
    tolerance = 1e-4 if dtype == np.float32 else 1e-11
    assert_twins_agree(fast, reference, lambda: kernel_arguments(name, np.random.default_rng(0), dtype), tolerance)


@pytest.mark.parametrize("channels", [(17, 9), (100, 90)])
@pytest.mark.parametrize("fast, reference", CHANNELS_LAST, ids=[k.__name__ for k, _ in CHANNELS_LAST])
def test_channels_last_kernels_match_twins_across_blocks_of_channels(fast, reference, channels):
    """17 and 9 channels: two full blocks of 8 and a remainder, one block and a remainder;
    100 and 90: segments of winograd_tiles.SEGMENT // C = 2 tiles, the last of the 3 across cut short."""
    name = reference.__name__.removesuffix("_numpy")
    assert winograd_tiles.SEGMENT // 100 == 2 and winograd.tile_grid(7, 10)[1] == 3
    assert_twins_agree(fast, reference, lambda: kernel_arguments(name, np.random.default_rng(1), np.float32, channels),
                       1e-4)


@pytest.mark.parametrize("fast, reference", batchnorm.TWINS[1:], ids=[k.__name__ for k, _ in batchnorm.TWINS[1:]])
def test_batchnorm_kernels_match_twins_without_the_fused_relu(fast, reference):
    name = reference.__name__.removesuffix("_numpy")
    assert_twins_agree(fast, reference, lambda: kernel_arguments(name, np.random.default_rng(2), np.float32, relu=False),
                       1e-4)


def test_winograd_matrices_compute_a_3x3_correlation():
    """Lavin & Gray's eq. 8 on one tile: A^T [(G g G^T) ⊙ (B^T d B)] A = the 4x4 correlation."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal((6, 6)), rng.standard_normal((3, 3))
    y = winograd.A_T @ ((winograd.G @ g @ winograd.G.T) * (winograd.B_T @ d @ winograd.B_T.T)) @ winograd.A_T.T
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(y, direct, atol=1e-12)


def test_filter_transform_and_its_adjoint():
    rng = np.random.default_rng(1)
    g, du = rng.standard_normal((5, 3, 3, 3)), rng.standard_normal((36, 5, 3))
    u, dg = np.empty((36, 5, 3)), np.empty_like(g)
    winograd.filter_transform(g, u)
    winograd.filter_transform_adjoint(du, dg)
    expected = np.einsum("ia,kcab,jb->ijkc", winograd.G, g, winograd.G).reshape(36, 5, 3)
    np.testing.assert_allclose(u, expected, atol=1e-12)
    assert np.isclose(np.sum(u * du), np.sum(g * dg))  # <T g, dU> = <g, T^T dU>


# ----------------------------------------------------------------------------- Conv2d against the definition

@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((2, 4, 8, 8), 3, 1, 1),    # Winograd, whole tiles
    ((2, 4, 7, 10), 3, 1, 1),   # Winograd, tiles cut at the border
    ((2, 3, 8, 8), 3, 1, 1),    # im2col: an image's 3 channels (the first layer)
    ((2, 4, 3, 2), 3, 1, 1),    # taps: smaller than one Winograd tile
    ((2, 4, 8, 8), 3, 2, 1),    # im2col: Resnet's downsampling conv
    ((2, 4, 8, 8), 1, 2, 0),    # im2col: the projection shortcut
    ((1, 2, 6, 5), 5, 1, 2),    # im2col: a general kernel
])
def test_conv2d_equals_direct_loop(shape, kernel, stride, padding, rng):
    layer = conv.Conv2d(shape[1], 5, kernel, stride, padding, dtype=np.float64)
    layer.initialize(rng)
    layer.params["bias"][...] = rng.standard_normal(5)
    x = rng.standard_normal(shape)
    expected = convolution.Direct(stride, padding).forward(x, layer.params["weight"], layer.params["bias"])
    np.testing.assert_allclose(layer.forward(x), expected, atol=1e-11)
    assert layer.use_winograd == ((kernel, stride, padding) == (3, 1, 1) and shape[1] >= 4 and min(shape[2:]) >= 4)


ENGINE_CASES = [((2, 5, 9, 7), 3, 1, 1), ((2, 3, 8, 8), 3, 1, 1), ((2, 6, 9, 9), 3, 2, 1), ((2, 4, 6, 6), 1, 2, 0),
                ((1, 8, 3, 3), 3, 1, 1), ((2, 4, 7, 10), 1, 1, 0),
                ((2, 2, 16, 16), 1, 1, 0)]  # 256 pixels: Im2col's weight gradient a product per image
# Taps: stride-1 maps below a Winograd tile, VGG-19's 2x2 among them, with taps that read only
# padding (1x1), a map narrower than the kernel (2x5), and a general kernel
TAPS_CASES = [((2, 5, 2, 2), 3, 1, 1), ((2, 5, 1, 1), 3, 1, 1), ((2, 4, 2, 5), 3, 1, 1), ((1, 8, 3, 3), 3, 1, 1),
              ((2, 3, 3, 2), 5, 1, 2), ((2, 4, 3, 3), 1, 1, 0)]


def make_engine(engine, stride, padding):
    if engine == "Winograd":
        return convolution.Winograd()
    if engine == "Taps":
        return taps.Taps(padding)
    return convolution.Im2col(stride, padding)


@pytest.mark.parametrize("engine, shape, kernel, stride, padding",
                         [("Im2col", *case) for case in ENGINE_CASES] +
                         [("Winograd", *case) for case in ENGINE_CASES if case[1:] == (3, 1, 1)] +  # its one shape
                         [("Taps", *case) for case in TAPS_CASES])
def test_every_engine_agrees_with_the_direct_loop_forward_and_backward(engine, shape, kernel, stride, padding, rng):
    """Each engine's y, dx, dw and db against the reference engine's (float64)."""
    x = rng.standard_normal(shape)
    w, b = rng.standard_normal((5, shape[1], kernel, kernel)), rng.standard_normal(5)
    fast, reference = make_engine(engine, stride, padding), convolution.Direct(stride, padding)
    y = fast.forward(x, w, b)
    np.testing.assert_allclose(y, reference.forward(x, w, b), atol=1e-10)
    dy = rng.standard_normal(y.shape)
    for mine, theirs, name in zip(fast.backward(dy, x, w), reference.backward(dy, x, w), ("dx", "dw", "db")):
        np.testing.assert_allclose(mine, theirs, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("transform_rows_below", [1 << 24, 0], ids=["U^T transformed from w^T", "U^T a view"])
def test_winograd_is_the_same_whichever_layout_its_filters_take(rng, monkeypatch, transform_rows_below):
    """Up to FILTER_BYTES the forward transforms w^T straight into rows of U^T (and the
    backward transforms w itself), above it both read one U; each against the reference,
    forward and backward, after w changes between passes."""
    monkeypatch.setattr(convolution, "FILTER_BYTES", transform_rows_below)
    x, engine, reference = rng.standard_normal((2, 4, 8, 8)), convolution.Winograd(), convolution.Direct(1, 1)
    for _ in range(2):
        w, b = rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(5)
        y = engine.forward(x, w, b)
        np.testing.assert_allclose(y, reference.forward(x, w, b), atol=1e-10)
        dy = rng.standard_normal(y.shape)
        for mine, theirs, name in zip(engine.backward(dy, x, w), reference.backward(dy, x, w), ("dx", "dw", "db")):
            np.testing.assert_allclose(mine, theirs, atol=1e-10, err_msg=name)


def test_taps_split_over_the_pool_agree_with_the_direct_loop(rng, monkeypatch):
    """VGG-19's 2x2 case at a size whose products threads.matmul splits over two threads,
    writing into strided views of its outputs (float32 against the float64 definition)."""
    monkeypatch.setattr(threads, "WORKERS", 2)
    x = rng.standard_normal((64, 256, 2, 2)).astype(np.float32)
    w, b = rng.standard_normal((256, 256, 3, 3)).astype(np.float32) / 48, rng.standard_normal(256).astype(np.float32)
    reference = convolution.Direct(1, 1)
    with threads.pool_owns_cores():
        fast = taps.Taps(1)
        y = fast.forward(x, w, b)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        mine = fast.backward(dy, x, w)
        no_dx = fast.backward(dy, x, w, need_dx=False)  # a first layer's: dw and db only
    assert no_dx[0] is None
    np.testing.assert_array_equal(no_dx[1], mine[1])
    np.testing.assert_allclose(y, reference.forward(*(a.astype(np.float64) for a in (x, w, b))), atol=1e-4)
    theirs = reference.backward(dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64))
    for m, t, name in zip(mine, theirs, ("dx", "dw", "db")):
        np.testing.assert_allclose(m, t, rtol=1e-4, atol=1e-3, err_msg=name)


@pytest.mark.parametrize("shape, kernel, stride, padding", ENGINE_CASES[:4])
def test_the_reference_engines_backward_is_the_gradient(shape, kernel, stride, padding, rng):
    """The direct loop's own backward against central differences (every parameter and x)."""
    layer = conv.Conv2d(shape[1], 3, kernel, stride, padding, dtype=np.float64,
                        engine=convolution.Direct(stride, padding))
    layer.initialize(rng)
    layer.params["bias"][...] = rng.standard_normal(3)
    gradcheck.check_layer(layer, rng.standard_normal(shape))


def test_float32_winograd_is_accurate(rng):
    """F(4x4, 3x3) in float32 stays within a few ulps of the float64 direct sum at 64 channels."""
    layer = conv.Conv2d(64, 64, dtype=np.float32)
    layer.initialize(rng)
    x = rng.standard_normal((2, 64, 16, 16)).astype(np.float32)
    expected = convolution.Direct(1, 1).forward(x.astype(np.float64), layer.params["weight"].astype(np.float64),
                                                np.zeros(64))
    error = np.abs(layer.forward(x) - expected).max() / np.abs(expected).max()
    assert error < 1e-5, error


def test_conv2d_initialisation_is_glorot_in_place(rng):
    layer = conv.Conv2d(16, 32, dtype=np.float32)
    weight = layer.params["weight"]
    layer.initialize(rng)
    assert layer.params["weight"] is weight  # the network's views of θ must stay bound
    assert np.isclose(weight.std(), np.sqrt(2 / (16 * 9 + 32 * 9)), rtol=0.05)
    assert np.all(layer.params["bias"] == 0)


# ----------------------------------------------------------------------------- gradient checks (float64)

@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((2, 4, 8, 8), 3, 1, 1), ((2, 4, 5, 7), 3, 1, 1), ((2, 3, 8, 8), 3, 1, 1), ((2, 4, 3, 3), 3, 1, 1),
    ((2, 3, 8, 8), 3, 2, 1), ((2, 3, 7, 7), 1, 2, 0)])
def test_conv2d_gradients(shape, kernel, stride, padding, rng):
    layer = conv.Conv2d(shape[1], 4, kernel, stride, padding, dtype=np.float64)
    layer.initialize(rng)
    layer.params["bias"][...] = rng.standard_normal(4)
    gradcheck.check_layer(layer, rng.standard_normal(shape), limit=40)


def test_conv2d_gradients_accumulate_over_chunks(rng, monkeypatch):
    """With one image per Winograd chunk the gradients must still sum over the batch."""
    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)
    layer = conv.Conv2d(4, 4, dtype=np.float64)
    layer.initialize(rng)
    assert layer.engine._chunks(np.zeros((3, 4, 8, 8)), layer.params["weight"])[2] == 1
    gradcheck.check_layer(layer, rng.standard_normal((3, 4, 8, 8)), limit=40)


def test_a_wrong_conv_derivative_fails_the_check(rng, monkeypatch):
    layer = conv.Conv2d(4, 3, dtype=np.float64)
    layer.initialize(rng)
    adjoint = winograd_tiles.input_transform_adjoint

    def slightly_wrong(dV, dx, tiles_h, tiles_w):
        adjoint(dV, dx, tiles_h, tiles_w)
        dx[0, 0, 0, 0] *= 1.01

    monkeypatch.setattr(winograd_tiles, "input_transform_adjoint", slightly_wrong)
    with pytest.raises(AssertionError, match="input"):
        gradcheck.check_layer(layer, rng.standard_normal((1, 4, 4, 4)), limit=100)


def test_maxpool_gradients(rng):
    x = rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) / 10.0  # distinct values: no ties at the max
    gradcheck.check_layer(conv.MaxPool2d(2), x)


@pytest.mark.parametrize("relu", [False, True], ids=["batch norm", "batch norm and ReLU"])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_gradients(train, relu, rng):
    layer = conv.BatchNorm2d(3, relu=relu, dtype=np.float64)
    layer.params["gamma"][...] = rng.standard_normal(3)
    layer.params["beta"][...] = rng.standard_normal(3)
    layer.buffers["running_mean"][...] = rng.standard_normal(3)
    layer.buffers["running_var"][...] = rng.random(3) + 0.5
    gradcheck.check_layer(layer, rng.standard_normal((2, 3, 4, 5)) * 2 + 1, train=train)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_with_relu_is_batchnorm_then_relu(train, rng):
    """The fused layer gives the numbers of the two layers in turn, forward and backward, and
    passes no gradient where the ReLU cut its input to 0."""
    from minilottery.layers import ReLU
    fused, plain, relu = conv.BatchNorm2d(4, relu=True), conv.BatchNorm2d(4), ReLU()
    for layer in (fused, plain):
        layer.params["gamma"][...] = [1.5, -0.5, 2.0, 0.25]
        layer.params["beta"][...] = [0.3, -0.2, 0.0, 1.0]
    x = (rng.standard_normal((3, 4, 5, 6)) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y = fused.forward(x, train)
    np.testing.assert_allclose(y, relu.forward(plain.forward(x, train), train), rtol=1e-6, atol=1e-6)
    assert (y == 0).mean() > 0.2 and (y > 0).mean() > 0.2
    dx = fused.backward(dy)
    np.testing.assert_allclose(dx, plain.backward(relu.backward(dy.copy())), rtol=1e-5, atol=1e-5)
    for key in ("gamma", "beta"):
        np.testing.assert_allclose(fused.grads[key], plain.grads[key], rtol=1e-5, atol=1e-5)


def test_batchnorm_statistics(rng):
    layer = conv.BatchNorm2d(2, dtype=np.float64)
    x = rng.standard_normal((4, 2, 3, 3)) * 3 + 5
    y = layer.forward(x, train=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-4)
    # PyTorch's running estimates: momentum 0.1 from (0, 1), unbiased variance
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.1 * x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(layer.buffers["running_var"], 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1))
    expected = (x - layer.buffers["running_mean"][:, None, None]) / np.sqrt(layer.buffers["running_var"][:, None, None] + 1e-5)
    np.testing.assert_allclose(layer.forward(x, train=False), expected)


def test_batchnorm_statistics_do_not_cancel_far_from_zero(rng):
    """Sums of x and x² in float64 would lose a variance of 1e-4 at a mean of 100,000 (1e14 times it)."""
    x = (100_000 + 0.01 * rng.standard_normal((8, 3, 5, 5))).astype(np.float32)
    mean, var = np.empty(3, np.float32), np.empty(3, np.float32)
    batchnorm.channel_statistics(x, mean, var, 0, 3)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(var, exact.var(axis=(0, 2, 3)), rtol=1e-3)


def test_global_average_pool_gradients(rng):
    gradcheck.check_layer(conv.GlobalAvgPool(), rng.standard_normal((2, 3, 4, 5)))


class Leaves(Layer):
    """A composite layer seen as one layer whose params are its leaves', for check_layer."""

    def __init__(self, block):
        super().__init__()
        self.block = block
        for name, leaf in nets.named_leaves("block", block):
            for key in leaf.params:
                self.params[f"{name}.{key}"], self.grads[f"{name}.{key}"] = leaf.params[key], leaf.grads[key]

    def forward(self, x, train=False):
        return self.block.forward(x, train)

    def backward(self, dy, need_dx=True):
        return self.block.backward(dy, need_dx)


@pytest.mark.parametrize("in_channels, out_channels, stride", [(3, 3, 1), (2, 4, 2)])
def test_residual_block_gradients(in_channels, out_channels, stride, rng):
    block = conv.ResidualBlock(in_channels, out_channels, stride, dtype=np.float64)
    assert block.params == {} and block.projection == (stride != 1)
    for _, leaf in nets.named_leaves("block", block):
        leaf.initialize(rng)
        if isinstance(leaf, conv.BatchNorm2d):
            leaf.params["beta"][...] = rng.standard_normal(out_channels)  # move ReLU kinks off the data
    layer = Leaves(block)
    assert any(name.startswith("block.shortcut.") for name in layer.params) == block.projection
    gradcheck.check_layer(layer, rng.standard_normal((2, in_channels, 6, 6)), limit=20)
    assert block.backward(rng.standard_normal((2, out_channels, 6 // stride, 6 // stride)), need_dx=False) is None


def test_conv_layers_run_without_the_jit():
    """NUMBA_DISABLE_JIT=1: the kernels run as Python and still compute the convolution."""
    code = ("import numpy as np; from minilottery import conv; from minilottery.kernels.convolution import Direct;"
            "rng = np.random.default_rng(0); x = rng.standard_normal((1, 4, 5, 6));"
            "layers = [conv.Conv2d(4, 3, dtype=np.float64), conv.Conv2d(4, 3, 3, 2, dtype=np.float64)];"
            "[layer.initialize(rng) for layer in layers];"
            "ok = all(np.allclose(l.forward(x), Direct(l.stride, 1).forward(x, l.params['weight'], l.params['bias']))"
            " and l.backward(np.ones_like(l.forward(x))).shape == x.shape for l in layers);"
            "pool = conv.MaxPool2d(2); ok &= pool.backward(pool.forward(x)).shape == x.shape;"
            "small = conv.Conv2d(4, 3, dtype=np.float64); small.initialize(rng); x2 = x[:, :, :2, :2].copy();"  # Taps
            "ok &= np.allclose(small.forward(x2), Direct(1, 1).forward(x2, small.params['weight'], small.params['bias']));"
            "ok &= small.backward(np.ones_like(small.forward(x2))).shape == x2.shape;"
            # 8 channels, 9 columns: layout.py's transposes in blocks of 8, then one by one
            "wide = conv.Conv2d(8, 8, dtype=np.float64); wide.initialize(rng); x8 = rng.standard_normal((1, 8, 5, 9));"
            "Dw = Direct(1, 1); dy = rng.standard_normal((1, 8, 5, 9));"
            "ok &= np.allclose(wide.forward(x8), Dw.forward(x8, wide.params['weight'], wide.params['bias']));"
            "ok &= np.allclose(wide.backward(dy), Dw.backward(dy, x8, wide.params['weight'])[0]); print(ok)")
    result = run_without_jit(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
