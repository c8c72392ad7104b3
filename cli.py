"""minilottery's command line: ``python cli.py COMMAND`` or the installed ``minilottery``.

    train   train one network with the paper's protocol
    imp     iterative magnitude pruning: find winning tickets, with controls
    bench   training and evaluation samples/s
    plot    the paper's figures for a finished (or running) imp folder
    report  the summary table of an imp folder

Hyperparameter options are generated from the fields of
``minilottery.hparams.Hyperparameters``; every default is the paper's value for the
chosen network and lives in that one dataclass.
"""
import functools
import json
import sys
from dataclasses import fields, replace

import click

from minilottery import hparams, nets
from minilottery.files import RunFileError
from minilottery.idx import DataFileError
from minilottery.train import TrainingDiverged, format_eta

HELP = {
    "dataset": "dataset: mnist, fashion-mnist or cifar10 [network's default]",
    "iterations": "training iterations per run [paper: lenet 50000]",
    "batch_size": "minibatch size [paper: 60 for lenet and conv-n]",
    "optimizer": "adam, sgd or momentum",
    "lr": "learning rate [paper: lenet 1.2e-3]",
    "momentum": "momentum coefficient for --optimizer momentum",
    "nesterov": "Nesterov momentum",
    "weight_decay": "L2 weight decay",
    "warmup": "linear learning-rate warmup over this many iterations",
    "milestones": "comma-separated iterations at which lr is multiplied by --gamma",
    "gamma": "learning-rate drop factor at each milestone",
    "dropout": "dropout probability after hidden fc layers (0 = none)",
    "augment": "random flip + 4-pixel pad/crop augmentation",
    "eval_every": "evaluate validation and test sets every N iterations [paper: 100]",
    "pruning": "layerwise (Lenet, Conv-n) or global (Resnet-18, VGG-19)",
    "rate_conv": "fraction of remaining conv weights pruned per round",
    "rate_fc": "fraction of remaining fc weights pruned per round [paper: 0.2]",
    "rate_output": "fraction of remaining output-layer weights pruned per round [paper: half the fc rate]",
    "unpruned": "comma-separated kinds left unpruned: conv, fc, output, shortcut",
}
TRAINING_FIELDS = [f.name for f in fields(hparams.Hyperparameters)
                   if f.name not in ("net", "pruning", "rate_conv", "rate_fc", "rate_output", "unpruned")]
PRUNING_FIELDS = ["pruning", "rate_conv", "rate_fc", "rate_output", "unpruned"]


def hyperparameter_options(names):
    """click options for the named dataclass fields, all defaulting to the network's value."""
    types = {f.name: f.type for f in fields(hparams.Hyperparameters)}

    def decorate(command):
        for name in reversed(names):
            flag = "--" + name.replace("_", "-")
            if types[name] is bool:
                option = click.option(f"{flag}/--no-{name.replace('_', '-')}", name, default=None, help=HELP[name])
            elif types[name] is tuple:
                option = click.option(flag, name, default=None, metavar="LIST", help=HELP[name])
            else:
                option = click.option(flag, name, type=types[name], default=None, help=HELP[name])
            command = option(command)
        return command
    return decorate


def resolve_hyperparameters(net, options):
    """The paper's defaults for ``net``, overridden by the options the user gave."""
    hp = hparams.defaults(net)
    given = {}
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(getattr(hp, name), tuple):
            value = tuple(int(v) if name == "milestones" else v.strip() for v in value.split(",") if v.strip())
        given[name] = value
    return replace(hp, **given).validate()


