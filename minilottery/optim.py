"""Optimizers (SGD, momentum, Adam) and the learning-rate schedule.

Each optimizer updates the network's flat parameter buffer θ in one fused kernel
(kernels/core.py) and skips every position where the mask m is 0, so a pruned
weight and its optimizer state are never touched and stay exactly 0. State is one
flat array per statistic, aligned with θ.

Adam is Kingma & Ba (2015), Algorithm 1, with bias correction:

    g_t = ∇L(θ_{t-1}) + λ θ_{t-1}          (λ: weight decay, as an L2 term)
    m_t = β1 m_{t-1} + (1 - β1) g_t
    v_t = β2 v_{t-1} + (1 - β2) g_t²
    θ_t = θ_{t-1} - α m_t / (1 - β1^t) / (sqrt(v_t / (1 - β2^t)) + ε)

Momentum is the heavy-ball method (Polyak 1964), with the Nesterov variant of
Sutskever et al. (2013) as PyTorch writes it:

    b_t = μ b_{t-1} + g_t;   θ_t = θ_{t-1} - α b_t   (Nesterov: - α (g_t + μ b_t))
"""
import math
from dataclasses import dataclass

import numpy as np

from . import threads
from .kernels import core, single_threaded
from .kernels import sparse as sparse_kernels


@dataclass
class Schedule:
    """Learning rate at iteration t: linear warmup from 0 over ``warmup`` iterations
    (the paper's Section 5), multiplied by ``gamma`` at each milestone passed."""
    lr: float
    warmup: int = 0
    milestones: tuple = ()
    gamma: float = 0.1

    def __call__(self, iteration):
        rate = self.lr * self.gamma ** sum(iteration >= m for m in self.milestones)
        if self.warmup and iteration < self.warmup:
            rate *= (iteration + 1) / self.warmup
        return rate


class Optimizer:
    """Common bookkeeping: the network, the step count t and named state buffers."""
    state_names = ()

    def __init__(self, net, weight_decay=0.0):
        self.net, self.weight_decay, self.t = net, weight_decay, 0
        for name in self.state_names:
            setattr(self, name, np.zeros_like(net.flat_params))
        self.kept_for, self.kept_state = None, ()

    def kept(self, update):
        """The state at a sparse network's kept positions (``update.kept``, see sparse.py)
        as compact arrays, one per statistic; the flat arrays keep everything else.
        Gathered once per mask, written back by ``state()`` or when the mask changes."""
        if self.kept_for is not update:
            self.write_back()
            self.kept_for = update
            self.kept_state = tuple(getattr(self, name)[update.kept] for name in self.state_names)
        return self.kept_state

    def write_back(self):
        if self.kept_for is not None:
            for name, values in zip(self.state_names, self.kept_state):
                getattr(self, name)[self.kept_for.kept] = values

    def state(self):
        self.write_back()
        arrays = {name: getattr(self, name).copy() for name in self.state_names}
        arrays["t"] = np.array(self.t)
        return arrays

    def load_state(self, state):
        for name in self.state_names:
            getattr(self, name)[...] = state[name]
        self.kept_for = None  # gathered again from the loaded state at the next step
        self.t = int(state["t"])


class Momentum(Optimizer):
    """SGD with heavy-ball momentum μ (μ = 0: plain SGD), optionally Nesterov."""
    state_names = ("buf",)

    def __init__(self, net, momentum=0.9, nesterov=False, weight_decay=0.0):
        super().__init__(net, weight_decay)
        self.momentum, self.nesterov = momentum, nesterov

    def hyperparameters(self, lr, t=None):
        """The kernels' arguments at learning rate lr, in the weights' precision: (α, μ, λ, Nesterov)."""
        cast = self.net.dtype.type
        return cast(lr), cast(self.momentum), cast(self.weight_decay), self.nesterov

    def step(self, lr):
        self.t += 1
        net = self.net
        hyper = self.hyperparameters(lr)
        if getattr(net, "sparse_update", None) is None:
            dense_update(net, core.momentum_update, (net.flat_params, net.flat_grads, self.buf, net.flat_mask), hyper)
        else:  # sparse layers: only their kept weights (sparse.py)
            update = net.sparse_update
            with net.sparse_cores():
                sparse_kernels.momentum_update_kept(net.flat_params, net.flat_grads, self.buf, net.flat_mask,
                                                    update.spans, update.kept, *self.kept(update), *hyper)


def SGD(net, weight_decay=0.0):
    """Plain stochastic gradient descent: θ <- θ - α g."""
    return Momentum(net, momentum=0.0, weight_decay=weight_decay)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015, Algorithm 1) with bias correction."""
    state_names = ("m", "v")

    def __init__(self, net, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(net, weight_decay)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def hyperparameters(self, lr, t):
        """The kernels' arguments for step t at learning rate lr, in the weights' precision:
        (α / (1 - β1^t), β1, β2, ε, λ, sqrt(1 - β2^t))."""
        cast = self.net.dtype.type
        return (cast(lr / (1 - self.beta1 ** t)), cast(self.beta1), cast(self.beta2), cast(self.eps),
                cast(self.weight_decay), cast(math.sqrt(1 - self.beta2 ** t)))

    def step(self, lr):
        self.t += 1
        net = self.net
        hyper = self.hyperparameters(lr, self.t)
        if getattr(net, "sparse_update", None) is None:
            dense_update(net, core.adam_update, (net.flat_params, net.flat_grads, self.m, self.v, net.flat_mask), hyper)
        else:  # sparse layers: only their kept weights (sparse.py)
            update = net.sparse_update
            with net.sparse_cores():
                sparse_kernels.adam_update_kept(net.flat_params, net.flat_grads, self.m, self.v, net.flat_mask,
                                                update.spans, update.kept, *self.kept(update), *hyper)


def dense_update(net, kernel, arrays, hyper):
    """An element-wise update ``kernel`` over the flat arrays: in slices side by side on the
    pool's threads when the network's passes run on the pool (threads.py); on Numba's
    threads where the passes do (``Network.numba_passes``: a helper left asleep through a
    one-thread update took 100-130 us to wake for the next pass); else on one thread
    (beside OpenBLAS's spinning helper a second thread would only compete)."""
    if getattr(net, "numba_passes", False):
        with net.sparse_cores():
            kernel(*arrays, *hyper)
        return
    threads.elementwise(lambda *values: single_threaded(kernel, *values), arrays, hyper,
                        split=getattr(net, "pool_threads", False))


def make(name, net, momentum=0.9, weight_decay=0.0, nesterov=False):
    """Optimizer by name: "adam", "sgd" or "momentum"."""
    if name == "adam":
        return Adam(net, weight_decay=weight_decay)
    if name == "sgd":
        return SGD(net, weight_decay=weight_decay)
    if name == "momentum":
        return Momentum(net, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose adam, sgd or momentum")
