"""What the benchmark scripts share: statistics, machine load, the ipykernel peer, the report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

#: where the scripts write their results unless told otherwise
RESULTS = Path(__file__).resolve().parent / "results"
MB = 1_000_000  # memory is reported in decimal MB, as in the probes

#: the key the benchmarks' servers accept, and the Azure API versions their calls use
API_KEY = "bench-key-0123456789abcdef"
API_VERSION = "2024-02-02-preview"
SESSION_API_VERSION = "2025-02-02-preview"  # DELETE session lives in the executions family

# -- statistics -----------------------------------------------------------------------------------


def nearest_rank(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (pct in (0, 100])."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Figure:
    """One measured quantity: a distribution of samples in ``unit``, or a single ``value``."""

    key: str
    system: str  # "sessionpool" or "ipykernel"
    label: str
    unit: str  # "ms", "MB", or "exec/s" for a rate
    samples: list[float] = field(repr=False, default_factory=list)
    note: str = ""
    value: float | None = None  # a rate: shown in the p50 column, no percentiles
    count: int | None = None  # n when it is not len(samples)

    def summary(self) -> dict[str, float | int]:
        if self.value is not None:
            return {"n": self.count or 0, "value": self.value}
        values = sorted(self.samples)
        return {
            "n": len(values) if self.count is None else self.count,
            "p50": nearest_rank(values, 50),
            "p95": nearest_rank(values, 95),
            "p99": nearest_rank(values, 99),
            "mean": statistics.fmean(values) if values else math.nan,
            "min": values[0] if values else math.nan,
            "max": values[-1] if values else math.nan,
        }

    def pct(self, p: float) -> float:
        return nearest_rank(sorted(self.samples), p)

    @property
    def p50(self) -> float:
        return self.pct(50)


Check = Callable[[dict[str, Figure], dict[str, Any]], tuple[bool, str]]


@dataclass
class Target:
    """A goal: a check of ``figure`` (and of the run's extra facts) with its verdict text."""

    figure: str
    text: str
    check: Check


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """A list of samples as the result files give it: count, p50, p99, mean and min."""
    values = sorted(samples)
    return {
        "n": len(values),
        "p50": round(nearest_rank(values, 50), 3),
        "p99": round(nearest_rank(values, 99), 3),
        "mean": round(statistics.fmean(values), 3),
        "min": round(values[0], 3),
    }


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


async def timed_print_1(
    client: httpx.AsyncClient,
    url: httpx.URL | str,
    payload: bytes,
    outcomes: Counter[str],
    messages: dict[str, str],
) -> float | None:
    """One ``print(1)`` execution of a burst: its latency in ms, or None with what went wrong
    counted in ``outcomes`` (and the first text of each kind kept in ``messages``)."""
    t0 = time.perf_counter()
    try:
        response = await client.post(url, content=payload)
    except httpx.HTTPError as exc:
        outcomes[f"transport:{type(exc).__name__}"] += 1
        return None
    elapsed = ms_since(t0)
    if response.status_code != 200:
        code = response.headers.get("x-ms-error-code", "")
        outcome = f"http:{response.status_code}:{code}"
        outcomes[outcome] += 1
        messages.setdefault(outcome, response.text[:300])
        return None
    props = response.json()["properties"]
    if props["status"] != "Success" or props["stdout"] != "1\n":
        outcomes[f"result:{props['status']}"] += 1
        messages.setdefault(f"result:{props['status']}", str(props)[:300])
        return None
    outcomes["ok"] += 1
    return elapsed


def logger(began: float) -> Callable[[str], None]:
    """A log to stderr, each line stamped with the seconds since ``began``."""

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f} s] {text}", file=sys.stderr, flush=True)

    return log


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when installed (the server uses it too): less client overhead per request."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop
    return uvloop.new_event_loop


# -- machine --------------------------------------------------------------------------------------


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and
    parentheses): 0 is the state, 1 the parent's pid, 7 the minor faults, 11-14 utime, stime,
    and the waited-for children's cutime, cstime (in clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def cpu_busy(window: float = 1.0) -> float:
    """Fraction of all CPUs busy during ``window`` seconds (other work on the machine)."""
    b0, t0 = cpu_times()
    time.sleep(window)
    b1, t1 = cpu_times()
    return (b1 - b0) / max(1, t1 - t0)


