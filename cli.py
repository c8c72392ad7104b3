"""minilottery's command line: ``python cli.py COMMAND`` or the installed ``minilottery``.

    train   train one network with the paper's protocol
    imp     iterative magnitude pruning: find winning tickets, with controls
    bench   training and evaluation samples/s
    plot    the paper's figures for a finished (or running) imp folder
    report  the summary table of an imp folder
    stability  instability analysis of one round's ticket (Frankle et al. 2020)
    compare    several imp folders side by side against Pm, in one figure

The options are made from dataclass fields (``flags``): every hyperparameter of
``hparams.Hyperparameters``, whose defaults are the paper's values for the chosen
network, and every setting of ``lottery.Experiment``. Each field carries its own help.
"""
import json
import signal
import sys
from dataclasses import fields
from pathlib import Path

import click

from minilottery import executors, hparams, lottery, progress, schedule
from minilottery.options import NET, QUIET, flags, friendly_errors
from minilottery.train import TrainingDiverged, check_batch_size

HYPERPARAMETERS = [f.name for f in fields(hparams.Hyperparameters)]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main():
    """minilottery: The Lottery Ticket Hypothesis (Frankle & Carbin, ICLR 2019) in NumPy + Numba."""


@main.command()
@NET
@flags(hparams.Hyperparameters, network_defaults=True, pruning=False)
@flags(lottery.Experiment, ["seed", "data_dir", "sparse"])
@click.option("--out", type=click.Path(file_okay=False), help="write config.json and metrics.json here")
@QUIET
@friendly_errors
def train(net, seed, data_dir, sparse, out, quiet, **options):
    """Train one network with the paper's protocol (Appendix C).

    Evaluates validation and test sets every --eval-every iterations and reports
    the early-stopping iteration (minimum validation loss), the test accuracy
    there, and the final test and training accuracy.
    """
    from minilottery import datasets, files, nets
    from minilottery.train import Timer, Trainer
    hp = hparams.from_options(net, options)
    data = datasets.load(hp.dataset, data_dir)
    network = nets.build(net, seed=seed, input_shape=data.input_shape, dropout=hp.dropout, sparse=sparse)
    trainer, line, timer = Trainer(network, data, hp, seed), progress.ProgressLine(hp.iterations, quiet), Timer()
    try:
        trainer.run(on_eval=lambda t: line.update(t.iteration, t.last_loss, t.curve.val_accuracy[-1]))
    except TrainingDiverged as error:
        line.close()
        if out:
            files.write_json(f"{out}/metrics.json", {"diverged": str(error), "curve": error.curve.to_dict()})
        raise
    line.close()
    metrics = {**trainer.finish(), "wall_time_s": round(timer.elapsed(), 1)}
    click.echo(progress.training_summary(metrics))
    if out:
        files.write_json(f"{out}/config.json", {**hp.to_dict(), "seed": seed, "data_dir": data_dir})
        files.write_json(f"{out}/metrics.json", {**metrics, "curve": trainer.curve.to_dict()})
        click.echo(f"wrote {out}/config.json and {out}/metrics.json")


@main.command()
@NET
@click.option("--densities", default="1", show_default=True,
              help="comma-separated fractions of weights kept, e.g. 1,0.513,0.211,0.07,0.036,0.014")
@click.option("--seconds", type=float, default=20, show_default=True, help="timing per figure, in seconds")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (a list for several densities)")
@flags(lottery.Experiment, ["sparse"])
@click.option("--compare", is_flag=True, help="also measure --sparse off and print both with their ratio")
@click.option("--compare-torch", is_flag=True, help="also time PyTorch on the same work, in turns with ours "
              "(three each), and print the ratio (needs torch in --torch-python)")
@click.option("--torch-python", default=sys.executable, show_default="this Python",
              help="the Python whose torch --compare-torch uses, e.g. /tmp/torchvenv/bin/python")
