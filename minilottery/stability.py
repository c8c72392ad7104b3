"""Instability analysis (Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and
the Lottery Ticket Hypothesis", ICML 2020): how far into training a ticket must be
before the rest of its training no longer depends on the data order.

For the winning ticket of one round of an imp run, and each iteration k:

1. train the ticket from its start (m ⊙ θ₀, as its round did, on the same data
   order) to iteration k, giving W_k and the optimizer's state there;
2. train two copies of W_k to the end of the budget, each on a data order (and
   dropout and augmentation noise) of its own, giving W_T¹ and W_T²;
3. evaluate the test error at 11 evenly spaced points on the line between them,
   m ⊙ ((1 − α) W_T¹ + α W_T²) for α = 0, 0.1, ..., 1 (batch norm's running
   statistics are interpolated alike).

The *instability* is the largest error on the path minus the mean error of its two
ends. The paper calls a network stable when its instability is below 2%, and finds
that IMP finds winning tickets at the sparsities where the network is stable: from
k = 0 for Lenet, only from a k early in training for larger networks. Round 0 (the
dense network) tells the earliest k from which ``imp --rewind-iteration`` can work;
a later round tells whether that round's ticket is stable.

Files, beside the run's own: RUN/stability/trialT/roundRR/kK/start.npz (W_k),
copy1/ and copy2/ (each a branch folder with checkpoint, final state, curve and
metrics, so that a stopped analysis resumes), and path.json (the errors along the path).
"""
from pathlib import Path

import numpy as np

from . import files, lottery, rundir, threads
from .masks import Mask
from .train import evaluate

ALPHAS = np.linspace(0, 1, 11)
STABLE = 0.02  # the paper's threshold on instability
COPY_ORDER = 101  # in the seed of a copy's data order, beside the trial's seed, k and the copy


def folder_of(root, trial, round_index, k):
    return Path(root) / "stability" / f"trial{trial}" / f"round{round_index:02d}" / f"k{k}"


def check(experiment, run, trial, round_index, ks):
    """One-line errors for a question the run cannot answer."""
    ticket = run.branch_at(trial, round_index, "ticket")
    if not ticket.finished():
        raise ValueError(f"{run.root}: the ticket of trial {trial} round {round_index} has not finished; "
                         "run imp to that round first, or choose another --round / --trial")
    first = lottery.reset_iteration(experiment, lottery.Job(trial, round_index, "ticket"))
    for k in ks:
        if not first <= k < experiment.hp.iterations:
            raise ValueError(f"k = {k} must be between {first} (where the ticket's training starts) and "
                             f"the budget of {experiment.hp.iterations:,} iterations")


def start(experiment, run, trial, round_index, k, data):
    """W_k: the ticket of ``round_index`` trained from its start to iteration k, on its own
    data order and schedule, with its optimizer's state (and batch norm's statistics); kept
    in start.npz."""
    path = folder_of(run.root, trial, round_index, k) / "start.npz"
    if path.exists():
        return files.read_npz(path)
    job = lottery.Job(trial, round_index, "ticket")
    net = experiment.build(experiment.trial_seed(trial), data.input_shape)
    net.set_params(lottery.reset_weights(experiment, run, job, run.theta_0(trial, net), net))
    net.set_mask(run.branch(job).mask(like=net))
    trainer = lottery.make_trainer(experiment, job, net, data, lottery.data_order_seed(experiment, job))
    trainer.run(until=k)
    state = {f"net.{key}": value for key, value in net.state().items()}
    state.update({f"optimizer.{key}": value for key, value in trainer.optimizer.state().items()})
    files.write_npz(path, state)
    return state


