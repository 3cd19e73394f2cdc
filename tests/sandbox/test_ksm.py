"""Kernel samepage merging: the host's side (``sandbox/ksm.py``), on a stand-in sysfs directory.

Whether ksmd runs is machine-wide state, so these tests never touch the real
``/sys/kernel/mm/ksm``: ``ensure_running`` takes the directory as an argument. The zygote's side,
with real sessions, is ``test_memory_merge.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionpool import errors
from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.engine import Engine
from sessionpool.sandbox import ksm
from sessionpool.sandbox.fake import FakeBackend


def fake_ksm(tmp_path: Path, run: int = 0, advisor: str | None = "[none] scan-time") -> Path:
    """A directory shaped like /sys/kernel/mm/ksm, with the kernel's defaults."""
    root = tmp_path / "ksm"
    root.mkdir()
    for name, text in (
        ("run", str(run)),
        ("pages_to_scan", "100"),
        ("sleep_millisecs", "20"),
        ("pages_sharing", "0"),
    ):
        (root / name).write_text(text + "\n")
    if advisor is not None:
        (root / "advisor_mode").write_text(advisor + "\n")
    return root


def test_stopped_ksm_is_started_with_the_configured_rate(tmp_path: Path) -> None:
    root = fake_ksm(tmp_path)
    done = ksm.ensure_running(["dense"], 5000, 50, root)
    assert (root / "run").read_text().strip() == "1"
    assert (root / "pages_to_scan").read_text().strip() == "5000"
    assert (root / "sleep_millisecs").read_text().strip() == "50"
    assert done.startswith("kernel samepage merging started")
    assert "pages_to_scan=5000" in done


def test_a_running_ksm_keeps_the_operators_rate(tmp_path: Path) -> None:
    root = fake_ksm(tmp_path, run=1)
    done = ksm.ensure_running(["dense"], 5000, 50, root)
    assert (root / "pages_to_scan").read_text().strip() == "100"
    assert "already running" in done


def test_the_kernels_advisor_keeps_setting_the_scan_rate(tmp_path: Path) -> None:
    """With advisor_mode = scan-time the kernel refuses writes to pages_to_scan (it tunes it)."""
    root = fake_ksm(tmp_path, advisor="none [scan-time]")
    done = ksm.ensure_running(["dense"], 5000, 50, root)
    assert (root / "run").read_text().strip() == "1"
    assert (root / "pages_to_scan").read_text().strip() == "100"
    assert "advisor scan-time" in done


def test_a_kernel_before_the_advisor_is_read_too(tmp_path: Path) -> None:
    root = fake_ksm(tmp_path, advisor=None)
    status = ksm.status(root)
    assert status is not None and status.advisor == "" and status.run == 0
    ksm.ensure_running(["dense"], 5000, 50, root)
    assert (root / "pages_to_scan").read_text().strip() == "5000"


def test_ksmds_own_records_are_counted_and_sized(tmp_path: Path) -> None:
    """One record per scanned page, whatever its state; their size is what the kernel's net
    profit leaves out of the merged pages (here 64 bytes a record, as on x86-64)."""
    root = fake_ksm(tmp_path, run=1)
    counters = {"pages_shared": 10, "pages_sharing": 90, "pages_unshared": 30, "pages_volatile": 70}
    for name, value in counters.items():
        (root / name).write_text(f"{value}\n")
    (root / "ksm_zero_pages").write_text("4\n")
    (root / "full_scans").write_text("12\n")
    (root / "general_profit").write_text(f"{(90 + 4) * ksm.PAGE_SIZE - 200 * 64}\n")
    status = ksm.status(root)
    assert status is not None
    assert status.rmap_items == 200
    assert status.records_bytes == 200 * 64
    assert status.full_scans == 12
    assert "200 records (0.0 MiB)" in status.describe()


