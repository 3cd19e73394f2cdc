"""Session runtimes: the session runs its own environment, never the server's.

One jailed engine with a pool per runtime: the default Python runtime, the same on CPython 3.13,
Node.js, and a custom image (a small root filesystem built here from the host's ``sh`` and a
static program the default runtime lacks). Each check runs through real jailed sessions.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessionpool.config import EngineConfig, PoolConfig, default_runtimes_dir
from sessionpool.engine import Engine
from sessionpool.sandbox.runtimes import Runtime
from sessionpool.session import Session
from sessionpool.types import ExecutionStatus
from tests.sandbox.helpers import value

pytestmark = pytest.mark.jail

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIMES = default_runtimes_dir()
#: strings no path inside a session may contain: the checkout, the server's environment and the
#: interpreters' install locations
HOST_MARKS = sorted(
    {str(REPO_ROOT), sys.prefix, sys.base_prefix, os.path.realpath(sys.executable), "/.pyenv/"}
)


def built(name: str) -> bool:
    return (RUNTIMES / name / "manifest.json").is_file()


needs_313 = pytest.mark.skipif(
    not built("python-3.13"), reason="no python-3.13 runtime built (no CPython 3.13 on this host)"
)

HELLO_C = r"""
#include <stdio.h>
int main(void) { puts("hello from the image"); return 0; }
"""


def _copy_with_libraries(binary: str, root: Path, dest: str) -> None:
    """Copy ``binary`` to ``root/dest`` and the shared libraries it needs to their paths."""
    target = root / dest.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(binary), target)
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/") and "libpython" not in path:
            lib = root / path.lstrip("/")
            lib.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(path), lib)


@pytest.fixture(scope="module")
def rootfs_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal root filesystem as a tarball: sh and a few tools in /bin, the C library, and a
    static program in /usr/bin."""
    work = Path(tmp_path_factory.mktemp("rootfs"))
    root = work / "root"
    for tool in ("sh", "cat", "grep", "id", "tail", "cut", "tr", "ls"):
        found = shutil.which(tool)
        assert found is not None, tool
        _copy_with_libraries(found, root, f"/bin/{tool}")
    # the C library and libm of the runtime's interpreter, for modules loaded after the fork
    _copy_with_libraries(str(RUNTIMES / "python" / "root" / "bin" / "python3"), root, "/bin/py")
    (root / "bin" / "py").unlink()
    (work / "hello.c").write_text(HELLO_C)
    hello = root / "usr" / "bin" / "sessionpool-hello"
    hello.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cc", "-static", "-O2", "-o", str(hello), str(work / "hello.c")], check=True)
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text("ID=sessionpool-test\n")
    tar = work / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname=".")
    return tar


@pytest.fixture(scope="module")
async def rt_engine(
    tmp_path_factory: pytest.TempPathFactory, rootfs_tar: Path
) -> AsyncIterator[Engine]:
    pools = [
        PoolConfig(name="py", ready_sessions=1, cooldown_seconds=600),
        PoolConfig(name="js", runtime="node", ready_sessions=1, cooldown_seconds=600),
        PoolConfig(name="img", image=str(rootfs_tar), ready_sessions=0, cooldown_seconds=600),
    ]
    if built("python-3.13"):
        pools.append(PoolConfig(name="py313", runtime="python-3.13", ready_sessions=0))
    eng = Engine(EngineConfig(data_dir=Path(tmp_path_factory.mktemp("runtimes"))), pools)
    await eng.start()
    yield eng
    await eng.close()


async def acquire(engine: Engine, pool: str, ident: str) -> Session:
    return await engine.pool(pool).acquire(ident)  # type: ignore[return-value]


# -- the default runtime: no trace of the host ------------------------------------------------

WALK = """
import os
marks = {marks!r}
hits = []
for root, dirs, files in os.walk('/'):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys')]
    for name in dirs + files:
        path = os.path.join(root, name)
        target = os.readlink(path) if os.path.islink(path) else ''
        hits += [path for m in marks if m in path or m in target]
texts = {{}}
for name in ('/proc/self/mountinfo', '/proc/self/cmdline', '/proc/self/environ', '/proc/1/maps'):
    texts[name] = open(name, 'rb').read().decode('utf-8', 'replace')
hits += [f'{{name}}: {{m}}' for name, text in texts.items() for m in marks if m in text]
hits
"""


