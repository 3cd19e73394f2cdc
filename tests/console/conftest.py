"""One server and one browser for the console's end-to-end tests.

The server is a real ``serve`` (jailed sessions, the agents faces on the scripted model, plain
HTTP on loopback) with the console's built bundle; the browser is Debian's Chromium, headless,
driven by Playwright through ``executable_path`` (no browser is ever downloaded). Each test gets a
fresh browser context (its own session storage: logged out) and screenshots go to a temporary
directory, checked for what they must show rather than compared pixel by pixel.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionpool.faces.console.routes import static_dir
from tests.agents.harness import AgentsServer
from tests.agents.scripted_model import ScriptedModel

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 900}


def unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (the dev extra brings it)"
    found = shutil.which("chromium")
    if not CHROMIUM.exists() and found is None:
        return "Chromium is not installed (apt-get install chromium; make install tries to)"
    if not (static_dir() / "index.html").is_file() or not (static_dir() / "console.js").is_file():
        return "the console is not built (make console)"
    return None


def chromium_path() -> str:
    return str(CHROMIUM) if CHROMIUM.exists() else str(shutil.which("chromium"))


@pytest.fixture(scope="module")
def console_server(
    tmp_path_factory: pytest.TempPathFactory, scripted_model: ScriptedModel
) -> Iterator[AgentsServer]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    workdir = Path(tmp_path_factory.mktemp("console-server"))
    with AgentsServer(workdir, scripted_model.url, tls=False) as server:
        yield server


@pytest.fixture(scope="module")
def api(console_server: AgentsServer) -> Iterator[httpx.Client]:
    """The server's API with its key, to set up and check what the browser did."""
    with httpx.Client(base_url=console_server.url, headers=console_server.auth, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def browser(console_server: AgentsServer) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: the tests run as root, where Chromium's own sandbox cannot start
        chromium = p.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    """A fresh, logged-out page; what the page logs and any error in it fail the test."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    # every Content-Security-Policy violation on any page of the test is noted (and fails it)
    context.add_init_script(
        "window.__cspViolations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "401" not in msg.text and "403" not in msg.text
            else None
        ),
    )
    page.set_default_timeout(30_000)
    yield page
    if not page.is_closed() and page.url.startswith("http"):
        problems += page.evaluate("window.__cspViolations || []")
    context.close()
    assert problems == []


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    """Where a test's screenshots go; with CONSOLE_SCREENSHOTS set to a directory, they are
    copied there too, as ``console-<name>.png`` (how docs/images got its pictures)."""
    path = tmp_path / "screenshots"
    path.mkdir()
    yield path
    keep = os.environ.get("CONSOLE_SCREENSHOTS")
    if keep:
        for shot in path.glob("*.png"):
            shutil.copyfile(shot, Path(keep) / f"console-{shot.name}")


def expect(target: Any) -> Any:
    """Playwright's assertions (imported late: without Playwright the tests skip)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def png_size(path: Path) -> tuple[int, int]:
    """The width and height of a PNG file (asserting that it is one and is not empty)."""
    data = path.read_bytes()
    assert len(data) > 1000, f"{path} is almost empty"
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height
