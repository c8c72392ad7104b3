"""Gradient checks in float64 by central differences: every layer, the loss, the whole Lenet."""
import numpy as np
import pytest

from minilottery import gradcheck, layers, losses, nets


def test_dense(rng):
    dense = layers.Dense(6, 4, dtype=np.float64)
    dense.initialize(rng)
    dense.params["bias"][...] = rng.standard_normal(4)
    gradcheck.check_layer(dense, rng.standard_normal((5, 6)))


def test_relu(rng):
    x = rng.standard_normal((4, 7))
    x[np.abs(x) < 0.05] = 0.3  # keep away from the kink, where the derivative is undefined
    gradcheck.check_layer(layers.ReLU(), x)


def test_dropout_with_a_fixed_draw(rng):
    dropout = layers.Dropout(0.4)
    state = dropout.rng.bit_generator.state

    class FixedDraw:  # the same units dropped at every call, as within one training step
        def forward(self, x, train):
            dropout.rng.bit_generator.state = state
            return dropout.forward(x, train)

        def backward(self, dy, need_dx=True):
            return dropout.backward(dy)

        params = grads = {}

    gradcheck.check_layer(FixedDraw(), rng.standard_normal((6, 5)))
    y = FixedDraw().forward(np.ones((200, 50)), True)
    assert set(np.unique(y)) == {0.0, 1 / 0.6}
    assert abs((y == 0).mean() - 0.4) < 0.02
    np.testing.assert_array_equal(dropout.forward(np.ones((3, 3)), train=False), np.ones((3, 3)))


def test_flatten(rng):
    gradcheck.check_layer(layers.Flatten(), rng.standard_normal((2, 3, 4, 5)))


def test_softmax_cross_entropy(rng):
    logits = rng.standard_normal((5, 10)) * 3
    labels = rng.integers(0, 10, 5)
    _, dlogits = losses.softmax_cross_entropy(logits, labels)
    index = np.arange(logits.size)
    numeric = gradcheck.numeric_gradient(lambda: losses.softmax_cross_entropy(logits, labels)[0], logits, index)
    gradcheck.assert_close("logits", dlogits.reshape(-1), numeric)


def test_loss_is_stable_for_huge_logits():
    loss, dlogits = losses.softmax_cross_entropy(np.array([[1000.0, 0.0], [0.0, -1000.0]], np.float32),
                                                 np.array([1, 0]))
    assert np.isfinite(loss) and abs(loss - 500.0) < 1e-3
    np.testing.assert_allclose(dlogits, [[0.5, -0.5], [0.0, 0.0]], atol=1e-6)


def test_whole_lenet(rng):
    net = nets.build("lenet", seed=3, dtype=np.float64)
    net.flat_params[net.slices["fc2.bias"]] = rng.standard_normal(100) * 0.1
    gradcheck.check_network(net, rng.random((3, 1, 28, 28)), rng.integers(0, 10, 3))


def test_whole_lenet_with_dropout(rng):
    net = nets.build("lenet", seed=3, dtype=np.float64, dropout=0.3)
    gradcheck.check_network(net, rng.random((3, 1, 28, 28)), rng.integers(0, 10, 3))


def test_a_wrong_backward_fails_the_checker(rng):
    class WrongDense(layers.Dense):
        def backward(self, dy, need_dx=True):
            dx = super().backward(dy)
            self.grads["weight"] *= 1.01  # a 1% error in dW
            return dx

    wrong = WrongDense(4, 3, dtype=np.float64)
    wrong.initialize(rng)
    with pytest.raises(AssertionError, match=r"gradient of weight disagrees(.|\n)*analytic .* numeric"):
        gradcheck.check_layer(wrong, rng.standard_normal((2, 4)))


def test_a_wrong_input_gradient_fails_the_checker(rng):
    class WrongReLU(layers.ReLU):
        def backward(self, dy, need_dx=True):
            return dy  # forgets the ReLU's derivative

    x = rng.standard_normal((3, 4))
    with pytest.raises(AssertionError, match="gradient of input"):
        gradcheck.check_layer(WrongReLU(), x)
