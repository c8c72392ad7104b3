"""What ``train`` and ``imp`` show while they work: a progress line, the round table, the plan.

The progress line overwrites itself on stderr; the table rows and the plan go to
stdout, one line each, so that they can be read in a log or piped.
"""
import click

from . import calibration
from .train import Timer, format_eta


class ProgressLine:
    """One self-overwriting line on stderr: iteration, loss, validation accuracy, time left."""

    def __init__(self, total, quiet=False):
        self.total, self.quiet, self.timer = total, quiet, Timer()
        self.done_before = None

    def update(self, done, loss, val_accuracy):
        if self.quiet:
            return
        if self.done_before is None:
            self.done_before = done  # a resumed run: time only what this process did
        fraction = done / self.total if self.total else 1.0
        rate = (done - self.done_before) / max(self.timer.elapsed(), 1e-9)
        left = (self.total - done) / rate if rate > 0 else 0
        bar = "#" * int(20 * fraction)
        loss_text = f"{loss:.4f}" if loss == loss else "-"  # no loss before the first step
        line = (f"\r[{bar:<20}] {done:,}/{self.total:,} | loss {loss_text} | "
                f"val acc {100 * val_accuracy:.2f}% | {format_eta(left)} left  ")
        click.echo(line, nl=False, err=True)

    def close(self):
        if not self.quiet:
            click.echo("", err=True)


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


def training_summary(metrics):
    """``train``'s closing line."""
    return (f"early-stopping iteration {metrics['early_stop_iteration']:,}, test accuracy there "
            f"{100 * metrics['test_accuracy_at_early_stop']:.2f}%; final test "
            f"{100 * metrics['final_test_accuracy']:.2f}%, final train "
            f"{100 * metrics['final_train_accuracy']:.2f}% ({metrics['wall_time_s']:.0f} s)")


def print_table_header(experiment, executor, folder):
    hp = experiment.hp
    click.echo(f"imp {hp.net} on {hp.dataset}: {experiment.rounds} rounds x {experiment.trials} trial(s), "
               f"{hp.iterations:,} iterations each, on {executor.description}; run folder {folder.root}")
    if experiment.sparse_thresholds is not None:  # fixed in config.json when the run started
        train, evaluation, stack = calibration.as_three(experiment.sparse_thresholds)
        click.echo(f"fully connected layers train on the sparse kernels below density {train:.2f} ({stack:.2f} for "
                   f"a stack such as Lenet), and evaluate on them below {evaluation:.2f} (fixed in config.json when "
                   "the run started: docs/performance-sparse.md)")
    click.echo(("trial " if experiment.trials > 1 else "") + "round |   Pm %  | branch  "
               "early-stop it  test acc there")


def by_round(seconds):
    """Branch times of rounds 0, 1, ... as "0-7 ~1 min 24 s, 8 ~58 s, ...": equal ones together."""
    from .plan import format_duration
    runs, start = [], 0
    for r in range(1, len(seconds) + 1):
        if r == len(seconds) or round(seconds[r]) != round(seconds[start]):
            rounds = str(start) if r - 1 == start else f"{start}-{r - 1}"
            runs.append(f"{rounds} ~{format_duration(seconds[start])}")
            start = r
    return ", ".join(runs)


def print_plan(experiment, folder):
    """``imp --plan``: the jobs, the critical path and the expected wall time (plan.plan)."""
    from . import datasets, plan, threads
    hp = experiment.hp
    if hp.dataset not in datasets.IMAGE_SHAPES:
        raise ValueError(f"unknown dataset {hp.dataset!r}; choose one of {', '.join(datasets.IMAGE_SHAPES)}")
    input_shape = datasets.IMAGE_SHAPES[hp.dataset]
    click.echo(f"imp {hp.net} on {hp.dataset}: {experiment.trials} trial(s) x {experiment.rounds} rounds, "
               f"branches {', '.join(experiment.branches(experiment.rounds))}, {hp.iterations:,} iterations each")
    click.echo(f"timing a training step and an evaluation here, on "
               f"{'its' if plan.on_own_images(experiment) else 'random'} images (other work on the cores skews it) ...",
               err=True)
    expected = plan.plan(experiment, folder, input_shape)
    click.echo(f"jobs: {expected.jobs} ({expected.left} not finished); critical path: "
               f"{expected.critical_path} trainings, one after another")
    click.echo(f"one branch: ~{plan.format_duration(expected.seconds_all_cores[0])} alone on this machine's "
               f"{threads.WORKERS} core(s), ~{plan.format_duration(expected.seconds_one_core[0])} on one core "
               f"with a job on every core")
    for where, seconds, cores in (("alone", expected.seconds_all_cores, threads.WORKERS),
                                  ("on one core", expected.seconds_one_core, 1)):
        if len({round(value) for value in seconds}) > 1:  # sparse rounds train faster
            click.echo(f"a branch {where}, by round: {by_round(seconds)} "
                       f"(timed at rounds {', '.join(map(str, expected.timed[cores]))}, the others between)")
    click.echo("workers  expected wall time   (one worker: every core here; more: one core each)")
    for workers, seconds in expected.wall.items():
        click.echo(f"{workers:>7}  {plan.format_duration(seconds)}")
    floor = sum(expected.seconds_one_core)
    click.echo(f"floor (the critical path on one core per job): {plan.format_duration(floor)}")
