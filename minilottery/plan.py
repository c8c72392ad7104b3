"""How long a run takes: the schedule of its job graph on a number of workers, and ``--plan``.

``makespan`` runs the driver's rule (ready jobs in priority order, as soon as a worker
is free) on estimated durations; the driver uses it for the time left, ``plan`` for the
expected wall time of a whole run from short timings of a branch here: one for each engine
its rounds train on (BLAS on the masked weights, sparse layers, a sparse stack), since
IMP's later rounds keep fewer weights and may train on the sparse kernels in less time.
"""
import heapq
import os
import statistics
import time
from dataclasses import dataclass, replace

from . import lottery, threads


def makespan(jobs, workers, duration, done=(), running=None):
    """Wall time to run ``jobs`` on ``workers``, each job taking ``duration(job)`` seconds,
    taking ready jobs in priority order as the driver does. ``done``: jobs already
    finished; ``running``: job -> seconds it still needs."""
    running = dict(running or {})
    finished = set(done)
    waiting = sorted(jobs, key=lottery.Job.priority)
    events = [(left, job.priority(), job) for job, left in running.items()]
    heapq.heapify(events)
    now, free = 0.0, workers - len(events)
    while waiting or events:
        ready = [job for job in waiting if all(n in finished for n in job.needs())]
        for job in ready[:max(free, 0)]:
            waiting.remove(job)
            heapq.heappush(events, (now + duration(job), job.priority(), job))
            free -= 1
        if not events:
            raise ValueError("jobs wait for jobs that are not in the plan")
        now, _, job = heapq.heappop(events)
        finished.add(job)
        free += 1
    return now


def critical_path(experiment):
    """The longest chain of trainings that must run one after another: rounds + 1."""
    return experiment.rounds + 1


PLAN_WORKERS = (1, 2, 8, 32, 128)


@dataclass
class Plan:
    """What ``imp --plan`` prints: the work, the critical path, and the wall time per worker count."""
    jobs: int
    left: int
    critical_path: int
    seconds_all_cores: list  # a branch of each round, one job at a time on every core of this machine
    seconds_one_core: list  # a branch of each round, one job per core, a job on every core
    timed: dict  # cores -> the rounds timed for that many cores a job, the others estimated from them
    wall: dict  # workers -> seconds


# Seconds from handing the side-by-side timings to their processes until they start timing
# together: a spawned worker imports minilottery, loads its kernels and MNIST, and warms up in ~4 s here.
START_AFTER = 8.0
# Seconds between the starts of one worker's timings, one round after another: a timing takes
# its budget, and building the next round's network and mask takes under a second.
NEXT_AFTER = 2.0


def round_densities(experiment, net):
    """Every round's fraction of each prunable weight that it keeps: n <- n - round(p n) per
    round (pruning.counts_after) with each layer's p (lottery.layer_rates; global pruning's
    one rate spread over the pruned layers evenly, as how it falls on each is known only once
    they are trained)."""
    from . import pruning
    rates = lottery.layer_rates(experiment, net.kinds)
    sizes = {name: mask.size for name, mask in net.masks.items()}
    return [{name: kept / sizes[name] for name, kept in pruning.counts_after(sizes, rates, r).items()}
            for r in range(experiment.rounds + 1)]


def engine(net, densities):
    """What trains a round at ``densities`` (sparse.py decides): each sparse layer and whether it
    evaluates through BLAS, and whether the layers train together as a stack in stretches. A
    round on BLAS costs the same at any density; a sparse one, less the fewer weights it keeps."""
    from . import bench
    net.set_mask(bench.random_mask(net, densities))
    return (tuple((name, leaf.sparse.blas_evaluation) for name, leaf in net.leaves
                  if getattr(leaf, "sparse", None) is not None), net.sparse_stack is not None)


@dataclass
class Rounds:
    """The rounds of a run as a plan sees them, for one setting of the sparse thresholds."""
    densities: list  # each round's fraction kept of each prunable weight (round_densities)
    kept: list  # each round's fraction kept of all prunable weights together (its Pm)
    engines: list  # each round's engine
    timed: list  # the rounds whose branch a plan times


def rounds_to_time(experiment, input_shape):
    """The rounds whose branch a plan times, for ``experiment``'s sparse thresholds: the first
    round of each engine, and the last one too where the engine is sparse. The main job's
    rounds 8-10 train as a sparse stack in 49-67 s a branch, rounds 0-7 dense in 87-130 s:
    timed dense alone, its plan came out 17% long."""
    net = experiment.build(0, input_shape)
    densities = round_densities(experiment, net)
    total = sum(mask.size for mask in net.masks.values())
    kept = [sum(density * net.masks[name].size for name, density in round_kept.items()) / total
            for round_kept in densities]
    engines = [engine(net, round_kept) for round_kept in densities]
    first = [r == 0 or engines[r] != engines[r - 1] for r in range(len(engines))]
    last = [r + 1 == len(engines) or engines[r] != engines[r + 1] for r in range(len(engines))]
    sparse = [bool(layers) for layers, _ in engines]
    timed = [r for r in range(len(engines)) if first[r] or (last[r] and sparse[r])]
    return Rounds(densities, kept, engines, timed)


