"""A sparse Lenet's stretch of steps as one kernel call (stretch.py): the numbers of the steps
made one by one up to float rounding, the same on any number of threads, everything written
back where it lives, and the cases it must leave to the step-by-step path."""
from dataclasses import replace

import numpy as np
import pytest

from minilottery import bench, hparams, nets, stretch, train
from minilottery.datasets import Dataset
from minilottery.kernels import one_numba_thread, single_threaded
from minilottery.kernels import parts
from minilottery.kernels import stretch as kernels
from twins import flat


def small_data(mnist, count=250, dtype=np.float32):
    """250 MNIST training images (an epoch of 4 batches of 60) with their uint8 pixels."""
    pixels = np.round(mnist.x_train[:count] * 255).astype(np.uint8)
    x = (pixels.astype(dtype) / dtype(255)).astype(dtype)
    return Dataset("small", x, mnist.y_train[:count], mnist.x_val[:300].astype(dtype), mnist.y_val[:300],
                   mnist.x_test[:300].astype(dtype), mnist.y_test[:300], train_pixels=pixels)


def sparse_trainer(data, density=0.05, dtype=np.float32, seed=0, **changes):
    hp = replace(hparams.defaults("lenet"), **{"eval_every": 20, "iterations": 70, **changes})
    net = nets.build("lenet", seed=seed, dtype=dtype)
    net.set_mask(bench.random_mask(net, density, seed=1))
    return train.Trainer(net, data, hp, seed=seed)


TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}  # dW and db are summed part by part in a stretch


def assert_same_training(a, b, tolerance=0.0):
    """Two trainers at the same point with the same θ, gradients, optimizer state and loss,
    equal within ``tolerance`` (absolute and relative)."""
    assert a.iteration == b.iteration and a.optimizer.t == b.optimizer.t
    state_a, state_b = a.optimizer.state(), b.optimizer.state()
    for name, value in [("params", a.net.flat_params), ("grads", a.net.flat_grads), *state_a.items()]:
        other = b.net.flat_params if name == "params" else b.net.flat_grads if name == "grads" else state_b[name]
        np.testing.assert_allclose(value, other, rtol=tolerance, atol=tolerance, err_msg=name)
    assert a.last_loss == pytest.approx(b.last_loss, rel=tolerance, abs=tolerance)


@pytest.mark.parametrize("dtype, optimizer", [(np.float32, "adam"), (np.float64, "adam"), (np.float32, "momentum"),
                                              (np.float64, "sgd")])
def test_a_stretch_trains_as_its_steps_one_by_one(mnist, dtype, optimizer):
    """Across an epoch's end (250 images: a new order after 4 batches) and in stretches of
    several lengths, with each optimizer."""
    data = small_data(mnist, dtype=dtype)
    changes = {} if optimizer == "adam" else {"optimizer": optimizer, "lr": 0.05, "nesterov": optimizer == "momentum"}
    by_steps, by_stretch = (sparse_trainer(data, dtype=dtype, **changes) for _ in range(2))
    assert by_stretch.net.sparse_stack is not None
    for count in (1, 6, 13):
        for _ in range(count):
            by_steps.step()
        by_stretch.steps(count)
        assert by_stretch.stretch is not None           # it did run as a stretch
        assert_same_training(by_steps, by_stretch, TOLERANCE[dtype])
    pruned = by_stretch.net.flat_mask == 0
    assert not by_stretch.net.flat_params[pruned].any() and not by_stretch.net.flat_grads[pruned].any()
    assert not np.array_equal(by_stretch.net.flat_params, sparse_trainer(data, dtype=dtype).net.flat_params)


def test_a_stretch_makes_the_same_numbers_on_one_thread(mnist):
    data = small_data(mnist)
    on_all, on_one = sparse_trainer(data), sparse_trainer(data)
    on_all.steps(25)
    with one_numba_thread():
        on_one.steps(25)
    assert_same_training(on_all, on_one)


def test_a_run_makes_the_same_curve_in_stretches(mnist, monkeypatch):
    """``run`` stops for evaluations, checkpoints and snapshots at the same iterations."""
    data = small_data(mnist)
    checkpoints = {}
    by_stretch = sparse_trainer(data).run(on_checkpoint=lambda t: checkpoints.setdefault("stretch", []).append(
        t.iteration), checkpoint_every=30, snapshots=(7,))
    monkeypatch.setattr(train.Trainer, "steps", lambda self, count: [self.step() for _ in range(count)])
    monkeypatch.setattr(train.Trainer, "evaluate", lambda self, x, y: train.evaluate(self.net, x, y))
    by_steps = sparse_trainer(data).run(on_checkpoint=lambda t: checkpoints.setdefault("steps", []).append(
        t.iteration), checkpoint_every=30, snapshots=(7,))
    assert by_stretch.curve.iteration == [0, 20, 40, 60, 70] == by_steps.curve.iteration
    for name, values in by_steps.curve.to_dict().items():
        assert by_stretch.curve.to_dict()[name] == pytest.approx(values, rel=1e-4, abs=1e-4), name
    assert checkpoints["stretch"] == checkpoints["steps"] == [30, 60]
    for name, value in by_steps.snapshots[7].items():
        np.testing.assert_allclose(by_stretch.snapshots[7][name], value, rtol=1e-5, atol=1e-5)
    assert_same_training(by_steps, by_stretch, 1e-5)


