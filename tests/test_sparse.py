"""Sparse training (the paper's "Limitations"): the same numbers as the dense masked path.

Each sparse kernel agrees with its NumPy twin; a SparseDense layer agrees with Dense
under the mask; a sparse network passes the float64 gradient check; and whole short
training runs follow the same curve in sparse and dense mode.
"""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from minilottery import bench, calibration, gradcheck, hparams, nets, optim, sparse, threads, train
from minilottery.kernels import CACHE_LINE, FLUSH_BELOW, aligned_zeros, one_numba_thread, single_threaded, spin_count
from minilottery.kernels import sparse as kernels
from minilottery.kernels import sparse_stack
from minilottery.layers import Dense
from twins import assert_twins_agree, run_without_jit


def masked_dense(rng, inputs, outputs, density, dtype):
    """A Dense layer whose W is zero outside a random mask of the given density."""
    layer = Dense(inputs, outputs, dtype)
    layer.initialize(rng)
    layer.params["bias"][...] = rng.standard_normal(outputs)
    mask = (rng.random((inputs, outputs)) < density).astype(dtype)
    layer.params["weight"] *= mask
    return layer, mask


def kernel_arguments(name, rng, dtype):
    samples, inputs = 70, 13                        # 70 samples: two tiles, the second partial
    tiles = kernels.tile_count(samples)
    x = rng.standard_normal((samples, inputs)).astype(dtype)
    if name == "transpose_into_tiles":
        return [x, np.zeros((tiles, inputs, kernels.TILE), dtype)]
    size = 400
    flat_mask = (rng.random(size) < 0.5).astype(dtype)
    flat_mask[300:] = 1                              # a bias-like span
    w, g = rng.standard_normal(size).astype(dtype) * flat_mask, rng.standard_normal(size).astype(dtype)
    state = [np.abs(rng.standard_normal(size)).astype(dtype) * flat_mask for _ in range(2)]
    state[0][np.flatnonzero(flat_mask)[:4]] = FLUSH_BELOW / 2  # values that must be flushed to zero
    spans = np.array([[300, 340], [350, 400]], np.int64)
    kept = np.flatnonzero(flat_mask[:300])
    kept_state = [np.abs(rng.standard_normal(kept.size)).astype(dtype) for _ in range(2)]
    kept_state[0][:4] = FLUSH_BELOW / 2
    f = dtype.type
    if name == "adam_update_kept":
        return [w, g, state[0], state[1], flat_mask, spans, kept, *kept_state, f(1e-3), f(0.9), f(0.999), f(1e-8),
                f(1e-4), f(0.1)]
    return [w, g, state[0], flat_mask, spans, kept, kept_state[0], f(0.1), f(0.9), f(1e-4), True]  # momentum


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)])
@pytest.mark.parametrize("fast, reference", kernels.TWINS, ids=[k.__name__ for k, _ in kernels.TWINS])
def test_kernel_matches_numpy_twin(fast, reference, dtype):
    name = reference.__name__.removesuffix("_numpy")
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    assert_twins_agree(fast, reference, lambda: kernel_arguments(name, np.random.default_rng(0), dtype), tolerance, run=single_threaded)


