"""The training protocol: learning on real MNIST, determinism, divergence, the CLI's errors."""
import json
import math
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from minilottery import hparams, nets, train
from minilottery.train import Curve, early_stopping


def short(**changes):
    return hparams.Hyperparameters(**{"iterations": 200, "eval_every": 50, **changes})


def test_early_stopping_is_minimum_validation_loss():
    curve = Curve([0, 100, 200, 300], [2.0, 0.5, 0.3, 0.4], [0.1, 0.8, 0.9, 0.91],
                  [2.0, 0.6, 0.35, 0.45], [0.1, 0.79, 0.88, 0.9])
    assert early_stopping(curve) == (200, 0.88)
    curve.val_loss[3] = math.nan
    assert early_stopping(curve)[0] == 200


@pytest.mark.slow
def test_lenet_learns_mnist(mnist):
    """1,000 iterations of the paper's Lenet set-up reach >= 95% test accuracy."""
    trainer = train.Trainer(nets.build("lenet", seed=0), mnist, hparams.Hyperparameters(iterations=1000,
                                                                                        eval_every=500), seed=0)
    metrics = trainer.run().finish()
    assert metrics["final_test_accuracy"] >= 0.95
    assert trainer.curve.iteration == [0, 500, 1000]
    assert metrics["final_train_accuracy"] >= 0.95


def test_same_seed_same_numbers_and_resume_is_exact(mnist):
    def fresh():
        return train.Trainer(nets.build("lenet", seed=5), mnist, short(), seed=5)

    first = fresh().run()
    second = fresh().run()
    assert first.curve.to_dict() == second.curve.to_dict()
    np.testing.assert_array_equal(first.net.flat_params, second.net.flat_params)

    interrupted = fresh().run(until=120)
    arrays, info = interrupted.state()
    info = json.loads(json.dumps(info))  # checkpoints go through JSON
    resumed = fresh()
    resumed.load_state(arrays, info)
    resumed.run()
    assert resumed.curve.to_dict() == first.curve.to_dict()
    np.testing.assert_array_equal(resumed.net.flat_params, first.net.flat_params)