def test_the_next_stop_of_a_run(mnist):
    trainer = sparse_trainer(small_data(mnist))
    trainer.iteration = 3
    assert trainer.steps_to_next_stop(70, None, ()) == 17              # the evaluation at 20
    assert trainer.steps_to_next_stop(70, 5, ()) == 2                  # a checkpoint at 5
    assert trainer.steps_to_next_stop(70, None, (2, 11)) == 8          # a snapshot at 11, not the past one at 2
    assert trainer.steps_to_next_stop(9, None, ()) == 6                # until
    trainer.iteration = 65
    assert trainer.steps_to_next_stop(100, None, ()) == 5              # the budget's end, evaluated


def test_a_diverging_stretch_stops_where_its_steps_would(mnist):
    """One training image holds a NaN (float images, no pixels: the other way of gathering);
    the step whose batch holds it stops both, with θ as after the steps before."""
    data = small_data(mnist)
    data.train_pixels = None
    data.x_train = data.x_train.copy()
    data.x_train[123, 0, 14, 14] = np.nan
    by_steps, by_stretch = sparse_trainer(data), sparse_trainer(data)
    with pytest.raises(train.TrainingDiverged) as raised_by_steps:
        for _ in range(50):
            by_steps.step()
    with pytest.raises(train.TrainingDiverged) as raised_by_stretch:
        by_stretch.steps(50)
    assert by_stretch.stretch is not None
    assert str(raised_by_stretch.value) == str(raised_by_steps.value)
    assert by_stretch.iteration == by_steps.iteration > 0
    assert by_stretch.optimizer.t == by_steps.optimizer.t == by_steps.iteration
    np.testing.assert_allclose(by_stretch.net.flat_params, by_steps.net.flat_params, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(by_stretch.net.flat_grads, by_steps.net.flat_grads, rtol=1e-5, atol=1e-5)


def test_a_stretch_is_made_only_where_it_gives_the_same_numbers(mnist):
    data = small_data(mnist)
    trainer = sparse_trainer(data)
    made = stretch.for_trainer(trainer)
    assert made is not None and stretch.for_trainer(trainer, made) is made       # kept while the stack is
    trainer.net.set_mask(bench.random_mask(trainer.net, 0.05, seed=2))           # a new stack: a new stretch
    assert stretch.for_trainer(trainer, made) not in (None, made)
    assert stretch.for_trainer(sparse_trainer(data, optimizer="sgd", lr=0.1)) is not None
    assert stretch.for_trainer(sparse_trainer(data, augment=True)) is None
    assert stretch.for_trainer(sparse_trainer(data, density=1.0 - 1e-9)) is None  # dense: no stack
    assert stretch.for_trainer(sparse_trainer(small_data(mnist, dtype=np.float64))) is None  # float64 images, float32 net


def stretch_arguments(mnist, dtype, images, optimizer):
    """A float ``dtype`` Lenet at density 0.3 (every layer sparse) and three steps of 70 images
    (two parts of 32 and one of 6): from MNIST's uint8 pixels, or from float images where one
    image of the third step's batch holds a NaN, so that the call returns after two steps."""
    rng = np.random.default_rng(0)
    net = nets.build("lenet", seed=3, dtype=dtype, sparse="on")
    net.set_mask(bench.random_mask(net, 0.3, seed=1))
    made = stretch.SparseStretch(net, 70)
    made.theta[...] = net.flat_params[made.update.kept]
    state = [np.abs(rng.standard_normal(made.theta.size)).astype(dtype) * 1e-3 for _ in range(2)]
    f = np.dtype(dtype).type
    pixels = np.round(mnist.x_train[:500].reshape(500, -1) * 255).astype(np.uint8)
    index = np.stack([rng.permutation(499)[:70] for _ in range(3)])
    if images == "pixels":
        images, scale = pixels, f(255)
    else:
        images, scale = pixels.astype(dtype) / 255, f(1)
        images[499, 400] = np.nan
        index[2, 9] = 499
    rates = ((*state, np.array([1e-3, 2e-3, 3e-3], dtype), np.array([0.1, 0.2, 0.3], dtype), f(0.9), f(0.999),
              f(1e-8), f(1e-4)) if optimizer == "adam" else (state[0], np.array([0.1, 0.2, 0.3], dtype), f(0.9), f(1e-4),
                                                            True))
    return [images, index, scale, mnist.y_train[index], made.weights, made.biases, *made.by_column, *made.by_row,
            made.row_pos, made.rows, made.tiles, made.grad_tiles, made.partials, made.partial_w, made.partial_b,
            made.losses, made.theta, made.grad, *rates]


@pytest.mark.parametrize("dtype, images", [(np.float32, "pixels"), (np.float64, "pixels"),
                                           (np.float32, "floats with a NaN")])
@pytest.mark.parametrize("fast, reference", kernels.TWINS, ids=[k.__name__ for k, _ in kernels.TWINS])
def test_stretch_kernel_matches_numpy_twin(mnist, fast, reference, dtype, images):
    """Each twin gets arguments of its own: the layers' weights are views of theta, which a
    copy (twins.assert_twins_agree) would not keep. Float images in float32 only: each kind of
    image compiles the whole stretch afresh (~10 s)."""
    optimizer = fast.__name__.removesuffix("_stretch")
    tolerance = 1e-4 if dtype == np.float32 else 1e-11
    args_fast, args_reference, before = (stretch_arguments(mnist, dtype, images, optimizer) for _ in range(3))
    out_fast, out_reference = single_threaded(fast, *args_fast), reference(*args_reference)
    assert out_fast[0] == out_reference[0] == (3 if images == "pixels" else 2)
    np.testing.assert_allclose(out_fast[1], out_reference[1], rtol=tolerance)
    # after a NaN, the work arrays of the step it stopped in differ: the twin stops before its
    # backward pass, and its dense products spread the NaN through W's pruned zeros (0 x NaN);
    # θ, its gradient and the optimizer's state must not
    theta = 18                                                   # θ, then its gradient, then the optimizer's
    compared = range(len(args_fast)) if images == "pixels" else range(theta, len(args_fast))
    for i in compared:
        for a, b in zip(flat([args_fast[i]]), flat([args_reference[i]])):
            if isinstance(a, np.ndarray):
                np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)
    assert not np.array_equal(args_fast[theta], before[theta])   # it trained


