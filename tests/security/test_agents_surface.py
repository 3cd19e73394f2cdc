"""The agents surface as an attacker sees it: every mount behind the key, hostile names and
bodies refused cleanly, and what code in a container plants never reaching the file API.

Over HTTPS against the agents test server (``agents_server``), whose model is the scripted
one: ``scripted-echo`` runs the user's message as the cell, so each case chooses its own code.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from tests.agents.harness import AgentsServer

pytestmark = pytest.mark.jail

AZ = (
    "/agents/v1.0/subscriptions/s/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/p"
)
#: one route per mount and face
PROTECTED = [
    ("GET", "/v1/assistants"),
    ("GET", "/v1/files"),
    ("POST", "/v1/threads"),
    ("GET", "/openai/assistants"),
    ("GET", "/openai/v1/files"),
    ("GET", "/api/projects/p/assistants"),
    ("GET", AZ + "/assistants"),
    ("POST", "/v1/responses"),
    ("GET", "/v1/containers"),
    ("POST", "/v1/conversations"),
    ("GET", "/api/projects/p/openai/v1/containers"),
    ("GET", "/api/projects/p/agents/a/versions"),
]


@pytest.fixture
def api(agents_server: AgentsServer) -> Iterator[httpx.Client]:
    tls = ssl.create_default_context(cafile=str(agents_server.ca_bundle))
    with httpx.Client(
        base_url=agents_server.url, headers=agents_server.auth, verify=tls, timeout=60
    ) as client:
        yield client


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_every_agents_route_needs_a_key(
    agents_server: AgentsServer, method: str, path: str
) -> None:
    tls = ssl.create_default_context(cafile=str(agents_server.ca_bundle))
    with httpx.Client(base_url=agents_server.url, verify=tls, timeout=30) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"api-key": "wrong"}):
            r = anonymous.request(method, path, headers=headers, json={})
            assert r.status_code == 401, (headers, r.text)


def test_upload_names_cannot_climb_out(api: httpx.Client) -> None:
    for name in ("../../../etc/cron.d/evil.csv", "/etc/passwd", "..\\..\\boot.ini", "a\x00b.csv"):
        r = api.post("/v1/files", files={"file": (name, b"x,y\n")}, data={"purpose": "assistants"})
        if r.status_code == 200:
            stored = r.json()["filename"]
            assert "/" not in stored and "\\" not in stored and "\x00" not in stored, stored
            assert stored not in ("", ".", "..")
        else:
            assert r.status_code == 400, r.text


def test_bad_bodies_are_refused_cleanly(api: httpx.Client) -> None:
    bad = api.post(
        "/v1/assistants", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["message"]
    huge = api.post(
        "/v1/threads",
        content=b"x" * (40 * 1024 * 1024),
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413
    wrong_type = api.post("/v1/assistants", json=["a", "list"])
    assert wrong_type.status_code == 400
    assert api.get("/healthz").status_code == 200


def test_what_code_plants_never_reaches_the_file_api(api: httpx.Client) -> None:
    """A cell plants links to host files and a FIFO beside a real file; the container lists only
    the real file, and no content download returns host data."""
    code = (
        "import os\n"
        "os.symlink('/etc/shadow', 'shadow')\n"
        "os.symlink('/proc/1/environ', 'environ')\n"
        "os.mkfifo('fifo')\n"
        "open('real.txt', 'w').write('mine')\n"
        "print('planted')"
    )
    response = api.post(
        "/v1/responses",
        json={
            "model": "scripted-echo",
            "input": code,
            "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
        },
    ).json()
    assert response["status"] == "completed", response.get("error")
    call = next(item for item in response["output"] if item["type"] == "code_interpreter_call")
    container = call["container_id"]
    files = api.get(f"/v1/containers/{container}/files").json()["data"]
    assert [f["path"] for f in files] == ["/mnt/data/real.txt"]
    for f in files:
        body = api.get(f"/v1/containers/{container}/files/{f['id']}/content")
        assert body.content == b"mine"
    assert api.get(f"/v1/containers/{container}/files/shadow/content").status_code == 404