def stack_arguments(name, rng, dtype, want_dx, layers):
    """A stack of ``layers`` sparse layers, 13 -> 11 -> 7 -> 5 (one: a SparseDense's, 13 -> 11),
    on 70 samples (two tiles), whose
    first inputs are 0 for every sample of the first tile and input 3 for every sample (inputs
    the first layer skips). The gradients it writes start as last step's would: not zero."""
    samples, sizes = 70, (13, 11, 7, 5)[:layers + 1]
    layers = [masked_dense(rng, inputs, outputs, 0.4, dtype) for inputs, outputs in zip(sizes, sizes[1:])]
    structures = [sparse.SparseDense(layer, mask) for layer, mask in layers]
    tiles = tuple(np.zeros((2, inputs, kernels.TILE), dtype) for inputs in sizes[:-1])
    grad_tiles = tuple(np.zeros((2, outputs, kernels.TILE), dtype) for outputs in sizes[1:])
    x = rng.standard_normal((samples, sizes[0])).astype(dtype)
    x[:kernels.TILE, :3] = 0
    x[:, 3] = 0
    weights = tuple(s.weight for s in structures)
    if name == "stack_forward":
        biases = tuple(layer.params["bias"] for layer, _ in layers)
        by_column = [tuple(getattr(s, key) for s in structures) for key in ("col_start", "col_rows", "col_pos")]
        return [x, weights, biases, *by_column, tiles, np.zeros((samples, sizes[-1]), dtype)]
    h = x
    for (layer, _), t in zip(layers, tiles):                 # the tiles a forward pass leaves
        kernels.transpose_into_tiles_numpy(h, t)
        h = np.maximum(h @ layer.params["weight"] + layer.params["bias"], 0)
    by_row = [tuple(getattr(s, key) for s in structures) for key in ("row_start", "row_cols", "row_pos")]
    for t in grad_tiles:                                    # last step's, 0 past the last sample
        t[0] = rng.standard_normal(t[0].shape)
        t[1, :, :samples - kernels.TILE] = rng.standard_normal((t.shape[1], samples - kernels.TILE))
    return [rng.standard_normal((samples, sizes[-1])).astype(dtype), weights,
            tuple(rng.standard_normal(w.shape).astype(dtype) for w in weights),
            tuple(rng.standard_normal(outputs).astype(dtype) for outputs in sizes[1:]), *by_row, tiles, grad_tiles,
            np.zeros((samples if want_dx else 0, sizes[0]), dtype)]


@pytest.mark.parametrize("layers", [3, 1], ids=["three layers", "one layer"])
@pytest.mark.parametrize("want_dx", [True, False], ids=["dx", "no dx"])
@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)])
@pytest.mark.parametrize("fast, reference", sparse_stack.TWINS, ids=[k.__name__ for k, _ in sparse_stack.TWINS])
def test_stack_kernel_matches_numpy_twin(fast, reference, dtype, want_dx, layers):
    name = reference.__name__.removesuffix("_numpy")
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    assert_twins_agree(fast, reference,
                       lambda: stack_arguments(name, np.random.default_rng(0), dtype, want_dx, layers), tolerance)


def test_sparse_kernels_leave_pruned_entries_alone(rng):
    """The optimizer never writes a position outside the spans and the kept list."""
    args = kernel_arguments("adam_update_kept", rng, np.dtype(np.float32))
    w = args[0]
    w[:300][args[4][:300] == 0] = 7.0                # pruned, outside any span: must stay untouched
    single_threaded(kernels.adam_update_kept, *args)
    assert np.all(w[:300][args[4][:300] == 0] == 7.0)


@pytest.mark.parametrize("samples, need_dx, blas_evaluation", [(60, True, False), (60, False, False),
                                                                (130, True, False), (130, True, True)])
def test_sparse_layer_matches_dense_layer(rng, samples, need_dx, blas_evaluation):
    """Forward in evaluation mode (through BLAS for a large batch if blas_evaluation), then backward."""
    layer, mask = masked_dense(rng, 50, 30, 0.1, np.float32)
    x = rng.standard_normal((samples, 50)).astype(np.float32)
    dy = rng.standard_normal((samples, 30)).astype(np.float32)
    y_dense = layer.forward(x)
    dx_dense = layer.backward(dy.copy(), need_dx)
    grads_dense = {name: g.copy() for name, g in layer.grads.items()}
    layer.sparse = sparse.SparseDense(layer, mask, blas_evaluation)
    y_sparse = layer.forward(x)
    dx_sparse = layer.backward(dy.copy(), need_dx)
    np.testing.assert_allclose(y_sparse, y_dense, rtol=1e-5, atol=1e-5)
    if need_dx:
        np.testing.assert_allclose(dx_sparse, dx_dense, rtol=1e-5, atol=1e-5)
    else:
        assert dx_sparse is None and dx_dense is None
    np.testing.assert_allclose(layer.grads["bias"], grads_dense["bias"], rtol=1e-5, atol=1e-5)
    # dW at kept positions only; pruned positions hold 0 in sparse mode
    np.testing.assert_allclose(layer.grads["weight"], grads_dense["weight"] * mask, rtol=1e-5, atol=1e-5)


