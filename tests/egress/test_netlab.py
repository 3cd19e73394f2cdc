"""The test internet itself, from the host: what the egress proxy's tests build on."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.egress import netlab
from tests.egress.helpers import netns_usable
from tests.egress.netlab import Internet

pytestmark = pytest.mark.jail


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _start_alone(net: Internet) -> None:
    """Starts without waiting: another run's internet is up otherwise."""
    try:
        net.start()
    except RuntimeError as exc:
        if "holds" in str(exc):
            pytest.skip(f"another test internet is up: {exc}")
        raise


def test_start_cleans_stale_runs_and_close_removes_everything(internet_down: None) -> None:
    """Before the module's first use of ``internet``: two internets cannot be up at once."""
    reason = netns_usable()
    if reason:
        pytest.skip(reason)
    dead = _dead_pid()
    stale_ns, stale_veth = f"{netlab.PREFIX}-{dead}-0", f"sph{dead}-0"
    subprocess.run(["ip", "netns", "add", stale_ns], check=True)
    subprocess.run(
        ["ip", "link", "add", stale_veth, "type", "veth", "peer", "name", f"spn{dead}-0"],
        check=True,
    )
    net = Internet(lock_timeout=0)
    try:
        _start_alone(net)
    finally:
        if net.directory is None:  # skipped: the fake stale pair is ours to remove
            subprocess.run(["ip", "netns", "del", stale_ns], check=False)
            subprocess.run(["ip", "link", "del", stale_veth], check=False)
    try:
        assert stale_ns not in _netns_names()
        assert stale_veth not in _links()
        assert net.netns in _netns_names()
        assert net.veth_host in _links()
        directory = net.directory
    finally:
        net.close()
    assert net.netns not in _netns_names()
    links = _links()
    assert net.veth_host not in links and net.veth_ns not in links
    assert directory is not None and not directory.exists()
    net.close()  # twice is fine


def test_a_failed_start_leaves_nothing(
    internet_down: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reason = netns_usable()
    if reason:
        pytest.skip(reason)
    broken = tmp_path / "broken_server.py"
    broken.write_text("raise SystemExit('no servers today')\n")
    monkeypatch.setattr(netlab, "SERVER", broken)
    net = Internet(lock_timeout=0)
    with pytest.raises(RuntimeError, match="no servers today"):
        _start_alone(net)
    assert net.netns not in _netns_names()
    assert net.veth_host not in _links()
    assert net.directory is None
    net.close()


def test_https_echo_verifies_and_sees_sni_and_host(internet: Internet) -> None:
    resp = internet.fetch(Internet.ALLOWED, "/echo?x=1", headers={"X-Probe": "yes"})
    assert resp.status == 200
    echo = resp.json()
    assert echo["sni"] == Internet.ALLOWED
    assert echo["host"] == Internet.ALLOWED
    assert echo["path"] == "/echo?x=1"
    assert echo["headers"]["x-probe"] == "yes"
    assert echo["server_address"] == Internet.address
    assert echo["client_address"] == internet.host_address


def test_each_served_name_has_its_certificate(internet: Internet) -> None:
    for name in Internet.served_names:
        echo = internet.fetch(name, "/echo").json()
        assert echo["sni"] == name
        assert echo["server_address"] == internet.hosts[name]
    assert internet.hosts[Internet.DENIED] == Internet.second_address


@pytest.mark.parametrize("sni", ["unknown.test", None])
def test_unknown_sni_gets_the_allowed_certificate(internet: Internet, sni: str | None) -> None:
    ctx = ssl.create_default_context(cafile=str(internet.ca_file))
    ctx.check_hostname = False
    with (
        socket.create_connection((Internet.second_address, 443), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None and cert["subjectAltName"] == (("DNS", Internet.ALLOWED),)


def test_http_echo_with_a_body(internet: Internet) -> None:
    resp = internet.fetch(Internet.OTHER_ALLOWED, "/echo", https=False, method="POST", body=b"abc")
    echo = resp.json()
    assert (echo["method"], echo["body_len"], echo["sni"]) == ("POST", 3, None)
    assert echo["host"] == Internet.OTHER_ALLOWED


def test_redirect(internet: Internet) -> None:
    resp = internet.fetch(Internet.ALLOWED, "/redirect?to=https://denied.test/echo")
    assert resp.status == 302
    assert resp.headers["location"] == "https://denied.test/echo"


def test_bytes_and_slow(internet: Internet) -> None:
    resp = internet.fetch(Internet.OTHER_ALLOWED, "/bytes?n=1000000")
    assert len(resp.body) == 1_000_000
    began = time.monotonic()
    assert internet.fetch(Internet.ALLOWED, "/slow?s=0.3", https=False).body == b"ok"
    assert time.monotonic() - began >= 0.3


def test_index_lists_the_wheel_with_its_hash(internet: Internet) -> None:
    root = internet.fetch(Internet.INDEX, "/simple/")
    assert b'href="/simple/sp-egress-probe/"' in root.body
    page = internet.fetch(Internet.INDEX, "/simple/sp-egress-probe/")
    digest = hashlib.sha256(internet.wheel_file.read_bytes()).hexdigest()
    assert f"/packages/{netlab.WHEEL_NAME}#sha256={digest}".encode() in page.body
    wheel = internet.fetch(Internet.INDEX, f"/packages/{netlab.WHEEL_NAME}")
    assert hashlib.sha256(wheel.body).hexdigest() == digest


def test_wheel_record_is_right(internet: Internet) -> None:
    with zipfile.ZipFile(internet.wheel_file) as zf:
        record = zf.read("sp_egress_probe-1.0.dist-info/RECORD").decode().splitlines()
        for line in record:
            path, digest, size = line.rsplit(",", 2)
            if not digest:
                continue
            data = zf.read(path)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == f"sha256={want.decode()}"
            assert int(size) == len(data)


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    cmd = [sys.executable, "-m", "pip", "--isolated", "--no-input", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_pip_installs_the_wheel(internet: Internet, tmp_path: Path) -> None:
    target = tmp_path / "site"
    result = _pip("install", "--no-index", "--target", str(target), str(internet.wheel_file))
    assert result.returncode == 0, result.stderr
    code = "import sp_egress_probe; print(sp_egress_probe.VALUE)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    assert out.stdout.strip() == "42", out.stderr


def test_pip_reads_the_index(internet: Internet, tmp_path: Path) -> None:
    """pip itself parses the index and checks the hash; by address, as it has no hosts map."""
    result = _pip(
        "download",
        "--no-deps",
        "--index-url",
        f"http://{Internet.address}/simple/",
        "--trusted-host",
        Internet.address,
        "--dest",
        str(tmp_path),
        "sp-egress-probe",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / netlab.WHEEL_NAME).read_bytes() == internet.wheel_file.read_bytes()


def test_udp_echo_answers_the_host(internet: Internet) -> None:
    for port in Internet.udp_ports:
        assert internet.udp_echo(b"ping", port=port) == b"ping"