async def test_no_host_path_anywhere_in_the_session(rt_engine: Engine) -> None:
    """Walk the whole tree (link targets too) and read mountinfo, cmdline, environ and the
    kernel's memory map: none names the checkout, the server's prefix or pyenv."""
    session = await acquire(rt_engine, "py", "walk")
    assert await value(session, WALK.format(marks=HOST_MARKS), timeout=120) == []
    facts = await value(session, "import sys\n(sys.prefix, sys.executable, sys.path)")
    prefix, executable, path = facts
    assert prefix == "/opt/python" and executable.startswith("/opt/python/bin/")
    assert all(p.startswith("/opt/python/") for p in path), path


async def test_the_servers_packages_are_not_importable(rt_engine: Engine) -> None:
    session = await acquire(rt_engine, "py", "imports")
    names = ["sessionpool", "fastapi", "uvicorn", "starlette", "pytest", "schemathesis", "httpx"]
    found = await value(
        session, f"import importlib.util\n[importlib.util.find_spec(n) is None for n in {names}]"
    )
    assert found == [True] * len(names), dict(zip(names, found, strict=True))
    r = await session.execute("import sessionpool")
    assert r.error is not None and r.error.ename == "ModuleNotFoundError"


def test_the_sessions_packages_are_not_on_the_servers_path() -> None:
    """The runtime's document and statistics packages live only in its image."""
    for name in ("statsmodels", "docx", "pptx", "reportlab", "pypdf", "sympy"):
        assert importlib.util.find_spec(name) is None, name
    assert not any(p.startswith(str(RUNTIMES)) for p in sys.path)


async def test_the_kernel_preloads_from_the_runtime(rt_engine: Engine) -> None:
    session = await acquire(rt_engine, "py", "preload")
    files = await value(
        session, "import sys\n[sys.modules[m].__file__ for m in ('numpy', 'IPython')]"
    )
    assert all(f.startswith("/opt/python/lib/python3.11/site-packages/") for f in files), files


# -- another CPython ------------------------------------------------------------------------


