"""Clients that cannot be installed here, as the requests they send (raw HTTP contract tests).

- The Azure CLI's ``containerapp`` extension (``az containerapp session code-interpreter ...``),
  shipped through the CLI's extension index, not PyPI: ``_clients.py``'s
  ``SessionCodeInterpreterPreviewClient`` at API ``2025-02-02-preview``. It builds URLs by
  format string (the identifier not encoded, ``path=`` first, possibly empty), sends the
  execution in a ``properties`` envelope, polls ``azure-asyncoperation`` only on a 201, and reads
  ``status`` and ``result.stdout``; file calls go through ``requests``.
- langchain4j's ``SessionsREPLTool`` (Maven only): ``code/execute`` at ``2024-02-02-preview``
  with Java's ``URLEncoder`` on the identifier, and an upload whose one multipart part, the
  file's bytes, is labelled ``Content-Type: application/json``; it reads ``properties`` of the
  execute answer and ``value[0]`` of the upload's.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote_plus

import pytest
import requests

from sessionpool.server.testing import ServerProcess
from tests.clients.conftest import PAYLOAD

pytestmark = pytest.mark.jail

CLI_VERSION = "2025-02-02-preview"


def cli_headers(server: ServerProcess) -> dict[str, str]:
    # send_raw_request adds the bearer token and a JSON content type
    return {
        "Authorization": f"Bearer {server.api_key}",
        "Content-Type": "application/json",
        "User-Agent": "AZURECLI/2.79.0 (DEB) azsdk-python-core/1.35.0",
    }


def test_azure_cli_execute(server: ServerProcess, session_id: str) -> None:
    """``az containerapp session code-interpreter execute``: the envelope the command builds."""
    ep = server.endpoint()
    url = f"{ep}/executions?identifier={session_id}&api-version={CLI_VERSION}"
    envelope = {
        "properties": {
            "identifier": session_id,
            "codeInputType": "inline",
            "executionType": "synchronous",
            "timeoutInSeconds": 60,
            "code": "import sys\nprint(sys.version_info[0])",
        }
    }
    r = requests.post(url, data=json.dumps(envelope), headers=cli_headers(server), timeout=60)
    assert r.status_code in (200, 202), r.text  # 201 alone would send it polling
    out = r.json()
    assert out["status"] == "Succeeded"
    assert out["result"]["stdout"] == "3\n"
    assert out["identifier"] == session_id
    failed = requests.post(
        url,
        data=json.dumps({"properties": {**envelope["properties"], "code": "1/0"}}),
        headers=cli_headers(server),
        timeout=60,
    ).json()
    assert failed["status"] == "Failed"
    assert failed["error"]["error"]["code"] == "ZeroDivisionError"


def test_azure_cli_files(server: ServerProcess, session_id: str, tmp_path: object) -> None:
    """upload (``--path``), show-file-content, show-file-metadata, list-files, delete-file."""
    ep = server.endpoint()
    auth = {"Authorization": f"Bearer {server.api_key}"}
    q = f"identifier={session_id}&api-version={CLI_VERSION}"
    # upload: requests' multipart, the part named file with no content type of its own
    up = requests.post(
        f"{ep}/files?path=reports&{q}",
        files=[("file", ("sales.bin", PAYLOAD))],
        headers=auth,
        timeout=60,
    )
    assert up.status_code in (200, 201, 202, 204), up.text
    assert up.json()["name"] == "sales.bin"
    assert up.json()["directory"] == "/mnt/data/reports"
    # show-file-content --filename reports/sales.bin: the CLI splits it into path= and a name
    content = requests.get(
        f"{ep}/files/sales.bin/content?path=reports&{q}", headers=cli_headers(server), timeout=60
    )
    assert content.status_code == 200 and content.content == PAYLOAD
    meta = requests.get(
        f"{ep}/files/sales.bin?path=reports&{q}", headers=cli_headers(server), timeout=60
    )
    assert meta.status_code == 200, meta.text
    assert meta.json()["sizeInBytes"] == len(PAYLOAD) and meta.json()["type"] == "File"
    # list-files without --path sends path= empty; with it, the directory
    top = requests.get(
        f"{ep}/files?identifier={session_id}&path=&api-version={CLI_VERSION}",
        headers=cli_headers(server),
        timeout=60,
    )
    assert top.status_code == 200, top.text
    assert [(f["name"], f["type"]) for f in top.json()["value"]] == [("reports", "Directory")]
    inside = requests.get(
        f"{ep}/files?identifier={session_id}&path=reports&api-version={CLI_VERSION}",
        headers=cli_headers(server),
        timeout=60,
    ).json()
    assert [f["name"] for f in inside["value"]] == ["sales.bin"]
    gone = requests.delete(
        f"{ep}/files/sales.bin?path=reports&{q}", headers=cli_headers(server), timeout=60
    )
    assert gone.status_code in (200, 201, 202, 204), gone.text
    missing = requests.get(
        f"{ep}/files/sales.bin?path=reports&{q}", headers=cli_headers(server), timeout=60
    )
    assert missing.status_code == 404


def test_azure_cli_asynchronous_execution_is_polled(server: ServerProcess, session_id: str) -> None:
    """``--no-wait``-style asynchronous executions: the answer is read again until done."""
    ep = server.endpoint()
    url = f"{ep}/executions?identifier={session_id}&api-version={CLI_VERSION}"
    body = {"properties": {"executionType": "asynchronous", "code": "print('later')"}}
    first = requests.post(url, data=json.dumps(body), headers=cli_headers(server), timeout=60)
    assert first.status_code == 202, first.text
    location = first.headers["operation-location"]
    deadline = time.monotonic() + 30
    while True:
        polled = requests.get(location, headers=cli_headers(server), timeout=60).json()
        if polled["status"] not in ("NotStarted", "Running"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert polled["status"] == "Succeeded" and polled["result"]["stdout"] == "later\n"


def langchain4j_url(server: ServerProcess, path: str, session_id: str) -> str:
    """``buildUrl``: Java's URLEncoder on the identifier (spaces as +, others %XX)."""
    return (
        f"{server.endpoint()}/{path}?identifier={quote_plus(session_id)}"
        f"&api-version=2024-02-02-preview"
    )


