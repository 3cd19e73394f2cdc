"""Where a session's copy-on-write copies lie: could a narrower mergeable range hold them?

A pool with ``memory_merge = "zygote"`` marks every private writable mapping the zygote has,
so ksmd keeps a 64-byte record for every resident page of those mappings in every session,
though most of them are the zygote's pages, still shared, which never merge. Marking only the
ranges where sessions make their copies would spare those records and their scanning, if the
copies of one session predicted another's.

This starts a real server whose pool merges nothing (so a page's state is copy-on-write's
alone), runs different cells in sessions, and reads each session kernel's
``/proc/PID/pagemap`` (root): its resident pages in the mappings the zygote would mark, and of
those the ones mapped by it alone (its copies, and pages it faulted in afresh). For each pair
of sessions and each window size it reports the share of the second session's copies inside
the windows where the first made copies, and how much of the second's resident memory those
windows hold.

    .venv/bin/python -m benchmarks.copies [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import API_KEY, API_VERSION, RESULTS, machine
from benchmarks.http_api import check_execute, execute_body
from sessionpool.sandbox.zygote import KERNEL_MAPPINGS
from sessionpool.server.testing import ServerProcess

PAGE = os.sysconf("SC_PAGE_SIZE")
#: pagemap's bits: the page is present; it is mapped by this process alone
PRESENT, EXCLUSIVE = 1 << 63, 1 << 56
WINDOWS_KB = (4, 16, 64, 256)
#: the cells, each run in sessions of its own: the suite's pandas cell, a chart and some of the
#: standard library, and the kernel's machinery alone
CELLS = {
    "pandas": "import pandas as pd\ndf = pd.DataFrame({'a': range(1000)})\ndf.describe()",
    "chart": (
        "import matplotlib.pyplot as plt, numpy as np, json, re\n"
        "a = np.random.rand(300, 300) @ np.random.rand(300, 300)\n"
        "plt.plot(a[0]); plt.show()\n"
        "print(json.dumps({'k': [1, 2]}), re.findall('a+', 'aaa'))"
    ),
    "plain": "x = 1\nprint(x)\nx",
}
CONFIG = '[pools.main]\nready_sessions = 2\nmemory_merge = "off"\n'


def marked_pages(pid: int) -> dict[int, bool]:
    """The resident pages (page number: mapped by this process alone) of ``pid``'s private
    writable mappings, the ones ``memory_merge = "zygote"`` marks."""
    pages: dict[int, bool] = {}
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split()
            name = fields[5] if len(fields) > 5 else ""
            if fields[1][1] != "w" or fields[1][3] != "p" or name in KERNEL_MAPPINGS:
                continue
            start, end = (int(x, 16) // PAGE for x in fields[0].split("-"))
            pagemap.seek(start * 8)
            entries = struct.unpack(f"{end - start}Q", pagemap.read((end - start) * 8))
            for i, entry in enumerate(entries):
                if entry & PRESENT:
                    pages[start + i] = bool(entry & EXCLUSIVE)
    return pages


def kernel_pid(client: httpx.Client, url: str, identifier: str) -> int:
    """The host pid of the session's kernel: the process holding a file the session opened
    (inside, the kernel is pid 1 of its own namespace)."""
    name = f"copies-marker-{identifier}"
    run(client, url, identifier, f"_marker = open('/mnt/data/{name}', 'w')")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}").endswith(name) for fd in fds):
                return int(pid)
        except OSError:
            continue
    raise RuntimeError(f"no process holds {name}")


def run(client: httpx.Client, url: str, identifier: str, code: str) -> None:
    path = f"{url}/pools/main/code/execute?api-version={API_VERSION}&identifier={identifier}"
    check_execute(client.post(path, json=execute_body(code)), identifier)


def overlap(a: dict[int, bool], b: dict[int, bool]) -> list[dict[str, Any]]:
    """For each window size: how much of ``b``'s copies and of ``b``'s resident memory lie in
    the windows where ``a`` made copies."""
    copies_b = [p for p, alone in b.items() if alone]
    rows = []
    for kb in WINDOWS_KB:
        w = kb * 1024 // PAGE
        windows = {p // w for p, alone in a.items() if alone}
        runs = sum(1 for x in windows if x - 1 not in windows)  # mappings a marking would add
        rows.append(
            {
                "window_kb": kb,
                "runs": runs,
                "copies_covered": round(
                    sum(p // w in windows for p in copies_b) / len(copies_b), 3
                ),
                "resident_marked": round(sum(p // w in windows for p in b) / len(b), 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-cell", type=int, default=2, help="sessions for each cell")
    parser.add_argument("--json", type=Path, help="where to write the result")
    args = parser.parse_args()
    sessions: dict[str, dict[int, bool]] = {}
    with tempfile.TemporaryDirectory(prefix="copies-") as tmp:
        server = ServerProcess(Path(tmp), config=CONFIG, api_key=API_KEY, startup_timeout=180.0)
        server.start()
        try:
            with httpx.Client(headers=server.auth, timeout=60) as client:
                for cell, code in CELLS.items():
                    for i in range(args.per_cell):
                        identifier = f"{cell}-{i}"
                        pid = kernel_pid(client, server.url, identifier)
                        run(client, server.url, identifier, code)
                        sessions[identifier] = marked_pages(pid)
        finally:
            server.stop()
    per_session = {}
    for identifier, pages in sessions.items():
        per_session[identifier] = {
            "resident_mb": round(len(pages) * PAGE / 1e6, 1),
            "copies_mb": round(sum(pages.values()) * PAGE / 1e6, 1),
            # what ksmd's records of these pages take, one of 64 bytes a page (x86-64)
            "ksm_records_mb": round(len(pages) * 64 / 1e6, 2),
        }
        print(f"{identifier}: {per_session[identifier]}")
    pairs = []
    for a, b in itertools.permutations(sessions, 2):
        rows = overlap(sessions[a], sessions[b])
        pairs.append({"from": a, "to": b, "windows": rows})
        print(
            f"{a} -> {b}: "
            + "; ".join(
                f"{r['window_kb']} KB: {r['copies_covered']:.0%} of copies in "
                f"{r['resident_marked']:.0%} of resident ({r['runs']} ranges)"
                for r in rows
            )
        )
    doc = {"cells": CELLS, "sessions": per_session, "pairs": pairs, "machine": machine()}
    now = dt.datetime.now(dt.UTC)
    out = args.json or RESULTS / f"copies-{now:%Y-%m-%d-%H%M}.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
