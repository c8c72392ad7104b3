"""Iterative magnitude pruning: the paper's "Identifying winning tickets" and its controls.

    1. Randomly initialize a network f(x; θ₀)            (θ₀ ~ D_θ)
    2. Train it for j iterations, arriving at θ_j.
    3. Prune p% of the weights in θ_j, creating a mask m.
    4. Reset the remaining weights to θ₀: the ticket is f(x; m ⊙ θ₀).

The work is a graph of jobs. A ``Job`` (experiment.py, with the run's settings in
``Experiment``) is one branch of one round of one trial;
``run_job`` trains it from the files of the jobs it needs and writes only its own
branch folder (rundir.py), so nothing crosses rounds in memory and the jobs of a
round can run side by side, on local processes or a cluster (schedule.py):

* round 0 trains the dense network (mask all ones) from θ₀;
* the ticket of round r prunes round r − 1's trained ticket (step 3) and resets to
  θ₀ (step 4) before training (step 2);
* the controls of Section 2 branch off round r's mask rather than forming chains
  of their own, so they need only round r − 1's ticket too:
  ``reinit`` (the same m, fresh weights θ'₀ ~ D_θ from another seed), ``random`` (a
  random mask with m's per-layer counts, reset to θ₀) and ``oneshot`` (the dense
  network of round 0 pruned once, straight to this round's per-layer counts).

So a round's jobs in every trial (the ticket, its controls, one-shot) can run at once,
and the critical path is rounds + 1 trainings. With ``rewind_iteration`` k > 0, resets go to θ_k, the dense
run's weights after k iterations, and training resumes from iteration k (Frankle et
al. 2020). Every random stream of a job depends only on (seed, trial, round,
branch), so the order in which jobs run never changes a result.

Weights (θ₀, θ_k, θ_j) are dicts of arrays by parameter name, like ``net.params``;
a mask m is a ``Mask``, a dict by weight name.
"""
import numpy as np

from . import init_pruning, nets, optim, pruning, rundir
# The run's settings and graph live in experiment.py; imported here so that a reader of
# the paper's four steps finds them under lottery, as before.
from .experiment import BEFORE, CONTROL_CHOICES, DATA_ORDERS, RETRAIN, Experiment, Job  # noqa: F401
from .masks import Mask
from .rundir import BRANCHES, CONTROLS  # the branch names live with the run folder
from .train import Trainer


# ---------------------------------------------------------------------------- one job

def run_job(experiment, folder, job, data, on_eval=None, stop_requested=None):
    """Train one branch from the files of the jobs it needs; return its metrics.

    A finished branch is read back; an interrupted one continues from its checkpoint
    (rundir.BranchFolder.train). Writes only the branch's own folder.
    """
    branch = folder.branch(job)
    if branch.finished():
        return branch.metrics()
    seed = experiment.trial_seed(job.trial)
    net = experiment.build(seed, data.input_shape)
    theta_0 = folder.theta_0(job.trial, net)                            # 1. θ₀ ~ D_θ (the driver drew it)
    mask = round_mask(experiment, folder, job, net)                  # 3. m, from round r − 1's θ_j
    mask, start_weights = branch_start(experiment, folder, job, mask, theta_0, net, data)  # 4. reset to θ₀
    mask = branch.keep_mask(mask, like=net)
    net.set_params(start_weights)
    net.set_mask(mask)                                               # m ⊙ θ₀
    trainer = make_trainer(experiment, job, net, data, data_order_seed(experiment, job))
    rewinding = job == Job(job.trial, 0, "ticket") and experiment.rewind_iteration > 0
    snapshots = {experiment.rewind_iteration} if rewinding else ()
    elapsed = branch.train(trainer, experiment.checkpoint_every, snapshots=snapshots,  # 2. train to θ_j
                           on_eval=on_eval, stop_requested=stop_requested, name=str(job))
    trained = net.snapshot()
    if rewinding:
        branch.save_weights("theta_k", trainer.snapshots[experiment.rewind_iteration])

    metrics = trainer.finish()
    metrics.update(trial=job.trial, round=job.round, branch=job.branch, pm=mask.density(),
                   pm_per_layer=mask.per_layer_density(), wall_time_s=round(elapsed, 1))
    if job.branch == "ticket":
        next_mask = prune(experiment, mask, trained, net.kinds)
        metrics.update(weight_distances(start_weights, trained, mask, next_mask))
    branch.finish(trained, trainer.curve, metrics)
    return metrics


