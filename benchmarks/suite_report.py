"""The suite's report: the targets' verdicts, the Markdown tables, the PNG charts and the JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks.suite_drivers import log
from benchmarks.suite_measures import Results

SYSTEMS = ["sessionpool", "kernel-gateway", "ipykernel", "subprocess"]


def fmt(v: Any, unit: str) -> str:
    if not isinstance(v, (int, float)) or math.isnan(v):
        return "-"
    if unit == "exec/s":
        return f"{v:,.0f}"
    if unit == "MB":
        return f"{v:.1f}"
    return f"{v:.1f}" if v >= 100 else f"{v:.2f}"


def targets(res: Results) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def p50(metric: str, system: str, mode: str = "sequential") -> float:
        r = res.get(metric, system, mode)
        return r.pct(50) if r and r.samples else math.nan

    def ratio(text: str, metric: str, peer: str, need: float) -> None:
        ours, theirs = p50(metric, "sessionpool"), p50(metric, peer)
        got = theirs / ours
        out.append(
            {
                "target": text,
                "pass": got >= need,
                "detail": f"{got:.1f}x ({theirs:.2f} ms / {ours:.2f} ms p50); "
                f"{got / need:.0%} of the {need:g}x asked",
            }
        )

    ratio(
        "TTI p50 >= 100x faster than Kernel Gateway with prespawn",
        "time to interactive",
        "kernel-gateway",
        100,
    )
    ratio("TTI p50 >= 200x faster than a fresh ipykernel", "time to interactive", "ipykernel", 200)
    ratio("x += 1 >= 3x faster than ipykernel", "warm x += 1", "ipykernel", 3)
    held = res.extra.get("density_x_p99_10ms", 0)
    points = res.curves.get("scaling", [])
    max_live = max((p["live"] for p in points), default=0)
    out.append(
        {
            "target": ">= 1,000 idle pandas sessions with x += 1 p99 <= 10 ms",
            "pass": held >= 1000,
            "detail": f"{held} held within 10 ms p99 (largest step reached {max_live}; "
            f"stopped by {res.extra.get('scaling_stopped_by')})",
        }
    )
    per_kernel = res.extra.get("ipykernel_memavailable_drop_per_kernel_mb")
    if per_kernel and points:
        last = points[-1]
        per_ours = last["added_memory_gb"] * 1000 / max(1, last["live"])
        ratio_mem = per_kernel / per_ours if per_ours > 0 else math.nan
        out.append(
            {
                "target": "density >= 10x ipykernel in the same memory",
                "pass": ratio_mem >= 10,
                "detail": f"{ratio_mem:.1f}x: machine memory per session {per_ours:.1f} MB vs "
                f"{per_kernel:.1f} MB per ipykernel (MemAvailable drop)",
            }
        )
    for r in res.rows:
        if (
            r.system == "sessionpool"
            and r.metric == "time to interactive"
            and r.mode.startswith("burst")
        ):
            s = r.summary()
            out.append(
                {
                    "target": f"{r.mode} new sessions: 100% success",
                    "pass": s["succeeded"] == s["n"],
                    "detail": f"{s['succeeded']}/{s['n']}, p99 {s['p99']:.0f} ms",
                }
            )
    return out


def markdown(res: Results, meta: dict[str, Any], tgts: list[dict[str, Any]]) -> str:
    lines = [
        f"# Benchmark suite, {meta['date_utc']}{' (quick)' if meta['quick'] else ''}",
        "",
        f"{meta['cpus']} CPUs, {meta['mem_total_gib']} GiB, kernel {meta['kernel']}, "
        f"cgroup favordynmods {meta['cgroup_favordynmods']}; machine "
        f"{meta['cpu_busy_before']:.0%} busy before the run; {meta['total_seconds']:.0f} s in all.",
        "",
        "| metric | system | mode | n | success | p50 | p95 | p99 | unit |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in res.rows:
        s = r.summary()
        if r.value is not None:
            lines.append(
                f"| {r.metric} | {r.system} | {r.mode} | {s['n']} | - | "
                f"{fmt(r.value, r.unit)} | - | - | {r.unit} |"
            )
        else:
            lines.append(
                f"| {r.metric} | {r.system} | {r.mode} | {s['n']} | {s['success_rate']:.0%} | "
                f"{fmt(s['p50'], r.unit)} | {fmt(s['p95'], r.unit)} | "
                f"{fmt(s['p99'], r.unit)} | {r.unit} |"
            )
    lines += ["", "Scaling (sessionpool, idle sessions that each ran a pandas cell):", ""]
    lines += [
        "| live sessions | alloc p50 | alloc p99 | x += 1 p50 | x += 1 p99 | USS/session MB "
        "| machine used GB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in res.curves.get("scaling", []):
        lines.append(
            f"| {p['live']} | {fmt(p['alloc_p50'], 'ms')} | {fmt(p['alloc_p99'], 'ms')} | "
            f"{fmt(p['x_p50'], 'ms')} | {fmt(p['x_p99'], 'ms')} | "
            f"{fmt(p['uss_mb_per_session'], 'MB')} | {p['used_memory_gb']:.2f} |"
        )
    ref = res.extra.get("scaling_refusal")
    lines += [
        "",
        f"Admission control: {json.dumps(ref) if ref else 'not reached'}.",
        f"Density (largest step with x += 1 p99 <= 10 ms): {res.extra.get('density_x_p99_10ms')}.",
        "",
        "| target | result | detail |",
        "|---|---|---|",
    ]
    for t in tgts:
        lines.append(f"| {t['target']} | {'PASS' if t['pass'] else 'MISS'} | {t['detail']} |")
    return "\n".join(lines) + "\n"


def charts(res: Results, out: Path, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / f"{stem}-{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path.name)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names, values = [], []
    for system in SYSTEMS:
        r = res.get("time to interactive", system)
        if r and r.samples:
            names.append(system)
            values.append(r.pct(50))
    ax.barh(names, values, color=["C2", "C0", "C1", "C3"][: len(names)])
    ax.set_xscale("log")
    ax.set_xlabel("time to interactive, p50 ms (log)")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f} ms", va="center")
    save(fig, "tti")

    points = res.curves.get("scaling", [])
    if points:
        live = [p["live"] for p in points]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for key, label in (
            ("alloc_p50", "allocation p50"),
            ("alloc_p99", "allocation p99"),
            ("x_p50", "x += 1 p50"),
            ("x_p99", "x += 1 p99"),
        ):
            ax.plot(live, [p[key] for p in points], marker="o", label=label)
        ax.axhline(10, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("live idle sessions")
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.legend()
        save(fig, "scaling-latency")

        fig, ax1 = plt.subplots(figsize=(7, 3.5))
        ax1.plot(live, [p["uss_mb_per_session"] for p in points], marker="o", color="C0")
        ax1.set_xlabel("live idle sessions (each ran a pandas cell)")
        ax1.set_ylabel("USS per session, MB", color="C0")
        ax2 = ax1.twinx()
        ax2.plot(live, [p["used_memory_gb"] for p in points], marker="s", color="C3")
        ax2.set_ylabel("machine memory used, GB", color="C3")
        uss_top = max((p["uss_mb_per_session"] for p in points[1:]), default=1.0)
        ax1.set_ylim(0, (uss_top if uss_top == uss_top else 1.0) * 1.3)  # NaN at 0 sessions
        ax2.set_ylim(bottom=0)
        ref = res.extra.get("scaling_refusal")
        if ref:
            ax1.axvline(ref["at_live_sessions"], color="grey", ls="--", lw=0.8)
            ax1.annotate(
                " admission control refuses",
                xy=(ref["at_live_sessions"], 0.05),
                xycoords=("data", "axes fraction"),
                color="grey",
                ha="right",
            )
        save(fig, "scaling-memory")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for system in SYSTEMS:
        rows = [r for r in res.rows if r.system == system and r.metric == "throughput (x += 1)"]
        if rows:
            ax.plot(
                [int(r.mode.split()[0]) for r in rows],
                [r.value or 0.0 for r in rows],
                marker="o",
                label=system,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("x += 1 executions/s")
    ax.legend()
    save(fig, "throughput")
    return made


def write(res: Results, meta: dict[str, Any], out: Path, stem: str) -> None:
    """``<out>/<stem>.json``, ``<stem>.md`` (also printed) and ``<stem>-*.png``."""
    tgts = targets(res)
    out.mkdir(parents=True, exist_ok=True)
    pngs = charts(res, out, stem)
    doc = {
        "meta": meta,
        "rows": [r.summary() for r in res.rows],
        "curves": res.curves,
        "targets": tgts,
        "extra": res.extra,
        "charts": pngs,
    }
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md = markdown(res, meta, tgts)
    (out / f"{stem}.md").write_text(md)
    print(md)
    log(f"written: {stem}.json, {stem}.md, {', '.join(pngs)} in {out}")
