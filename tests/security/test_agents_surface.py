"""The agents surface as an attacker sees it: every mount behind the key, hostile names and
bodies refused cleanly, what code in a container plants never reaching the file API, and
another tenant's agents, threads, runs, files, containers and responses invisible.

Over HTTPS against the agents test server (``agents_server``), whose model is the scripted
one: ``scripted-echo`` runs the user's message as the cell, so each case chooses its own code.
"""

from __future__ import annotations

import secrets
import ssl
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sessionpool.server.keys import KeyStore
from sessionpool.tenancy import ALL_SCOPES, DEFAULT_TENANT, Scope
from tests.agents.harness import AgentsServer
from tests.security.helpers import NEW, code_body, q

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
    ("POST", "/api/projects/p/agents/a/versions"),
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


# --- tenants ------------------------------------------------------------------------------------
#
# Tenants with stored keys of their own. acme builds one of everything; umbrella, and the default
# tenant (the server's own key), then name each of acme's ids through every route that takes
# one. Each answer must be the 404 an id never issued gets, byte for byte (the id itself aside):
# never 403, never another message, never a side effect. Listings and cursors show nothing of
# acme's, streams and cancels do not reach its runs, and its containers' interpreters are no
# session any client can name.

#: the hex tail of every object id (``asst_<24 hex>``, ``file-<24 hex>`` ...)
ID_TAIL = 24
VIEWERS = ("umbrella", "default")