def make_trainer(experiment, job, net, data, order_seed):
    """The trainer of a job's branch: from iteration 0, or k (rewinding, or the rate replayed
    from k), and for a fine-tuned network the rest of the budget at the final rate."""
    trainer = Trainer(net, data, experiment.hp, experiment.trial_seed(job.trial), order_seed=order_seed)
    trainer.iteration = reset_iteration(experiment, job)
    if experiment.retrain == "finetune" and retrained(experiment, job):
        trainer.schedule = optim.Schedule(trainer.schedule(experiment.hp.iterations - 1))
    return trainer


def retrained(experiment, job):
    """Does the branch keep trained weights (``retrain`` lr-rewind or finetune)? The ticket
    and one-shot pruning do; the controls start from θ₀ (or θ'₀), as in the paper."""
    return experiment.retrain != "weight-rewind" and job.round > 0 and job.branch in ("ticket", "oneshot")


def round_mask(experiment, folder, job, net):
    """The ticket's mask at the job's round: all ones at round 0, else step 3 applied to
    the weights that round r − 1's ticket was trained to. ``net`` gives names and shapes."""
    if job.round == 0:
        return Mask.ones_like(net)
    if experiment.transfer_from:  # the source's ticket of this round, as it was found
        return rundir.RunFolder(experiment.transfer_from).branch_at(job.trial, job.round, "ticket").mask(like=net)
    previous = folder.branch(Job(job.trial, job.round - 1, "ticket"))
    return prune(experiment, previous.mask(like=net), previous.weights("final", net), net.kinds)


def branch_start(experiment, folder, job, mask, theta_0, net, data):
    """The mask and the weights a branch starts from: m and θ₀ (or θ_k) for the ticket,
    the variants of Section 2 and pruning at initialisation for the controls."""
    reset = reset_weights(experiment, folder, job, theta_0, net)
    unpruned, global_pruning = unpruned_weights(experiment, net.kinds), experiment.hp.pruning == "global"
    if job.branch == "ticket":
        return mask, reset
    if job.branch == "reinit":  # the same mask, θ'₀ ~ D_θ with another seed
        fresh = experiment.build(reinit_seed(experiment, job), net.input_shape)
        return mask, fresh.snapshot()
    if job.branch == "random":  # the same per-layer counts at random positions, θ₀
        rng = np.random.default_rng([experiment.trial_seed(job.trial), job.round, CONTROLS.index("random")])
        return pruning.random_like(mask, rng), reset
    if job.branch == "snip":  # |g ⊙ θ₀| on one minibatch of the trial's, without dropout
        scorer = nets.build(experiment.hp.net, seed=0, input_shape=net.input_shape, sparse="off")
        scorer.set_params(theta_0)
        rng = np.random.default_rng([experiment.trial_seed(job.trial), BRANCHES.index("snip")])
        batch = rng.choice(len(data.x_train), experiment.hp.batch_size, replace=False)
        return init_pruning.snip(scorer, data.x_train[batch], data.y_train[batch], mask, unpruned,
                                 global_pruning), reset
    if job.branch == "synflow":  # |∂R/∂θ ⊙ θ| at θ₀, no data, 100 steps
        return init_pruning.synflow(experiment.hp.net, theta_0, mask, unpruned, global_pruning,
                                    input_shape=net.input_shape), reset
    # one-shot: the trained dense network of round 0 pruned once, to this round's counts
    dense = folder.branch(Job(job.trial, 0, "ticket")).weights("final", net)
    return pruning.keep_counts({n: np.abs(dense[n]) for n in mask}, mask, unpruned, global_pruning), reset


