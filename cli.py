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
            try:
                value = tuple(int(v) if name == "milestones" else v.strip() for v in value.split(",") if v.strip())
            except ValueError:
                raise ValueError(f"--{name} takes comma-separated iterations such as 20000,25000, "
                                 f"got {value!r}") from None
        if name.startswith("rate_") and not 0 < value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1 (exclusive), got {value}; "
                             "to leave a kind of layer dense use --unpruned")
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
@click.option("--sparse", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="sparse kernels for layers below the density threshold")
@friendly_errors
def train(net, seed, data_dir, out, quiet, sparse, **options):
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
    network = nets.build(net, seed=seed, input_shape=data.input_shape, dropout=hp.dropout, sparse=sparse)
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
@click.option("--sparse", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="sparse kernels for layers below the density threshold")
@click.option("--compare", is_flag=True, help="also measure --sparse off and print both with their ratio")
@friendly_errors
def bench(net, densities, iterations, repeats, as_json, sparse, compare):
    """Training and evaluation samples/s at the paper's batch size (random data, real loop)."""
    from minilottery import bench as benchmark
    values = [float(d) for d in densities.split(",")]
    if any(not 0 < d <= 1 for d in values) or iterations <= 0 or repeats <= 0:
        raise ValueError("densities must be in (0, 1] and --iterations and --repeats positive")
    modes = [sparse, "off"] if compare and sparse != "off" else [sparse]
    results = [benchmark.measure(net, d, iterations=iterations, repeats=repeats, sparse=mode)
               for d in values for mode in modes]
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results))
        return
    for index, r in enumerate(results):
        layers = ",".join(r["sparse_layers"]) or "none"
        click.echo(f"{r['net']} density {r['density']:.4f} batch {r['batch_size']} sparse {r['sparse']} "
                   f"(sparse layers: {layers}): train {r['train_samples_per_s']:,.0f} samples/s, "
                   f"eval {r['eval_samples_per_s']:,.0f} samples/s")
        if len(modes) == 2 and index % 2 == 1:  # the pair (--sparse MODE, off) at one density
            mine, ratio = results[index - 1], {k: results[index - 1][k] / r[k]
                                               for k in ("train_samples_per_s", "eval_samples_per_s")}
            click.echo(f"    {mine['sparse']} / off: train x{ratio['train_samples_per_s']:.2f}, "
                       f"eval x{ratio['eval_samples_per_s']:.2f}")


CONTROL_CHOICES = {"none": (), "reinit": ("reinit",), "random": ("random",), "both": ("reinit", "random")}


def print_round(trial, round_index, results, trials):
    """One table row per finished round: Pm, then early-stop iteration and test accuracy per branch."""
    cells = [f"{round_index:>5}", f"{100 * results['ticket']['pm']:>7.2f}"]
    for branch, metrics in results.items():
        cells.append(f"{branch:>7} {metrics['early_stop_iteration']:>7,} "
                     f"{100 * metrics['test_accuracy_at_early_stop']:>6.2f}%")
    prefix = f"{trial:>5} " if trials > 1 else ""
    click.echo("\r" + prefix + " | ".join(cells) + " " * 20)


class JobsProgress:
    """imp's progress line on stderr: jobs done / running / waiting, the job in this
    process (one worker) at its last evaluation, and the time left."""

    def __init__(self, quiet, iterations):
        from minilottery.train import Timer
        self.quiet, self.iterations, self.timer = quiet, iterations, Timer()
        self.status, self.detail, self.job_began = None, "", None

    def on_status(self, status):
        self.status = status
        self.draw()

    def on_eval(self, job, trainer):
        """One worker, in this process: the running job's iteration, loss and validation accuracy."""
        if self.job_began is None or self.job_began[0] != job:
            self.job_began = (job, trainer.iteration, self.timer.elapsed())
        loss = f"{trainer.last_loss:.4f}" if trainer.last_loss == trainer.last_loss else "-"
        self.detail = (f" | {job} it {trainer.iteration:,} | loss {loss} | "
                       f"val acc {100 * trainer.curve.val_accuracy[-1]:.2f}%")
        fraction = trainer.iteration / self.iterations if self.iterations else 1.0
        if self.status is not None and not self.status.job_seconds and trainer.iteration > self.job_began[1]:
            # before a first job has finished here: this job's pace, for every job left
            pace = (self.timer.elapsed() - self.job_began[2]) / (trainer.iteration - self.job_began[1])
            self.status.seconds_left = pace * self.iterations * (self.status.waiting + 1 - fraction)
        self.draw(fraction)

    def draw(self, fraction=0.0):
        status = self.status
        if self.quiet or status is None:
            return
        done = status.done + (fraction if status.running else 0)
        bar = "#" * int(20 * done / max(status.total, 1))
        left = "estimating" if status.seconds_left is None else f"{format_eta(status.seconds_left)} left"
        detail = self.detail or "".join(f" | t{job.trial} r{job.round} {job.branch}" for job in status.running[:3])
        click.echo(f"\r[{bar:<20}] jobs {status.done}/{status.total} done, {len(status.running)} running, "
                   f"{status.waiting} waiting{detail} | {left}  ", nl=False, err=True)

    def notice(self, message):
        """A line of its own that the progress line does not overwrite (shown even with --quiet)."""
        click.echo(f"\r{message}" + " " * 40, err=True)

    def close(self):
        if not self.quiet:
            click.echo("", err=True)


