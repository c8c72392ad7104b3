"""The summary of an imp run folder: the numbers behind the paper's Figures 1 and 4.

For every round the paper reports Pm (the percent of weights remaining), the
*early-stopping iteration* (minimum validation loss) and the *test accuracy at
that iteration*, as the mean over trials with the minimum and maximum as error
bars (Appendix C: "5 trials, error bars are min and max"). ``load_run`` reads a
run folder into a ``RunResults``; ``summary_rows`` aggregates it per round and
branch; ``markdown`` writes RUN/report.md, which the ``report`` command also
prints. plots.py draws the figures from the same ``RunResults``.

Only finished branches count (their metrics.json exists, see rundir.py), so a
run that is still going can be reported on; a damaged file is an error that names it.
"""
import math
import re
from dataclasses import dataclass
from pathlib import Path

from . import files, rundir
from .rundir import BRANCHES
from .train import Curve

BRANCH_LABELS = {"ticket": "winning ticket", "reinit": "random reinit", "random": "random pruning",
                 "oneshot": "one-shot pruning", "snip": "SNIP at θ₀", "synflow": "SynFlow at θ₀"}
NET_NAMES = {"lenet": "Lenet", "conv2": "Conv-2", "conv4": "Conv-4", "conv6": "Conv-6",
             "resnet18": "Resnet-18", "vgg19": "VGG-19"}
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
NUMBERS = ("pm", "early_stop_iteration", "test_accuracy_at_early_stop", "final_test_accuracy",
           "final_train_accuracy")
HYPERPARAMETERS = ("net", "dataset", "iterations", "optimizer", "lr", "batch_size")
FIGURE_TITLES = {
    "accuracy_at_early_stop.png": "Test accuracy at early stopping against Pm (Figures 1 and 4)",
    "early_stop_iteration.png": "Early-stopping iteration against Pm (Figures 1 and 4)",
    "training_curves.png": "Test accuracy during training (Figure 3)",
    "generalization.png": "Training and test accuracy at the end of training (Figure 4)",
    "weight_distance.png": "How far kept and pruned weights moved from their initial values (Discussion)",
}


@dataclass
class Spread:
    """Mean over trials with the minimum and maximum, the paper's error bars."""
    mean: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        return cls(sum(values) / len(values), min(values), max(values), len(values))


@dataclass
class RunResults:
    """The config and the metrics of every finished branch of one run folder."""
    root: Path
    config: dict
    metrics: dict  # (trial, round, branch) -> the branch's metrics.json

    @property
    def hp(self):
        return self.config["hyperparameters"]

    @property
    def rounds(self):
        """Rounds whose winning ticket finished in at least one trial."""
        return sorted({r for (_, r, b) in self.metrics if b == "ticket"})

    @property
    def trials(self):
        return sorted({t for (t, _, b) in self.metrics if b == "ticket"})

    @property
    def branches(self):
        present = {b for (_, _, b) in self.metrics}
        return [b for b in BRANCHES if b in present]

    def values(self, branch, round_index, key):
        """``key`` of ``branch`` at ``round_index``, one value per finished trial."""
        return [m.get(key) for (t, r, b), m in sorted(self.metrics.items())
                if b == branch and r == round_index]

    def spread(self, branch, round_index, key):
        return Spread.of(self.values(branch, round_index, key))

    def curves(self, branch, round_index):
        """The training curves (curve.json) of ``branch`` at ``round_index``, one per finished trial."""
        folder = rundir.RunFolder(self.root)
        return [read_curve(folder.branch_at(*key).path / "curve.json")
                for key in sorted(self.metrics) if key[2] == branch and key[1] == round_index]

    def title(self):
        """"Lenet on MNIST, 3 trials": the name every figure and the report carry."""
        trials = len(self.trials)
        return (f"{NET_NAMES.get(self.hp['net'], self.hp['net'])} on "
                f"{DATASET_NAMES.get(self.hp['dataset'], self.hp['dataset'])}, "
                f"{trials} trial{'s' if trials != 1 else ''}")


