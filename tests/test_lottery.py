"""The IMP loop, resets, controls and the resumable run folder (Sections 1-2)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from minilottery import executors, files, hparams, lottery, nets, rundir, schedule, train


def tiny(**changes):
    return hparams.Hyperparameters(**{"iterations": 0, "eval_every": 50, **changes})


def run(tmp_path, mnist, hp, name="run", **options):
    experiment = lottery.Experiment(hp, **{"rounds": 2, "controls": ("reinit", "random"), **options}).validate()
    folder = rundir.RunFolder(tmp_path / name)
    folder.start(experiment.config())
    schedule.Driver(experiment, folder, executors.Inline(), mnist).run()
    return folder


def branch(folder, trial, round_index, name):
    return folder.branch(lottery.Job(trial, round_index, name))


def weights(folder, trial, round_index, name, weight):
    return branch(folder, trial, round_index, name).weights("final")[weight]


def mask_of(folder, trial, round_index, name):
    return branch(folder, trial, round_index, name).mask()


def test_resets_and_controls(tmp_path, mnist):
    """With a budget of 0 iterations, each branch's final weights are its reset weights."""
    folder = run(tmp_path, mnist, tiny(), oneshot=True)
    theta_0 = nets.build("lenet", seed=0)
    for r in (1, 2):
        ticket_mask, reinit_mask, random_mask = (mask_of(folder, 0, r, b) for b in ("ticket", "reinit", "random"))
        for name in ticket_mask:
            # the winning ticket is m ⊙ θ₀
            np.testing.assert_array_equal(weights(folder, 0, r, "ticket", name), theta_0.params[name] * ticket_mask[name])
            # reinitialisation: the same mask, other weights
            np.testing.assert_array_equal(reinit_mask[name], ticket_mask[name])
            reinit = weights(folder, 0, r, "reinit", name)
            assert np.all(reinit[ticket_mask[name] == 0] == 0)
            kept = ticket_mask[name] == 1
            assert not np.allclose(reinit[kept], theta_0.params[name][kept])
            # random pruning: same count, other positions, reset to θ₀
            assert random_mask.kept(name) == ticket_mask.kept(name)
            assert not np.array_equal(random_mask[name], ticket_mask[name])
            np.testing.assert_array_equal(weights(folder, 0, r, "random", name), theta_0.params[name] * random_mask[name])
        assert mask_of(folder, 0, r, "oneshot").kept() == ticket_mask.kept()
    assert not (folder.root / "trial0" / "round00" / "random").exists()  # identical to the dense ticket
    rows = files.read_csv(folder.root / "summary.csv")
    assert [(r["round"], r["branch"]) for r in rows][:4] == [("0", "ticket"), ("0", "reinit"), ("1", "ticket"),
                                                             ("1", "reinit")]


def test_pruned_weights_stay_zero_through_training_and_never_revive(tmp_path, mnist):
    folder = run(tmp_path, mnist, tiny(iterations=100), controls=())
    previous = None
    for r in range(3):
        mask = mask_of(folder, 0, r, "ticket")
        for name in mask:
            trained = weights(folder, 0, r, "ticket", name)
            assert np.all(trained[mask[name] == 0] == 0)
            assert np.count_nonzero(trained[mask[name] == 1]) == mask.kept(name)
            if previous is not None:
                assert np.all(mask[name] <= previous[name])
        previous = mask
    metrics = branch(folder, 0, 1, "ticket").metrics()
    assert metrics["pm"] == pytest.approx(mask_of(folder, 0, 1, "ticket").density())
    assert metrics["distance_kept"] > 0 and metrics["distance_pruned"] > 0
    assert set(metrics["pm_per_layer"]) == {"fc1.weight", "fc2.weight", "fc3.weight"}