def print_plan(experiment, folder, input_shape):
    from minilottery import schedule
    hp = experiment.hp
    click.echo(f"imp {hp.net} on {hp.dataset}: {experiment.trials} trial(s) x {experiment.rounds} rounds, "
               f"branches {', '.join(experiment.branches(experiment.rounds))}, {hp.iterations:,} iterations each")
    click.echo("timing a training step and an evaluation here ...", err=True)
    plan = schedule.plan(experiment, folder, input_shape)
    click.echo(f"jobs: {plan.jobs} ({plan.left} not finished); critical path: {plan.critical_path} trainings, "
               "one after another")
    click.echo(f"one branch: ~{schedule.format_duration(plan.seconds_all_cores)} alone on this machine's "
               f"{schedule.threads.WORKERS} core(s), ~{schedule.format_duration(plan.seconds_one_core)} on one core")
    click.echo("workers  expected wall time   (one worker: every core here; more: one core each)")
    for workers, seconds in plan.wall.items():
        click.echo(f"{workers:>7}  {schedule.format_duration(seconds)}")
    floor = plan.critical_path * plan.seconds_one_core
    click.echo(f"floor (the critical path on one core per job): {schedule.format_duration(floor)}")


@main.command()
@click.option("--net", type=NET_CHOICE, default="lenet", show_default=True, help="network of the paper's Figure 2")
@click.option("--rounds", type=int, default=10, show_default=True, help="pruning rounds after the dense round 0")
@click.option("--trials", type=int, default=1, show_default=True, help="independent trials (seeds seed, seed+1, ...)")
@click.option("--controls", type=click.Choice(list(CONTROL_CHOICES)), default="reinit", show_default=True,
              help="controls trained at every round beside the winning ticket")
@click.option("--oneshot", is_flag=True, help="also train one-shot pruned networks at every round's Pm")
@click.option("--rewind-iteration", type=int, default=0, show_default=True,
              help="reset to θ_k, the dense weights after k iterations, instead of θ₀")
@hyperparameter_options(TRAINING_FIELDS + PRUNING_FIELDS)
@click.option("--sparse", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="sparse kernels for layers below the density threshold")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of trial 0's θ₀ and data order")
@click.option("--checkpoint-every", type=int, default=5000, show_default=True, help="iterations between checkpoints")
@click.option("--data-dir", type=click.Path(file_okay=False), help="read the dataset's files from this folder")
@click.option("--out", type=click.Path(file_okay=False), help="run folder [runs/NET or runs/NET-HASH]")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              help="continue the run in this folder with its own settings")
@click.option("--workers", type=int, default=1, show_default=True,
              help="jobs (branches) trained side by side in local worker processes, each with its share of "
                   "the cores; with --scheduler local, the LocalCluster's worker processes")
@click.option("--scheduler", metavar="ADDRESS",
              help="run the jobs on the Dask cluster at ADDRESS (tcp://host:8786), or 'local' for a Dask "
                   "LocalCluster here; the run folder must be on storage every worker sees "
                   "[pip install 'minilottery[dask]']")
@click.option("--job-threads", type=int,
              help="OpenBLAS and Numba threads per job [cores / --workers; 1 on Dask]; runs with the same "
                   "value write bit-identical files however their jobs are spread")
@click.option("--plan", "plan_only", is_flag=True,
              help="train nothing: print the jobs, the critical path and the expected wall time on "
                   "1, 2, 8, 32 and 128 workers, from a short timing here")