class Tenant:
    """An HTTPS client holding one key: a stored key of ``tenant``, or the server's own."""

    def __init__(
        self, server: AgentsServer, tenant: str, scopes: frozenset[Scope] = ALL_SCOPES
    ) -> None:
        self.tenant = tenant
        if tenant == DEFAULT_TENANT:
            key = server.api_key
        else:
            key = KeyStore(server.process.data_dir / "keys.json").create(tenant, scopes)[1]
        tls = ssl.create_default_context(cafile=str(server.ca_bundle))
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, verify=tls, timeout=90
        )

    def ok(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = self.http.request(method, path, **kw)
        assert r.status_code == 200, (method, path, r.text[:2000])
        data: dict[str, Any] = r.json()
        return data

    def own(self) -> dict[str, str]:
        """Objects of its own to aim from: an assistant, a thread, a container."""
        return {
            "b_asst": self.ok("POST", "/v1/assistants", json={"model": "scripted-hello"})["id"],
            "b_thread": self.ok("POST", "/v1/threads", json={})["id"],
            "b_cntr": self.ok("POST", "/v1/containers", json={"name": "own"})["id"],
        }

    def wait(self, path: str) -> dict[str, Any]:
        """The run or response at ``path`` once it has ended."""
        deadline = time.monotonic() + 90
        while True:
            run = self.ok("GET", path)
            if run["status"] not in ("queued", "in_progress", "cancelling"):
                return run
            assert time.monotonic() < deadline, run
            time.sleep(0.1)


def tenant_name(base: str) -> str:
    """A tenant of this module only: the server (and its key file) serve the whole run."""
    return f"{base}-{secrets.token_hex(4)}"


@dataclass
class Estate:
    """One of everything acme owns (``ids``); each viewer and its own objects (``own``)."""

    acme: Tenant
    viewers: dict[str, Tenant]
    ids: dict[str, str]
    own: dict[str, dict[str, str]]


def build(acme: Tenant) -> dict[str, str]:
    """acme's objects: a file, an assistant using it, a thread and its completed chart run (its
    steps, a figure, a file the code wrote), a response and its container (a variable set in
    its interpreter, a file written there), a conversation with an item, a Foundry agent."""
    ids: dict[str, str] = {}
    upload = acme.ok(
        "POST",
        "/v1/files",
        files={"file": ("in.csv", b"a,b\n1,2\n")},
        data={"purpose": "assistants"},
    )
    ids["file"] = upload["id"]
    resources = {"code_interpreter": {"file_ids": [ids["file"]]}}
    ids["asst"] = acme.ok(
        "POST", "/v1/assistants", json={"model": "scripted-chart", "tool_resources": resources}
    )["id"]
    first = {"messages": [{"role": "user", "content": "a chart"}]}
    ids["thread"] = acme.ok("POST", "/v1/threads", json=first)["id"]
    thread = f"/v1/threads/{ids['thread']}"
    ids["run"] = acme.ok("POST", f"{thread}/runs", json={"assistant_id": ids["asst"]})["id"]
    run = acme.wait(f"{thread}/runs/{ids['run']}")
    assert run["status"] == "completed", run
    answer, question = acme.ok("GET", f"{thread}/messages")["data"]
    ids["msg"] = question["id"]
    ids["out"] = answer["content"][-1]["text"]["annotations"][0]["file_path"]["file_id"]
    steps = acme.ok("GET", f"{thread}/runs/{ids['run']}/steps")["data"]
    call = next(s for s in steps if s["type"] == "tool_calls")
    ids["step"] = call["id"]
    outputs = call["step_details"]["tool_calls"][0]["code_interpreter"]["outputs"]
    ids["img"] = next(o["image"]["file_id"] for o in outputs if o["type"] == "image")
    code = "secret = 41\nwith open('/mnt/data/mine.txt', 'w') as f:\n    f.write('acme')"
    tools = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    response = acme.ok(
        "POST", "/v1/responses", json={"model": "scripted-echo", "input": code, "tools": tools}
    )
    assert response["status"] == "completed", response
    ids["resp"] = response["id"]
    ids["cntr"] = next(
        item["container_id"]
        for item in response["output"]
        if item["type"] == "code_interpreter_call"
    )
    [written] = acme.ok("GET", f"/v1/containers/{ids['cntr']}/files")["data"]
    ids["cfile"] = written["id"]
    items = {"items": [{"role": "user", "content": "hello"}]}
    ids["conv"] = acme.ok("POST", "/v1/conversations", json=items)["id"]
    ids["item"] = acme.ok("GET", f"/v1/conversations/{ids['conv']}/items")["data"][0]["id"]
    ids["agent"] = f"agent-{secrets.token_hex(ID_TAIL // 2)}"  # a Foundry agent: its name
    definition = {"definition": {"model": "scripted-echo", "tools": tools}}
    acme.ok("POST", f"/api/projects/p/agents/{ids['agent']}/versions", json=definition)
    return ids


@pytest.fixture(scope="module")
def estate(agents_server: AgentsServer) -> Iterator[Estate]:
    acme = Tenant(agents_server, tenant_name("acme"))
    viewers = {
        "umbrella": Tenant(agents_server, tenant_name("umbrella")),
        "default": Tenant(agents_server, DEFAULT_TENANT),
    }
    try:
        ids = build(acme)
        own = {name: viewer.own() for name, viewer in viewers.items()}
        yield Estate(acme, viewers, ids, own)
    finally:
        for t in (acme, *viewers.values()):
            t.http.close()


def unknown_like(object_id: str) -> str:
    """An id of the same shape that was never issued."""
    return object_id[:-ID_TAIL] + secrets.token_hex(ID_TAIL // 2)


def fill(template: Any, values: dict[str, str]) -> Any:
    """``template`` (a path, or a request's options) with every ``{name}`` replaced."""
    if isinstance(template, str):
        for name, value in values.items():
            template = template.replace("{" + name + "}", value)
        return template
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values) for v in template]
    return template