def friendly_errors(command):
    """Turn expected failures into one-line errors instead of tracebacks."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ValueError, DataFileError, RunFileError, TrainingDiverged, OSError) as error:
            raise click.ClickException(str(error).splitlines()[0] if str(error) else repr(error)) from None
    return wrapper


class ProgressLine:
    """One self-overwriting line on stderr: iteration, loss, validation accuracy, time left."""

    def __init__(self, total, quiet=False, label=""):
        from minilottery.train import Timer
        self.total, self.quiet, self.label, self.timer = total, quiet, label, Timer()
        self.done_before = None

    def update(self, done, loss, val_accuracy, extra=""):
        if self.quiet:
            return
        if self.done_before is None:
            self.done_before = done  # a resumed run: time only what this process did
        fraction = done / self.total if self.total else 1.0
        rate = (done - self.done_before) / max(self.timer.elapsed(), 1e-9)
        left = (self.total - done) / rate if rate > 0 else 0
        bar = "#" * int(20 * fraction)
        loss_text = f"{loss:.4f}" if loss == loss else "-"  # no loss before the first step
        line = (f"\r{self.label}[{bar:<20}] {done:,}/{self.total:,} | loss {loss_text} | "
                f"val acc {100 * val_accuracy:.2f}% | {format_eta(left)} left{extra}  ")
        click.echo(line, nl=False, err=True)

    def close(self):
        if not self.quiet:
            click.echo("", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main():
    """minilottery: The Lottery Ticket Hypothesis (Frankle & Carbin, ICLR 2019) in NumPy + Numba."""


NET_CHOICE = click.Choice(list(hparams.DEFAULTS))


@main.command()
@click.option("--net", type=NET_CHOICE, default="lenet", show_default=True, help="network of the paper's Figure 2")
@hyperparameter_options(TRAINING_FIELDS)
@click.option("--seed", type=int, default=0, show_default=True, help="seed of θ₀, data order and dropout")
@click.option("--data-dir", type=click.Path(file_okay=False), help="read the dataset's files from this folder")
@click.option("--out", type=click.Path(file_okay=False), help="write config.json and metrics.json here")
@click.option("--quiet", is_flag=True, help="no progress line")
@friendly_errors
def train(net, seed, data_dir, out, quiet, **options):
    """Train one network with the paper's protocol (Appendix C).

    Evaluates validation and test sets every --eval-every iterations and reports
    the early-stopping iteration (minimum validation loss), the test accuracy
    there, and the final test and training accuracy.
    """
    from minilottery import datasets, files
    from minilottery.train import Timer, Trainer
    hp = resolve_hyperparameters(net, options)
    data = datasets.load(hp.dataset, data_dir)
    if hp.batch_size > len(data.x_train):
        raise ValueError(f"batch size {hp.batch_size} is larger than the training set ({len(data.x_train)})")
    network = nets.build(net, seed=seed, input_shape=data.input_shape, dropout=hp.dropout)
    trainer = Trainer(network, data, hp, seed)
    progress = ProgressLine(hp.iterations, quiet)
    timer = Timer()
    try:
        trainer.run(on_eval=lambda t: progress.update(t.iteration, t.last_loss, t.curve.val_accuracy[-1]))
    except TrainingDiverged as error:
        progress.close()
        if out:
            files.write_json(f"{out}/metrics.json", {"diverged": str(error), "curve": error.curve.to_dict()})
        raise
    progress.close()
    metrics = trainer.finish()
    metrics["wall_time_s"] = round(timer.elapsed(), 1)
    click.echo(f"early-stopping iteration {metrics['early_stop_iteration']:,}, test accuracy there "
               f"{100 * metrics['test_accuracy_at_early_stop']:.2f}%; final test "
               f"{100 * metrics['final_test_accuracy']:.2f}%, final train "
               f"{100 * metrics['final_train_accuracy']:.2f}% ({metrics['wall_time_s']:.0f} s)")
    if out:
        files.write_json(f"{out}/config.json", {**hp.to_dict(), "seed": seed, "data_dir": data_dir})
        files.write_json(f"{out}/metrics.json", {**metrics, "curve": trainer.curve.to_dict()})
        click.echo(f"wrote {out}/config.json and {out}/metrics.json")


@main.command()
@click.option("--net", type=NET_CHOICE, default="lenet", show_default=True)
@click.option("--densities", default="1", show_default=True,
              help="comma-separated fractions of weights kept, e.g. 1,0.513,0.211,0.07,0.036,0.014")
@click.option("--iterations", type=int, default=1000, show_default=True, help="training steps per timing")
@click.option("--repeats", type=int, default=5, show_default=True, help="timings per figure (median reported)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (a list for several densities)")
@friendly_errors
def bench(net, densities, iterations, repeats, as_json):
    """Training and evaluation samples/s at the paper's batch size (random data, real loop)."""
    from minilottery import bench as benchmark
    values = [float(d) for d in densities.split(",")]
    if any(not 0 < d <= 1 for d in values) or iterations <= 0 or repeats <= 0:
        raise ValueError("densities must be in (0, 1] and --iterations and --repeats positive")
    results = [benchmark.measure(net, d, iterations=iterations, repeats=repeats) for d in values]
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results))
        return
    for r in results:
        click.echo(f"{r['net']} density {r['density']:.4f} batch {r['batch_size']}: "
                   f"train {r['train_samples_per_s']:,.0f} samples/s, eval {r['eval_samples_per_s']:,.0f} samples/s")


if __name__ == "__main__":
    main(sys.argv[1:])