@click.option("--quiet", is_flag=True, help="no progress line")
@friendly_errors
def imp(net, rounds, trials, controls, oneshot, rewind_iteration, sparse, seed, checkpoint_every, data_dir,
        out, resume_dir, workers, scheduler, job_threads, plan_only, quiet, **options):
    """Iterative magnitude pruning: find winning tickets (the paper's Section 1).

    Round 0 trains the dense network; each later round prunes the last round's
    trained ticket (layer-wise, output layer at half rate, or globally), resets the
    remaining weights to θ₀ and trains again, beside the chosen controls. Each
    branch of each round of each trial is a job: with --workers or --scheduler,
    trials and controls train side by side. Running the same command again
    resumes where it stopped.
    """
    from minilottery import datasets, lottery, rundir, schedule
    if resume_dir:
        resumed = rundir.RunFolder(resume_dir)
        experiment = lottery.Experiment.from_config(resumed.config(), resumed.root / "config.json")
        out = resume_dir
    else:
        hp = resolve_hyperparameters(net, options)
        experiment = lottery.Experiment(hp, rounds, trials, CONTROL_CHOICES[controls], oneshot, seed,
                                        rewind_iteration, checkpoint_every, data_dir, sparse)
    experiment.validate()
    folder = rundir.RunFolder(out or rundir.default_folder(experiment.config()))
    hp = experiment.hp
    if plan_only:
        if hp.dataset not in datasets.IMAGE_SHAPES:
            raise ValueError(f"unknown dataset {hp.dataset!r}; choose one of {', '.join(datasets.IMAGE_SHAPES)}")
        print_plan(experiment, folder, datasets.IMAGE_SHAPES[hp.dataset])
        return
    folder.lock()
    folder.start(experiment.config())
    data = datasets.load(hp.dataset, experiment.data_dir)
    if hp.batch_size > len(data.x_train):
        raise ValueError(f"batch size {hp.batch_size} is larger than the training set ({len(data.x_train)})")
    executor = schedule.make_executor(workers, scheduler, job_threads)
    progress = JobsProgress(quiet, hp.iterations)
    driver = schedule.Driver(experiment, folder, executor, data, job_threads,
                             on_status=progress.on_status, on_eval=progress.on_eval, on_notice=progress.notice,
                             on_round=lambda t, r, results: print_round(t, r, results, experiment.trials))
    click.echo(f"imp {hp.net} on {hp.dataset}: {experiment.rounds} rounds x {experiment.trials} trial(s), "
               f"{hp.iterations:,} iterations each, on {executor.description}; run folder {folder.root}")
    click.echo(("trial " if experiment.trials > 1 else "") + "round |   Pm %  | branch  "
               "early-stop it  test acc there")
    handlers = schedule.install_stop_handlers(driver)
    try:
        if isinstance(executor, schedule.DaskExecutor):
            executor.check_folder(folder.root.resolve())
        driver.run()
    except rundir.Interrupted as interrupted:
        progress.close()
        raise click.ClickException(f"{interrupted}; resume with: python cli.py imp --resume {folder.root}")
    except KeyboardInterrupt:
        progress.close()
        executor.shutdown(force=True)
        raise click.ClickException(f"stopped at once; finished branches and checkpoints are kept; "
                                   f"resume with: python cli.py imp --resume {folder.root}") from None
    finally:
        schedule.restore_handlers(handlers)
        executor.shutdown()
    progress.close()
    click.echo(f"done: {folder.root / 'summary.csv'}")
    write_figures_and_report(folder.root)


def write_figures_and_report(root):
    """The figures and report.md of a finished run; a failure here must never cost the results."""
    try:
        from minilottery import plots, report
        written = plots.write_figures(root)
        _, path = report.write_report(root)
    except Exception as error:  # anything at all: the run's files are already safely written
        click.echo(f"figures and report not written ({type(error).__name__}: {error}); "
                   f"try again with: python cli.py plot {root}", err=True)
        return
    click.echo(f"figures: {len(written)} PNG files in {path.parent / 'figures'}; report: {path}")


@main.command()
@click.argument("run", type=click.Path(file_okay=False))
@friendly_errors
def plot(run):
    """Draw the paper's figures for the imp run folder RUN into RUN/figures/.

    Test accuracy at early stopping and the early-stopping iteration against Pm
    (Figures 1 and 4), test accuracy during training (Figure 3), training and
    test accuracy at the end of training (Figure 4), and how far kept and pruned
    weights moved from θ₀. A run in progress is plotted as far as it got.
    """
    from minilottery import plots, report
    for path in plots.write_figures(run):
        click.echo(f"wrote {path}")
    _, path = report.write_report(run)  # its figure links now point at existing files
    click.echo(f"wrote {path}")


@main.command(name="report")
@click.argument("run", type=click.Path(file_okay=False))
@friendly_errors
def report_command(run):
    """Print the summary table of the imp run folder RUN and write it to RUN/report.md.

    Per round: Pm, and for each branch the early-stopping iteration and the test
    accuracy there, as mean [min, max] over trials (Appendix C).
    """
    from minilottery import report
    results, path = report.write_report(run)
    click.echo(f"{results.title()}: early-stopping iteration and test accuracy there (%), mean [min, max]")
    click.echo(report.summary_table(results))
    click.echo("")
    click.echo("\n".join(report.highlights(results)))
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
