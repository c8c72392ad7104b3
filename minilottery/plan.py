"""How long a run takes: the schedule of its job graph on a number of workers, and ``--plan``.

``makespan`` runs the driver's rule (ready jobs in priority order, as soon as a worker
is free) on estimated durations; the driver uses it for the time left, ``plan`` for the
expected wall time of a whole run from a short timing of a training step here.
"""
import heapq
import os
import statistics
import time
from dataclasses import dataclass

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
    seconds_all_cores: float  # one branch, one job at a time on every core of this machine
    seconds_one_core: float  # one branch, one job per core, a job on every core
    wall: dict  # workers -> seconds


# Seconds from handing the side-by-side timings to their processes until they start timing
# together: a spawned worker imports minilottery, loads its kernels and MNIST, and warms up in ~4 s here.
START_AFTER = 8.0


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


def side_by_side_branch(experiment, input_shape, budget, own_images, start_at):
    """One core's branch time, in a worker process of one core, from ``start_at`` on: the
    other workers time theirs at the same moment, as the run's jobs share the machine."""
    from . import bench
    data = timing_data(experiment, own_images)
    seconds, _ = bench.branch_seconds(experiment.hp, input_shape, budget, experiment.sparse, data, start_at=start_at)
    return seconds, os.getpid()


def one_core_side_by_side(experiment, input_shape, budget, own_images, cores):
    """The branch time of a job on one core while a job runs on every other core too, timed
    in ``cores`` worker processes at once (on one core beside idle ones, Lenet's main job
    ran 1.1-1.3x slower than timed). Returns [(seconds, worker pid)]."""
    from .executors import Processes
    workers = Processes(cores, 1)
    try:
        start_at = time.time() + START_AFTER
        futures = [workers.submit(side_by_side_branch, experiment, input_shape, budget, own_images, start_at)
                   for _ in range(cores)]
        timed = [future.result() for future in futures]
    except BaseException:  # Ctrl-C, or a worker that failed: nothing to wait for
        workers.shutdown(force=True)
        raise
    workers.shutdown()
    return timed


def plan(experiment, folder, input_shape, workers=PLAN_WORKERS, budget=4.0):
    """Time a training step and an evaluation here (``on_own_images``), then schedule the
    unfinished jobs on 1, 2, 8, 32 and 128 workers. One worker gets every core of this
    machine; more workers get one core each, as on a cluster of machines like this one,
    timed with a job on every core."""
    from . import bench
    jobs = experiment.jobs()
    left = [job for job in jobs if not folder.branch(job).finished()]
    done = set(jobs) - set(left)
    cores = threads.WORKERS
    own_images = on_own_images(experiment)
    data = timing_data(experiment, own_images)
    seconds = {cores: bench.branch_seconds(experiment.hp, input_shape, budget, experiment.sparse, data)[0]}
    if cores > 1:
        timed = one_core_side_by_side(experiment, input_shape, budget, own_images, cores)
        seconds[1] = statistics.median(branch for branch, _ in timed)
    wall = {}
    for count in workers:
        per_job = seconds[cores] if count == 1 else seconds[1]
        wall[count] = makespan(left, count, lambda job: per_job, done=done)
    return Plan(len(jobs), len(left), critical_path(experiment), seconds[cores], seconds[1], wall)


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
