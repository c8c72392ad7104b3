"""minilottery: The Lottery Ticket Hypothesis (Frankle & Carbin, ICLR 2019) in NumPy + Numba.

Modules, in the order of the paper's method: datasets and idx (the data, Appendix C),
layers, conv and nets (the networks of Figure 2), losses, optim and train (training
and the early-stopping measurement), masks and pruning (step 3), lottery (the four
steps of "Identifying winning tickets" and the controls), rundir and files (the run
folder), plots and report (the figures), sparse (sparse training), kernels (the
Numba hot path).
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
    if "numpy" in sys.modules or "OPENBLAS_CORETYPE" in os.environ:
        return
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read(1 << 16)
    except OSError:
        return
    if "AuthenticAMD" in cpuinfo and " avx512f" in cpuinfo and " avx512vl" in cpuinfo:
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"


_choose_blas_kernels()