@needs_313
async def test_a_pool_on_cpython_3_13(rt_engine: Engine) -> None:
    session = await acquire(rt_engine, "py313", "three-thirteen")
    assert await value(session, "import sys\nsys.version_info[:2]") == (3, 13)
    await value(session, "import numpy as np\nx = np.arange(10)\n0")
    assert await value(session, "int(x.sum())") == 45  # state across calls
    r = await session.execute("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    assert r.status is ExecutionStatus.OK and r.displays and r.displays[0].png, r.stderr
    assert r.displays[0].png.startswith(b"\x89PNG")
    # the fast path for plain cells on this CPython: a traceback as IPython formats it
    r = await session.execute("def f():\n    return 1 / 0\nprint('before')\nf()")
    assert r.status is ExecutionStatus.ERROR and r.stdout == "before\n"
    assert r.error is not None and r.error.ename == "ZeroDivisionError"
    assert "Cell In[" in r.error.traceback and "return 1 / 0" in r.error.traceback


#: whether the preloaded objects (a module, a function, a type, the shell's namespace) are
#: immortal: a negative low half of the reference count
PRELOADED_IMMORTAL = """
import ctypes, numpy, pandas
def immortal(obj):
    return ctypes.c_int32.from_address(id(obj)).value < 0
[immortal(o) for o in (numpy, pandas.DataFrame.describe, pandas.DataFrame, get_ipython().user_ns)]
"""


@needs_313
async def test_the_zygotes_objects_are_immortal_on_cpython_3_13(rt_engine: Engine) -> None:
    """So that reading them does not copy their pages into the session; what the session
    makes stays mortal, and the default runtime's CPython 3.11 has no immortal objects."""
    session = await acquire(rt_engine, "py313", "immortal")
    assert await value(session, PRELOADED_IMMORTAL) == [True] * 4
    made = "class Mine:\n    pass\nmine = Mine()\n[immortal(mine), immortal(Mine)]"
    assert await value(session, made) == [False, False]
    session = await acquire(rt_engine, "py", "mortal")
    assert await value(session, PRELOADED_IMMORTAL) == [False] * 4


# -- Node.js ----------------------------------------------------------------------------------


async def test_a_node_pool_keeps_state_like_a_repl(rt_engine: Engine) -> None:
    session = await acquire(rt_engine, "js", "node-state")
    r = await session.execute("let total = 40; function add(n) { return total += n }")
    assert r.status is ExecutionStatus.OK, r.error
    r = await session.execute("console.log('adding'); add(2)")
    assert r.status is ExecutionStatus.OK, r.error
    assert r.stdout == "adding\n"
    assert r.result is not None and r.result.data["text/plain"] == "42"
    r = await session.execute("process.version + ' ' + require('os').userInfo().uid")
    assert r.result is not None
    assert r.result.data["text/plain"] == f"'{Runtime.load(RUNTIMES, 'node').version} 0'"


async def test_a_thrown_error_in_node_is_a_failure(rt_engine: Engine) -> None:
    session = await acquire(rt_engine, "js", "node-error")
    r = await session.execute("throw new TypeError('no such thing')")
    assert r.status is ExecutionStatus.ERROR
    assert r.error is not None and r.error.ename == "TypeError"
    assert r.error.evalue == "no such thing"
    r = await session.execute("require('fs').writeFileSync('/mnt/data/n.txt', 'from node'); 1")
    assert r.status is ExecutionStatus.OK
    assert await session.read_file("n.txt") == b"from node"


# -- a custom image ---------------------------------------------------------------------------


async def test_a_custom_image_runs_a_program_the_default_runtime_lacks(rt_engine: Engine) -> None:
    image = await acquire(rt_engine, "img", "image")
    shell = await image.run_shell("sessionpool-hello && cat /etc/os-release && echo $0")
    assert shell.exit_code == 0, shell.stderr
    assert shell.stdout == "hello from the image\nID=sessionpool-test\n/bin/sh\n"
    # the image is the root: the host's /usr is not there; the kernel is the runtime's
    cell = (
        "import os, sys\nos.listdir('/usr/bin'), sys.prefix, int(__import__('numpy').ones(3).sum())"
    )
    found = await value(image, cell)
    assert found == (["sessionpool-hello"], "/opt/python", 3)
    await image.write_file("in.txt", b"uploaded")
    assert await value(image, "open('/mnt/data/in.txt').read()") == "uploaded"
    readonly = await image.run_shell("echo x > /usr/bin/new")
    assert readonly.exit_code != 0 and "Read-only" in readonly.stderr
    default = await acquire(rt_engine, "py", "no-hello")
    missing = await default.run_shell("sessionpool-hello")
    assert missing.exit_code == 127


# -- the jail does not depend on the runtime ----------------------------------------------------

JAIL_FACTS = (
    "grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' /proc/self/status; id -u; "
    "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; "
    "test -e /etc/shadow && echo shadow; ls /proc | grep -cE '^[0-9]+$'; "
    "(echo x > /opt/python/new || echo x > /opt/sessionpool/new) 2>/dev/null || echo ro"
)


@pytest.mark.parametrize("pool", ["py", "js", "img", "py313"])
async def test_the_same_jail_in_every_runtime(rt_engine: Engine, pool: str) -> None:
    """Every runtime's session is confined the same way: no privileges, seccomp, no network
    but loopback, no host secrets, its own processes only, read-only runtime."""
    if pool not in rt_engine.pools:
        pytest.skip("no python-3.13 runtime built here")
    session = await acquire(rt_engine, pool, f"jail-{pool}")
    r = await session.run_shell(JAIL_FACTS)
    lines = r.stdout.split()
    facts = dict(zip(lines[0:8:2], lines[1:8:2], strict=True))
    assert facts == {
        "NoNewPrivs:": "1",
        "Seccomp:": "2",
        "CapEff:": "0000000000000000",
        "CapBnd:": "0000000000000000",
    }, r.stdout
    uid, interfaces, rest = lines[8], lines[9], lines[10:]
    assert uid == "0" and interfaces == "lo"
    assert "shadow" not in rest
    assert int(rest[0]) <= 4  # pid 1, the shell, its pipeline: nothing of the host
    assert rest[-1] == "ro"


# -- the unsafe backend runs the same runtimes, in place ----------------------------------------


async def test_the_unsafe_backend_runs_the_runtimes_in_place(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """No mount namespace there: the runtime's tree runs from where it was built, and the
    server's environment is still not the session's."""
    eng = Engine(
        EngineConfig(backend="unsafe", data_dir=Path(tmp_path_factory.mktemp("unsafe"))),
        [
            PoolConfig(name="py", ready_sessions=0),
            PoolConfig(name="js", runtime="node", ready_sessions=0),
        ],
    )
    await eng.start()
    try:
        py = await acquire(eng, "py", "in-place")
        found = await value(
            py,
            "import sys, importlib.util\n"
            "sys.prefix, importlib.util.find_spec('fastapi') is None, "
            "importlib.util.find_spec('statsmodels') is not None",
        )
        assert found == (str(RUNTIMES / "python" / "root"), True, True)
        js = await acquire(eng, "js", "in-place")
        r = await js.execute("[1, 2, 3].map(n => n * 2)")
        assert r.result is not None and r.result.data["text/plain"] == "[ 2, 4, 6 ]"
    finally:
        await eng.close()
