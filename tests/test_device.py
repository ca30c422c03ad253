"""dcnn.device: the allocator setting a CPU training run makes (page faults of a step, counted)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

FAULTS = textwrap.dedent("""
    import resource, sys, torch
    from dcnn.device import reuse_freed_memory
    def faults():  # minor page faults of allocating, touching and freeing 64 MiB, five times
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            torch.ones(16 << 20).sum()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    faults()
    default = faults()
    applied = reuse_freed_memory()
    faults()
    print(applied, default, faults())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reuse_freed_memory_stops_the_page_faults_of_reallocated_tensors():
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True).stdout.split()
    applied, default, reused = out[0] == "True", int(out[1]), int(out[2])
    assert applied
    assert default > 5 * 10_000  # each 64 MiB comes back as fresh 4 KiB pages: 16,384 faults
    assert reused < 1_000  # the freed pages are used again