CI_FILE = {"code_interpreter": {"file_ids": ["{file}"]}}
ECHO = "scripted-echo"
#: (what, method, path, request options): every route that takes an id, aimed at acme's
CROSS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("get assistant", "GET", "/v1/assistants/{asst}", {}),
    ("get assistant (Azure AI Agents)", "GET", "/api/projects/p/assistants/{asst}", {}),
    ("get assistant (hub)", "GET", AZ + "/assistants/{asst}", {}),
    ("get assistant (Azure OpenAI)", "GET", "/openai/assistants/{asst}", {}),
    ("update assistant", "POST", "/v1/assistants/{asst}", {"json": {"name": "mine"}}),
    ("delete assistant", "DELETE", "/v1/assistants/{asst}", {}),
    (
        "assistant with their file",
        "POST",
        "/v1/assistants",
        {"json": {"model": "m", "tool_resources": CI_FILE}},
    ),
    ("get thread", "GET", "/v1/threads/{thread}", {}),
    ("update thread", "POST", "/v1/threads/{thread}", {"json": {"metadata": {"k": "v"}}}),
    ("delete thread", "DELETE", "/v1/threads/{thread}", {}),
    ("thread with their file", "POST", "/v1/threads", {"json": {"tool_resources": CI_FILE}}),
    ("add message", "POST", "/v1/threads/{thread}/messages", {"json": {"content": "hi"}}),
    ("list messages", "GET", "/v1/threads/{thread}/messages", {}),
    ("get message", "GET", "/v1/threads/{thread}/messages/{msg}", {}),
    ("get message, own thread", "GET", "/v1/threads/{b_thread}/messages/{msg}", {}),
    (
        "update message",
        "POST",
        "/v1/threads/{thread}/messages/{msg}",
        {"json": {"metadata": {"k": "v"}}},
    ),
    ("delete message", "DELETE", "/v1/threads/{thread}/messages/{msg}", {}),
    (
        "attach their file",
        "POST",
        "/v1/threads/{b_thread}/messages",
        {"json": {"content": "x", "attachments": [{"file_id": "{file}"}]}},
    ),
    (
        "run on their thread",
        "POST",
        "/v1/threads/{thread}/runs",
        {"json": {"assistant_id": "{b_asst}"}},
    ),
    (
        "stream a run on their thread",
        "POST",
        "/v1/threads/{thread}/runs",
        {"json": {"assistant_id": "{b_asst}", "stream": True}},
    ),
    (
        "run their assistant",
        "POST",
        "/v1/threads/{b_thread}/runs",
        {"json": {"assistant_id": "{asst}"}},
    ),
    (
        "stream a new thread with their assistant",
        "POST",
        "/v1/threads/runs",
        {"json": {"assistant_id": "{asst}", "stream": True}},
    ),
    ("list runs", "GET", "/v1/threads/{thread}/runs", {}),
    ("get run", "GET", "/v1/threads/{thread}/runs/{run}", {}),
    ("get run, own thread", "GET", "/v1/threads/{b_thread}/runs/{run}", {}),
    (
        "update run",
        "POST",
        "/v1/threads/{thread}/runs/{run}",
        {"json": {"metadata": {"k": "v"}}},
    ),
    ("cancel run", "POST", "/v1/threads/{thread}/runs/{run}/cancel", {}),
    (
        "submit tool outputs",
        "POST",
        "/v1/threads/{thread}/runs/{run}/submit_tool_outputs",
        {"json": {"tool_outputs": []}},
    ),
    ("list steps", "GET", "/v1/threads/{thread}/runs/{run}/steps", {}),
    ("get step", "GET", "/v1/threads/{thread}/runs/{run}/steps/{step}", {}),
    ("get file", "GET", "/v1/files/{file}", {}),
    ("download file", "GET", "/v1/files/{file}/content", {}),
    ("download file (Azure OpenAI v1)", "GET", "/openai/v1/files/{file}/content", {}),
    ("download file (Foundry)", "GET", "/api/projects/p/openai/v1/files/{file}/content", {}),
    ("delete file", "DELETE", "/v1/files/{file}", {}),
    ("download a figure", "GET", "/v1/files/{img}/content", {}),
    ("download a file the code wrote", "GET", "/v1/files/{out}/content", {}),
    ("delete a file the code wrote", "DELETE", "/v1/files/{out}", {}),
    ("get response", "GET", "/v1/responses/{resp}", {}),
    ("stream a response again", "GET", "/v1/responses/{resp}?stream=true", {}),
    ("response input items", "GET", "/v1/responses/{resp}/input_items", {}),
    ("cancel response", "POST", "/v1/responses/{resp}/cancel", {}),
    ("delete response", "DELETE", "/v1/responses/{resp}", {}),
    (
        "continue their response",
        "POST",
        "/v1/responses",
        {"json": {"model": ECHO, "input": "1", "previous_response_id": "{resp}"}},
    ),
    (
        "stream into their conversation",
        "POST",
        "/v1/responses",
        {"json": {"model": ECHO, "input": "1", "conversation": "{conv}", "stream": True}},
    ),
    (
        "run in their container",
        "POST",
        "/v1/responses",
        {
            "json": {
                "model": ECHO,
                "input": "print(secret)",
                "tools": [{"type": "code_interpreter", "container": "{cntr}"}],
            }
        },
    ),
    (
        "their file in a container of one's own",
        "POST",
        "/v1/responses",
        {
            "json": {
                "model": ECHO,
                "input": "1",
                "tools": [
                    {
                        "type": "code_interpreter",
                        "container": {"type": "auto", "file_ids": ["{file}"]},
                    }
                ],
            }
        },
    ),
    (
        "their agent",
        "POST",
        "/api/projects/p/openai/v1/responses",
        {"json": {"input": "1", "agent": {"type": "agent_reference", "name": "{agent}"}}},
    ),
    ("get conversation", "GET", "/v1/conversations/{conv}", {}),
    (
        "update conversation",
        "POST",
        "/v1/conversations/{conv}",
        {"json": {"metadata": {"k": "v"}}},
    ),
    ("delete conversation", "DELETE", "/v1/conversations/{conv}", {}),
    ("list items", "GET", "/v1/conversations/{conv}/items", {}),
    (
        "add items",
        "POST",
        "/v1/conversations/{conv}/items",
        {"json": {"items": [{"role": "user", "content": "x"}]}},
    ),
    ("get item", "GET", "/v1/conversations/{conv}/items/{item}", {}),
    ("delete item", "DELETE", "/v1/conversations/{conv}/items/{item}", {}),
    ("get container", "GET", "/v1/containers/{cntr}", {}),
    ("get container (Foundry)", "GET", "/api/projects/p/openai/v1/containers/{cntr}", {}),
    ("delete container", "DELETE", "/v1/containers/{cntr}", {}),
    ("container with their file", "POST", "/v1/containers", {"json": {"file_ids": ["{file}"]}}),
    ("list container files", "GET", "/v1/containers/{cntr}/files", {}),
    (
        "upload into their container",
        "POST",
        "/v1/containers/{cntr}/files",
        {"files": {"file": ("x.txt", b"x")}},
    ),
    (
        "copy their file into one's own",
        "POST",
        "/v1/containers/{b_cntr}/files",
        {"json": {"file_id": "{file}"}},
    ),
    ("get container file", "GET", "/v1/containers/{cntr}/files/{cfile}", {}),
    ("get container file, own container", "GET", "/v1/containers/{b_cntr}/files/{cfile}", {}),
    ("download container file", "GET", "/v1/containers/{cntr}/files/{cfile}/content", {}),
    (
        "download container file, own container",
        "GET",
        "/v1/containers/{b_cntr}/files/{cfile}/content",
        {},
    ),
    ("delete container file", "DELETE", "/v1/containers/{cntr}/files/{cfile}", {}),
    ("get agent version", "GET", "/api/projects/p/agents/{agent}/versions/1", {}),
    ("delete agent version", "DELETE", "/api/projects/p/agents/{agent}/versions/1", {}),
]


