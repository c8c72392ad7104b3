"""Throughput benchmark: training and evaluation samples/s at the paper's batch size.

Training is timed on the real training loop (``train.Trainer.steps``: batch, forward,
loss, backward, optimizer, with the mask; a sparse Lenet's stretch as one call) on MNIST for Lenet (random data of the
input shape for the CIFAR networks, whose files are not shipped), in blocks of
``eval_every`` steps, each followed by the evaluation of the validation and test
sets that a run makes there. So the figures come with their steadiness (the slowest
and fastest block beside the median) and predict the time of one branch of a run.
The timing is sized by wall time, not by a count of iterations, so every network
takes about as long.

Densities below 1 install a random mask keeping that fraction of every prunable
weight, the situation of an IMP round at that Pm. ``sparse`` ("auto", "on", "off",
see sparse.py) chooses whether Dense layers train at their kept weights only.
"""
import os
import statistics
import time

import numpy as np

from . import SET_HERE, datasets, hparams, nets, stretch, threads, train
from .datasets import Dataset


def random_data(input_shape, n_train=6000, n_test=10000, seed=0):
    """Random images and labels of the right shape: speed does not depend on the pixels."""
    rng = np.random.default_rng(seed)

    def images(n):
        return rng.random((n, *input_shape), dtype=np.float32)

    def labels(n):
        return rng.integers(0, 10, n)

    return Dataset("random", images(n_train), labels(n_train), images(datasets.VALIDATION_SIZE),
                   labels(datasets.VALIDATION_SIZE), images(n_test), labels(n_test))


def bench_data(net_name):
    """The shipped MNIST for Lenet; random images of the input shape for the others."""
    dataset = hparams.defaults(net_name).dataset
    return datasets.load(dataset) if dataset == "mnist" else random_data(datasets.IMAGE_SHAPES[dataset])


def random_mask(net, density, seed=0):
    """A random mask keeping about ``density`` of every prunable weight, or of each weight its
    own density (a dict: name -> density)."""
    rng = np.random.default_rng(seed)
    kept = density if isinstance(density, dict) else dict.fromkeys(net.masks, density)
    return {name: (rng.random(mask.shape) < kept[name]).astype(net.dtype) for name, mask in net.masks.items()}


def spread(rates):
    """median, min and max of a list of rates."""
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "blocks": len(rates)}


def measure(net_name, density=1.0, seconds=20.0, data=None, hp=None, peer=None, turns=1, **build_options):
    """Training and evaluation samples/s of ``net_name`` with a random mask of ``density``,
    timed for about ``seconds``: blocks of ``eval_every`` steps, each followed by an evaluation
    of the validation and test sets (fewer steps, and 1,000 images, where a block would
    take more than a quarter of a turn: VGG-19, Resnet-18).

    The time goes in ``turns``; after each, ``peer`` (a TorchPeer) times the same work for
    as long, so that both sample the same minutes of a machine whose speed moves."""
    hp = hp or hparams.defaults(net_name)
    net = nets.build(net_name, seed=0, **build_options)
    data = data or bench_data(net_name)
    if density < 1:
        net.set_mask(random_mask(net, density))
    trainer = train.Trainer(net, data, hp, seed=0)
    trainer.steps(3)  # compilation, caches, allocator
    step = seconds_per_call(lambda: trainer.steps(1), 0.0, least=2)  # to size the blocks
    (x_val, y_val), (x_test, y_test) = trainer.evaluation_sets()  # in the order a run evaluates them
    x_eval, y_eval = np.concatenate([x_val, x_test]), np.concatenate([y_val, y_test])
    per_image = seconds_per_call(lambda: trainer.evaluate(x_eval[:1000], y_eval[:1000]), 0.0, least=2) / 1000
    turn = seconds / turns
    block = hp.eval_every if hp.eval_every * step <= turn / 4 else max(1, int(turn / 4 / step))
    evaluated = len(x_eval) if len(x_eval) * per_image <= turn / 4 else 1000
    kept = sum(float(m.sum()) for m in net.masks.values()) / net.count()
    if peer is not None:
        peer.start(net, hp, kept, block, evaluated, turn, turns)
    train_rates, eval_rates = [], []
    for _ in range(turns):
        began, blocks = time.perf_counter(), 0
        while blocks == 0 or time.perf_counter() - began < turn:
            blocks += 1
            start = time.perf_counter()
            trainer.steps(block)  # as a run trains between evaluations
            trained = time.perf_counter()
            trainer.evaluate(x_eval[:evaluated], y_eval[:evaluated])  # what a run does every eval_every steps
            done = time.perf_counter()
            train_rates.append(block * hp.batch_size / (trained - start))
            eval_rates.append(evaluated / (done - trained))
        if peer is not None:
            peer.turn()
    sparse_layers = [name for name, leaf in net.leaves if getattr(leaf, "sparse", None) is not None]
    result = {"net": net_name, "density": kept, "batch_size": hp.batch_size, "sparse": net.sparse,
              "sparse_layers": sparse_layers, "train_samples_per_s": statistics.median(train_rates),
              "eval_samples_per_s": statistics.median(eval_rates), "train": spread(train_rates),
              "eval": spread(eval_rates), "block": block, "evaluated": evaluated, "iterations": hp.iterations,
              "branch_seconds": branch_time(hp, statistics.median(train_rates), statistics.median(eval_rates)),
              "cores": threads.WORKERS, "turns": turns}
    if peer is not None:
        result["torch"] = peer.finish()
    return result