def read_curve(path):
    """A curve.json, checked to hold every series of ``train.Curve``, all of one length."""
    curve = files.read_json(path)
    keys = Curve().to_dict()
    if not isinstance(curve, dict) or any(not isinstance(curve.get(k), list) for k in keys) or \
            len({len(curve[k]) for k in keys}) != 1:
        raise files.RunFileError(f"{path}: damaged (not the series {', '.join(keys)} of one length); "
                                 "delete the branch's metrics.json to train it again")
    return curve


def load_run(root):
    """Read config.json and every finished branch's metrics.json; RunFileError if damaged or empty."""
    root = Path(root)
    if not root.is_dir():
        raise files.RunFileError(f"{root}: no such run folder")
    if not (root / "config.json").exists():
        raise files.RunFileError(f"{root}: not an imp run folder (no config.json)")
    config = files.read_json(root / "config.json")
    hp = config.get("hyperparameters") if isinstance(config, dict) else None
    missing = [key for key in HYPERPARAMETERS if not isinstance(hp, dict) or key not in hp]
    if missing:
        raise files.RunFileError(f"{root / 'config.json'}: damaged (no {missing[0]} among its hyperparameters); "
                                 "is this a folder written by imp?")
    metrics = {}
    for place, branch in rundir.RunFolder(root).finished_branches():
        path = branch.path / "metrics.json"
        values = files.read_json(path)
        for key in NUMBERS:
            value = values.get(key) if isinstance(values, dict) else None
            # bool is an int in Python, but never a measurement
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise files.RunFileError(f"{path}: damaged ({key} is missing or not a number); "
                                         "delete the branch folder and resume the run to recompute it")
        metrics[place] = values  # (trial, round, branch)
    results = RunResults(root, config, metrics)
    if not results.rounds:
        raise files.RunFileError(f"{root}: no finished rounds yet (no trial*/round*/ticket/metrics.json)")
    return results


def summary_rows(results):
    """Per round: Pm and, per branch, Spreads of the early-stopping iteration and test accuracy there."""
    rows = []
    for round_index in results.rounds:
        row = {"round": round_index, "pm": results.spread("ticket", round_index, "pm"),
               "trials": len(results.values("ticket", round_index, "pm"))}
        for branch in results.branches:
            row[branch] = (results.spread(branch, round_index, "early_stop_iteration"),
                           results.spread(branch, round_index, "test_accuracy_at_early_stop"))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- formatting
def cell(spread, scale=1.0, digits=0):
    """"mean [min, max]" (just the value for a single trial); "-" when the branch did not run."""
    if spread is None:
        return "-"
    number = f"{{:.{digits}f}}"
    mean = number.format(scale * spread.mean)
    if spread.count == 1:
        return mean
    return f"{mean} [{number.format(scale * spread.low)}, {number.format(scale * spread.high)}]"