def test_records_that_cost_more_than_merging_saves_are_sized_too(tmp_path: Path) -> None:
    """With little merged yet the net profit is below zero; the records are still counted."""
    root = fake_ksm(tmp_path, run=1)
    (root / "pages_sharing").write_text("1\n")
    (root / "pages_volatile").write_text("99\n")
    (root / "general_profit").write_text(f"{ksm.PAGE_SIZE - 100 * 64}\n")
    status = ksm.status(root)
    assert status is not None and status.records_bytes == 100 * 64


def test_a_kernel_without_the_net_profit_says_nothing_of_the_records_size(tmp_path: Path) -> None:
    root = fake_ksm(tmp_path, run=1)
    (root / "pages_volatile").write_text("7\n")
    status = ksm.status(root)
    assert status is not None and status.rmap_items == 7
    assert status.records_bytes is None
    assert status.describe().endswith("; 7 records)")


def test_no_ksm_refuses_naming_the_pools_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError) as info:
        ksm.ensure_running(["dense", "other"], 5000, 50, tmp_path / "missing")
    text = str(info.value)
    assert "'dense', 'other'" in text
    assert "no samepage merging" in text
    assert 'memory_merge = "off" in [pools.dense], [pools.other]' in text


def test_ksm_that_cannot_be_started_refuses_naming_the_pool(tmp_path: Path) -> None:
    root = fake_ksm(tmp_path)
    (root / "run").unlink()
    (root / "run").mkdir()  # readable as nothing, writable as nothing: any OSError will do
    with pytest.raises(errors.ConfigError) as info:
        ksm.ensure_running(["dense"], 5000, 50, root)
    assert "dense" in str(info.value) and 'memory_merge = "off"' in str(info.value)
    (root / "run").rmdir()
    (root / "run").write_text("0\n")
    with pytest.raises(errors.ConfigError, match="no samepage merging"):
        (root / "pages_sharing").unlink()
        ksm.ensure_running(["dense"], 5000, 50, root)


async def test_an_engine_whose_pool_asks_for_merging_refuses_to_start_without_ksm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before any zygote or session: the start stops with the pool's name in the error."""
    monkeypatch.setattr(ksm, "KSM_DIR", tmp_path / "missing")
    engine = Engine(
        EngineConfig(data_dir=tmp_path),
        [PoolConfig(name="plain"), PoolConfig(name="dense", memory_merge="zygote")],
        backend=FakeBackend(tmp_path),
    )
    with pytest.raises(errors.ConfigError, match=r"'dense'.*memory_merge"):
        await engine.start()
    assert not engine.started


async def test_an_engine_without_merging_pools_never_looks_at_ksm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ksm, "KSM_DIR", tmp_path / "missing")
    engine = Engine(
        EngineConfig(data_dir=tmp_path),
        [PoolConfig(name="plain", ready_sessions=0)],
        backend=FakeBackend(tmp_path),
    )
    await engine.start()
    try:
        assert engine.started
    finally:
        await engine.close()


async def test_an_engine_starts_a_stopped_ksm_with_its_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_ksm(tmp_path)
    monkeypatch.setattr(ksm, "KSM_DIR", root)
    engine = Engine(
        EngineConfig(data_dir=tmp_path, ksm_pages_to_scan=3000, ksm_sleep_millisecs=40),
        [PoolConfig(name="dense", memory_merge="all", ready_sessions=0)],
        backend=FakeBackend(tmp_path),
    )
    await engine.start()
    try:
        assert (root / "run").read_text().strip() == "1"
        assert (root / "pages_to_scan").read_text().strip() == "3000"
        assert (root / "sleep_millisecs").read_text().strip() == "40"
    finally:
        await engine.close()


def test_doctor_reports_ksm_without_failing_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only pools that ask for merging need KSM: its absence is advice, never a failed check."""
    from sessionpool.sandbox.doctor import _memory_merge

    monkeypatch.setattr(ksm, "KSM_DIR", tmp_path / "missing")
    check = _memory_merge()
    assert check.ok and "absent" in check.detail and 'memory_merge = "off"' in check.detail
    monkeypatch.setattr(ksm, "KSM_DIR", fake_ksm(tmp_path, run=1))
    check = _memory_merge()
    assert check.ok and check.detail.startswith("running (pages_to_scan=100")