def branch_time(hp, train_rate, eval_rate):
    """Seconds of one branch at these rates: its steps, every evaluation of the validation
    and test sets, and the final training accuracy."""
    train_images, test_images = DATASET_IMAGES.get(hp.dataset, (60_000, 10_000))
    evaluations = hp.iterations // hp.eval_every + 1 + (hp.iterations % hp.eval_every != 0)
    evaluated = evaluations * (datasets.VALIDATION_SIZE + test_images) + train_images - datasets.VALIDATION_SIZE
    return hp.iterations * hp.batch_size / train_rate + evaluated / eval_rate


def torch_layers(layers):
    """The network as torch_peer.py builds it: a list of plain dicts, one per layer."""
    from .conv import BatchNorm2d, Conv2d, GlobalAvgPool, MaxPool2d, ResidualBlock
    from .layers import Dense, Dropout, Flatten, ReLU
    specs = []
    for layer in layers:
        if isinstance(layer, Dense):
            specs.append({"type": "dense", "in": layer.params["weight"].shape[0], "out": layer.params["weight"].shape[1]})
        elif isinstance(layer, Conv2d):
            specs.append({"type": "conv", "in": layer.in_channels, "out": layer.out_channels, "stride": layer.stride,
                          "kernel": layer.kernel_size, "padding": layer.padding, "bias": "bias" in layer.params})
        elif isinstance(layer, ResidualBlock):
            shortcut = torch_layers([layer.shortcut, layer.shortcut_bn]) if layer.projection else None
            specs.append({"type": "residual", "main": torch_layers(layer.main), "shortcut": shortcut})
        elif isinstance(layer, BatchNorm2d):
            specs.append({"type": "batchnorm", "channels": layer.params["gamma"].size, "eps": layer.eps,
                          "momentum": layer.momentum})
            if layer.relu:  # batch norm and the ReLU after it, one layer here
                specs.append({"type": "relu"})
        elif isinstance(layer, MaxPool2d):
            specs.append({"type": "maxpool", "size": layer.size})
        elif isinstance(layer, Dropout):
            specs.append({"type": "dropout", "p": layer.p})
        else:
            kinds = {ReLU: "relu", Flatten: "flatten", GlobalAvgPool: "avgpool"}
            specs.append({"type": kinds[type(layer)]})
    return specs


# With --compare-torch each side times in this many turns, one after the other's: this
# machine moved either's speed by 20-30% from one minute to the next (docs/performance.md)
TORCH_TURNS = 3


class PeerError(RuntimeError):
    """PyTorch's timing could not be had: the message says why and what to do."""