def test_langchain4j_execute(server: ServerProcess) -> None:
    session_id = "lc4j/session:1+2"  # encoded %2F %3A %2B, as URLEncoder does
    url = langchain4j_url(server, "code/execute", session_id)
    assert "lc4j%2Fsession%3A1%2B2" in url
    headers = {
        "Authorization": f"Bearer {server.api_key}",
        "Content-Type": "application/json",
        "User-Agent": "langchain4j-azure-dynamic-sessions",
    }
    # Jackson writes the HashMap's keys in hash order; the body is the same envelope
    body = {
        "properties": {
            "code": "y = 5\ny * 8",
            "executionType": "synchronous",
            "codeInputType": "inline",
        }
    }
    r = requests.post(url, data=json.dumps(body), headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    props = r.json()["properties"]
    assert (props["status"], props["result"], props["stdout"]) == ("Success", "40", "")
    listed = requests.get(
        f"{server.endpoint()}/listSessions?api-version=2025-10-02-preview",
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=60,
    ).json()
    assert session_id in [s["identifier"] for s in listed["sessions"]]


def test_langchain4j_upload_labelled_json(server: ServerProcess) -> None:
    """``DefaultFileUploader``: the file's bytes in a part labelled application/json, a
    boundary of four dashes and the time in milliseconds, then download and list."""
    session_id = f"lc4j-{time.time_ns()}"
    boundary = f"----{int(time.time() * 1000)}"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="data.bin"\r\n'
            "Content-Type: application/json\r\n\r\n"
        ).encode()
        + PAYLOAD
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = requests.post(
        langchain4j_url(server, "files/upload", session_id),
        data=body,
        headers={
            "Authorization": f"Bearer {server.api_key}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    first = r.json()["value"][0]["properties"]
    assert (first["filename"], first["size"]) == ("data.bin", len(PAYLOAD))
    auth = {"Authorization": f"Bearer {server.api_key}"}
    down = requests.get(
        langchain4j_url(server, "files/content/data.bin", session_id), headers=auth, timeout=60
    )
    assert down.status_code == 200 and down.content == PAYLOAD
    names = requests.get(langchain4j_url(server, "files", session_id), headers=auth, timeout=60)
    assert [v["properties"]["filename"] for v in names.json()["value"]] == ["data.bin"]
    # a missing file is the 404 it turns into "File not found: ..."
    missing = requests.get(
        langchain4j_url(server, "files/content/nope.bin", session_id), headers=auth, timeout=60
    )
    assert missing.status_code == 404
