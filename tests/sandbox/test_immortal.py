"""The zygote's immortal objects: ``immortalize`` makes every object a process holds immortal
on a CPython that has immortal objects, so that a forked child reading them (which makes
reference counting write to each) does not copy the pages they lie in.

Run in a child process of the CPython 3.13 runtime's own interpreter (it changes that process's
objects); on the server's CPython 3.11 the function must change nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sessionpool.config import default_runtimes_dir
from sessionpool.sandbox import zygote

SRC = Path(zygote.__file__).resolve().parents[2]
PYTHON_313 = default_runtimes_dir() / "python-3.13" / "root" / "bin" / "python3.13"

#: builds ~200,000 objects (floats in tuples in a list), makes them immortal or not (or tries,
#: with ctypes hidden), freezes the collector as the zygote does, forks, and has the child read
#: every object (each read takes and drops a reference); reports the child's new private
#: pages, and what became of objects made before and after
CHILD = """
import ctypes, gc, json, os, sys, weakref
from sessionpool.sandbox import zygote

def immortal(obj):
    return ctypes.c_int32.from_address(id(obj)).value < 0

def private_dirty_kib():
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:"))

class Before:
    pass

objects = [(float(i), float(-i)) for i in range(70_000)]
before = Before()
gc.collect()
mode = sys.argv[1]
if mode == "no-ctypes":
    sys.modules["ctypes"] = None  # as in an interpreter built without it
changed = zygote.immortalize() if mode != "mortal" else 0
again = zygote.immortalize() if mode != "mortal" else 0
sys.modules["ctypes"] = ctypes
gc.freeze()
after = Before()
died = []
ref = weakref.ref(after, died.append)
del after
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    start = private_dirty_kib()
    total = 0.0
    for pair in objects:
        for x in pair:
            total += x
    grew = private_dirty_kib() - start
    os.write(w, json.dumps({"grew_kib": grew, "total": total}).encode())
    os._exit(0)
os.close(w)
child = json.loads(os.read(r, 1 << 16))
os.waitpid(pid, 0)
print(json.dumps({
    **child,
    "changed": changed,
    "again": again,
    "objects_immortal": all(immortal(p) and immortal(p[0]) for p in objects[::997]),
    "class_immortal": immortal(Before) and immortal(before),
    "freed_after": len(died) == 1,
}))
"""


def run_child(python: Path | str, mode: str) -> dict[str, object]:
    """Run ``CHILD`` under ``python`` in ``mode``: mortal, immortal or no-ctypes."""
    done = subprocess.run(
        [str(python), "-c", CHILD, mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    got: dict[str, object] = json.loads(done.stdout)
    return got


@pytest.mark.skipif(
    not PYTHON_313.is_file(),
    reason="no python-3.13 runtime built (no CPython 3.13 on this host)",
)
def test_a_forked_child_reads_immortal_objects_without_copying_their_pages() -> None:
    mortal = run_child(PYTHON_313, "mortal")
    immortal = run_child(PYTHON_313, "immortal")
    assert mortal["total"] == immortal["total"] == 0.0
    # 70,000 tuples and 140,000 floats: about 7 MB, whose every page the mortal child copies
    assert isinstance(mortal["grew_kib"], int) and mortal["grew_kib"] > 4_000, mortal
    assert isinstance(immortal["grew_kib"], int) and immortal["grew_kib"] < 1_000, immortal
    assert isinstance(immortal["changed"], int) and immortal["changed"] > 210_000, immortal
    # the second call finds nothing left to change but the few objects it makes itself
    assert isinstance(immortal["again"], int) and immortal["again"] < 20, immortal
    assert immortal["objects_immortal"] and immortal["class_immortal"], immortal
    assert immortal["freed_after"], "an object made after the zygote's objects was not freed"
    assert not mortal["objects_immortal"]


@pytest.mark.skipif(
    not PYTHON_313.is_file(),
    reason="no python-3.13 runtime built (no CPython 3.13 on this host)",
)
def test_an_interpreter_without_ctypes_still_starts_its_zygote() -> None:
    """A runtime whose CPython was built without ``_ctypes``: nothing is made immortal, and
    nothing fails (the zygote must start all the same)."""
    got = run_child(PYTHON_313, "no-ctypes")
    assert got["changed"] == 0 and got["again"] == 0
    assert not got["objects_immortal"] and got["freed_after"]


def test_on_a_cpython_without_immortal_objects_nothing_changes() -> None:
    """CPython 3.11 (the default runtime's and the server's) writes every count anyway."""
    if sys.version_info >= (3, 12):
        pytest.skip("this interpreter has immortal objects")
    got = run_child(sys.executable, "immortal")
    assert got["changed"] == 0 and got["again"] == 0
    assert not got["objects_immortal"] and got["freed_after"]