class TorchPeer:
    """PyTorch timing the work ``measure`` times, in turns with it: torch_peer.py in a
    process of its own, run by ``python`` (any Python that has torch)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_peer.py")

    def __init__(self, python, threads, train_images, timeout=300.0):
        self.python, self.threads, self.train_images, self.timeout = python, threads, train_images, timeout
        self.process = None

    def start(self, net, hp, density, block, evaluated, seconds, turns):
        """Build ``net`` in PyTorch, with a mask of ``density`` and ``hp``'s optimizer, and warm it
        up; returns once it is ready for its first turn."""
        import json
        import subprocess
        import tempfile
        self.hp = hp
        job = {"layers": torch_layers([layer for _, layer in net.layers]), "input_shape": list(net.input_shape),
               "density": density, "hp": hp.to_dict(), "threads": self.threads, "seconds": seconds,
               "turns": turns, "block": block, "train_images": self.train_images, "evaluated": evaluated,
               "augment": hp.augment}
        # without what minilottery set for its own threads: OMP_WAIT_POLICY=PASSIVE made
        # PyTorch's OpenMP threads sleep between operations, and Lenet 3x slower in PyTorch
        environment = {k: v for k, v in os.environ.items() if k not in SET_HERE}
        self.errors = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would stop the peer
        try:
            self.process = subprocess.Popen([self.python, self.script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=self.errors, text=True, env=environment)
        except OSError as error:
            raise PeerError(f"cannot run {self.python} ({error}); give --torch-python a Python that has torch")
        self.turn_seconds = seconds
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        self._read("warm up")

    def turn(self):
        """PyTorch's turn: about as many seconds as each of ours."""
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        self._read("time its turn", self.timeout + 30 * self.turn_seconds, "try fewer --seconds")

    def finish(self):
        """PyTorch's figures over all its turns, with the branch time they predict."""
        self.process.stdin.close()
        figures = self._read("report")
        self.process.wait()
        figures["branch_seconds"] = branch_time(self.hp, figures["train"]["median"], figures["eval"]["median"])
        return figures

    def _read(self, doing, timeout=None, advice="run minilottery/torch_peer.py by hand to see why"):
        """The peer's next line of JSON; a PeerError if it fails, says nothing, or takes too long."""
        import json
        import select
        ready, _, _ = select.select([self.process.stdout], [], [], timeout or self.timeout)
        line = self.process.stdout.readline() if ready else ""
        try:
            return json.loads(line)
        except ValueError:
            pass
        self.close()
        if not ready:
            raise PeerError(f"PyTorch in {self.python} did not {doing} in {timeout or self.timeout:.0f} s; {advice}")
        self.errors.seek(0)
        errors = self.errors.read().strip().splitlines()
        if errors:
            raise PeerError(f"{self.python} could not time PyTorch ({errors[-1]}); give --torch-python a Python "
                            "that has torch")
        raise PeerError(f"{self.python} printed no figures for PyTorch; run minilottery/torch_peer.py by hand "
                        "to see why")

    def close(self):
        """Stop the peer if it still runs (an error, or Ctrl-C, on our side)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def describe(results, compared):
    """Lines of ``bench``'s report; with ``compared``, results come in pairs (mode, off)."""
    lines = []
    for index, r in enumerate(results):
        layers = ",".join(r["sparse_layers"]) or "none"
        lines.append(f"{r['net']} density {r['density']:.4f} batch {r['batch_size']} sparse {r['sparse']} "
                     f"(sparse layers: {layers}):")
        lines.append("    " + rates_line("minilottery", r))
        # one job on every core: imp's default runs jobs side by side on a core each (imp --plan)
        lines.append(f"    one branch of {r['iterations']:,} iterations with its evaluations: "
                     f"{r['branch_seconds']:,.0f} s here, alone on {r['cores']} core(s)")
        if r.get("torch"):
            t = r["torch"]
            lines.append("    " + rates_line(f"PyTorch {t['version']}", t))
            lines.append(f"    the same branch in PyTorch: {t['branch_seconds']:,.0f} s")
            lines.append(f"    minilottery / PyTorch: train x{r['train']['median'] / t['train']['median']:.2f}, "
                         f"eval x{r['eval']['median'] / t['eval']['median']:.2f}")
        if compared and index % 2 == 1:  # the pair (--sparse MODE, off) at one density
            mine = results[index - 1]
            lines.append(f"    {mine['sparse']} / off: train x{mine['train_samples_per_s'] / r['train_samples_per_s']:.2f}, "
                         f"eval x{mine['eval_samples_per_s'] / r['eval_samples_per_s']:.2f}")
    return lines


