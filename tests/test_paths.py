"""One way to name a file in a session, with its edge cases in one place."""

from __future__ import annotations

import pytest

from sessionpool import errors, paths
from sessionpool.sandbox.workspace import normalize


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a.txt", "a.txt"),
        ("sub/a.txt", "sub/a.txt"),
        ("/mnt/data/sub/a.txt", "sub/a.txt"),
        ("/mnt/data", ""),
        ("/mnt/data/", ""),
        ("", ""),
        (".", ""),
        ("./a//b/", "a/b"),
        ("/mnt/data//x", "x"),
        ("/mnt/data/../etc", "../etc"),  # kept, for the validation to refuse
        ("/etc/passwd", "/etc/passwd"),  # elsewhere: unchanged, for the validation to refuse
        ("/mnt/database", "/mnt/database"),  # a neighbour of the mount, not inside it
        ("données/数据.csv", "données/数据.csv"),
    ],
)
def test_relative(given: str, expected: str) -> None:
    assert paths.relative(given) == expected


@pytest.mark.parametrize(
    ("directory", "name", "expected"),
    [
        (None, "a.txt", "a.txt"),
        ("", "/mnt/data/a.txt", "a.txt"),
        ("sub", "a.txt", "sub/a.txt"),
        ("/mnt/data/sub/", "a.txt", "sub/a.txt"),
        ("/mnt/data", "a.txt", "a.txt"),
        ("sub", "/mnt/data/other/a.txt", "other/a.txt"),  # an absolute name wins
        ("/etc", "passwd", "/etc/passwd"),
    ],
)
def test_joined(directory: str | None, name: str, expected: str) -> None:
    assert paths.joined(directory, name) == expected


def test_absolute_and_parent() -> None:
    assert paths.absolute("a/b.txt") == "/mnt/data/a/b.txt"
    assert paths.absolute("") == paths.absolute("/mnt/data/") == "/mnt/data"
    assert paths.parent("a/b.txt") == "/mnt/data/a"
    assert paths.parent("b.txt") == "/mnt/data"


@pytest.mark.parametrize("bad", ["../x", "/mnt/data/../x", "/etc/passwd", "a\x00b", "x/" * 3000])
def test_what_relative_keeps_the_validation_refuses(bad: str) -> None:
    with pytest.raises(errors.InvalidPath):
        normalize(bad)