def scrubbed(r: httpx.Response, ids: Iterable[str]) -> str:
    text = r.text
    for value in ids:
        text = text.replace(value, "ID")
    return text


@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize(("what", "method", "path", "options"), CROSS, ids=[c[0] for c in CROSS])
def test_another_tenants_ids_answer_as_ids_never_issued(
    estate: Estate, viewer: str, what: str, method: str, path: str, options: dict[str, Any]
) -> None:
    who, own = estate.viewers[viewer], estate.own[viewer]
    named = str(path) + str(options)
    used = {k: v for k, v in estate.ids.items() if "{" + k + "}" in named}
    assert used, what
    fresh = {k: unknown_like(v) for k, v in used.items()}
    theirs = who.http.request(method, fill(path, used | own), **fill(options, used | own))
    unknown = who.http.request(method, fill(path, fresh | own), **fill(options, fresh | own))
    assert theirs.status_code == 404, (what, theirs.status_code, theirs.text[:1000])
    assert theirs.json()["error"]["code"] == "not_found"
    assert scrubbed(theirs, used.values()) == scrubbed(unknown, fresh.values()), what
    assert unknown.status_code == 404
    assert theirs.headers.get("content-type") == unknown.headers.get("content-type")


@pytest.mark.parametrize("viewer", VIEWERS)
def test_listings_and_cursors_show_only_ones_own(estate: Estate, viewer: str) -> None:
    who, acme = estate.viewers[viewer], set(estate.ids.values())
    listings = [
        "/v1/assistants",
        "/v1/files",
        "/v1/files?purpose=assistants_output",
        "/v1/containers",
        "/api/projects/p/assistants",
        "/openai/v1/files",
    ]
    for path in listings:
        listed = {item["id"] for item in who.ok("GET", path + "?limit=100")["data"]}
        assert not listed & acme, (path, listed & acme)
        listed = {item["id"] for item in who.ok("GET", path)["data"]}
        assert not listed & acme, path
    # an id of acme's as a cursor pages exactly as an id never issued
    for path, key in (
        ("/v1/assistants", "asst"),
        ("/v1/files", "file"),
        ("/v1/containers", "cntr"),
        (f"/v1/threads/{estate.own[viewer]['b_thread']}/messages", "msg"),
    ):
        for cursor in ("after", "before"):
            theirs = who.ok("GET", f"{path}?{cursor}={estate.ids[key]}")
            unknown = who.ok("GET", f"{path}?{cursor}={unknown_like(estate.ids[key])}")
            assert theirs == unknown, (path, cursor)
    # Foundry agents are per tenant too: the same name is a first version here
    made = who.ok(
        "POST",
        f"/api/projects/p/agents/{estate.ids['agent']}/versions",
        json={"definition": {"model": ECHO}},
    )
    assert made["version"] == "1"
    who.ok("DELETE", f"/api/projects/p/agents/{estate.ids['agent']}/versions/1")


