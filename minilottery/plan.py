"""How long a run takes: the schedule of its job graph on a number of workers, and ``--plan``.

``makespan`` runs the driver's rule (ready jobs in priority order, as soon as a worker
is free) on estimated durations; the driver uses it for the time left, ``plan`` for the
expected wall time of a whole run from a short timing of a training step here.
"""
import heapq
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
    seconds_one_core: float  # one branch, one job per core
    wall: dict  # workers -> seconds


def plan(experiment, folder, input_shape, workers=PLAN_WORKERS, budget=2.0, data=None):
    """Time a training step and an evaluation here (on ``data``, the run's dataset, when given;
    else on random images of ``input_shape``), then schedule the unfinished jobs on 1, 2, 8,
    32 and 128 workers. One worker gets every core of this machine; more workers get one
    core each, as on a cluster of machines like this one."""
    from . import bench
    jobs = experiment.jobs()
    left = [job for job in jobs if not folder.branch(job).finished()]
    done = set(jobs) - set(left)
    cores = threads.WORKERS
    seconds = {}
    for count in sorted({cores, 1}, reverse=True):
        threads.use_cores(count)
        seconds[count], _ = bench.branch_seconds(experiment.hp, input_shape, budget, experiment.sparse, data)
    threads.use_cores(cores)
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
