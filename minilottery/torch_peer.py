"""PyTorch's figures beside minilottery's, for ``bench --compare-torch``.

The same network, mask density, optimizer and batch size in PyTorch on the CPU, in the
fastest configuration measured on the project's machines: fused Adam and SGD,
denormals flushed to zero, channels-last memory for convolutions. Masks are applied to
the weights after every step (open_lth's way), with the same augmentation where the
network has it (Resnet-18, VGG-19), and the
timing is bench.py's: blocks of as many steps as bench's (``eval_every``), each followed
by an evaluation of as many images, for about the given seconds.

bench runs this file in a process of its own, with any Python that has torch (torch is
never a dependency of minilottery), and sends the job as one line of JSON on stdin: the
layers (``bench.torch_layers``), input shape, density, hyperparameters, threads, the
steps in a block, the images evaluated after each, and how many turns of how many
seconds. The two take turns: after its warm-up this prints ``{"ready": true}``, then for
each line bench sends it times one turn and prints that turn's rates, one JSON object a
line; after the last, the figures over every turn. It imports nothing of minilottery.
"""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class Masked(nn.Module):
    """A Linear or Conv2d with a fixed 0/1 mask, applied to its weight after every step
    (open_lth's way: the pruned weights are zero at every forward pass)."""

    def __init__(self, layer, density, generator):
        super().__init__()
        self.layer = layer
        keep = torch.rand(layer.weight.shape, generator=generator) < density if density < 1 else \
            torch.ones(layer.weight.shape, dtype=torch.bool)
        self.register_buffer("mask", keep.float())
        with torch.no_grad():
            layer.weight.mul_(self.mask)

    def forward(self, x):
        return self.layer(x)


class Residual(nn.Module):
    def __init__(self, main, shortcut):
        super().__init__()
        self.main, self.shortcut = main, shortcut

    def forward(self, x):
        return F.relu(self.main(x) + (self.shortcut(x) if self.shortcut is not None else x))


def build(layers, density, generator):
    modules = []
    for spec in layers:
        kind = spec["type"]
        if kind == "dense":
            modules.append(Masked(nn.Linear(spec["in"], spec["out"]), density, generator))
        elif kind == "conv":
            conv = nn.Conv2d(spec["in"], spec["out"], spec["kernel"], spec["stride"], spec["padding"],
                             bias=spec["bias"])
            modules.append(Masked(conv, density, generator))
        elif kind == "relu":
            modules.append(nn.ReLU())
        elif kind == "dropout":
            modules.append(nn.Dropout(spec["p"]))
        elif kind == "flatten":
            modules.append(nn.Flatten())
        elif kind == "maxpool":
            modules.append(nn.MaxPool2d(spec["size"]))
        elif kind == "batchnorm":
            modules.append(nn.BatchNorm2d(spec["channels"], eps=spec["eps"], momentum=spec["momentum"]))
        elif kind == "avgpool":
            modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif kind == "residual":
            shortcut = build(spec["shortcut"], density, generator) if spec["shortcut"] else None
            modules.append(Residual(build(spec["main"], density, generator), shortcut))
        else:
            raise ValueError(f"no PyTorch layer for {kind!r}")
    return nn.Sequential(*modules)


def optimizer(hp, parameters):
    if hp["optimizer"] == "adam":
        return torch.optim.Adam(parameters, lr=hp["lr"], weight_decay=hp["weight_decay"], fused=True)
    momentum = hp["momentum"] if hp["optimizer"] == "momentum" else 0.0
    return torch.optim.SGD(parameters, lr=hp["lr"], momentum=momentum, weight_decay=hp["weight_decay"],
                           nesterov=hp["nesterov"] and momentum > 0, fused=True)


def flip_and_crop(x, generator):
    """minilottery's augmentation (augment.py): per image, a random crop of the image padded
    by 4 pixels and a random horizontal flip."""
    n, _, height, width = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2, n), generator=generator).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + height, dx[i]:dx[i] + width] for i in range(n)])
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def main(job):
    torch.set_num_threads(job["threads"])
    torch.set_flush_denormal(True)
    generator = torch.Generator().manual_seed(0)
    model = build(job["layers"], job["density"], generator)
    convolutional = any(spec["type"] in ("conv", "residual") for spec in job["layers"])
    layout = torch.channels_last if convolutional else torch.contiguous_format
    model = model.to(memory_format=layout)
    masked = [m for m in model.modules() if isinstance(m, Masked)]
    hp, shape, train_size = job["hp"], job["input_shape"], job["train_images"]
    x_train = torch.rand(train_size, *shape, generator=generator).contiguous(memory_format=layout) \
        if convolutional else torch.rand(train_size, *shape, generator=generator)
    y_train = torch.randint(0, 10, (train_size,), generator=generator)
    x_eval = torch.rand(job["evaluated"], *shape, generator=generator).contiguous(memory_format=layout) \
        if convolutional else torch.rand(job["evaluated"], *shape, generator=generator)
    y_eval = torch.randint(0, 10, (job["evaluated"],), generator=generator)
    opt = optimizer(hp, model.parameters())
    batch, position = hp["batch_size"], [train_size]
    order = [None]

    def step():
        if position[0] + batch > train_size:
            order[0], position[0] = torch.randperm(train_size, generator=generator), 0
        index = order[0][position[0]:position[0] + batch]
        position[0] += batch
        x = x_train[index]
        if job["augment"]:
            x = flip_and_crop(x, generator).contiguous(memory_format=layout)
        loss = F.cross_entropy(model(x), y_train[index])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for m in masked:
                m.layer.weight.mul_(m.mask)

    def evaluate():
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(x_eval), 1000):
                int((model(x_eval[start:start + 1000]).argmax(1) == y_eval[start:start + 1000]).sum())
        model.train()

    for _ in range(3):
        step()
    evaluate()
    say({"ready": True})
    train_rates, eval_rates = [], []
    for _ in range(job.get("turns", 1)):
        if not sys.stdin.readline():  # bench is gone
            break
        turn_train, turn_eval = [], []
        began = time.perf_counter()
        while not turn_train or time.perf_counter() - began < job["seconds"]:
            start = time.perf_counter()
            for _ in range(job["block"]):
                step()
            trained = time.perf_counter()
            evaluate()
            done = time.perf_counter()
            turn_train.append(job["block"] * batch / (trained - start))
            turn_eval.append(len(x_eval) / (done - trained))
        say({"train_rates": turn_train, "eval_rates": turn_eval})
        train_rates += turn_train
        eval_rates += turn_eval

    if not train_rates:
        return None

    def spread(rates):
        return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "blocks": len(rates)}
    return {"version": torch.__version__, "threads": torch.get_num_threads(), "train": spread(train_rates),
            "eval": spread(eval_rates)}


def say(values):
    print(json.dumps(values), flush=True)


if __name__ == "__main__":
    figures = main(json.loads(sys.stdin.readline()))
    if figures is not None:
        say(figures)
