"""minilottery: The Lottery Ticket Hypothesis (Frankle & Carbin, ICLR 2019) in NumPy + Numba.

Modules, in the order of the paper's method: datasets and idx (the data, Appendix C),
layers, conv and nets (the networks of Figure 2), losses, optim and train (training
and the early-stopping measurement), masks and pruning (step 3), experiment (an imp
run's settings and its job graph), lottery (the four steps of "Identifying winning
tickets" and the controls), rundir and files (the run folder), plots and report (the
figures), sparse and calibration (sparse training, and where it pays on this machine),
kernels (the Numba hot path).
"""
import os
import sys


def _choose_blas_kernels():
    """Use OpenBLAS's AVX-512 kernels on AMD CPUs that have AVX-512 (Zen 4 and later).

    OpenBLAS's run-time detection gives these CPUs its AVX2 "Haswell" kernels; its
    "SkylakeX" kernels make Lenet's training step 1.3x and its evaluation 1.6x faster
    here (docs/performance.md). It only takes effect before NumPy is first imported,
    and an OPENBLAS_CORETYPE set by the user always wins.
    """
    if "numpy" not in sys.modules and avx512_amd():
        set_environment("OPENBLAS_CORETYPE", "SkylakeX")


def avx512_amd():
    """An AMD CPU with AVX-512 (Zen 4 and later), from /proc/cpuinfo (False where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read(1 << 16)
    except OSError:
        return False
    return "AuthenticAMD" in cpuinfo and " avx512f" in cpuinfo and " avx512vl" in cpuinfo


# Variables minilottery put into its own environment, which a program it starts (the
# PyTorch peer of bench --compare-torch) must not inherit: they tune minilottery's threads.
SET_HERE = set()


def set_environment(name, value):
    """os.environ[name] = value unless the user set it; remembered in SET_HERE."""
    if name not in os.environ:
        os.environ[name] = value
        SET_HERE.add(name)


_choose_blas_kernels()