def multiplied(x):
    """The fraction of pixels the zero-skipping first layer multiplies: nonzero in any of 4 neighbours."""
    ink = x.reshape(len(x), -1)[:len(x) // 4 * 4] != 0
    return ink.reshape(-1, 4, ink.shape[1]).any(axis=1).mean()


def test_evaluation_groups_images_by_their_zeros_and_scores_them_the_same(mnist):
    """Sorted so that neighbouring images share their zeros, the first layer multiplies a
    fifth fewer pixels; every image keeps its label and its logits up to float rounding, so
    the accuracy is the same and the loss the same to ~1e-10: the layers that skip zeros give
    a row the same numbers wherever it lies, but OpenBLAS's AVX2 kernels round a row of the
    last layer's product by its place in the batch (~1e-7 in a logit on a Zen 2)."""
    net = nets.build("lenet", seed=3)
    x, y = mnist.x_test[:2000], mnist.y_test[:2000]
    order = train.zeros_order(net, x)
    assert sorted(order) == list(range(len(x)))
    assert multiplied(x[order]) < 0.85 * multiplied(x)
    grouped_x, grouped_y = train.grouped_by_zeros(net, x, y)
    np.testing.assert_array_equal(grouped_x, x[order])
    np.testing.assert_array_equal(grouped_y, y[order])
    batch = x[:1000]
    batch_order = train.zeros_order(net, batch)
    np.testing.assert_allclose(net.forward(batch[batch_order]), net.forward(batch)[batch_order], rtol=1e-6, atol=1e-6)
    loss, accuracy = train.evaluate(net, x, y)
    grouped_loss, grouped_accuracy = train.evaluate(net, grouped_x, grouped_y)
    assert grouped_accuracy == accuracy and grouped_loss == pytest.approx(loss, rel=1e-8)


def test_evaluation_keeps_the_order_where_the_first_layer_multiplies_every_input(mnist):
    """Images without zeros (random ones), or a first layer that is a convolution: nothing to group."""
    lenet = nets.build("lenet", seed=0)
    noise = np.random.default_rng(0).random((100, 1, 28, 28), dtype=np.float32)
    assert train.zeros_order(lenet, noise) is None
    assert train.zeros_order(nets.build("conv2", seed=0), mnist.x_test[:100].repeat(3, axis=1)[:, :, :32, :32]) is None
    labels = np.zeros(100, np.int64)
    same_x, same_y = train.grouped_by_zeros(lenet, noise, labels)
    assert same_x is noise and same_y is labels


def test_a_run_evaluates_the_grouped_sets(mnist):
    trainer = train.Trainer(nets.build("lenet", seed=4), mnist, short(iterations=0), seed=4)
    trainer.run()
    (x_val, y_val), (x_test, y_test) = trainer.evaluation_sets()
    assert multiplied(x_val) < 0.85 * multiplied(mnist.x_val)
    loss, accuracy = train.evaluate(trainer.net, mnist.x_test, mnist.y_test)
    assert trainer.curve.test_accuracy == [accuracy]
    assert trainer.curve.test_loss[0] == pytest.approx(loss, rel=1e-8)  # up to BLAS's rounding (above)
    assert trainer.evaluation_sets()[1][0] is x_test  # sorted once


def test_a_different_seed_gives_different_numbers(mnist):
    a = train.Trainer(nets.build("lenet", seed=1), mnist, short(iterations=50), seed=1).run()
    b = train.Trainer(nets.build("lenet", seed=2), mnist, short(iterations=50), seed=2).run()
    assert a.curve.val_loss != b.curve.val_loss


def test_nan_loss_stops_with_the_curve_kept(mnist):
    trainer = train.Trainer(nets.build("lenet", seed=0), mnist, short(lr=1e6, optimizer="sgd"), seed=0)
    with pytest.raises(train.TrainingDiverged, match="diverged; try a smaller --lr") as caught:
        trainer.run()
    assert caught.value.curve.iteration[0] == 0


def test_cli_train_writes_metrics(tmp_path):
    result = CliRunner().invoke(cli.main, ["train", "--iterations", "100", "--eval-every", "50",
                                           "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("early_stop_iteration", "test_accuracy_at_early_stop", "final_test_accuracy",
                "final_train_accuracy"):
        assert 0 <= metrics[key] <= (1 if "accuracy" in key else 100)
    assert metrics["curve"]["iteration"] == [0, 50, 100]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["lr"] == 1.2e-3 and config["iterations"] == 100


@pytest.mark.parametrize("arguments, message", [
    (["--lr", "0"], "learning rate must be > 0"),
    (["--batch-size", "0"], "batch size must be positive"),
    (["--batch-size", "60000"], "larger than the training set"),
    (["--iterations", "-5"], "iterations must be >= 0"),
    (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
    (["--net", "alexnet"], "Invalid value for '--net'"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
])
def test_cli_train_bad_input_is_one_line(arguments, message):
    result = CliRunner().invoke(cli.main, ["train", "--quiet", *arguments])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_train_diverging_is_one_line(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(cli.main, ["train", "--quiet", "--lr", "1e6", "--optimizer", "sgd",
                                               "--iterations", "50", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "diverged" in result.output and "Traceback" not in result.output
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]  # no overflow noise before it
    assert json.loads((tmp_path / "metrics.json").read_text())["curve"]["iteration"] == [0]


def test_cli_bench_json():
    result = CliRunner().invoke(cli.main, ["bench", "--json", "--seconds", "0.5"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["train_samples_per_s"] > 0 and figures["eval_samples_per_s"] > 0
    train_rates = figures["train"]
    assert train_rates["min"] <= train_rates["median"] <= train_rates["max"] and train_rates["blocks"] >= 1
    # a run's schedule, 100 steps and 15,000 images, unless that takes more than a quarter of the budget
    assert 1 <= figures["block"] <= 100 and figures["evaluated"] in (1000, 15_000)
    # a branch: 50,000 steps at the median rate, 501 evaluations and the training accuracy
    steps = 50_000 * 60 / figures["train_samples_per_s"]
    evaluations = (501 * 15_000 + 55_000) / figures["eval_samples_per_s"]
    assert abs(figures["branch_seconds"] - steps - evaluations) < 1e-6 * figures["branch_seconds"]


def test_bench_without_torch_says_so():
    result = CliRunner().invoke(cli.main, ["bench", "--seconds", "0.1", "--compare-torch", "--torch-python",
                                           sys.executable + "-missing"])
    assert result.exit_code == 1 and "cannot run" in result.output and "Traceback" not in result.output


FAKE_PEER = """
import json, sys, time
job = json.loads(sys.stdin.readline())
print(json.dumps({"ready": True}), flush=True)
answered, gaps = None, []
for _ in range(job["turns"]):
    if not sys.stdin.readline():
        break
    if answered is not None:
        gaps.append(time.perf_counter() - answered)
    time.sleep(job["seconds"])
    print(json.dumps({"train_rates": [1.0], "eval_rates": [2.0]}), flush=True)
    answered = time.perf_counter()
spread = lambda v: {"median": v, "min": v, "max": v, "blocks": job["turns"]}
print(json.dumps({"version": "fake", "threads": job["threads"], "train": spread(1.0), "eval": spread(2.0),
                  "gaps": gaps, "turns": job["turns"], "block": job["block"]}), flush=True)
"""


def test_bench_and_its_peer_take_turns(tmp_path, monkeypatch):
    """PyTorch times in turns with us, so that both see the same minutes of a machine whose
    speed moves (Conv-4 measured 1.45x, 1.96x and 1.77x in three runs of one-then-the-other):
    the peer's turns come one after each of ours, with our training between them."""
    from minilottery import bench
    script = tmp_path / "peer.py"
    script.write_text(FAKE_PEER)
    monkeypatch.setattr(bench.TorchPeer, "script", str(script))
    peer = bench.TorchPeer(sys.executable, 1, 100)
    began = time.perf_counter()
    result = bench.measure("lenet", seconds=0.9, peer=peer, turns=3)
    took = time.perf_counter() - began
    theirs = result["torch"]
    assert theirs["turns"] == 3 and theirs["block"] == result["block"] and result["turns"] == 3
    assert len(theirs["gaps"]) == 2 and min(theirs["gaps"]) >= 0.9 * 0.3  # one of our turns between theirs
    assert took >= 0.9 + 3 * 0.3  # the two never time at once
    assert theirs["branch_seconds"] > 0 and peer.process.poll() == 0


@pytest.mark.parametrize("body, message", [
    ("import sys; sys.exit('ImportError: no torch here')", "could not time PyTorch (ImportError: no torch here)"),
    ("import time; time.sleep(30)", "did not warm up in 1 s"),
    ("print('not json', flush=True)", "printed no figures"),
])
def test_a_peer_that_fails_is_one_line_and_leaves_no_process(tmp_path, monkeypatch, body, message):
    from minilottery import bench
    script = tmp_path / "peer.py"
    script.write_text(body)
    monkeypatch.setattr(bench.TorchPeer, "script", str(script))
    peer = bench.TorchPeer(sys.executable, 1, 100, timeout=1.0)
    with pytest.raises(bench.PeerError, match=re.escape(message)):
        bench.measure("lenet", seconds=0.2, peer=peer, turns=2)
    assert peer.process.poll() is not None


@pytest.mark.parametrize("name", ["lenet", "conv2", "resnet18", "vgg19"])
def test_the_torch_peer_has_every_parameter(name):
    """torch_peer.py builds the network from bench.torch_layers: the same parameters, layer by layer."""
    from minilottery import bench, nets

    def count(specs):
        total = 0
        for spec in specs:
            if spec["type"] == "dense":
                total += spec["in"] * spec["out"] + spec["out"]
            elif spec["type"] == "conv":
                total += spec["in"] * spec["out"] * spec["kernel"] ** 2 + spec["out"] * spec["bias"]
            elif spec["type"] == "batchnorm":
                total += 2 * spec["channels"]
            elif spec["type"] == "residual":
                total += count(spec["main"]) + count(spec["shortcut"] or [])
        return total
    net = nets.build(name, seed=0)
    assert count(bench.torch_layers([layer for _, layer in net.layers])) == net.flat_params.size


@pytest.mark.parametrize("name", ["conv2", "resnet18"])
def test_the_torch_peer_computes_the_same_function(name):
    torch = pytest.importorskip("torch")  # an optional oracle: torch is never a dependency
    import importlib.util
    from minilottery import bench, nets
    spec = importlib.util.spec_from_file_location("torch_peer", Path(bench.__file__).with_name("torch_peer.py"))
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    net = nets.build(name, seed=0, dtype=np.float64)
    model = peer.build(bench.torch_layers([layer for _, layer in net.layers]), 1.0, torch.Generator()).double()
    # the peer's parameters in the order of the network's: weight (and bias) of each conv and
    # dense layer, γ and β of each batch norm
    theirs = []
    for module in model.modules():
        if isinstance(module, peer.Masked):
            theirs += [module.layer.weight] + ([module.layer.bias] if module.layer.bias is not None else [])
        elif isinstance(module, torch.nn.BatchNorm2d):
            theirs += [module.weight, module.bias]
    assert len(theirs) == len(net.params)
    with torch.no_grad():
        for tensor, (key, value) in zip(theirs, net.params.items()):
            tensor.copy_(torch.from_numpy(value.T if key.endswith("weight") and value.ndim == 2 else value))
    model.eval()  # batch norm with its running statistics, as minilottery's evaluation
    x = np.random.default_rng(0).random((2, 3, 32, 32))
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), net.forward(x), rtol=1e-9, atol=1e-9)