@pytest.mark.parametrize("density", [0.05, 0.11])
def test_a_sparse_lenet_evaluates_as_the_network_does(mnist, density):
    """The validation set through the stretch's kernels, in batches of 1,000 (the last of 5,000
    whole; and of 64, the last partial): the network's loss and accuracy up to float rounding."""
    trainer = sparse_trainer(small_data(mnist), density=density)
    trainer.steps(30)
    x, y = mnist.x_val, mnist.y_val
    loss, accuracy = train.evaluate(trainer.net, x, y)
    assert trainer.evaluate(x, y) == (pytest.approx(loss, rel=1e-6), accuracy)
    assert trainer.stretch is not None                                  # it did evaluate by parts
    assert trainer.stretch.evaluate(x[:1000], y[:1000], 64) == pytest.approx(train.evaluate(trainer.net, x[:1000],
                                                                                            y[:1000]), rel=1e-6)
    dense = sparse_trainer(small_data(mnist), density=1.0 - 1e-9)
    assert dense.evaluate(x, y) == train.evaluate(dense.net, x, y)    # no stack: the network's own path


def evaluation_arguments(dtype):
    rng = np.random.default_rng(0)
    net = nets.build("lenet", seed=3, dtype=dtype, sparse="on")
    net.set_mask(bench.random_mask(net, 0.3, seed=1))
    made = stretch.SparseStretch(net, 70)
    made.theta[...] = net.flat_params[made.update.kept]
    x = rng.random((70, 784)).astype(dtype) * (rng.random((70, 784)) < 0.3)
    tiles = tuple(np.zeros((3, t.shape[1], parts.LANES), dtype) for t in made.tiles)
    return [x, rng.integers(0, 10, 70), made.weights, made.biases, *made.by_column, tiles, np.zeros(3),
            np.zeros(3, np.int64)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_evaluation_kernel_matches_numpy_twin(dtype):
    (fast, reference), = parts.TWINS
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    args_fast, args_reference = evaluation_arguments(dtype), evaluation_arguments(dtype)
    single_threaded(fast, *args_fast)
    reference(*args_reference)
    for a, b in zip(flat(args_fast), flat(args_reference)):
        if isinstance(a, np.ndarray):
            np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)
    assert args_fast[-2].sum() > 0 and 0 < args_fast[-1].sum() <= 70


def test_the_stretch_gathers_the_dataset_s_floats_exactly():
    """Every uint8 value through the stretch's gather, compiled inside its fast-math kernels:
    bit for bit the float32 of pixels / 255 (a float32 division became a product by a rounded
    1 / 255 there, one ulp off in 126 values of 256)."""
    pixels = np.arange(256, dtype=np.uint8).reshape(8, 32)            # 8 images of 32 pixels
    rows, x = np.zeros((parts.LANES, 32), np.float32), np.zeros((32, parts.LANES), np.float32)
    parts.gather_part(pixels, np.arange(8), np.float32(255), rows, x)
    exact = pixels.astype(np.float32) / np.float32(255)
    assert np.array_equal(rows[:8], exact) and np.array_equal(x[:, :8], exact.T)