def test_the_tiles_start_on_a_cache_line(rng):
    """Each tile row of 64 float32 is one 256-byte run of whole cache lines (16-byte aligned
    rows straddled lines and cost the first layer's forward a third more)."""
    assert all(aligned_zeros(shape, dtype).ctypes.data % CACHE_LINE == 0
               for shape in [(1,), (3, 5), (7, 13, 64)] * 4 for dtype in (np.float32, np.float64))
    tiles = aligned_zeros((2, 3, 4), np.float32)
    assert tiles.shape == (2, 3, 4) and tiles.dtype == np.float32 and not tiles.any()
    layer, mask = masked_dense(rng, 50, 30, 0.1, np.float32)
    for samples in (60, 130):
        xt, dyt = sparse.SparseDense(layer, mask).tiles(samples)
        assert xt.ctypes.data % CACHE_LINE == 0 and dyt.ctypes.data % CACHE_LINE == 0


def sparse_lenet(stack):
    """A float64 Lenet with every layer sparse, run as one SparseStack or layer by layer."""
    net = nets.build("lenet", seed=3, dtype=np.float64, sparse="on")
    net.set_mask(bench.random_mask(net, 0.3, seed=1))
    assert all(leaf.sparse is not None for _, leaf in net.leaves if isinstance(leaf, Dense))
    assert net.sparse_stack is not None
    if not stack:
        net.sparse_stack = None
    return net


@pytest.mark.parametrize("stack", [True, False], ids=["stack", "layer by layer"])
def test_sparse_lenet_passes_the_gradient_check(rng, stack):
    net = sparse_lenet(stack)
    net.flat_params[net.slices["fc2.bias"]] = rng.standard_normal(100) * 0.1
    gradcheck.check_network(net, rng.random((3, 1, 28, 28)), rng.integers(0, 10, 3))
    assert net.stack_pass == stack


@pytest.mark.parametrize("stack", [True, False], ids=["stack", "layer by layer"])
def test_a_wrong_sparse_gradient_fails_the_check(rng, monkeypatch, stack):
    net = sparse_lenet(stack)
    owner = net.sparse_stack if stack else dict(net.layers)["fc2"].sparse
    backward = owner.backward

    def wrong(*args):
        dx = backward(*args)
        net.grads["fc2.weight"][...] += 1e-3 * net.masks["fc2.weight"]   # an error at every kept dW
        return dx

    monkeypatch.setattr(owner, "backward", wrong)
    with pytest.raises(AssertionError, match="gradient of fc2.weight"):
        gradcheck.check_network(net, rng.random((3, 1, 28, 28)), rng.integers(0, 10, 3))


