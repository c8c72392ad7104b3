"""Optimizer steps against values computed by hand from the update equations."""
import math

import numpy as np
import pytest

from minilottery import nets, optim


class Toy:
    """A stand-in network: two parameters, the second masked (pruned)."""
    dtype = np.dtype(np.float64)

    def __init__(self):
        self.flat_params = np.array([1.0, 0.0, -2.0])
        self.flat_grads = np.array([0.5, 0.7, -1.0])
        self.flat_mask = np.array([1.0, 0.0, 1.0])


def test_adam_two_steps_by_hand():
    net = Toy()
    adam = optim.Adam(net, beta1=0.9, beta2=0.999, eps=1e-8)
    adam.step(0.1)
    # t = 1: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g², θ -= 0.1 g / (|g| + ε)
    np.testing.assert_allclose(net.flat_params, [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), 0.0, -2.0 + 0.1 / (1 + 1e-8)])
    net.flat_grads[...] = [0.25, 0.7, 3.0]
    adam.step(0.1)
    for i, (g1, g2, w1) in enumerate([(0.5, 0.25, 0.9), (-1.0, 3.0, -1.9)]):
        m = 0.9 * 0.1 * g1 + 0.1 * g2
        v = 0.999 * 0.001 * g1 ** 2 + 0.001 * g2 ** 2
        expected = w1 - 0.1 * (m / (1 - 0.9 ** 2)) / (math.sqrt(v / (1 - 0.999 ** 2)) + 1e-8)
        np.testing.assert_allclose(net.flat_params[2 * i], expected, rtol=1e-7)
        np.testing.assert_allclose(adam.m[2 * i], m, rtol=1e-12)
        np.testing.assert_allclose(adam.v[2 * i], v, rtol=1e-12)
    assert net.flat_params[1] == 0 and adam.m[1] == 0 and adam.v[1] == 0  # the pruned weight


def test_adam_weight_decay_is_an_l2_term():
    net = Toy()
    net.flat_grads[...] = 0
    optim.Adam(net, weight_decay=0.5).step(0.01)
    # g = 0.5 θ, so the first step moves each weight by lr * sign(θ)
    np.testing.assert_allclose(net.flat_params, [0.99, 0.0, -1.99], rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_two_steps_by_hand(nesterov):
    net = Toy()
    sgd = optim.Momentum(net, momentum=0.9, nesterov=nesterov, weight_decay=0.1)
    w = 1.0
    buf = 0.0
    for grad in (0.5, -0.3):
        net.flat_grads[0] = grad
        sgd.step(0.2)
        full = grad + 0.1 * w
        buf = 0.9 * buf + full
        w -= 0.2 * (full + 0.9 * buf if nesterov else buf)
        np.testing.assert_allclose(net.flat_params[0], w, rtol=1e-12)
    assert net.flat_params[1] == 0 and sgd.buf[1] == 0


def test_plain_sgd():
    net = Toy()
    optim.SGD(net).step(0.1)
    np.testing.assert_allclose(net.flat_params, [0.95, 0.0, -1.9])


def test_schedule_warmup_and_drops():
    schedule = optim.Schedule(lr=0.1, warmup=10, milestones=(20, 30), gamma=0.1)
    assert schedule(0) == pytest.approx(0.01) and schedule(9) == pytest.approx(0.1)
    assert schedule(19) == pytest.approx(0.1) and schedule(20) == pytest.approx(0.01)
    assert schedule(35) == pytest.approx(0.001)


def test_masked_lenet_weights_stay_exactly_zero(rng):
    net = nets.build("lenet", seed=0)
    mask = {name: (rng.random(m.shape) < 0.3).astype(np.float32) for name, m in net.masks.items()}
    net.set_mask(mask)
    adam = optim.Adam(net)
    for _ in range(20):
        net.flat_grads[...] = rng.standard_normal(net.flat_grads.size)
        adam.step(1e-2)
    for name, m in mask.items():
        assert np.all(net.params[name][m == 0] == 0)
        assert np.all(net.params[name][m == 1] != 0)
        slice_ = net.slices[name]
        assert np.all(adam.m[slice_][m.reshape(-1) == 0] == 0)


@pytest.mark.parametrize("name", ["adam", "momentum"])
def test_the_update_split_over_the_pool_equals_one_thread(name):
    """A network whose passes run on the pool also updates in slices on it: the same numbers."""
    one, split = nets.build("lenet", seed=0), nets.build("lenet", seed=0)
    one.pool_threads, split.pool_threads = False, True
    grads = np.random.default_rng(1).standard_normal(one.flat_grads.size).astype(np.float32)
    mask = (np.random.default_rng(2).random(one.flat_mask.size) < 0.5).astype(np.float32)
    optimizers = []
    for net in (one, split):
        net.flat_mask[...] = mask
        net.flat_grads[...] = grads
        optimizers.append(optim.make(name, net, weight_decay=1e-4))
    for _ in range(3):
        for optimizer in optimizers:
            optimizer.step(1e-3)
    np.testing.assert_array_equal(one.flat_params, split.flat_params)
    assert np.all(split.flat_params[mask == 0] == 0)