def reset_weights(experiment, folder, job, theta_0, net):
    """θ₀ (the paper), or θ_k when rewinding, for rounds after the dense one. A retrained
    ticket keeps the weights round r − 1's ticket was trained to; one-shot, the dense net's."""
    if job.round == 0:
        return theta_0
    if retrained(experiment, job):
        source = Job(job.trial, job.round - 1 if job.branch == "ticket" else 0, "ticket")
        return folder.branch(source).weights("final", net)
    if experiment.rewind_iteration == 0 or experiment.retrain != "weight-rewind":
        return theta_0
    return folder.branch(Job(job.trial, 0, "ticket")).weights("theta_k", net)


def reset_iteration(experiment, job):
    """Where training starts: 0, or k when rewinding to θ_k (or replaying the rate from k)."""
    if job.round == 0 or (experiment.retrain != "weight-rewind" and not retrained(experiment, job)):
        return 0
    return experiment.rewind_iteration


def data_order_seed(experiment, job):
    """The seed of a branch's minibatch order: the trial's (every branch of a trial sees the
    same sequence, so their validation curves dip at the same iterations), or the branch's own."""
    if experiment.data_order == "trial":
        return [experiment.trial_seed(job.trial), 7]
    return [experiment.trial_seed(job.trial), 7, job.round, BRANCHES.index(job.branch)]


def reinit_seed(experiment, job):
    """A seed for θ'₀ that no trial's θ₀ uses (those are seed + trial)."""
    return 1_000_003 * (job.round + 1) + experiment.trial_seed(job.trial)


def prune(experiment, mask, trained, kinds):
    """Step 3: drop the smallest-magnitude weights of θ_j, layer by layer or globally.
    ``kinds`` tells each weight's kind (conv, fc, output, shortcut), as ``net.kinds``."""
    weights = {name: trained[name] for name in mask}
    if experiment.hp.pruning == "global":
        return pruning.prune_global(mask, weights, global_rate(experiment, kinds), unpruned_weights(experiment, kinds))
    return pruning.prune_layerwise(mask, weights, layer_rates(experiment, kinds))


def global_rate(experiment, kinds):
    """Global pruning's one rate for the whole network: the largest of its kinds' rates
    (conv 20% for Resnet-18 and VGG-19; fc 20% for a globally pruned Lenet)."""
    return max(experiment.hp.rate(kind) for kind in set(kinds.values()))


def layer_rates(experiment, kinds):
    """The fraction p each round removes of each layer's remaining weights: its kind's rate,
    or under global pruning the one rate (which falls on each layer as its magnitudes decide;
    this is its share on average). Unpruned layers: 0."""
    if experiment.hp.pruning == "global":
        rate, unpruned = global_rate(experiment, kinds), unpruned_weights(experiment, kinds)
        return {name: 0.0 if name in unpruned else rate for name in kinds}
    return {name: experiment.hp.rate(kind) for name, kind in kinds.items()}


def unpruned_weights(experiment, kinds):
    return [name for name, kind in kinds.items() if kind in experiment.hp.unpruned]


def weight_distances(theta_0, theta_j, mask, next_mask):
    """The Discussion's measure: mean |θ_j − θ₀| of the weights the next round keeps,
    and of those it prunes (None where there are none)."""
    kept, pruned = [], []
    for name in mask:
        moved = np.abs(theta_j[name] - theta_0[name])
        kept.append(moved[next_mask[name] == 1])
        pruned.append(moved[(mask[name] == 1) & (next_mask[name] == 0)])
    kept, pruned = np.concatenate(kept), np.concatenate(pruned)
    return {"distance_kept": float(kept.mean()) if kept.size else None,
            "distance_pruned": float(pruned.mean()) if pruned.size else None}