def test_auto_picks_sparse_below_the_threshold_and_set_mask_rebuilds():
    net = nets.build("lenet", seed=0)                     # sparse="auto"
    assert net.sparse_update is None                      # dense network: dense path
    train_threshold, evaluation_threshold, _, _ = calibration.thresholds()  # fixed in conftest.py
    mask = bench.random_mask(net, evaluation_threshold / 2)
    mask["fc1.weight"][...] = 1                           # one layer above the threshold
    net.set_mask(mask)
    layers = dict(net.layers)
    assert layers["fc2"].sparse is not None and layers["fc3"].sparse is not None
    assert layers["fc1"].sparse is None and net.sparse_stack is None
    fc1 = net.slices["fc1.weight"]
    assert any(start <= fc1.start and fc1.stop <= stop for start, stop in net.sparse_update.spans)
    assert not layers["fc2"].sparse.blas_evaluation
    # with the first layer below the threshold, the whole stack trains sparse, as one SparseStack
    mask = bench.random_mask(net, evaluation_threshold / 2)
    mask["fc3.weight"][...] = 1
    net.set_mask(mask)
    assert all(layers[name].sparse is not None for name in ("fc1", "fc2", "fc3")) and net.sparse_stack is not None
    assert layers["fc3"].sparse.blas_evaluation and not layers["fc1"].sparse.blas_evaluation
    between = (evaluation_threshold + train_threshold) / 2
    net.set_mask(bench.random_mask(net, between))
    assert layers["fc1"].sparse is not None and layers["fc1"].sparse.blas_evaluation
    net.set_mask(bench.random_mask(net, 0.9))
    assert net.sparse_update is None and layers["fc1"].sparse is None
    net.set_sparse("on")
    assert all(layers[name].sparse is not None and not layers[name].sparse.blas_evaluation
               for name in ("fc1", "fc2", "fc3"))
    with pytest.raises(ValueError, match="sparse mode"):
        net.set_sparse("sometimes")


def test_the_stack_trains_as_the_layers_do(rng):
    """Two training steps of a sparse Lenet as one stack and layer by layer: the same logits and
    gradients, on a batch of three tiles (the last partial) of images with a background of
    zeros (inputs the stack's first layer skips) and without dL/dx, as a Trainer runs them."""
    from minilottery.losses import softmax_cross_entropy
    stacked, layered = sparse_lenet(stack=True), sparse_lenet(stack=False)
    for _ in range(2):   # each step's background elsewhere: a skipped row's dW must be zeroed
        x = rng.random((130, 1, 28, 28)) * (rng.random((1, 1, 28, 28)) > 0.6)
        labels = rng.integers(0, 10, 130)
        results = []
        for net in (stacked, layered):
            logits = net.forward(x, train=True)
            _, dlogits = softmax_cross_entropy(logits, labels)
            assert net.backward(dlogits) is None
            results.append((logits, net.flat_grads.copy()))
            net.flat_params -= 0.01 * net.flat_grads
        assert stacked.stack_pass and not layered.stack_pass
        (logits_stack, grads_stack), (logits_layers, grads_layers) = results
        np.testing.assert_allclose(logits_stack, logits_layers, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grads_stack, grads_layers, rtol=1e-10, atol=1e-12)


def test_backward_after_a_new_mask_asks_for_a_forward_pass(rng):
    net = sparse_lenet(stack=True)
    net.forward(rng.random((3, 1, 28, 28)), train=True)
    net.set_mask(bench.random_mask(net, 0.2, seed=2))
    with pytest.raises(RuntimeError, match="run forward again"):
        net.backward(np.ones((3, 10)))


def test_a_diverged_weight_reaches_the_stacks_logits(rng):
    """ReLU in the stack keeps a NaN (as np.maximum does), so a diverging run still shows it in
    its loss, the trainer's one-line report, and not as quiet zeros."""
    net = nets.build("lenet", seed=0, sparse="on")
    net.set_mask(bench.random_mask(net, 0.3))
    assert net.sparse_stack is not None
    row = np.flatnonzero(net.masks["fc2.weight"].any(axis=1))[0]
    net.params["fc2.weight"][row][net.masks["fc2.weight"][row] == 1] = np.nan   # kept entries only
    logits = net.forward(rng.random((60, 1, 28, 28)).astype(np.float32), train=True)
    assert net.stack_pass and np.isnan(logits).any()