def train_copy(root, trial, round_index, k, copy, job_threads=None, data=None):
    """Copy 1 or 2 of W_k trained to the end on its own data order; returns its metrics.
    Runs anywhere that sees the run folder (a local worker process, or this one)."""
    from . import schedule
    run = rundir.RunFolder(root)
    experiment = lottery.Experiment.from_config(run.config(), run.root / "config.json")
    if job_threads:
        threads.use_cores(job_threads)
    data = data or schedule.dataset(experiment.hp.dataset, experiment.data_dir)
    branch = rundir.BranchFolder(folder_of(root, trial, round_index, k) / f"copy{copy}")
    if branch.finished():
        return branch.metrics()
    seed, job = experiment.trial_seed(trial), lottery.Job(trial, round_index, "ticket")
    net = experiment.build(seed, data.input_shape)
    trainer = lottery.make_trainer(experiment, job, net, data, [seed, 7, COPY_ORDER, k, copy])
    start_state = files.read_npz(folder_of(root, trial, round_index, k) / "start.npz")
    net.load_state({key[4:]: value for key, value in start_state.items() if key.startswith("net.")})
    trainer.optimizer.load_state({key[10:]: v for key, v in start_state.items() if key.startswith("optimizer.")})
    trainer.iteration = k
    for rng, stream in ((net.dropout_rng, 1), (trainer.augment_rng, 11)):  # each copy its own noise too
        rng.bit_generator.state = np.random.default_rng([seed, stream, COPY_ORDER, k, copy]).bit_generator.state
    branch.train(trainer, experiment.checkpoint_every, name=f"stability k={k} copy {copy}",
                 stop_requested=lambda: schedule.stop_signalled())  # Ctrl-C reached a worker process
    files.write_npz(branch.path / "state.npz", net.state())
    metrics = {**trainer.finish(), "trial": trial, "round": round_index, "branch": f"copy{copy}",
               "pm": Mask({n: net.masks[n] for n in net.masks}).density(), "k": k}
    branch.finish(net.snapshot(), trainer.curve, metrics)
    return metrics


def path_errors(experiment, root, trial, round_index, k, data):
    """Test error at each α on the line between the two copies, and the instability."""
    place = folder_of(root, trial, round_index, k)
    ends = [files.read_npz(place / f"copy{copy}" / "state.npz") for copy in (1, 2)]
    net = experiment.build(experiment.trial_seed(trial), data.input_shape)
    errors = []
    for alpha in ALPHAS:
        state = {key: ((1 - alpha) * ends[0][key] + alpha * ends[1][key]).astype(ends[0][key].dtype)
                 for key in ends[0]}
        state["flat_mask"] = ends[0]["flat_mask"]
        net.load_state(state)
        errors.append(1 - evaluate(net, data.x_test, data.y_test)[1])
    result = {"k": k, "alpha": ALPHAS.tolist(), "test_error": errors,
              "instability": max(errors) - (errors[0] + errors[-1]) / 2}
    files.write_json(place / "path.json", result)
    return result


def results(root, trial, round_index):
    """Every finished k of one round's analysis, by k (path.json's contents)."""
    found = {}
    for path in (Path(root) / "stability" / f"trial{trial}" / f"round{round_index:02d}").glob("k*/path.json"):
        result = files.read_json(path)
        if not isinstance(result, dict) or not {"k", "test_error", "instability"} <= set(result):
            raise files.RunFileError(f"{path}: damaged; delete it and run stability again to recompute it")
        found[int(result["k"])] = result
    return dict(sorted(found.items()))


def analyse(root, trial, round_index, ks, executor, data, job_threads=None, on_line=print):
    """Steps 1-3 for every k, copies side by side on ``executor``; returns ``results``."""
    run = rundir.RunFolder(root)
    experiment = lottery.Experiment.from_config(run.config(), run.root / "config.json")
    check(experiment, run, trial, round_index, ks)
    lock = rundir.RunFolder(Path(root) / "stability")
    lock.lock()
    futures = {}
    for k in ks:
        start(experiment, run, trial, round_index, k, data)
        for copy in (1, 2):
            in_process = {"data": data} if getattr(executor, "in_process", False) else {}
            futures[(k, copy)] = executor.submit(train_copy, str(root), trial, round_index, k, copy,
                                                 job_threads, **in_process)
    for (k, copy), future in futures.items():
        metrics = future.result()
        on_line(f"k = {k:,}, copy {copy}: test accuracy {100 * metrics['final_test_accuracy']:.2f}% at the end")
    for k in ks:
        result = path_errors(experiment, root, trial, round_index, k, data)
        verdict = "stable" if result["instability"] < STABLE else "unstable"
        on_line(f"k = {k:,}: instability {100 * result['instability']:.2f}% ({verdict}); test error "
                f"{100 * result['test_error'][0]:.2f}% and {100 * result['test_error'][-1]:.2f}% at the ends, "
                f"{100 * max(result['test_error']):.2f}% at worst")
    return results(root, trial, round_index)