def blas_note():
    """A line when the environment holds OpenBLAS to other kernels than minilottery would choose."""
    import minilottery
    chosen = os.environ.get("OPENBLAS_CORETYPE")
    if chosen and "OPENBLAS_CORETYPE" not in SET_HERE and minilottery.avx512_amd() and chosen.lower() != "skylakex":
        return (f"note: OPENBLAS_CORETYPE={chosen} in the environment holds OpenBLAS to those kernels; on this "
                "CPU minilottery would choose SkylakeX (unset it to let it: docs/performance.md)")
    return None


def rates_line(who, r):
    train_rates, eval_rates = r["train"], r["eval"]
    return (f"{who}: train {train_rates['median']:,.0f} samples/s [{train_rates['min']:,.0f}, "
            f"{train_rates['max']:,.0f}] over {train_rates['blocks']} blocks, eval {eval_rates['median']:,.0f} "
            f"[{eval_rates['min']:,.0f}, {eval_rates['max']:,.0f}]")


# Images in each dataset's training and test files (the paper holds 5,000 training images out).
DATASET_IMAGES = {"mnist": (60_000, 10_000), "fashion-mnist": (60_000, 10_000), "cifar10": (50_000, 10_000)}


def seconds_per_call(work, budget, least=3):
    """Mean wall time of ``work()``, called at least ``least`` times and for about ``budget`` seconds."""
    calls, start = 0, time.perf_counter()
    while calls < least or time.perf_counter() - start < budget:
        work()
        calls += 1
    return (time.perf_counter() - start) / calls


def branch_seconds(hp, input_shape, budget=2.0, sparse="auto", data=None, start_at=None, densities=None,
                   thresholds=None):
    """How long one branch of ``hp`` trains here, from a short timing of training steps and of
    evaluation: iterations × step + every evaluation of the validation and test sets + the
    final training accuracy. On ``data``, the run's own images, when given: Lenet's first layer
    skips MNIST's zeros, and on random images the main job's plan came out 1.4x too long.
    Otherwise on random images of ``input_shape``. ``start_at``: a wall-clock time (time.time())
    until which it trains to warm up, so that processes timing side by side time together.
    ``densities``: a random mask keeping each prunable weight's fraction of them (a round of a
    run; ``random_mask``), else the dense net; ``thresholds``: the run's sparse thresholds
    (else this process's, calibration.py). Returns (seconds, timings)."""
    net = nets.build(hp.net, seed=0, input_shape=input_shape, dropout=hp.dropout, sparse=sparse,
                     sparse_thresholds=thresholds)
    if densities is not None:
        net.set_mask(random_mask(net, densities))
    if data is None:
        data = random_data(input_shape, n_train=max(4 * hp.batch_size, 1000), n_test=train.EVAL_BATCH)
    x_eval, y_eval = train.grouped_by_zeros(net, data.x_test[:train.EVAL_BATCH], data.y_test[:train.EVAL_BATCH])
    trainer = train.Trainer(net, data, hp, seed=0)
    # Warm up by training until start_at (or for as long as the timing): a fresh process's first
    # few hundred steps of Lenet ran 1.4-9 ms each against ~0.6-1 ms later, and a warm-up of 3
    # steps, then sleeping until start_at, left the plan of the main job 10-38% long
    warm_until = time.time() + budget / 2 if start_at is None else start_at
    steps = 0
    # timed as a run trains: in stretches of eval_every steps where a sparse Lenet makes them one
    # kernel call (stretch.py), else a step at a time
    chunk = hp.eval_every if stretch.for_trainer(trainer) is not None else 1
    while steps < 3 or time.time() < warm_until:  # compilation, caches, allocator
        trainer.steps(chunk)
        steps += chunk
    step = seconds_per_call(lambda: trainer.steps(chunk), budget / 2) / chunk
    trainer.evaluate(x_eval, y_eval)
    per_image = seconds_per_call(lambda: trainer.evaluate(x_eval, y_eval), budget / 2) / len(x_eval)
    seconds = branch_time(hp, hp.batch_size / step, 1 / per_image)
    return seconds, {"step_s": step, "eval_s_per_image": per_image, "warm_up_steps": steps}