def test_short_spans_are_walked_as_kept_positions():
    """The biases between sparse layers are walked with the kept weights, not as spans of their
    own (each span is a parallel region of the optimizer); a long dense span stays a span."""
    net = nets.build("lenet", seed=0, sparse="on")
    net.set_mask(bench.random_mask(net, 0.05))
    update = net.sparse_update
    assert update.spans.size == 0
    biases = np.concatenate([np.arange(net.slices[name].start, net.slices[name].stop)
                             for name in ("fc1.bias", "fc2.bias", "fc3.bias")])
    assert np.isin(biases, update.kept).all() and np.all(np.diff(update.kept) > 0)
    assert np.array_equal(update.kept, np.flatnonzero(net.flat_mask))
    mask = bench.random_mask(net, 0.05)
    mask["fc2.weight"][...] = 1                           # fc2 above the optimizer's threshold: one span,
    net.set_mask(mask)                                    # from fc1's bias to fc2's
    assert net.sparse_update.spans.tolist() == [[net.slices["fc1.bias"].start, net.slices["fc2.bias"].stop]]


def test_an_evaluation_above_the_threshold_is_the_dense_networks_pass(rng):
    """Between the two thresholds a layer trains sparse but evaluates by the dense product: that
    pass runs as the dense network's would, on its cores and skipping the image's zeros, with
    the dense network's numbers; a training pass runs the sparse kernels."""
    net = nets.build("lenet", seed=0, sparse_thresholds=(0.5, 0.1))
    dense = nets.build("lenet", seed=0, sparse="off")
    mask = bench.random_mask(net, 0.3)
    net.set_mask(mask)
    dense.set_mask(mask)
    assert all(dict(net.layers)[name].sparse.blas_evaluation for name in ("fc1", "fc2", "fc3"))
    images = ((rng.random((1000, 1, 28, 28)) < 0.19) * rng.random((1000, 1, 28, 28))).astype(np.float32)
    logits = net.forward(images)
    assert not net.sparse_pass and net.skipping  # like the dense network: fc1 skips the zeros
    np.testing.assert_allclose(logits, dense.forward(images), rtol=1e-5, atol=1e-5)
    assert dense.numba_passes == net.numba_passes
    net.forward(images[:60], train=True)
    assert net.sparse_pass and not net.skipping and net.numba_passes
    net.forward(images[:60])  # one tile: the sparse kernel is cheaper than BLAS at any density
    assert net.sparse_pass


def test_a_sparse_pass_on_all_threads_holds_openblas_to_one(rng, monkeypatch):
    """Where Numba's helpers spin, the sparse kernels share the cores and OpenBLAS (for a dense
    layer beside them) runs on one thread, so that its helper never competes with them."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here")
    monkeypatch.setattr(nets, "helpers_spin", lambda: True)
    entered, real_blas = [], threads.single_threaded_blas
    monkeypatch.setattr(threads, "single_threaded_blas", lambda: entered.append(1) or real_blas())
    calls, real, previous = [], numba.set_num_threads, numba.get_num_threads()
    monkeypatch.setattr(numba, "set_num_threads", lambda n: calls.append(n) or real(n))
    net = nets.build("lenet", seed=0, sparse="on")
    try:
        real(2)
        logits = net.forward(rng.random((60, 1, 28, 28), dtype=np.float32), train=True)
        net.backward(np.ones_like(logits))
        assert calls == [] and entered  # Numba's count left at 2, OpenBLAS on one thread
    finally:
        real(previous)


@pytest.mark.parametrize("spin", [True, False], ids=["helpers spin", "helpers sleep"])
def test_sparse_layers_of_a_conv_net_share_numbas_threads_when_they_spin(monkeypatch, spin):
    """A Winograd network's sparse fc layers, and their optimizer step, run between its pool's
    passes on all of Numba's threads where those spin (as Lenet's do), else on one."""
    monkeypatch.setattr(nets, "helpers_spin", lambda: spin)
    lenet, conv2 = nets.build("lenet", seed=0, sparse="on"), nets.build("conv2", seed=0, sparse="on")
    fc = [leaf for _, leaf in conv2.leaves if isinstance(leaf, Dense)]
    assert conv2.pool_threads and fc
    for cores in [conv2.sparse_cores(), lenet.sparse_cores()] + [leaf.sparse.cores() for leaf in fc]:
        assert isinstance(cores, one_numba_thread) != spin


@pytest.mark.parametrize("value, rounds", [("4000", 4000), ("0", 0), ("10k", 0), (None, 0)])
def test_helpers_count_as_spinning_only_with_a_spin_count(monkeypatch, value, rounds):
    """GOMP_SPINCOUNT=0 (or unset, beside OMP_WAIT_POLICY=PASSIVE) means helpers that sleep."""
    if value is None:
        monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    else:
        monkeypatch.setenv("GOMP_SPINCOUNT", value)
    assert spin_count() == rounds


def test_a_sparse_pass_sets_numbas_thread_count_once_and_restores_it(rng, monkeypatch):
    """Where Numba's helpers sleep, each sparse kernel runs on one thread; a pass of three of
    them sets the count once."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here")
    monkeypatch.setattr(nets, "helpers_spin", lambda: False)
    net = nets.build("lenet", seed=0, sparse="on")
    calls, real, previous = [], numba.set_num_threads, numba.get_num_threads()
    monkeypatch.setattr(numba, "set_num_threads", lambda n: calls.append(n) or real(n))
    try:
        real(2)
        logits = net.forward(rng.random((60, 1, 28, 28), dtype=np.float32), train=True)
        net.backward(np.ones_like(logits))
        assert calls == [1, 2, 1, 2] and numba.get_num_threads() == 2  # forward, backward: set, restore
        real(1)
        net.forward(rng.random((60, 1, 28, 28), dtype=np.float32), train=True)
        assert calls == [1, 2, 1, 2]  # already one thread (a worker of --workers 2): nothing to set
    finally:
        real(previous)


