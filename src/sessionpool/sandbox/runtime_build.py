"""Building a session runtime from its definition (``runtimes/<name>/`` in the repository).

A definition is a directory with ``runtime.toml`` (``kind = "python"`` with ``python = "3.11"``,
or ``kind = "node"``) and, for Python, a pinned ``requirements.txt``. ``build`` turns it into
``<runtimes_dir>/<name>/`` (see ``runtimes``):

1. a copy of the CPython install of that version (without its site-packages and test suite),
   its run path made relative so it runs from wherever it is mounted;
2. pip installs the pinned set with that interpreter while the tree is mounted at
   ``/opt/python`` in a private mount namespace, so scripts and metadata name only that path;
3. the build-time prefix in sysconfig's data is rewritten to ``/opt/python``;
4. ``mksquashfs`` packs the tree into ``image.sqfs``; ``manifest.json`` lists the packages.

A build is skipped when its inputs (definition, requirements, interpreter) have not changed.
Needs root (the mount namespace), ``patchelf`` and ``mksquashfs`` (squashfs-tools).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

from sessionpool import errors
from sessionpool.sandbox.runtimes import OPT, PYTHON_MOUNT, Runtime

#: parts of the standard library a session never needs (tests alone are 120 MB)
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "site-packages", "lib2to3"}


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs)
    except FileNotFoundError:
        raise errors.ConfigError(f"{cmd[0]} is not installed (needed to build runtimes)") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip()[-2000:]
        raise errors.ConfigError(f"{shlex.join(cmd)[:200]} failed: {detail}") from None


def find_python(version: str) -> Path:
    """A CPython ``version`` (``3.13``) on this host: pyenv's versions first, then PATH."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        for cand in sorted(pyenv.glob(f"{version}.*"), reverse=True):
            exe = cand / "bin" / f"python{version}"
            if exe.is_file():
                return exe
    found = shutil.which(f"python{version}")
    if found is None:
        raise errors.ConfigError(
            f"no CPython {version} found (looked in {pyenv} and on PATH); pass --python"
        )
    return Path(found)


def _interpreter_facts(python: Path) -> dict[str, str]:
    code = (
        "import json, sys, sysconfig; print(json.dumps({'prefix': sys.base_prefix, "
        "'version': '%d.%d.%d' % sys.version_info[:3], 'xy': '%d.%d' % sys.version_info[:2], "
        "'ldlibrary': sysconfig.get_config_var('LDLIBRARY') or ''}))"
    )
    facts: dict[str, str] = json.loads(_run([str(python), "-I", "-c", code]).stdout)
    return facts