def test_runs_in_flight_are_not_cancelled_nor_streamed_by_another(estate: Estate) -> None:
    acme, umbrella = estate.acme, estate.viewers["umbrella"]
    thread = acme.ok("POST", "/v1/threads", json={})["id"]
    acme.ok("POST", f"/v1/threads/{thread}/messages", json={"content": "wait"})
    run = acme.ok(
        "POST",
        f"/v1/threads/{thread}/runs",
        json={"assistant_id": estate.ids["asst"], "model": "scripted-slow"},
    )
    response = acme.ok(
        "POST",
        "/v1/responses",
        json={"model": "scripted-slow", "input": "wait", "background": True},
    )
    try:
        attempts = [
            ("POST", f"/v1/threads/{thread}/runs/{run['id']}/cancel"),
            ("GET", f"/v1/threads/{thread}/runs/{run['id']}"),
            ("POST", f"/v1/responses/{response['id']}/cancel"),
            ("GET", f"/v1/responses/{response['id']}?stream=true"),
            ("DELETE", f"/v1/responses/{response['id']}"),
            ("POST", f"/v1/threads/{thread}/messages"),
        ]
        for method, path in attempts:
            r = umbrella.http.request(method, path, json={"content": "x"})
            assert r.status_code == 404, (method, path, r.text[:500])
        assert acme.ok("GET", f"/v1/threads/{thread}/runs/{run['id']}")["status"] == "in_progress"
        assert acme.ok("GET", f"/v1/responses/{response['id']}")["status"] in (
            "queued",
            "in_progress",
        )
    finally:
        acme.ok("POST", f"/v1/threads/{thread}/runs/{run['id']}/cancel")
        acme.ok("POST", f"/v1/responses/{response['id']}/cancel")
    assert acme.wait(f"/v1/threads/{thread}/runs/{run['id']}")["status"] == "cancelled"
    assert acme.wait(f"/v1/responses/{response['id']}")["status"] == "cancelled"


