"""The zygote's huge pages: ``collapse_huge_pages`` turns an anonymous mapping of small pages
into transparent huge pages (fewer page table entries for every fork to copy), and leaves
what is not anonymous alone. Run in a child process: it changes that process's memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")

pytestmark = pytest.mark.skipif(
    not THP.exists() or "[never]" in THP.read_text(),
    reason="transparent huge pages are off on this machine (MADV_COLLAPSE needs them)",
)

#: maps 16 MiB of small pages (not MADV_HUGEPAGE: in the ``madvise`` mode they stay small),
#: writes every page, and reports its huge pages before and after the zygote's collapse, and
#: that the contents survived it
CHILD = """
import json, mmap, ctypes
from sessionpool.sandbox import linux, zygote

def huge_kib(address):
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                inside = start <= address < end
            elif inside and fields[0] == "AnonHugePages:":
                return int(fields[1])
    raise AssertionError("mapping not found")

m = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(0, 16 << 20, 4096):
    m[i] = i // 4096 % 251
address = ctypes.addressof(ctypes.c_char.from_buffer(m))
before = huge_kib(address)
collapsed = zygote.collapse_huge_pages(linux)
after = huge_kib(address)
intact = all(m[i] == i // 4096 % 251 for i in range(0, 16 << 20, 4096))
print(json.dumps({"before": before, "after": after, "collapsed": collapsed, "intact": intact}))
"""


def test_an_anonymous_mapping_of_small_pages_becomes_huge_pages_with_its_contents() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    got = json.loads(done.stdout)
    assert got["before"] == 0
    # 16 MiB hold at least 7 aligned huge pages whatever the mapping's alignment; memory too
    # fragmented for one would leave some small, so at least one is asked, not all
    assert got["after"] >= 2048, got
    assert got["collapsed"] >= 2 << 20  # the bytes of the ranges collapsed whole
    assert got["intact"]