def every_round(rounds, seconds):
    """Each round's branch time from ``seconds``, those of ``rounds.timed``: a round between two
    timed rounds of its engine on the straight line between them in the weights kept (a sparse
    kernel's work grows with them), else the time of its engine's first round."""
    times = []
    for r, this in enumerate(rounds.engines):
        same = [t for t in rounds.timed if rounds.engines[t] == this]
        before = max(t for t in same if t <= r)  # the engine's first round is timed
        after = min([t for t in same if t >= r], default=before)
        if rounds.kept[after] == rounds.kept[before]:
            times.append(seconds[before])
        else:
            share = (rounds.kept[r] - rounds.kept[before]) / (rounds.kept[after] - rounds.kept[before])
            times.append(seconds[before] + share * (seconds[after] - seconds[before]))
    return times


def on_own_images(experiment):
    """Whether a plan times the run on its own images: MNIST's, which ship with minilottery (or
    are in --data-dir) and whose zeros Lenet's first layer skips, so random ones would
    overstate its time (the main job: 17 min 39 s planned, 13 min 05 s run). Other datasets
    are timed on random images of their shape, and neither loaded nor downloaded for a plan."""
    return experiment.hp.dataset == "mnist"


def timing_data(experiment, own_images):
    """The run's dataset, loaded once per process as its jobs load it, or None (random images)."""
    from .schedule import dataset
    return dataset(experiment.hp.dataset, experiment.data_dir) if own_images else None


def branches_seconds(experiment, input_shape, budget, data, rounds, start_at=None):
    """The branch time of each of ``rounds`` (their densities), timed one after another in this
    process, each from ``start_at`` + NEXT_AFTER + its budget later than the one before."""
    from . import bench
    seconds = []
    for index, densities in enumerate(rounds):
        begin = None if start_at is None else start_at + index * (budget + NEXT_AFTER)
        seconds.append(bench.branch_seconds(experiment.hp, input_shape, budget, experiment.sparse, data,
                                            start_at=begin, densities=densities,
                                            thresholds=experiment.sparse_thresholds)[0])
    return seconds


def side_by_side_branch(experiment, input_shape, budget, own_images, start_at, rounds):
    """One core's branch times, in a worker process of one core, from ``start_at`` on: the
    other workers time theirs at the same moments, as the run's jobs share the machine."""
    data = timing_data(experiment, own_images)
    return branches_seconds(experiment, input_shape, budget, data, rounds, start_at), os.getpid()


def one_core_side_by_side(experiment, input_shape, budget, own_images, cores, rounds):
    """The branch time of a job on one core while a job runs on every other core too, timed
    in ``cores`` worker processes at once (on one core beside idle ones, Lenet's main job
    ran 1.1-1.3x slower than timed), for each of ``rounds`` (densities; None: dense).
    Returns [(seconds of each round, worker pid)]."""
    from .executors import Processes
    workers = Processes(cores, 1)
    try:
        start_at = time.time() + START_AFTER
        futures = [workers.submit(side_by_side_branch, experiment, input_shape, budget, own_images, start_at,
                                  list(rounds)) for _ in range(cores)]
        timed = [future.result() for future in futures]
    except BaseException:  # Ctrl-C, or a worker that failed: nothing to wait for
        workers.shutdown(force=True)
        raise
    workers.shutdown()
    return timed


def with_thresholds(experiment, folder, cores):
    """A copy of ``experiment`` with the sparse thresholds its jobs would have on ``cores`` cores each."""
    started = folder.config() if (folder.root / "config.json").exists() else None
    return replace(experiment).settle_sparse_thresholds(started, cores)


def plan(experiment, folder, input_shape, workers=PLAN_WORKERS, budget=4.0):
    """Time a branch here (``on_own_images``) at the rounds where what trains it changes
    (``rounds_to_time``), then schedule the unfinished jobs on 1, 2, 8, 32 and 128 workers. One
    worker gets every core of this machine; more workers get one core each, as on a cluster of
    machines like this one, timed with a job on every core."""
    jobs = experiment.jobs()
    left = [job for job in jobs if not folder.branch(job).finished()]
    done = set(jobs) - set(left)
    cores = threads.WORKERS
    own_images = on_own_images(experiment)
    per_round, timed = {}, {}
    for job_cores in sorted({cores, 1}, reverse=True):
        settled = with_thresholds(experiment, folder, job_cores)
        rounds = rounds_to_time(settled, input_shape)
        timed[job_cores] = rounds.timed
        densities = [rounds.densities[r] for r in rounds.timed]
        if job_cores == cores:
            seconds = branches_seconds(settled, input_shape, budget, timing_data(experiment, own_images), densities)
        else:
            side_by_side = one_core_side_by_side(settled, input_shape, budget, own_images, cores, densities)
            seconds = [statistics.median(column) for column in zip(*(times for times, _ in side_by_side))]
        per_round[job_cores] = every_round(rounds, dict(zip(rounds.timed, seconds)))
    wall = {}
    for count in workers:
        seconds = per_round[cores] if count == 1 else per_round[1]
        wall[count] = makespan(left, count, lambda job: seconds[job.round], done=done)
    return Plan(len(jobs), len(left), critical_path(experiment), per_round[cores], per_round[1], timed, wall)


def format_duration(seconds):
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s"
