"""The training workers' environment: with it, glibc reuses a freed large tensor's pages instead of faulting
in fresh ones for the next (once the heap has grown enough, as over a training run's first steps)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from steps.train.runtime import worker_environment

# Allocate, touch and free a 64 MiB tensor 13 times; print the page faults of the last three.
PROGRAM = """
import resource, torch
for _ in range(10):
    torch.empty(2**24).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    torch.empty(2**24).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_TENSOR = 2**26 // 4096


def page_faults(environment: dict[str, str]) -> int:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")} | environment
    return int(subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True,
                              check=True).stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
def test_large_blocks_are_reused_without_page_faults():
    reused = page_faults(worker_environment())
    assert reused < PAGES_PER_TENSOR // 10
    assert page_faults({}) > 10 * reused  # by default each tensor is mapped (and its pages faulted) afresh