@friendly_errors
def bench(net, densities, seconds, as_json, sparse, compare, compare_torch, torch_python):
    """Training and evaluation samples/s at the paper's batch size, and what a branch takes.

    Trains in blocks of --eval-every steps (100), each followed by the run's evaluation
    of the validation and test sets, on MNIST for Lenet (random images for the CIFAR
    networks), and prints the median with the slowest and fastest block.
    """
    from minilottery import bench as benchmark
    from minilottery import calibration, threads
    values = [float(d) for d in densities.split(",")]
    if any(not 0 < d <= 1 for d in values) or seconds <= 0:
        raise ValueError("densities must be in (0, 1] and --seconds positive")
    data = benchmark.bench_data(net)
    modes = [sparse, "off"] if compare and sparse != "off" else [sparse]
    results = []
    for density in values:
        for mode in modes:
            # PyTorch times the first mode's work in turns with it (bench.TorchPeer)
            peer = (benchmark.TorchPeer(torch_python, threads.WORKERS, len(data.x_train))
                    if compare_torch and mode == modes[0] else None)
            try:
                results.append(benchmark.measure(net, density, seconds=seconds, sparse=mode, data=data, peer=peer,
                                                 turns=benchmark.TORCH_TURNS if peer else 1))
            except benchmark.PeerError as error:
                raise ValueError(str(error)) from None
            finally:
                if peer is not None:
                    peer.close()
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results))
        return
    click.echo("\n".join(benchmark.describe(results, compared=len(modes) == 2)))
    if sparse == "auto" and min(values) < calibration.ASK_BELOW:
        measured = calibration.thresholds()
        click.echo(f"sparse thresholds: train below density {measured.train:.3f} (a stack such as Lenet below "
                   f"{measured.stack:.3f}), evaluate below {measured.evaluation:.3f} ({measured.source})")
    if benchmark.blas_note():
        click.echo(benchmark.blas_note())


@main.command()
@NET
@flags(lottery.Experiment)
@flags(hparams.Hyperparameters, network_defaults=True)
@click.option("--out", type=click.Path(file_okay=False), help="run folder [runs/NET or runs/NET-HASH]")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              help="continue the run in this folder with its own settings")
@flags(executors.Running)
@QUIET
@friendly_errors
def imp(net, out, resume_dir, workers, scheduler, job_threads, plan, quiet, **options):
    """Iterative magnitude pruning: find winning tickets (the paper's Section 1).

    Round 0 trains the dense network; each later round prunes the last round's
    trained ticket (layer-wise, output layer at half rate, or globally), resets the
    remaining weights to θ₀ and trains again, beside the chosen controls. Each
    branch of each round of each trial is a job: with --workers or --scheduler,
    trials and controls train side by side. Running the same command again
    resumes where it stopped.
    """
    from minilottery import datasets, rundir
    if resume_dir:
        experiment = lottery.Experiment.from_config(rundir.RunFolder(resume_dir).config(),
                                                    rundir.RunFolder(resume_dir).root / "config.json")
        out = resume_dir
    else:
        hp = hparams.from_options(net, {name: options.pop(name) for name in HYPERPARAMETERS if name in options})
        if options.get("transfer_from"):  # as every worker will find it
            options["transfer_from"] = str(Path(options["transfer_from"]).resolve())
        experiment = lottery.Experiment(hp, **options).validate()
    experiment.check_transfer()
    folder = rundir.RunFolder(out or rundir.default_folder(experiment.config()))
    if plan:
        return progress.print_plan(experiment, folder)
    folder.lock()
    data = datasets.load(experiment.hp.dataset, experiment.data_dir)  # bad input stops here, before
    check_batch_size(experiment.hp, data)                             # the folder gets a config.json
    if workers is None:
        workers = executors.default_workers(experiment, job_threads=job_threads)
    executor = executors.make_executor(workers, scheduler, job_threads)
    started = folder.config() if (folder.root / "config.json").exists() else None
    experiment.settle_sparse_thresholds(started, getattr(executor, "job_threads", None) or job_threads)
    line = progress.JobsProgress(quiet, experiment.hp.iterations)
    driver = schedule.Driver(experiment, folder, executor, data, job_threads, on_status=line.on_status,
                             on_eval=line.on_eval, on_notice=line.notice,
                             on_round=lambda t, r, results: progress.print_round(t, r, results, experiment.trials))
    handlers = schedule.install_stop_handlers(driver)
    try:
        folder.start(experiment.config(), complete=lottery.Experiment.complete_config)
        progress.print_table_header(experiment, executor, folder)
        if isinstance(executor, executors.DaskExecutor):
            executor.check_folder(folder.root.resolve())
        driver.run()
    except rundir.Interrupted as interrupted:
        line.close()
        raise click.ClickException(f"{interrupted}; resume with: python cli.py imp --resume {folder.root}")
    except KeyboardInterrupt:
        line.close()
        executor.shutdown(force=True)
        raise click.ClickException(f"stopped at once; finished branches and checkpoints are kept; "
                                   f"resume with: python cli.py imp --resume {folder.root}") from None
    finally:
        schedule.restore_handlers(handlers)
        executor.shutdown()
    line.close()
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


