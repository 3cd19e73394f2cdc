"""Kernel samepage merging (KSM), the host's side: is it there, and is ksmd running.

A pool's ``memory_merge`` makes its zygote mark memory mergeable (``sandbox/zygote.py``), but
nothing is merged unless ksmd runs (``/sys/kernel/mm/ksm/run`` = 1), which is machine-wide. The
engine starts it when a pool asks for merging and it is stopped, with the scan rate of the
engine's settings; it never stops it (other processes on the host may use it, and with no
mergeable memory left ksmd has nothing to scan). Without KSM a pool that asks for it is a
configuration error: merging is a density feature, not an isolation one, so there is no reason
to refuse silently or to start without it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sessionpool import errors

log = logging.getLogger("sessionpool.sandbox")

KSM_DIR = Path("/sys/kernel/mm/ksm")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: values of ``run``: 0 stopped (merged pages stay merged), 1 running, 2 stopped and unmerged
RUN_STOPPED, RUN_RUNNING, RUN_UNMERGE = 0, 1, 2


@dataclass(frozen=True)
class KsmStatus:
    run: int
    pages_to_scan: int
    sleep_millisecs: int
    pages_sharing: int
    #: ``none`` or ``scan-time`` (the kernel tunes pages_to_scan itself), "" before kernel 6.7
    advisor: str
    #: ksmd's records, one per resident page of mergeable memory in each process, merged or not
    #: (pages_shared + pages_sharing + pages_unshared + pages_volatile): a page every session
    #: still shares with its zygote has one in each session too
    rmap_items: int = 0
    #: what merging saves, net of those records, in bytes (below zero while the records cost
    #: more than merging saves; None: a kernel before 6.1)
    general_profit: int | None = None
    #: pages merged with the zero page (use_zero_pages), not counted in pages_sharing
    zero_pages: int = 0
    #: passes ksmd has ended over all mergeable memory
    full_scans: int = 0

    @property
    def records_bytes(self) -> int | None:
        """Memory the records take (64 bytes each on x86-64); None where the kernel does not say."""
        if self.general_profit is None:
            return None
        return (self.pages_sharing + self.zero_pages) * PAGE_SIZE - self.general_profit

    def describe(self) -> str:
        state = {RUN_RUNNING: "running", RUN_UNMERGE: "stopped (unmerged)"}.get(self.run, "stopped")
        rate = (
            f"advisor {self.advisor}"
            if self.advisor not in ("", "none")
            else f"pages_to_scan={self.pages_to_scan}, sleep_millisecs={self.sleep_millisecs}"
        )
        records = f"; {self.rmap_items} records"
        if self.records_bytes is not None:
            records += f" ({self.records_bytes / 2**20:.1f} MiB)"
        return f"{state} ({rate}; pages_sharing={self.pages_sharing}{records})"


def _read(root: Path, name: str) -> str:
    return (root / name).read_text().strip()


def _counter(root: Path, name: str) -> int | None:
    """A counter a kernel may not have yet (None then)."""
    try:
        return int(_read(root, name))
    except (OSError, ValueError):
        return None


def _advisor(root: Path) -> str:
    """The selected advisor mode (the file reads ``[none] scan-time``)."""
    try:
        text = _read(root, "advisor_mode")
    except OSError:
        return ""
    for word in text.split():
        if word.startswith("["):
            return word.strip("[]")
    return text


def status(root: Path | None = None) -> KsmStatus | None:
    """KSM's state, or None where the kernel has none (built without CONFIG_KSM)."""
    root = root or KSM_DIR
    try:
        return KsmStatus(
            run=int(_read(root, "run")),
            pages_to_scan=int(_read(root, "pages_to_scan")),
            sleep_millisecs=int(_read(root, "sleep_millisecs")),
            pages_sharing=int(_read(root, "pages_sharing")),
            advisor=_advisor(root),
            rmap_items=sum(
                (_counter(root, name) or 0)
                for name in ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile")
            ),
            general_profit=_counter(root, "general_profit"),
            zero_pages=_counter(root, "ksm_zero_pages") or 0,
            full_scans=_counter(root, "full_scans") or 0,
        )
    except (OSError, ValueError):
        return None


def ensure_running(
    pools: list[str], pages_to_scan: int, sleep_millisecs: int, root: Path | None = None
) -> str:
    """Start ksmd for ``pools`` (those whose memory_merge is not ``off``) unless it runs.

    A stopped KSM gets the scan rate given here first (unless the kernel's advisor sets it);
    a running one is left as the operator set it. Returns what was done, for the log;
    ConfigError naming the pools if the kernel has no KSM or it cannot be started.
    """
    root = root or KSM_DIR
    tables = ", ".join(f"[pools.{p}]" for p in pools)
    fix = (
        "KSM needs a kernel built with CONFIG_KSM, a writable /sys/kernel/mm/ksm and a server "
        f'running as root; or set memory_merge = "off" in {tables}'
    )
    where = ", ".join(repr(p) for p in pools)
    before = status(root)
    if before is None:
        raise errors.ConfigError(
            f"pool(s) {where} ask for memory_merge, but this kernel has no samepage merging "
            f"({root} is missing): {fix}"
        )
    if before.run == RUN_RUNNING:
        return f"kernel samepage merging already running: {before.describe()}"
    if pages_to_scan < 1 or sleep_millisecs < 1:
        raise errors.ConfigError("ksm_pages_to_scan and ksm_sleep_millisecs must be at least 1")
    try:
        if before.advisor in ("", "none"):
            (root / "pages_to_scan").write_text(str(pages_to_scan))
        (root / "sleep_millisecs").write_text(str(sleep_millisecs))
        (root / "run").write_text(str(RUN_RUNNING))
    except OSError as exc:
        raise errors.ConfigError(
            f"pool(s) {where} ask for memory_merge, but kernel samepage merging could not be "
            f"started ({exc.strerror} writing {root}): {fix}"
        ) from None
    after = status(root)
    return f"kernel samepage merging started: {after.describe() if after else 'unknown'}"
