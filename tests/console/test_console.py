"""The console end to end, in Debian's Chromium: log in, run cells (a chart, an inert
``<script>``), files (drop, read from code, download, delete), delete a session, follow an agent
run's steps, the operator's figures; a wrong key sees nothing. Screenshots of the main views are
taken and checked for size and the elements that matter."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agents.harness import AgentsServer
from tests.agents.scripted_model import CHART_CODE
from tests.console.conftest import VIEWPORT, expect, png_size

pytestmark = pytest.mark.jail

API = "api-version=2025-02-02-preview"


def log_in(page: Any, server: AgentsServer, key: str | None = None) -> None:
    page.goto(f"{server.url}/console")
    page.fill("#api-key", key or server.api_key)
    page.click("#login-button")


def open_session(page: Any, server: AgentsServer, identifier: str) -> None:
    page.goto(f"{server.url}/console#/session/default/{identifier}")
    page.wait_for_selector(".cm-content")
    page.wait_for_selector("table.files tbody tr")


def run_cell(page: Any, code: str) -> Any:
    """Type ``code`` into the editor (replacing what was there), run it, and wait for its end;
    the cell's element."""
    editor = page.locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(code)
    before = page.locator("#cells .cell").count()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(f"document.querySelectorAll('#cells .cell').length > {before}")
    cell = page.locator("#cells .cell").first
    cell.locator(".state.ok, .state.failed").wait_for(timeout=60_000)
    return cell


def screenshot(page: Any, path: Path) -> Path:
    page.screenshot(path=str(path))
    assert png_size(path) == (VIEWPORT["width"], VIEWPORT["height"])
    return path


def test_a_wrong_key_sees_nothing(page: Any, console_server: AgentsServer, shots: Path) -> None:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    statuses: list[int] = []
    page.on(
        "response",
        lambda r: statuses.append(r.status) if "/console/api/" in r.url else None,
    )
    log_in(page, console_server, key="sp-not-the-key")
    expect(page.locator("#login-status .error")).to_contain_text("not valid")
    assert statuses == [401]
    assert page.locator("#nav").is_hidden()
    assert page.locator("section.pool").count() == 0
    assert page.evaluate("sessionStorage.length") == 0  # a refused key is not kept
    # nor can a view be reached by its address without logging in
    page.goto(f"{console_server.url}/console#/session/default/someone")
    page.wait_for_selector("#login")
    assert page.locator(".cm-content").count() == 0
    assert not any("sp-not-the-key" in url for url in urls)
    screenshot(page, shots / "login.png")


def test_log_in_and_run_a_chart(
    page: Any, console_server: AgentsServer, api: httpx.Client, shots: Path
) -> None:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    log_in(page, console_server)
    page.wait_for_selector("section.pool[data-pool='default']")
    assert page.evaluate("sessionStorage.length") == 1
    ident = f"chart-{uuid.uuid4().hex[:8]}"
    page.fill("section.pool[data-pool='default'] input.new-identifier", ident)
    page.click("section.pool[data-pool='default'] form.open-session button")
    page.wait_for_selector(".cm-content")
    cell = run_cell(
        page,
        "import matplotlib.pyplot as plt\n"
        "print('drawing')\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\n"
        "plt.title('squares')\n"
        "plt.savefig('/mnt/data/squares.png')\n"
        "plt.show()\n",
    )
    expect(cell.locator(".state")).to_contain_text("ok")
    expect(cell.locator("pre.stdout")).to_have_text("drawing\n")
    figure = cell.locator("img.figure")
    expect(figure).to_be_visible()
    width = figure.evaluate("img => img.complete ? img.naturalWidth : 0")
    assert width > 100
    assert figure.get_attribute("src").startswith("data:image/png;base64,")
    expect(page.locator("tr.file[data-name='squares.png']")).to_be_visible()
    shot = screenshot(page, shots / "session.png")
    assert shot.stat().st_size > 10_000  # a figure, an editor, a table: not a blank page
    # an exception: its traceback, and the error named
    failed = run_cell(page, "def f():\n    return 1 / 0\n\nf()\n")
    expect(failed.locator(".state")).to_contain_text("failed")
    expect(failed.locator("pre.stderr")).to_contain_text("Traceback")
    expect(failed.locator("pre.stderr")).to_contain_text("return 1 / 0")
    expect(failed.locator(".error")).to_contain_text("ZeroDivisionError: division by zero")
    # the session is listed with its execution
    page.goto(f"{console_server.url}/console#/")
    row = page.locator(f"tr.session[data-identifier='{ident}']")
    expect(row.locator("td.executions")).to_contain_text("ok")
    # the jailed session's cgroups are measured
    (pool,) = [p for p in api.get("/console/api/pools").json()["pools"] if p["name"] == "default"]
    (listed,) = [s for s in pool["sessions"] if s["identifier"] == ident]
    assert listed["memory_bytes"] > 2**20 and listed["cpu_seconds"] > 0
    assert row.locator("td").nth(3).inner_text().endswith("MiB")
    # the key went in a header, never in an address
    assert not any(console_server.api_key in url for url in urls)
    api.delete(f"/pools/default/session?identifier={ident}&{API}")