@main.command()
@click.argument("run", type=click.Path(file_okay=False, exists=True))
@click.option("--round", "round_index", type=int, required=True, help="the round whose winning ticket to study")
@click.option("--k", "ks", default="0,100,500,2000", show_default=True,
              help="comma-separated iterations from which the two copies start")
@click.option("--trial", type=int, default=0, show_default=True, help="the trial whose ticket to study")
@click.option("--workers", type=int, default=1, show_default=True, help="copies trained side by side")
@friendly_errors
def stability(run, round_index, ks, trial, workers):
    """Instability analysis of the winning ticket of one round of the imp run RUN.

    From the ticket's weights at iteration k, two copies train to the end on data
    orders of their own; the test error is measured at 11 points on the line between
    them. Instability is the worst error on the path minus the mean of its ends: below
    2% the network is stable (Frankle, Dziugaite, Roy & Carbin, ICML 2020). At --round 0
    (the dense network) the smallest stable k is the earliest worth passing to imp
    --rewind-iteration. Writes RUN/stability/ and RUN/figures/stability_trialT_roundRR.png;
    rerun to resume.
    """
    from minilottery import datasets, plots_beyond, report, rundir
    from minilottery import stability as analysis
    try:
        values = sorted({int(k) for k in ks.split(",")})
    except ValueError:
        raise ValueError(f"--k takes comma-separated iterations, like 0,100,500; got {ks!r}") from None
    experiment = lottery.Experiment.from_config(rundir.RunFolder(run).config(), Path(run) / "config.json")
    data = datasets.load(experiment.hp.dataset, experiment.data_dir)
    executor = executors.make_executor(workers)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: schedule.signal_stop())
    try:
        found = analysis.analyse(run, trial, round_index, values, executor, data, on_line=click.echo)
    except (KeyboardInterrupt, rundir.Interrupted):
        raise click.ClickException("stopped; the copies' checkpoints are kept; resume with the same "
                                   "command") from None
    finally:
        signal.signal(signal.SIGINT, previous)
        executor.shutdown()
    results = report.load_run(run)
    pm = 100 * results.spread("ticket", round_index, "pm").mean
    path = Path(run) / "figures" / f"stability_trial{trial}_round{round_index:02d}.png"
    path.parent.mkdir(exist_ok=True)
    plots_beyond.stability_figure(found, f"Instability of the winning ticket at Pm {pm:.1f}%, "
                                         f"{results.title().split(',')[0]}, trial {trial}", path)
    _, written = report.write_report(run)  # with its instability section
    click.echo(f"wrote {path} and {written}")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--labels", help="comma-separated names of the runs in the figure [their folder names]")
@click.option("--branches", default="ticket", show_default=True,
              help="comma-separated branches of each run to draw: ticket, reinit, random, oneshot, snip, synflow")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="the PNG to write")
@friendly_errors
def compare(runs, labels, branches, out):
    """Several imp runs RUNS side by side: test accuracy at early stopping and at the end against Pm.

    For example weight rewinding, learning-rate rewinding and fine-tuning (imp --retrain),
    or tickets transferred from another dataset (imp --transfer-from) beside the
    target's own tickets and its random masks.
    """
    from minilottery import plots_beyond, report
    names = labels.split(",") if labels else [Path(r).name for r in runs]
    if len(names) != len(runs):
        raise ValueError(f"--labels names {len(names)} runs, but {len(runs)} were given")
    chosen = [b.strip() for b in branches.split(",")]
    unknown = [b for b in chosen if b not in report.BRANCH_LABELS]
    if unknown:
        raise ValueError(f"unknown branch {unknown[0]!r}; choose from {', '.join(report.BRANCH_LABELS)}")
    loaded = [report.load_run(r) for r in runs]
    for results, name in zip(loaded, names):
        click.echo(f"{name}: {results.title()}")
        click.echo(report.summary_table(results))
    click.echo(f"wrote {plots_beyond.compare_figure(loaded, names, chosen, Path(out))}")


if __name__ == "__main__":
    main(sys.argv[1:])