@pytest.mark.parametrize("optimizer, mode, density", [("adam", "on", 0.05), ("momentum", "on", 0.05),
                                                      ("adam", "auto", 0.07)])  # auto: BLAS evaluation
def test_training_curves_match_dense_mode(mnist, optimizer, mode, density):
    """200 iterations of sparse Lenet: the same curve and weights as the dense masked path."""
    hp = hparams.Hyperparameters(iterations=200, eval_every=100, optimizer=optimizer,
                                 lr=1.2e-3 if optimizer == "adam" else 0.05)
    runs = {}
    for run_mode in ("off", mode):
        net = nets.build("lenet", seed=2, sparse=run_mode)
        net.set_mask(bench.random_mask(net, density, seed=4))
        theta_0 = net.flat_params.copy()
        runs[run_mode] = train.Trainer(net, mnist, hp, seed=2).run()
    dense, sparse_run = runs["off"], runs[mode]
    fc1 = dict(sparse_run.net.layers)["fc1"]
    assert fc1.sparse is not None and fc1.sparse.blas_evaluation is (mode == "auto")
    np.testing.assert_allclose(sparse_run.curve.val_loss, dense.curve.val_loss, rtol=1e-3)
    np.testing.assert_allclose(sparse_run.curve.test_accuracy, dense.curve.test_accuracy, atol=2e-3)
    assert dense.curve.val_loss[-1] < dense.curve.val_loss[0] - 0.25  # it did learn
    sparse_net, dense_net = sparse_run.net, dense.net
    pruned = sparse_net.flat_mask == 0
    assert np.all(sparse_net.flat_params[pruned] == 0)                # pruned weights exactly 0
    # The two paths round differently, and over 200 steps a hidden unit near its ReLU kink
    # can switch on in one and not the other, so a few weights part; the training as a
    # whole must not: what the sparse run moved differs from the dense run's by < 1%
    # (a kept weight left unupdated, or updated at the wrong position, moves it by ~100%).
    moved = dense_net.flat_params - theta_0
    parted = np.linalg.norm(sparse_net.flat_params - dense_net.flat_params) / np.linalg.norm(moved)
    assert parted < 1e-2, parted
    assert np.mean(np.abs(sparse_net.flat_params - dense_net.flat_params) < 2e-4) > 0.999