def test_script_and_html_repr_output_stays_inert(page: Any, console_server: AgentsServer) -> None:
    log_in(page, console_server)
    page.wait_for_selector("section.pool")
    open_session(page, console_server, f"inert-{uuid.uuid4().hex[:8]}")
    printed = run_cell(
        page,
        "print('<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">')\n",
    )
    expect(printed.locator("pre.stdout")).to_contain_text("<script>window.pwned = 1</script>")
    value = run_cell(
        page,
        "class Page:\n"
        "    def _repr_html_(self):\n"
        "        return '<b id=\"injected\">bold</b><script>window.pwned = 3</script>'\n"
        "    def __repr__(self):\n"
        "        return '<i id=\"injected2\">plain</i>'\n"
        "Page()\n",
    )
    expect(value.locator("pre.result")).to_have_text('<i id="injected2">plain</i>')
    assert page.evaluate("window.pwned") is None
    assert page.locator("#injected, #injected2").count() == 0
    assert page.locator("#cells script, #cells img:not(.figure), #cells b, #cells i").count() == 0


def test_upload_by_drop_read_from_code_download_and_delete(
    page: Any, console_server: AgentsServer, api: httpx.Client, tmp_path: Path
) -> None:
    ident = f"files-{uuid.uuid4().hex[:8]}"
    log_in(page, console_server)
    page.wait_for_selector("section.pool")
    open_session(page, console_server, ident)
    # a drop of a file, as a user drags one from the desktop
    content = "city,visits\n" + "Lyon,3\nOslo,4\n" * 2000
    drop = page.evaluate_handle(
        """text => {
            const data = new DataTransfer();
            data.items.add(new File([text], "visits.csv", {type: "text/csv"}));
            return data;
        }""",
        content,
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": drop})
    expect(page.locator("#upload-label")).to_have_text("uploaded visits.csv")
    assert page.locator("#upload-progress").evaluate("p => p.value") == 1
    row = page.locator("tr.file[data-name='visits.csv']")
    expect(row).to_be_visible()
    # and one chosen with the file picker
    page.set_input_files(
        "#file-input",
        files=[
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello from the browser"}
        ],
    )
    expect(page.locator("tr.file[data-name='notes.txt']")).to_be_visible()
    cell = run_cell(
        page,
        "import pandas as pd\n"
        "df = pd.read_csv('/mnt/data/visits.csv')\n"
        "print(len(df), df.visits.sum())\n"
        "open('/mnt/data/out/report.txt', 'w').write('written by code') "
        "if __import__('os').makedirs('/mnt/data/out', exist_ok=True) is None else None\n",
    )
    expect(cell.locator("pre.stdout")).to_have_text("4000 14000\n")
    report = page.locator("tr.file[data-name='out/report.txt']")
    expect(report).to_be_visible()
    with page.expect_download() as info:
        report.locator("button.download").click()
    download = info.value
    assert download.suggested_filename == "report.txt"
    saved = tmp_path / "report.txt"
    download.save_as(str(saved))
    assert saved.read_text() == "written by code"
    # delete asks once more
    button = row.locator("button.delete-file")
    button.click()
    expect(button).to_have_text("Confirm")
    button.click()
    expect(row).to_have_count(0)
    listed = api.get(f"/pools/default/files?identifier={ident}&{API}").json()["value"]
    assert sorted(f["name"] for f in listed if f["type"] == "File") == ["notes.txt"]
    api.delete(f"/pools/default/session?identifier={ident}&{API}")


def test_delete_a_session(page: Any, console_server: AgentsServer, api: httpx.Client) -> None:
    ident = f"doomed-{uuid.uuid4().hex[:8]}"
    r = api.post(f"/pools/default/executions?identifier={ident}&{API}", json={"code": "x = 1"})
    assert r.status_code == 200
    log_in(page, console_server)
    row = page.locator(f"tr.session[data-identifier='{ident}']")
    expect(row).to_be_visible()
    row.locator("button.delete-session").click()
    row.locator("button.delete-session").click()
    expect(row).to_have_count(0)
    listed = api.get(f"/pools/default/listSessions?{API}").json()["sessions"]
    assert ident not in [s["identifier"] for s in listed]


def wait_run(api: httpx.Client, thread: str, run: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = api.get(f"/v1/threads/{thread}/runs/{run}").json()
        if body["status"] not in ("queued", "in_progress"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"run {run} did not end")


def test_an_agent_run_and_its_steps(
    page: Any, console_server: AgentsServer, api: httpx.Client, shots: Path, tmp_path: Path
) -> None:
    assistant = api.post(
        "/v1/assistants",
        json={"model": "scripted-chart", "name": "charts", "tools": [{"type": "code_interpreter"}]},
    ).json()["id"]
    thread = api.post("/v1/threads", json={"metadata": {"from": "console test"}}).json()["id"]
    api.post(f"/v1/threads/{thread}/messages", json={"role": "user", "content": "a bar chart"})
    run = api.post(f"/v1/threads/{thread}/runs", json={"assistant_id": assistant}).json()["id"]
    assert wait_run(api, thread, run)["status"] == "completed"
    log_in(page, console_server)
    page.wait_for_selector("section.pool")
    page.click("#nav a[data-view='agents']")
    page.click(f"tr.thread[data-id='{thread}'] a")
    run_node = page.locator(f"article.run[data-id='{run}']")
    expect(run_node).to_have_attribute("data-status", "completed")
    code = run_node.locator("li.step.tool_calls pre.code")
    expect(code).to_contain_text("savefig")
    assert code.inner_text().strip() == CHART_CODE.strip()
    expect(run_node.locator("li.step.tool_calls pre.logs")).to_contain_text("saved chart")
    expect(run_node.locator("li.step.message_creation")).to_have_count(1)
    answer = page.locator("article.message.assistant")
    expect(answer.locator("pre.text")).to_contain_text("Here is the bar chart")
    buttons = answer.locator("button.download")
    expect(buttons).to_have_count(2)
    with page.expect_download() as info:
        answer.locator("button.download", has_text="chart_data.csv").click()
    saved = tmp_path / "data.csv"
    info.value.save_as(str(saved))
    assert saved.read_text().startswith("company,operating_profit")
    assert page.locator("article.message.user pre.text").inner_text() == "a bar chart"
    screenshot(page, shots / "agents.png")

    # a run started from the console, followed as it streams
    page.select_option("#assistant", assistant)
    page.fill("#prompt", "another chart")
    page.click("#send")
    live = page.locator("#live")
    expect(live).to_have_attribute("data-status", "completed", timeout=60_000)
    expect(live.locator("pre.code")).to_have_text(CHART_CODE)
    expect(live.locator("pre.logs")).to_have_text("saved chart\n")
    expect(live.locator("pre.text")).to_contain_text("Here is the bar chart")
    runs = page.locator("article.run")
    expect(runs).to_have_count(2)
    expect(runs.first).to_have_attribute("data-status", "completed", timeout=60_000)
    expect(runs.first.locator("li.step.tool_calls pre.logs")).to_contain_text("saved chart")


def test_a_responses_conversation_and_its_code_calls(
    page: Any, console_server: AgentsServer, api: httpx.Client, tmp_path: Path
) -> None:
    conversation = api.post("/v1/conversations", json={}).json()["id"]
    response = api.post(
        "/v1/responses",
        json={
            "model": "scripted-chart",
            "conversation": conversation,
            "input": "a bar chart",
            "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
        },
    ).json()
    assert response["status"] == "completed", response
    log_in(page, console_server)
    page.wait_for_selector("section.pool")
    page.goto(f"{console_server.url}/console#/thread/{conversation}")
    responses = page.locator("article.responses")
    call = responses.locator("li.item.code_interpreter_call")
    expect(call.locator("pre.code")).to_contain_text("savefig")
    expect(call.locator("pre.logs")).to_have_text("saved chart\n")
    figure = call.locator("img.figure")
    expect(figure).to_be_visible()
    assert figure.evaluate("img => img.naturalWidth") > 100
    answer = responses.locator("li.item.message.assistant")
    expect(answer.locator("pre.text")).to_contain_text("Here is the bar chart")
    with page.expect_download() as info:
        answer.locator("button.download", has_text="chart_data.csv").click()
    saved = tmp_path / "data.csv"
    info.value.save_as(str(saved))
    assert saved.read_text().startswith("company,operating_profit")
    expect(page.locator("article.message.user pre.text")).to_have_text("a bar chart")


def test_operations_show_the_metrics_figures(
    page: Any, console_server: AgentsServer, api: httpx.Client, shots: Path
) -> None:
    ident = f"ops-{uuid.uuid4().hex[:8]}"
    api.post(f"/pools/default/executions?identifier={ident}&{API}", json={"code": "1 + 1"})
    metrics = api.get("/metrics").text
    allocated = sum(
        float(m.group(1))
        for m in re.finditer(
            r'^sessionpool_allocations_total\{outcome="\w+",pool="default"\} (\S+)', metrics, re.M
        )
    )
    log_in(page, console_server)
    page.wait_for_selector("section.pool")
    page.click("#nav a[data-view='operations']")
    pool = page.locator("section.ops-pool[data-pool='default']")
    expect(pool).to_be_visible()
    expect(page.locator("#health")).to_contain_text("200 ok")
    ok = pool.locator("[data-figure='Executions.ok']")
    assert float(ok.inner_text()) >= 1
    warm = pool.locator("[data-figure='Allocations.warm']")
    shown = sum(
        float(pool.locator(f"[data-figure='Allocations.{o}']").inner_text())
        for o in ("warm", "on_demand", "refused", "failed")
        if pool.locator(f"[data-figure='Allocations.{o}']").count()
    )
    assert warm.count() == 1 and shown >= allocated
    expect(pool.locator("[data-figure='OOMs.oom']")).to_have_text("0")
    expect(pool.locator("[data-figure='Latency.p50']")).to_contain_text("ms")
    screenshot(page, shots / "operations.png")
    api.delete(f"/pools/default/session?identifier={ident}&{API}")