def table(header, rows):
    """A Markdown table with padded columns, so that it also reads well in a terminal."""
    widths = [max(len(str(line[i])) for line in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(str(text).rjust(w) for text, w in zip(line, widths)) + " |"
             for line in [header, *rows]]
    lines.insert(1, "| " + " | ".join("-" * (w - 1) + ":" for w in widths) + " |")
    return "\n".join(lines)


def summary_table(results):
    """The early-stopping table: per round Pm, then per branch iteration and test accuracy (%)."""
    header = ["round", "Pm %", "trials"]
    for branch in results.branches:
        header += [f"{branch} early-stop it.", f"{branch} test acc. %"]
    lines = []
    for row in summary_rows(results):
        line = [str(row["round"]), f"{100 * row['pm'].mean:.2f}", str(row["trials"])]
        for branch in results.branches:
            iteration, accuracy = row[branch]
            line += [cell(iteration), cell(accuracy, 100, 2)]
        lines.append(line)
    return table(header, lines)


def detail_table(results):
    """The winning ticket's end-of-training accuracies and weight movement (Figure 4, Discussion)."""
    header = ["round", "Pm %", "train acc. at end %", "test acc. at end %", "gap (points)",
              "moved, kept", "moved, pruned"]
    lines = []
    for round_index in results.rounds:
        train = results.values("ticket", round_index, "final_train_accuracy")
        test = results.values("ticket", round_index, "final_test_accuracy")
        gap = Spread.of([a - b for a, b in zip(train, test)])
        lines.append([str(round_index), f"{100 * results.spread('ticket', round_index, 'pm').mean:.2f}",
                      cell(Spread.of(train), 100, 2), cell(Spread.of(test), 100, 2), cell(gap, 100, 2),
                      cell(results.spread("ticket", round_index, "distance_kept"), 1, 4),
                      cell(results.spread("ticket", round_index, "distance_pruned"), 1, 4)])
    return table(header, lines)


def highlights(results):
    """The paper's headline comparisons, measured on this run (Section 2's "Results")."""
    dense = results.spread("ticket", 0, "test_accuracy_at_early_stop")
    dense_iteration = results.spread("ticket", 0, "early_stop_iteration")
    if dense is None:
        return ["- The dense network (round 0) has not finished; nothing to compare with yet."]
    lines = [f"- Dense network (round 0): {100 * dense.mean:.2f}% test accuracy at early stopping, "
             f"iteration {dense_iteration.mean:,.0f}."]
    pruned = [r for r in results.rounds if r > 0]
    if not pruned:
        return lines
    pm = {r: 100 * results.spread("ticket", r, "pm").mean for r in results.rounds}
    fastest = min(pruned, key=lambda r: results.spread("ticket", r, "early_stop_iteration").mean)
    fastest_iteration = results.spread("ticket", fastest, "early_stop_iteration").mean
    sooner = 1 - fastest_iteration / dense_iteration.mean if dense_iteration.mean else 0.0
    lines.append(f"- Fastest winning ticket: Pm {pm[fastest]:.1f}% reaches its early-stopping iteration at "
                 f"{fastest_iteration:,.0f}, {abs(100 * sooner):.0f}% {'sooner' if sooner >= 0 else 'later'} "
                 "than the dense network.")
    best = max(pruned, key=lambda r: results.spread("ticket", r, "test_accuracy_at_early_stop").mean)
    change = 100 * (results.spread("ticket", best, "test_accuracy_at_early_stop").mean - dense.mean)
    lines.append(f"- Most accurate winning ticket: Pm {pm[best]:.1f}%, {change:+.2f} points against dense.")
    for branch in results.branches:
        rounds = [r for r in pruned if results.spread(branch, r, "test_accuracy_at_early_stop")]
        holding = [r for r in rounds if results.spread(branch, r, "test_accuracy_at_early_stop").mean >= dense.mean]
        label = BRANCH_LABELS[branch].capitalize()
        if holding:
            lines.append(f"- {label}: at least as accurate as the dense network down to Pm "
                         f"{pm[max(holding)]:.1f}% (the smallest such Pm).")
        elif rounds:
            lines.append(f"- {label}: below the dense network's accuracy at every pruned round.")
    return lines


def describe(results):
    """One paragraph: what was run, in the paper's terms."""
    hp, config = results.hp, results.config
    if hp.get("pruning") == "global":
        pruning = f"global pruning of {100 * hp.get('rate_conv', 0):g}% per round"
    else:
        rates = [f"{kind} {100 * hp.get(f'rate_{kind}', 0):g}%" for kind in ("conv", "fc", "output")
                 if hp.get(f"rate_{kind}")]
        pruning = "layer-wise pruning (" + ", ".join(rates) + " of the remaining weights per round)"
    k = config.get("rewind_iteration", 0)
    reset = f"rewinding to θ_k at k = {k:,}" if k else "resetting to θ₀"
    retrain = config.get("retrain", "weight-rewind")
    if retrain == "lr-rewind":
        reset = f"keeping the trained weights and replaying the learning-rate schedule from iteration {k:,}"
    elif retrain == "finetune":
        reset = f"keeping the trained weights and training {hp['iterations'] - k:,} iterations at the final rate"
    if config.get("transfer_from"):
        reset = f"with the masks and θ₀ found by the run in {config['transfer_from']} (ticket transfer)"
    return (f"Iterative magnitude pruning of {NET_NAMES.get(hp['net'], hp['net'])} on "
            f"{DATASET_NAMES.get(hp['dataset'], hp['dataset'])}: rounds {results.rounds[0]}–{results.rounds[-1]} "
            f"finished (round 0 is the dense network; {config.get('rounds', '?')} pruning rounds planned) in "
            f"{len(results.trials)} of {config.get('trials', '?')} trial(s), {hp['iterations']:,} iterations of "
            f"{hp['optimizer']} "
            f"(lr {hp['lr']:g}, batch {hp['batch_size']}) per network, {pruning}, {reset}. "
            f"Branches: " + ", ".join(f"{b} ({BRANCH_LABELS[b]})" for b in results.branches) + ".")


def markdown(results):
    """The whole report.md: description, early-stopping table, highlights, details, figures."""
    parts = [f"# {results.title()}", "", describe(results), "",
             "## Early stopping (Figures 1 and 4)", "",
             "Early-stopping iteration (minimum validation loss) and test accuracy there; "
             "mean over trials, [min, max] in brackets (Appendix C).", "",
             summary_table(results), "", "## Highlights", "", *highlights(results), "",
             "## End of training and weight movement of the winning ticket", "",
             "Training accuracy on all training images and test accuracy after the full budget; *moved* is "
             "the mean |θ_T − θ₀| of the weights that the next round keeps and of those it prunes.", "",
             detail_table(results), ""]
    parts += stability_section(results)
    figures = [name for name in FIGURE_TITLES if (results.root / "figures" / name).exists()]
    if figures:
        parts += ["## Figures", ""]
        for name in figures:
            parts += [f"![{FIGURE_TITLES[name]}](figures/{name})", ""]
    return "\n".join(parts)


def stability_section(results):
    """The instability analyses run on this folder (``minilottery stability``), if any."""
    from . import stability
    lines = []
    for place in sorted((results.root / "stability").glob("trial*/round*")):
        names = re.fullmatch(r"trial(\d+)/round(\d+)", f"{place.parent.name}/{place.name}")
        if not names:
            continue  # not a folder stability wrote
        trial, round_index = int(names.group(1)), int(names.group(2))
        found = stability.results(results.root, trial, round_index)
        if not found:
            continue
        pm = results.spread("ticket", round_index, "pm")
        rows = [[f"{k:,}", f"{100 * r['instability']:.2f}", f"{100 * r['test_error'][0]:.2f}",
                 f"{100 * r['test_error'][-1]:.2f}", f"{100 * max(r['test_error']):.2f}",
                 "yes" if r["instability"] < stability.STABLE else "no"] for k, r in found.items()]
        lines += [f"### Trial {trial}, round {round_index} (Pm {100 * pm.mean:.1f}%)", "",
                  table(["k", "instability %", "error, copy 1 %", "error, copy 2 %", "worst on the path %",
                         "stable (< 2%)"], rows), ""]
        figure = f"figures/stability_trial{trial}_round{round_index:02d}.png"
        if (results.root / figure).exists():
            lines += [f"![Instability at Pm {100 * pm.mean:.1f}%]({figure})", ""]
    if not lines:
        return []
    return ["## Instability analysis (Frankle et al. 2020)", "",
            "Two copies trained from the ticket's weights at iteration k, each on its own data order; "
            "instability is the worst test error on the line between them minus the mean of its ends.", "",
            *lines]


def write_report(root):
    """Write RUN/report.md; return the RunResults and the path written."""
    results = load_run(root)
    path = results.root / "report.md"
    files.atomic_write_bytes(path, markdown(results).encode())
    return results, path