def test_resumed_sparse_run_is_exact(mnist):
    hp = hparams.Hyperparameters(iterations=60, eval_every=30)

    def fresh():
        net = nets.build("lenet", seed=1, sparse="on")
        net.set_mask(bench.random_mask(net, 0.1, seed=2))
        return train.Trainer(net, mnist, hp, seed=1)

    whole = fresh().run()
    first = fresh().run(until=30)
    arrays, info = first.state()
    resumed = fresh()
    resumed.net.set_mask(bench.random_mask(resumed.net, 0.5, seed=9))   # load_state must rebuild
    resumed.load_state(arrays, info)
    resumed.run()
    np.testing.assert_array_equal(resumed.net.flat_params, whole.net.flat_params)
    assert resumed.curve.val_loss == whole.curve.val_loss


@pytest.mark.parametrize("density", [0.05, 0.2])  # the optimizer walks kept positions / masked spans
def test_sparse_optimizer_steps_match_dense_steps(rng, density):
    """Adam steps with weight decay on sparse layers: the same weights and state as dense."""
    nets_by_mode = {mode: nets.build("lenet", seed=0, sparse=mode) for mode in ("off", "on")}
    mask = bench.random_mask(nets_by_mode["off"], density)
    x = rng.random((60, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 60)
    optimizers = {}
    for mode, net in nets_by_mode.items():
        net.set_mask(mask)
        optimizers[mode] = optim.Adam(net, weight_decay=1e-4)
    mask_flat = nets_by_mode["off"].flat_mask != 0
    from minilottery.losses import softmax_cross_entropy
    sparse_net, dense_net = nets_by_mode["on"], nets_by_mode["off"]
    for _ in range(20):
        for mode, net in nets_by_mode.items():
            _, dlogits = softmax_cross_entropy(net.forward(x, True), y)
            net.backward(dlogits)
        # both optimizers from the same weights and gradients: the two passes round
        # differently, and a unit at its ReLU kink tips one way in one and not the other
        # (seen at step 5 here, once Adam computed in float32), which is not the optimizer's doing
        np.testing.assert_allclose(sparse_net.flat_grads[mask_flat], dense_net.flat_grads[mask_flat], atol=1e-3)
        sparse_net.flat_params[...], sparse_net.flat_grads[...] = dense_net.flat_params, dense_net.flat_grads
        for mode in nets_by_mode:
            optimizers[mode].step(1e-3)
        np.testing.assert_allclose(sparse_net.flat_params, dense_net.flat_params, atol=1e-6)
    for name, values in optimizers["on"].state().items():    # the compact moments written back
        np.testing.assert_allclose(values, optimizers["off"].state()[name], atol=1e-6)


def test_sparse_training_runs_without_the_jit():
    code = ("import numpy as np; from minilottery import nets, optim, losses, bench;"
            "net = nets.build('lenet', seed=0, sparse='on'); net.set_mask(bench.random_mask(net, 0.02));"
            "opt = optim.Adam(net); x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32);"
            "y = np.arange(8); l0 = losses.softmax_cross_entropy(net.forward(x, True), y)[0];"
            "[(net.backward(losses.softmax_cross_entropy(net.forward(x, True), y)[1]), opt.step(1e-2))"
            " for _ in range(3)];"
            "l1 = losses.softmax_cross_entropy(net.forward(x), y)[0]; assert l1 < l0, (l0, l1); print('ok')")
    result = run_without_jit(code, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cli_bench_compares_sparse_with_dense():
    result = CliRunner().invoke(cli.main, ["bench", "--densities", "1,0.05", "--seconds", "0.1", "--compare", "--json"])
    assert result.exit_code == 0, result.output
    dense_auto, dense_off, sparse_auto, sparse_off = json.loads(result.output)
    assert (dense_auto["sparse"], dense_off["sparse"]) == ("auto", "off")
    assert dense_auto["sparse_layers"] == [] and sparse_off["sparse_layers"] == []
    assert sparse_auto["sparse_layers"] == ["fc1", "fc2", "fc3"]
