"""Figures of the questions after the paper, drawn like plots.py's (PNG, Agg, atomic writes).

* ``stability_figure``: test error along the line between two copies trained from
  iteration k, one curve per k, and the instability against k (Frankle et al. 2020);
* ``compare_figure``: several imp runs side by side against Pm, for learning-rate
  rewinding against weight rewinding and fine-tuning (Renda et al. 2020), or a ticket
  transferred from another dataset against the target's own (Morcos et al. 2019).
"""
import matplotlib

from .plots import COLOURS, STYLE, error_bars, new_figure, pm_axis, save
from .report import BRANCH_LABELS
from .stability import STABLE

RUN_COLOURS = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:olive"]


def stability_figure(found, title, path):
    """``found``: stability.results() of one round (k -> path.json). Returns ``path``."""
    with matplotlib.rc_context(STYLE):
        figure, (left, right) = new_figure(columns=2)
        colours = matplotlib.colormaps["viridis"].resampled(max(len(found), 2))
        for index, (k, result) in enumerate(found.items()):
            left.plot(result["alpha"], [100 * e for e in result["test_error"]], marker="o", markersize=4,
                      color=colours(index), label=f"k = {k:,}")
        left.set_xlabel("α, from copy 1 (0) to copy 2 (1)")
        left.set_ylabel("test error (%)")
        left.set_title("Test error on the line between the two copies")
        left.legend(loc="best")
        ks = list(found)
        right.plot(ks, [100 * found[k]["instability"] for k in ks], marker="o", color="tab:blue")
        right.axhline(100 * STABLE, color="tab:gray", linestyle=":", label="2%: stable below (the paper)")
        linthresh = max(min([k for k in ks if k > 0], default=100), 1)
        right.set_xscale("symlog", linthresh=linthresh)
        right.set_xlim(-linthresh / 2, max(max(ks) * 1.6, linthresh))  # room for the points at both ends
        right.set_xlabel("k, the iteration the copies start from")
        right.set_ylabel("instability (percentage points of error)")
        right.set_ylim(bottom=min(0, *(100 * found[k]["instability"] for k in ks)))
        right.set_title("Instability against k")
        right.legend(loc="best")
        figure.suptitle(title)
        return save(figure, path)


def compare_figure(runs, labels, branches, path):
    """Test accuracy at early stopping and at the end against Pm, for ``branches`` of each
    run (report.RunResults), one colour per run and one marker per branch."""
    with matplotlib.rc_context(STYLE):
        figure, (left, right) = new_figure(columns=2)
        pms = []
        for index, (results, label) in enumerate(zip(runs, labels)):
            for branch in branches:
                if branch not in results.branches:
                    continue
                name = label if branch == "ticket" else f"{label}: {BRANCH_LABELS[branch]}"
                style = dict(color=RUN_COLOURS[index % len(RUN_COLOURS)] if len(runs) > 1 else COLOURS[branch],
                             linestyle="-" if branch == "ticket" else "--")
                pms += error_bars(left, results, branch, "test_accuracy_at_early_stop", 100, label=name, **style)
                error_bars(right, results, branch, "final_test_accuracy", 100, label=name, **style)
        for axes, what in ((left, "at early stopping"), (right, "at the end of training")):
            pm_axis(axes, pms)
            axes.set_ylabel(f"test accuracy {what} (%)")
            axes.legend(loc="best")
        left.set_title("Test accuracy at early stopping")
        right.set_title("Test accuracy at the end of training")
        return save(figure, path)
