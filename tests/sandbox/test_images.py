"""Custom images unpacked into a root filesystem (``sandbox/images.py``), and the built runtimes'
manifests against their pinned definitions. No jail needed: this is the host-side preparation."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from sessionpool import errors
from sessionpool.config import default_runtimes_dir
from sessionpool.sandbox import images
from sessionpool.sandbox.runtimes import Runtime

REPO_ROOT = Path(__file__).resolve().parents[2]


def layer(files: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    """A layer tarball, links first: ``None`` content makes a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def oci_layout(path: Path, layers: list[bytes]) -> None:
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    manifest = {"schemaVersion": 2, "layers": [put(x) for x in layers]}
    (path / "index.json").write_text(
        json.dumps({"manifests": [put(json.dumps(manifest).encode())]})
    )
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def test_oci_layers_apply_in_order_with_whiteouts(tmp_path: Path) -> None:
    first = layer({"etc/a": b"a", "keep": b"k", "d": None, "d/old": b"o", "gone": b"g"})
    second = layer({".wh.gone": b"", "d/.wh..wh..opq": b"", "d/new": b"n", "etc/a": b"A"})
    oci_layout(tmp_path / "oci", [first, second])
    root = tmp_path / "root"
    root.mkdir()
    images.unpack(tmp_path / "oci", root)
    assert (root / "etc" / "a").read_bytes() == b"A"
    assert (root / "keep").read_bytes() == b"k"
    assert not (root / "gone").exists()
    assert sorted(p.name for p in (root / "d").iterdir()) == ["new"]


def test_an_oci_tarball_and_a_docker_save_tarball(tmp_path: Path) -> None:
    oci_layout(tmp_path / "oci", [layer({"bin/tool": b"t"})])
    with tarfile.open(tmp_path / "oci.tar", "w") as tar:
        tar.add(tmp_path / "oci", arcname=".")
    docker = tmp_path / "docker.tar"
    with tarfile.open(docker, "w") as tar:
        data = layer({"usr/bin/x": b"x"})
        info = tarfile.TarInfo("abc/layer.tar")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        manifest = json.dumps([{"Config": "c.json", "Layers": ["abc/layer.tar"]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    for source, expect in ((tmp_path / "oci.tar", "bin/tool"), (docker, "usr/bin/x")):
        root = tmp_path / f"root-{source.stem}"
        root.mkdir()
        images.unpack(source, root)
        assert (root / expect).is_file(), source


def test_an_image_cannot_write_outside_its_root(tmp_path: Path) -> None:
    """A link to / followed by a file through it, and a ``..`` member, stay out of the host."""
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = layer({"../escaped": b"x"})
    through_link = layer({"up/planted": b"x"}, links={"up": str(outside)})
    for data in (evil, through_link):
        (tmp_path / "rootfs.tar").write_bytes(data)
        root = tmp_path / "root"
        root.mkdir(exist_ok=True)
        with pytest.raises(errors.ConfigError):
            images.unpack(tmp_path / "rootfs.tar", root)
    assert list(outside.iterdir()) == [] and not (tmp_path / "escaped").exists()


def test_mount_points_replace_links_that_leave_the_image(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "opt").symlink_to(elsewhere)
    (root / "etc").mkdir()
    (root / "etc" / "hosts").symlink_to("/etc/hosts")
    images.add_mount_points(root)
    assert (root / "opt" / "python").is_dir() and not (root / "opt").is_symlink()
    assert list(elsewhere.iterdir()) == []
    assert (root / "etc" / "hosts").read_text() == ""  # not the host's, which was not touched
    for d in images.MOUNT_DIRS:
        assert (root / d).is_dir()


def test_a_missing_image_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="does not exist"):
        images.prepare(tmp_path / "nope.tar", tmp_path / "runtimes")


@pytest.mark.parametrize("name", ["python", "python-3.13"])
def test_a_built_runtime_holds_exactly_its_pinned_set(name: str) -> None:
    runtimes_dir = default_runtimes_dir()
    if not (runtimes_dir / name / "manifest.json").is_file():
        pytest.skip(f"runtime {name} is not built here")
    runtime = Runtime.load(runtimes_dir, name)
    lines = (REPO_ROOT / "runtimes" / name / "requirements.txt").read_text().splitlines()
    pinned = {line.lower() for line in lines if line and not line.startswith("#")}
    installed = {p.lower() for p in runtime.packages}
    assert pinned <= installed
    assert {p.split("==")[0] for p in installed - pinned} <= {"pip"}  # what ensurepip adds
    assert runtime.digest.startswith("sha256:") and len(runtime.digest) == 71
