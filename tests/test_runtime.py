"""The runtime's process-wide settings, checked from outside the process that applies them."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

_FAULTS = """
import json, resource, sys, torch
from mocomri.train.runtime import keep_freed_memory
torch.set_num_threads(1)
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
net = torch.nn.Sequential(
    torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1)
)
x = torch.randn(64, 4, 128, 128)  # 16 MiB in, 32 MiB activations: above glibc's largest mmap threshold
faults = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x).square().mean().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory__reallocation_stops_faulting_pages():
    plain, kept = _faults("plain"), _faults("keep")
    assert kept["applied"] is True
    # The last four of nine forward/backward passes of a small conv net. By default glibc maps
    # each 32 MiB block afresh and unmaps it on free, so the kernel faults its 8,192 pages in
    # again on every pass; with freed memory kept, the blocks are reused from the heap (the heap
    # may still grow by a block now and then as glibc places them).
    assert min(plain["faults"][-4:]) > 20_000
    assert sum(kept["faults"][-4:]) < sum(plain["faults"][-4:]) / 10


def test_select_precision__3d_on_the_cpu_stays_fp32_and_2d_follows_the_cpu():
    import torch

    from mocomri.train.runtime import cpu_supports_bf16, select_precision

    cpu = torch.device("cpu")
    assert select_precision("auto", cpu, spatial_dims=3) == "fp32"
    assert select_precision("auto", cpu, spatial_dims=2) == ("bf16" if cpu_supports_bf16() else "fp32")
    assert select_precision("bf16", cpu, spatial_dims=3) == "bf16"  # an explicit choice is kept


def test_memory_format__channels_last_puts_channels_innermost_in_2d_and_3d():
    import torch

    from mocomri.train.runtime import memory_format

    for dims, shape in ((2, (2, 3, 4, 5)), (3, (2, 3, 4, 5, 6))):
        x = torch.zeros(shape).contiguous(memory_format=memory_format(True, dims))
        assert x.stride()[1] == 1, dims  # C is the fastest-moving index: N, *S, C in memory
        plain = torch.zeros(shape).contiguous(memory_format=memory_format(False, dims))
        assert plain.stride() == torch.zeros(shape).stride(), dims
    with pytest.raises(ValueError, match="spatial_dims=1"):
        memory_format(True, 1)


def test_select_precision_and_channels_last__unknown_value_names_the_key_and_the_choices():
    import torch

    from mocomri.train.runtime import select_channels_last, select_precision

    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match=r"^train\.precision='fp8' must be one of auto, fp32, bf16, fp16$"):
        select_precision("fp8", cpu)
    with pytest.raises(ValueError, match=r"^train\.channels_last='maybe' must be auto, true or false$"):
        select_channels_last("maybe", cpu, spatial_dims=2)