class PhaseMeter:
    """How busy the whole machine was during each phase (our own work included)."""

    def __init__(self) -> None:
        self.busy: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        b0, t0 = cpu_times()
        try:
            yield
        finally:
            b1, t1 = cpu_times()
            self.busy[name] = round((b1 - b0) / max(1, t1 - t0), 3)


def wait_quiet(limit_s: float, threshold: float, log: Callable[[str], None]) -> float:
    """Wait up to ``limit_s`` for a 2 s window with the machine below ``threshold`` busy."""
    end = time.monotonic() + limit_s
    busy = cpu_busy(2.0)
    while busy > threshold and time.monotonic() < end:
        log(f"machine {busy:.0%} busy; waiting for it to quiet down")
        busy = cpu_busy(2.0)
    return busy


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def cpuidle() -> str:
    """How an idle CPU waits. In a VM guest with the haltpoll driver and ``guest_halt_poll_ns``
    0, an idle vCPU halts at once, and every wake-up of a process on it (the kernel woken by the
    server, the server by the reply) pays a VM exit: latency figures of such a machine are not
    comparable with one that polls (docs/benchmarks.md)."""
    root = Path("/sys/devices/system/cpu/cpuidle")
    try:
        driver = (root / "current_driver").read_text().strip()
    except OSError:
        return "unknown"
    poll = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    if driver == "haltpoll" and poll.exists():
        return f"{driver}, guest_halt_poll_ns {poll.read_text().strip()}"
    return driver


def machine() -> dict[str, Any]:
    """The interpreter, the kernel, the CPUs, their idle driver and the memory of this machine."""
    return {
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpuidle": cpuidle(),
        "mem_total_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
    }


def machine_meta(
    args: argparse.Namespace,
    sizes: Any,
    packages: Sequence[str],
    after_sizes: dict[str, Any],
    after_versions: dict[str, Any],
) -> dict[str, Any]:
    """The run's circumstances; each script adds its own keys at the places its JSON has them."""
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "sizes": asdict(sizes),
        **after_sizes,
        **machine(),
        "versions": {name: package_version(name) for name in packages},
        **after_versions,
        "percentiles": "nearest-rank",
        "clock": "time.perf_counter",
    }


# -- a benchmark part -----------------------------------------------------------------------------