def _inputs_digest(definition: Path, extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for name in ("runtime.toml", "requirements.txt"):
        path = definition / name
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def build(
    definition: Path, runtimes_dir: Path, python: Path | None = None, force: bool = False
) -> Runtime:
    """Build (or find up to date) the runtime defined in ``definition``; returns it."""
    try:
        spec = tomllib.loads((definition / "runtime.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise errors.ConfigError(f"{definition}/runtime.toml: {exc}") from None
    name = str(spec.get("name", definition.name))
    kind = spec.get("kind")
    runtimes_dir.mkdir(parents=True, exist_ok=True)
    if kind == "node":
        return _build_node(name, spec, runtimes_dir)
    if kind != "python":
        raise errors.ConfigError(f"{definition}/runtime.toml: kind must be 'python' or 'node'")
    exe = python or find_python(str(spec["python"]))
    facts = _interpreter_facts(exe)
    source = _inputs_digest(definition, json.dumps(facts, sort_keys=True))
    out = runtimes_dir / name
    if not force and (out / "image.sqfs").is_file():
        try:
            if json.loads((out / "manifest.json").read_text()).get("source") == source:
                return Runtime.load(runtimes_dir, name)
        except (OSError, ValueError):
            pass
    work = runtimes_dir / f".{name}.build"
    shutil.rmtree(work, ignore_errors=True)
    tree = work / "root"
    _copy_interpreter(Path(facts["prefix"]), facts, tree)
    _install_packages(tree, facts, definition / "requirements.txt")
    packages = _list_packages(tree / "bin" / f"python{facts['xy']}")
    squash(tree, work / "image.sqfs")
    manifest = {
        "name": name,
        "kind": "python",
        "version": facts["version"],
        "executable": f"bin/python{facts['xy']}",
        "packages": packages,
        "source": source,
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    _replace(work, out)
    return Runtime.load(runtimes_dir, name)


def squash(tree: Path, image: Path) -> None:
    """Pack ``tree`` into a read-only squashfs image (lz4: cheap to read back)."""
    _run(["mksquashfs", str(tree), str(image), "-noappend", "-comp", "lz4", "-quiet"])


def _replace(work: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    work.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _copy_interpreter(prefix: Path, facts: dict[str, str], tree: Path) -> None:
    xy = facts["xy"]
    (tree / "bin").mkdir(parents=True)
    exe = tree / "bin" / f"python{xy}"
    shutil.copy2(prefix / "bin" / f"python{xy}", exe)
    for alias in ("python3", "python"):
        (tree / "bin" / alias).symlink_to(f"python{xy}")
    lib = tree / "lib"
    lib.mkdir()
    if facts["ldlibrary"].endswith(".so") or ".so." in facts["ldlibrary"]:
        for so in prefix.joinpath("lib").glob(f"libpython{xy}*.so*"):
            shutil.copy2(so, lib / so.name, follow_symlinks=True)
    shutil.copytree(
        prefix / "lib" / f"python{xy}",
        lib / f"python{xy}",
        symlinks=True,
        ignore=lambda d, names: [n for n in names if n in STDLIB_SKIP or n.endswith(".a")],
    )
    (lib / f"python{xy}" / "site-packages").mkdir()
    # the build's absolute run path would name the install location; make it relative
    _run(["patchelf", "--set-rpath", "$ORIGIN/../lib", str(exe)])
    old = str(prefix).encode()
    for path in [*lib.glob(f"python{xy}/_sysconfigdata*.py"), *lib.glob(f"python{xy}/config-*/*")]:
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if old in data:
                path.write_bytes(data.replace(old, PYTHON_MOUNT.encode()))
    for cache in lib.glob(f"python{xy}/__pycache__/_sysconfigdata*"):
        cache.unlink()


def _install_packages(tree: Path, facts: dict[str, str], requirements: Path) -> None:
    """pip install with the runtime's own interpreter, the tree mounted at /opt/python."""
    if not requirements.is_file():
        raise errors.ConfigError(f"{requirements} is missing")
    os.makedirs(OPT, exist_ok=True)
    py = f"{PYTHON_MOUNT}/bin/python{facts['xy']}"
    mpl = f"{PYTHON_MOUNT}/share/matplotlib"
    script = f"""
mount -t tmpfs -o size=1m,mode=0755 sessionpool-build {OPT}
mkdir {PYTHON_MOUNT}
mount --bind {shlex.quote(str(tree))} {PYTHON_MOUNT}
{py} -I -m ensurepip --default-pip >/dev/null
{py} -I -m pip install --quiet --no-deps --disable-pip-version-check --no-warn-script-location \
    --root-user-action=ignore -r {shlex.quote(str(requirements.resolve()))}
{py} -I -m compileall -q {PYTHON_MOUNT}/lib/python{facts["xy"]} >/dev/null || true
mkdir -p {mpl}
MPLCONFIGDIR={mpl} {py} -I -c 'import matplotlib.font_manager' 2>/dev/null || true
"""
    _run(["unshare", "--mount", "--propagation", "private", "sh", "-euc", script])


def _list_packages(python: Path, path: Path | None = None) -> list[str]:
    """``name==version`` of every distribution ``python`` sees (or only those under ``path``),
    sorted as the manifest and the lock files keep them."""
    code = (
        "import importlib.metadata as m, json, sys; print(json.dumps(sorted({'%s==%s' % "
        "(d.metadata['Name'], d.version) for d in m.distributions(path=sys.argv[1:] or sys.path)}, "
        "key=str.lower)))"
    )
    extra = [str(path)] if path is not None else []
    packages: list[str] = json.loads(_run([str(python), "-I", "-c", code, *extra]).stdout)
    return packages


def _build_node(name: str, spec: dict[str, Any], runtimes_dir: Path) -> Runtime:
    exe = os.path.realpath(str(spec.get("executable", shutil.which("node") or "/usr/bin/node")))
    if not exe.startswith(("/usr/", "/bin/")):
        raise errors.ConfigError(
            f"node at {exe}: a Node.js runtime uses the host's /usr (install Debian's nodejs)"
        )
    version = _run([exe, "--version"]).stdout.strip()
    out = runtimes_dir / name
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"name": name, "kind": "node", "version": version, "executable": exe, "packages": []}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return Runtime.load(runtimes_dir, name)


def lock(definition: Path, python: Path | None = None) -> list[str]:
    """Resolve ``requirements.in`` with the runtime's interpreter and write the full pinned set
    to ``requirements.txt``; returns it."""
    spec = tomllib.loads((definition / "runtime.toml").read_text())
    exe = python or find_python(str(spec["python"]))
    facts = _interpreter_facts(exe)
    target = definition / ".lock-target"
    shutil.rmtree(target, ignore_errors=True)
    try:
        requirements = str(definition / "requirements.in")
        pip = [str(exe), "-I", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        _run([*pip, "--target", str(target), "-r", requirements])
        pins = _list_packages(exe, target)
    finally:
        shutil.rmtree(target, ignore_errors=True)
    header = (
        f"# The {definition.name} runtime's full package set, resolved from requirements.in for "
        f"CPython {facts['xy']}\n# on linux x86_64. Generated by `make lock-runtimes`; do not "
        "edit by hand.\n"
    )
    (definition / "requirements.txt").write_text(header + "".join(f"{p}\n" for p in pins))
    return pins
