"""Counting the reads of tensor values back to the host: on CUDA each one is a synchronisation."""

from __future__ import annotations

from collections.abc import Callable

from torch.profiler import profile

#: The aten operators through which a tensor's value reaches Python or C++ host code (item, bool, float, …).
READS = ("aten::_local_scalar_dense", "aten::is_nonzero")


def host_reads(fn: Callable[[], object]) -> int:
    """The number of host reads `fn()` makes (profiled on the CPU, where they cost nothing but count the same)."""
    with profile() as prof:
        fn()
    return sum(event.count for event in prof.key_averages() if event.key in READS)