class Bench:
    """What each part of a run collects: figures, extra facts, and unique session identifiers."""

    def __init__(self, sizes: Any, log: Callable[[str], None], meter: PhaseMeter) -> None:
        self.sizes = sizes
        self.log = log
        self.meter = meter
        self.figures: list[Figure] = []
        self.extra: dict[str, Any] = {}
        self._ids = iter(range(1 << 30))

    def ident(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"


class IpykernelPeer(Bench):
    """jupyter_client + ipykernel driven with the blocking client: the peer both scripts time."""

    def run(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def kernel(self) -> Iterator[tuple[Any, Any]]:
        from jupyter_client.manager import KernelManager

        km = KernelManager(kernel_name="python3")
        km.start_kernel(stderr=subprocess.DEVNULL)
        kc = km.client()
        try:
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
            yield km, kc
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)

    @staticmethod
    def _reply(kc: Any, msg_id: str, timeout: float = 60.0) -> dict[str, Any]:
        while True:
            msg: dict[str, Any] = kc.get_shell_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    @staticmethod
    def _until_idle(kc: Any, msg_id: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """iopub messages of ``msg_id`` up to and including its ``idle`` status."""
        seen: list[dict[str, Any]] = []
        while True:
            msg: dict[str, Any] = kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            seen.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return seen

    def _run(self, kc: Any, code: str) -> list[dict[str, Any]]:
        msg_id = kc.execute(code)
        reply = self._reply(kc, msg_id)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"ipykernel: {code!r} failed: {reply['content']}")
        return self._until_idle(kc, msg_id)

    def time_x_plus_1(self, kc: Any, n: int, warmup: int) -> tuple[list[float], list[float]]:
        """``x += 1`` after ``x = 0``, ``n`` times after ``warmup``: ms from send to
        ``execute_reply`` and to iopub ``idle`` (drained either way, so iopub never backs up)."""
        self._run(kc, "x = 0")
        to_reply: list[float] = []
        to_idle: list[float] = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            msg_id = kc.execute("x += 1")
            reply = self._reply(kc, msg_id)
            t_reply = ms_since(t0)
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"ipykernel: x += 1 failed: {reply['content']}")
            self._until_idle(kc, msg_id)
            t_idle = ms_since(t0)
            if i >= warmup:
                to_reply.append(t_reply)
                to_idle.append(t_idle)
        return to_reply, to_idle

    def add_x_plus_1(self, to_reply: list[float]) -> None:
        """The ipk.x_plus_1 figure, the same in both scripts."""
        self.figures.append(
            Figure(
                "ipk.x_plus_1",
                "ipykernel",
                "x += 1 round trip",
                "ms",
                to_reply,
                "send -> execute_reply (ZMQ, blocking client)",
            )
        )

    def time_starts(self, n: int) -> tuple[list[float], list[float]]:
        """``n`` times (after one discarded) start_kernel -> ready -> first execute_reply of
        print(1), in ms; and every shutdown_kernel, in ms, the discarded one included."""
        from jupyter_client.manager import KernelManager

        samples: list[float] = []
        shutdown: list[float] = []
        for i in range(1 + n):
            km = KernelManager(kernel_name="python3")
            kc = None
            t0 = time.perf_counter()
            try:
                km.start_kernel(stderr=subprocess.DEVNULL)
                kc = km.client()
                kc.start_channels()
                kc.wait_for_ready(timeout=60)
                msg_id = kc.execute("print(1)")
                reply = self._reply(kc, msg_id)
                elapsed = ms_since(t0)
                if reply["content"]["status"] != "ok":
                    raise RuntimeError(f"ipykernel: print(1) failed: {reply['content']}")
                out = [
                    m["content"]["text"]
                    for m in self._until_idle(kc, msg_id)
                    if m["msg_type"] == "stream"
                ]
                if "".join(out) != "1\n":
                    raise RuntimeError(f"ipykernel: print(1) printed {out!r}")
            finally:
                if kc is not None:
                    kc.stop_channels()
                t1 = time.perf_counter()
                km.shutdown_kernel(now=True)
                shutdown.append(ms_since(t1))
            if i >= 1:
                samples.append(elapsed)
        return samples, shutdown


# -- command line and report ----------------------------------------------------------------------