def test_rewinding_resets_to_theta_k(tmp_path, mnist):
    folder = run(tmp_path, mnist, tiny(iterations=100), rounds=1, controls=(), rewind_iteration=50)
    dense = train.Trainer(nets.build("lenet", seed=0), mnist, tiny(iterations=100), seed=0).run(until=50)
    theta_k = branch(folder, 0, 0, "ticket").weights("theta_k")
    for name, value in dense.net.params.items():
        np.testing.assert_array_equal(theta_k[name], value)
    curve = json.loads((branch(folder, 0, 1, "ticket").path / "curve.json").read_text())
    assert curve["iteration"] == [50, 100]  # training resumes from iteration k


def test_trials_use_different_seeds(tmp_path, mnist):
    folder = run(tmp_path, mnist, tiny(), rounds=0, controls=(), trials=2)
    a, b = folder.theta_0(0), folder.theta_0(1)
    assert not np.array_equal(a["fc1.weight"], b["fc1.weight"])


IMP = [sys.executable, "cli.py", "imp", "--rounds", "1", "--iterations", "400", "--eval-every", "50",
       "--checkpoint-every", "100", "--workers", "1", "--quiet"]  # IMP[:-1]: with the progress line


def test_a_killed_run_resumes_to_identical_numbers(tmp_path, small_mnist):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    imp = IMP + ["--data-dir", str(small_mnist)]
    whole = subprocess.run(imp + ["--out", str(tmp_path / "whole")], env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    process = subprocess.Popen(imp + ["--out", str(tmp_path / "killed")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "trial0" / "round01" / "ticket" / "checkpoint.npz"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.kill()
    process.wait()
    assert checkpoint.exists(), "the run never reached a checkpoint in round 1"
    assert not (tmp_path / "killed" / "trial0" / "round01" / "ticket" / "metrics.json").exists()
    resumed = subprocess.run(imp + ["--out", str(tmp_path / "killed")], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "whole" / "summary.csv").read_text().count("\n") == 5
    strip = [c for c in rundir.SUMMARY_COLUMNS if c != "wall_time_s"]
    rows = [[{k: r[k] for k in strip} for r in files.read_csv(tmp_path / d / "summary.csv")] for d in ("whole", "killed")]
    assert rows[0] == rows[1]
    for branch in ("ticket", "reinit"):
        final = [rundir.read_weights(tmp_path / d / "trial0" / "round01" / branch / "final.npz")
                 for d in ("whole", "killed")]
        for name in final[0]:
            np.testing.assert_array_equal(final[0][name], final[1][name])


def test_ctrl_c_stops_at_a_safe_point_and_says_how_to_resume(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen(IMP[:-1] + ["--iterations", "5000", "--out", str(tmp_path / "run")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    theta_0 = tmp_path / "run" / "trial0" / "theta0.npz"
    deadline = time.time() + 60
    while not theta_0.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "resume with: python cli.py imp --resume" in err and "Traceback" not in err
    assert (tmp_path / "run" / "trial0" / "round00" / "ticket" / "checkpoint.npz").exists()


def invoke(*arguments):
    return CliRunner().invoke(cli.main, ["imp", "--quiet", *arguments])


@pytest.mark.parametrize("arguments, message", [
    (["--rate-fc", "0"], "--rate-fc must be between 0 and 1"),
    (["--rate-fc", "1"], "--rate-fc must be between 0 and 1"),
    (["--rate-output", "-0.1"], "--rate-output must be between 0 and 1"),
    (["--rounds", "-1"], "rounds must be >= 0"),
    (["--iterations", "100", "--rewind-iteration", "200"], "rewind iteration 200 must be between 0 and"),
    (["--trials", "0"], "trials must be >= 1"),
    (["--net", "resnet50"], "Invalid value for '--net'"),
])
def test_bad_input_is_one_line(tmp_path, arguments, message):
    result = invoke("--out", str(tmp_path / "run"), *arguments)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_resuming_with_other_hyperparameters_is_refused(tmp_path):
    assert invoke("--rounds", "0", "--iterations", "20", "--out", str(tmp_path)).exit_code == 0
    before = (tmp_path / "summary.csv").read_text()
    result = invoke("--rounds", "0", "--iterations", "20", "--lr", "0.01", "--out", str(tmp_path))
    assert result.exit_code == 1 and "started with different settings (lr: 0.0012 then, 0.01 now" in result.output
    assert (tmp_path / "summary.csv").read_text() == before


def test_more_rounds_extend_a_finished_run(tmp_path):
    assert invoke("--rounds", "0", "--iterations", "20", "--out", str(tmp_path)).exit_code == 0
    result = invoke("--rounds", "1", "--iterations", "20", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert len(files.read_csv(tmp_path / "summary.csv")) == 4


def test_a_corrupt_mask_file_is_one_line_and_results_stay(tmp_path):
    assert invoke("--rounds", "1", "--iterations", "20", "--controls", "none", "--out", str(tmp_path)).exit_code == 0
    branch = tmp_path / "trial0" / "round01" / "ticket"
    (branch / "metrics.json").unlink()
    (branch / "mask.npz").write_bytes(b"garbage")
    final_round0 = (tmp_path / "trial0" / "round00" / "ticket" / "final.npz").read_bytes()
    result = invoke("--rounds", "1", "--iterations", "20", "--controls", "none", "--out", str(tmp_path))
    assert result.exit_code == 1 and "mask.npz: damaged NPZ file" in result.output
    assert (tmp_path / "trial0" / "round00" / "ticket" / "final.npz").read_bytes() == final_round0


def test_a_second_process_on_the_same_folder_is_refused(tmp_path):
    code = (f"from minilottery import rundir; rundir.RunFolder({str(tmp_path)!r}).lock(); "
            "print('locked', flush=True); import time; time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = invoke("--rounds", "0", "--iterations", "20", "--out", str(tmp_path))
        assert result.exit_code == 1 and "in use by another minilottery process" in result.output
    finally:
        holder.kill()
        holder.wait()
    assert invoke("--rounds", "0", "--iterations", "20", "--out", str(tmp_path)).exit_code == 0


def test_global_pruning_of_lenet_prunes_at_the_fc_rate(tmp_path, mnist):
    folder = run(tmp_path, mnist, tiny(pruning="global"), rounds=1, controls=())
    mask = mask_of(folder, 0, 1, "ticket")
    assert mask.kept() == mask.size() - round(0.2 * mask.size())
    assert mask.density("fc3.weight") != pytest.approx(0.9)  # one threshold, not per-layer rates


def test_data_order_is_each_branchs_own_or_the_trials():
    own = lottery.Experiment(hparams.Hyperparameters(), rounds=3, controls=lottery.CONTROLS, oneshot=True)
    assert own.data_order == "branch"  # the default (docs/reproduction.md says why)

    def first_draws(experiment, job):
        return tuple(np.random.default_rng(lottery.data_order_seed(experiment, job)).integers(0, 2**62, 4))
    streams = {first_draws(own, job) for job in own.jobs()}
    assert len(streams) == len(own.jobs())  # every branch its own sequence, not only its own seed
    shared = lottery.Experiment(hparams.Hyperparameters(), data_order="trial")
    ticket, reinit = lottery.Job(0, 1, "ticket"), lottery.Job(0, 1, "reinit")
    assert lottery.data_order_seed(shared, ticket) == lottery.data_order_seed(shared, reinit) == [0, 7]
    assert lottery.data_order_seed(shared, lottery.Job(1, 0, "ticket")) == [1, 7]
    # the dense network's sequence is the same both ways (NumPy's SeedSequence drops trailing zeros)
    dense = lottery.Job(0, 0, "ticket")
    assert first_draws(own, dense) == first_draws(shared, dense)
    with pytest.raises(ValueError, match="unknown data order 'epoch'"):
        lottery.Experiment(hparams.Hyperparameters(), data_order="epoch").validate()


def test_a_run_from_before_data_order_resumes_with_one_sequence_per_trial(tmp_path):
    assert invoke("--rounds", "0", "--iterations", "20", "--data-order", "trial", "--out", str(tmp_path)).exit_code == 0
    config = files.read_json(tmp_path / "config.json")
    del config["data_order"]  # as an older minilottery wrote it: it trained that way
    files.write_json(tmp_path / "config.json", config)
    assert invoke("--rounds", "1", "--iterations", "20", "--data-order", "trial", "--out", str(tmp_path)).exit_code == 0
    result = invoke("--rounds", "1", "--iterations", "20", "--out", str(tmp_path))  # today's default: branch
    assert result.exit_code == 1 and "data_order: 'trial' then, 'branch' now" in result.output


def test_a_run_keeps_the_sparse_thresholds_it_started_with(tmp_path, monkeypatch):
    """Measured (here: fixed by conftest.py) when the run starts, kept in config.json, and used
    again on resume whatever the machine would measure now; a run from before: the old constants."""
    assert invoke("--rounds", "0", "--iterations", "20", "--out", str(tmp_path)).exit_code == 0
    assert files.read_json(tmp_path / "config.json")["sparse_thresholds"] == [0.12, 0.06, 0.12]
    monkeypatch.setenv("MINILOTTERY_SPARSE_THRESHOLDS", "0.3,0.2,0.4")  # another machine's measurement
    assert invoke("--rounds", "1", "--iterations", "20", "--out", str(tmp_path)).exit_code == 0
    config = files.read_json(tmp_path / "config.json")
    assert config["sparse_thresholds"] == [0.12, 0.06, 0.12]
    experiment = lottery.Experiment.from_config(config)
    assert experiment.build(0, (1, 28, 28)).sparse_thresholds == (0.12, 0.06, 0.12)  # what every job builds
    del config["sparse_thresholds"]  # as an older minilottery wrote it
    assert lottery.Experiment(experiment.hp).settle_sparse_thresholds(config).sparse_thresholds == (0.12, 0.06)
    fresh = lottery.Experiment(experiment.hp).settle_sparse_thresholds(None)
    assert fresh.sparse_thresholds == (0.3, 0.2, 0.4)  # a new run measures (the environment fixes it here)
    assert lottery.Experiment(experiment.hp, sparse="off").settle_sparse_thresholds(None).sparse_thresholds is None


def test_pruning_at_initialisation_controls(tmp_path, mnist):
    """SNIP and SynFlow branch off a round with the ticket's per-layer counts, at θ₀."""
    folder = run(tmp_path, mnist, tiny(), rounds=1, controls=("snip", "synflow"))
    theta_0 = nets.build("lenet", seed=0)
    ticket = mask_of(folder, 0, 1, "ticket")
    for control in ("snip", "synflow"):
        mask = mask_of(folder, 0, 1, control)
        assert {n: mask.kept(n) for n in mask} == {n: ticket.kept(n) for n in ticket}
        assert any(not np.array_equal(mask[n], ticket[n]) for n in mask)
        for name in mask:  # trained from m' ⊙ θ₀ (here for 0 iterations)
            np.testing.assert_array_equal(weights(folder, 0, 1, control, name), theta_0.params[name] * mask[name])
    assert not (folder.root / "trial0" / "round00" / "snip").exists()  # at Pm 100% it is the dense net
    # SNIP's mask is the top of |g ⊙ θ₀| on the trial's minibatch
    scorer = nets.build("lenet", seed=0)
    rng = np.random.default_rng([0, rundir.BRANCHES.index("snip")])
    batch = rng.choice(len(mnist.x_train), 60, replace=False)
    scores = lottery.init_pruning.snip_scores(scorer, mnist.x_train[batch], mnist.y_train[batch])
    snip = mask_of(folder, 0, 1, "snip")
    for name in snip:
        assert scores[name][snip[name] == 1].min() >= scores[name][snip[name] == 0].max()


def test_controls_take_several_words():
    result = CliRunner().invoke(cli.main, ["imp", "--controls", "reinit,snip,bogus", "--plan"])
    assert result.exit_code == 2 and "'bogus' is not one of none, reinit, random, snip, synflow, both" in result.output
    from minilottery.options import several
    assert several(lottery.CONTROL_CHOICES, "both,synflow,reinit") == ("reinit", "random", "synflow")


@pytest.mark.parametrize("retrain", ["lr-rewind", "finetune"])
def test_retraining_keeps_the_trained_weights(tmp_path, mnist, retrain):
    """lr-rewind and finetune start a round from round r − 1's trained ticket, masked."""
    hp = tiny(iterations=40, eval_every=20, milestones=(30,), gamma=0.5)
    folder = run(tmp_path, mnist, hp, rounds=1, controls=(), retrain=retrain, rewind_iteration=20, data_order="trial")
    dense = branch(folder, 0, 0, "ticket").weights("final")
    mask = mask_of(folder, 0, 1, "ticket")
    curve = json.loads((branch(folder, 0, 1, "ticket").path / "curve.json").read_text())
    assert curve["iteration"] == [20, 40]  # the budget after k
    # retraining by hand from the masked dense weights, at the schedule's rate or the final one
    net = nets.build("lenet", seed=0)
    net.set_params(dense)
    net.set_mask(mask)
    trainer = train.Trainer(net, mnist, hp, seed=0)
    trainer.iteration = 20
    if retrain == "finetune":
        trainer.schedule = lottery.optim.Schedule(hp.lr * 0.5)
    assert trainer.schedule(20) == (hp.lr * 0.5 if retrain == "finetune" else hp.lr)  # the rates differ
    trainer.run()
    for name, value in net.params.items():
        np.testing.assert_array_equal(weights(folder, 0, 1, "ticket", name), value)
    assert rundir.default_folder(lottery.Experiment(hp, retrain=retrain).config()).name.startswith("lenet-")


def test_controls_under_lr_rewinding_start_from_theta_0(tmp_path, mnist):
    """Only the ticket (and one-shot) keep trained weights; the controls train from θ₀ from iteration 0."""
    hp = tiny(iterations=40, eval_every=20)
    folder = run(tmp_path, mnist, hp, rounds=1, controls=("random", "snip"), retrain="lr-rewind", rewind_iteration=20,
                 data_order="trial")  # so that the trainers below draw the same minibatches
    theta_0 = nets.build("lenet", seed=0)
    for control in ("random", "snip"):
        curve = json.loads((branch(folder, 0, 1, control).path / "curve.json").read_text())
        assert curve["iteration"][0] == 0
        trainer = train.Trainer(nets.build("lenet", seed=0), mnist, hp, seed=0)
        trainer.net.set_mask(mask_of(folder, 0, 1, control))
        trainer.run()
        np.testing.assert_array_equal(weights(folder, 0, 1, control, "fc1.weight"), trainer.net.params["fc1.weight"])
    assert np.count_nonzero(mask_of(folder, 0, 1, "snip")["fc1.weight"] * theta_0.params["fc1.weight"]) > 0


def test_pruning_at_init_under_global_pruning_keeps_the_total(tmp_path, mnist):
    folder = run(tmp_path, mnist, tiny(pruning="global", unpruned=("output",)), rounds=1, controls=("snip", "synflow"))
    ticket = mask_of(folder, 0, 1, "ticket")
    for control in ("snip", "synflow"):
        mask = mask_of(folder, 0, 1, control)
        assert mask.kept() == ticket.kept() and mask.density("fc3.weight") == 1.0  # the output layer unpruned
        assert mask.kept("fc1.weight") != ticket.kept("fc1.weight")  # one total, spread by the scores