@pytest.mark.parametrize("viewer", ("acme", *VIEWERS))
def test_a_containers_interpreter_is_no_session_a_client_can_name(
    estate: Estate, viewer: str
) -> None:
    """acme's container holds ``secret = 41`` in its interpreter. Through the sessions API no
    tenant, acme included, reaches it: the container's id as an identifier is a new session,
    the reserved key is no identifier at all, and no listing shows it."""
    who = estate.acme if viewer == "acme" else estate.viewers[viewer]
    container = estate.ids["cntr"]
    sessions = f"/pools/default/listSessions?api-version={NEW}"
    try:
        out = who.http.post(
            "/pools/default/code/execute" + q(container),
            json=code_body("print(globals().get('secret'))"),
        )
        assert out.status_code == 200, out.text
        assert out.json()["properties"]["stdout"] == "None\n"
        for key in (f"\\agents\\{estate.acme.tenant}\\{container}", f"\\{container}"):
            r = who.http.post("/pools/default/code/execute" + q(key), json=code_body("1"))
            assert r.status_code == 400, r.text
        listed = who.ok("GET", sessions)["sessions"]
        assert all("\\" not in s["identifier"] for s in listed)
    finally:
        who.http.delete("/pools/default/session" + q(container, NEW))
    # the container's own interpreter still holds its state
    again = estate.acme.ok(
        "POST",
        "/v1/responses",
        json={
            "model": ECHO,
            "input": "print(secret + 1)",
            "tools": [{"type": "code_interpreter", "container": container}],
        },
    )
    assert again["status"] == "completed", again
    assert "42" in again["output"][-1]["content"][0]["text"]


NO_AGENTS = ALL_SCOPES - {Scope.AGENTS}


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_a_key_without_the_agents_scope_is_refused(
    estate: Estate, agents_server: AgentsServer, method: str, path: str
) -> None:
    """Forbidden (the key is the tenant's, the right is not), before anything is read."""
    limited = Tenant(agents_server, estate.acme.tenant, NO_AGENTS)
    try:
        r = limited.http.request(method, path, json={})
        assert r.status_code == 403, r.text
        error = r.json()["error"]
        assert error["code"] == "forbidden" and "'agents' scope" in error["message"]
        # nor does it read its own tenant's objects without the scope
        r = limited.http.get(f"/v1/assistants/{estate.ids['asst']}")
        assert r.status_code == 403
    finally:
        limited.http.close()


def test_acme_keeps_everything_unchanged(estate: Estate) -> None:
    """After every attempt above, acme's objects are all there, as they were."""
    acme, ids = estate.acme, estate.ids
    assert acme.ok("GET", f"/v1/assistants/{ids['asst']}")["name"] is None
    assert acme.ok("GET", f"/v1/threads/{ids['thread']}")["metadata"] == {}
    messages = acme.ok("GET", f"/v1/threads/{ids['thread']}/messages")["data"]
    assert [m["role"] for m in messages] == ["assistant", "user"]
    assert acme.ok("GET", f"/v1/threads/{ids['thread']}/runs/{ids['run']}")["metadata"] == {}
    for file_id in (ids["file"], ids["img"], ids["out"]):
        assert acme.http.get(f"/v1/files/{file_id}/content").status_code == 200
    assert acme.http.get(f"/v1/files/{ids['file']}/content").content == b"a,b\n1,2\n"
    cfile = f"/v1/containers/{ids['cntr']}/files/{ids['cfile']}/content"
    assert acme.http.get(cfile).content == b"acme"
    files = acme.ok("GET", f"/v1/containers/{ids['cntr']}/files")["data"]
    assert [f["path"] for f in files] == ["/mnt/data/mine.txt"]
    assert acme.ok("GET", f"/v1/responses/{ids['resp']}")["status"] == "completed"
    assert acme.ok("GET", f"/v1/conversations/{ids['conv']}")["metadata"] == {}
    items = acme.ok("GET", f"/v1/conversations/{ids['conv']}/items")["data"]
    assert [i["id"] for i in items] == [ids["item"]]
    version = acme.ok("GET", f"/api/projects/p/agents/{ids['agent']}/versions/1")
    assert version["name"] == ids["agent"]