def parse_args(
    doc: str | None,
    argv: list[str] | None,
    quick: str = "small sample sizes (< 2 minutes)",
    peer: bool = True,
) -> argparse.Namespace:
    """The benchmarks' flags; ``peer``: the script measures a peer that can be skipped."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--json", type=Path, help="where to write the JSON results")
    if peer:
        parser.add_argument("--skip-peer", action="store_true", help="measure sessionpool only")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the machine to be idle (other work skews latency)",
    )
    return parser.parse_args(argv)


def machine_before(
    args: argparse.Namespace, log: Callable[[str], None]
) -> tuple[float, list[float]]:
    """How busy the machine is before the run (after ``--wait-quiet``), and its load average;
    warns when other work will inflate the latencies."""
    busy = wait_quiet(args.wait_quiet, 0.15, log) if args.wait_quiet > 0 else cpu_busy()
    load = loadavg()
    if busy > 0.1:
        log(
            f"warning: the machine is {busy:.0%} busy with other work before the run; "
            "latency figures will be inflated"
        )
    return busy, load


Report = Callable[[list[Figure], dict[str, Any], dict[str, Any]], tuple[str, dict[str, Any]]]


def main(
    doc: str | None,
    argv: list[str] | None,
    stem: str,
    sizes_of: Callable[[bool], Any],
    measure: Callable[[Any, Callable[[str], None], PhaseMeter], Bench],
    peer: type[IpykernelPeer],
    meta_of: Callable[[argparse.Namespace, Any], dict[str, Any]],
    report: Report,
) -> int:
    """One script's run: sessionpool (``measure``), then the peer unless ``--skip-peer``; the
    table and JSON from ``report`` (figures, meta, extra), written as ``<stem>-<date>.json``."""
    args = parse_args(doc, argv)
    if os.geteuid() != 0:
        print(
            "the jail backend needs root (per-session uids, namespaces, cgroups)", file=sys.stderr
        )
        return 2
    sizes = sizes_of(args.quick)
    began = time.perf_counter()
    log = logger(began)
    busy_before, load_before = machine_before(args, log)
    meter = PhaseMeter()
    parts = [measure(sizes, log, meter)]
    if not args.skip_peer:
        ipk = peer(sizes, log, meter)
        ipk.run()
        parts.append(ipk)
    figures = [f for part in parts for f in part.figures]
    extra: dict[str, Any] = {}
    for part in parts:
        extra.update(part.extra)
    extra["total_seconds"] = round(time.perf_counter() - began, 1)
    log("done")

    meta = meta_of(args, sizes)
    meta["cpu_busy_before"] = round(busy_before, 3)
    meta["loadavg_before"] = load_before
    meta["loadavg_after"] = loadavg()
    meta["machine_busy_by_phase"] = meter.busy
    table, document = report(figures, meta, extra)
    publish(table, document, args.json, stem)
    return 0


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == "MB":
        return f"{value:.2f} MB"
    if unit == "exec/s":
        return f"{value:,.0f} exec/s"
    if value >= 100:
        return f"{value:.1f} ms"
    return f"{value:.3f} ms"


def build_report(
    figures: list[Figure],
    targets: list[Target],
    meta: dict[str, Any],
    extra: dict[str, Any],
    before_targets: Callable[[dict[str, Figure]], list[str]] = lambda _: [],
    after_targets: Callable[[dict[str, Figure]], list[str]] = lambda _: [],
) -> tuple[str, dict[str, Any]]:
    """The Markdown table with the targets' verdicts, and the JSON document; each script adds
    its own lines (given the figures by key) before and after the targets' tally."""
    by_key = {f.key: f for f in figures}
    verdicts: dict[str, list[str]] = {}
    target_rows: list[dict[str, Any]] = []
    for t in targets:
        if t.figure not in by_key:
            continue
        try:
            ok, detail = t.check(by_key, extra)
        except KeyError as exc:  # a figure it compares with was not measured (--skip-peer)
            ok, detail = False, f"missing figure {exc}"
        except TypeError as exc:
            ok, detail = False, f"cannot evaluate: {exc!r}"
        verdicts.setdefault(t.figure, []).append(f"{'PASS' if ok else 'MISS'}: {detail}")
        target_rows.append({"figure": t.figure, "target": t.text, "pass": ok, "detail": detail})

    lines = [
        "| measurement | system | n | p50 | p95 | p99 | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for f in figures:
        s = f.summary()
        target = "; ".join(verdicts.get(f.key, [])) or "-"
        if f.value is not None:
            cells = [fmt(f.value, f.unit), "-", "-"]
        else:
            cells = [fmt(float(s[k]), f.unit) for k in ("p50", "p95", "p99")]
        lines.append(f"| {f.label} | {f.system} | {s['n']} | {' | '.join(cells)} | {target} |")
    lines += before_targets(by_key)
    passed = sum(r["pass"] for r in target_rows)
    lines.append("")
    lines.append(f"Targets: {passed}/{len(target_rows)} met.")
    lines += after_targets(by_key)
    busy = meta.get("machine_busy_by_phase", {})
    cgroup = (
        f"cgroup favordynmods {meta['cgroup_favordynmods']}; "
        if "cgroup_favordynmods" in meta
        else ""
    )
    lines.append(
        f"Machine: {meta['cpus']} CPUs, {meta['mem_total_gib']} GiB; {cgroup}"
        f"{meta.get('cpu_busy_before', math.nan):.0%} busy before the run; busy by phase "
        "(our own work included): "
        + ", ".join(f"{name} {value:.0%}" for name, value in busy.items())
    )
    doc = {
        "meta": meta,
        "figures": [
            {
                "key": f.key,
                "system": f.system,
                "label": f.label,
                "unit": f.unit,
                "note": f.note,
                **f.summary(),
            }
            for f in figures
        ],
        "targets": target_rows,
        "extra": extra,
    }
    return "\n".join(lines), doc


def publish(table: str, doc: dict[str, Any], path: Path | None, stem: str) -> None:
    """Print the table and the JSON; write the JSON to ``path`` or to
    ``benchmarks/results/<stem>-<UTC date>.json``."""
    print(table)
    print()
    print(json.dumps(doc, indent=2))
    path = path or RESULTS / f"{stem}-{dt.datetime.now(dt.UTC):%Y-%m-%d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nJSON written to {path}", file=sys.stderr)
