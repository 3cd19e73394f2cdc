"""The E2B face through the unmodified E2B SDKs (``e2b`` 2.63.0, ``e2b-code-interpreter``
2.11.5, sync and async) against a real server with jailed sessions: the two environment
variables (``E2B_API_URL``, ``E2B_SANDBOX_URL``: the server's one port) and a key in the
``e2b_`` form from the server's key file are all the SDKs are given."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from e2b import SandboxQuery
from e2b.exceptions import AuthenticationException, SandboxException
from e2b_code_interpreter import AsyncSandbox, Sandbox

from sessionpool.server.keys import KeyStore
from sessionpool.server.testing import ServerProcess
from sessionpool.tenancy import Scope

pytestmark = pytest.mark.jail

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHART = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [3, 1, 2])
plt.show()
"""


def e2b_key(server: ServerProcess, tenant: str) -> str:
    _, secret = KeyStore(server.data_dir / "keys.json").create(
        tenant, frozenset({Scope.EXECUTE, Scope.FILES}), e2b=True
    )
    return secret


@pytest.fixture
def e2b_env(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The SDKs pointed at the server, with a key of a fresh tenant (sandboxes of earlier
    tests are not in its listings)."""
    key = e2b_key(server, f"e2b-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("E2B_API_URL", server.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", server.url)
    monkeypatch.setenv("E2B_API_KEY", key)
    yield key


def sandbox_headers(sbx: Sandbox, port: int = 49999, token: str | None = None) -> dict[str, str]:
    return {
        "E2b-Sandbox-Id": sbx.sandbox_id,
        "E2b-Sandbox-Port": str(port),
        "X-Access-Token": token if token is not None else str(sbx._envd_access_token),
    }


def test_run_code_keeps_state_and_returns_charts_errors_and_streams(e2b_env: str) -> None:
    stdout: list[str] = []
    results: list[object] = []
    with Sandbox.create(envs={"GREETING": "hello"}) as sbx:
        assert sbx.run_code("x = 41").error is None
        execution = sbx.run_code("x + 1")
        assert execution.text == "42" and execution.results[0].is_main_result
        assert execution.execution_count == 2
        assert sbx.run_code("import os; os.environ['GREETING']").text == "'hello'"
        # the sandbox's envVars reach the commands it runs too (envd)
        assert sbx.commands.run("echo $GREETING").stdout == "hello\n"
        # run_code's envs hold for that one cell
        one = sbx.run_code("os.environ.get('ONE'), os.getcwd()", envs={"ONE": "1"})
        assert one.text == "('1', '/mnt/data')"
        assert sbx.run_code("os.environ.get('ONE')").text is None

        chart = sbx.run_code(CHART)
        pngs = [r.png for r in chart.results if r.png]
        assert pngs and base64.b64decode(pngs[0]).startswith(PNG_MAGIC)
        assert not any(r.is_main_result for r in chart.results)

        failed = sbx.run_code("def f():\n    return 1 / 0\nf()")
        assert failed.error is not None and failed.error.name == "ZeroDivisionError"
        assert failed.error.value == "division by zero" and "f()" in failed.error.traceback

        streamed = sbx.run_code(
            "import sys, time\nprint('one', flush=True)\ntime.sleep(0.3)\n"
            "print('two', file=sys.stderr)\nfrom IPython.display import HTML, display\n"
            "display(HTML('<b>hi</b>'))\n'done'",
            on_stdout=lambda m: stdout.append(m.line),
            on_result=results.append,
        )
        assert "".join(stdout) == "one\n" and streamed.logs.stderr == ["two\n"]
        assert [r.is_main_result for r in streamed.results] == [False, True]
        assert streamed.results[0].html == "<b>hi</b>" and streamed.text == "'done'"
        assert results == streamed.results
        # the SDK's timeout ends the request; the server interrupts the cell
        with pytest.raises(Exception, match=r"[Tt]imeout|timed out"):
            sbx.run_code("import time; time.sleep(30)", timeout=1)
        assert sbx.run_code("x").text == "41"


def test_contexts_are_independent_interpreters(e2b_env: str) -> None:
    with Sandbox.create() as sbx:
        sbx.run_code("y = 'main'")
        ctx = sbx.create_code_context()
        assert sbx.run_code("y = 'ctx'", context=ctx).error is None
        assert sbx.run_code("y").text == "'main'"
        assert sbx.run_code("y", context=ctx).text == "'ctx'"
        assert {c.id for c in sbx.list_code_contexts()} >= {"default", ctx.id}
        sbx.restart_code_context(ctx)
        after = sbx.run_code("y", context=ctx)
        assert after.error is not None and after.error.name == "NameError"
        sbx.remove_code_context(ctx)
        assert ctx.id not in {c.id for c in sbx.list_code_contexts()}
        with pytest.raises(Exception, match="not found"):
            sbx.run_code("1", context=ctx)
        # JavaScript in the server's Node.js pool, bash as a shell command
        assert sbx.run_code("[1, 2].map(v => v * 3)", language="javascript").text == "[ 3, 6 ]"
        js = sbx.create_code_context(language="javascript")
        assert sbx.run_code("let z = 5; z * 2", context=js).text == "10"
        bash = sbx.run_code("echo $((6 * 7))", language="bash")
        assert bash.logs.stdout == ["42\n"] and bash.error is None
        with pytest.raises(SandboxException, match="language 'cobol' is not supported"):
            sbx.run_code("1", language="cobol")
    # a template names a pool, and its runtime: the Node.js pool's sandbox speaks JavaScript
    with Sandbox.create(template="js") as node:
        assert node.get_info().template_id == "js"
        assert node.run_code("const n = 2; n + 1").text == "3"
        assert node.run_code("6 * 7", language="python").text == "42"


def test_python_contexts_share_the_sandbox_files(e2b_env: str) -> None:
    with Sandbox.create() as sbx:
        a = sbx.create_code_context()
        b = sbx.create_code_context()
        assert sbx.run_code("v = 1; import json", context=a).error is None
        seen = sbx.run_code("'v' in dir(), 'json' in dir()", context=b)
        assert seen.text == "(False, False)"
        assert sbx.run_code("'v' in dir()").text == "False"
        wrote = "open('/mnt/data/shared.txt', 'w').write('from a')"
        assert sbx.run_code(wrote, context=a).error is None
        assert sbx.run_code("open('/mnt/data/shared.txt').read()", context=b).text == "'from a'"
        assert sbx.files.read("/mnt/data/shared.txt") == "from a"
        assert sbx.commands.run("cat /mnt/data/shared.txt").stdout == "from a"
        sbx.restart_code_context(a)
        gone = sbx.run_code("v", context=a)
        assert gone.error is not None and gone.error.name == "NameError"
        assert sbx.run_code("open('shared.txt').read()", context=a).text == "'from a'"
        sbx.remove_code_context(a)
        assert a.id not in {c.id for c in sbx.list_code_contexts()}
        assert sbx.run_code("1 + 1", context=b).text == "2"


def test_lifecycle_list_connect_timeout_and_kill(e2b_env: str) -> None:
    tag = uuid.uuid4().hex
    a = Sandbox.create(metadata={"suite": tag, "role": "a"}, timeout=60)
    b = Sandbox.create(metadata={"suite": tag, "role": "b"}, timeout=2)
    listed = Sandbox.list(query=SandboxQuery(metadata={"suite": tag, "role": "a"})).next_items()
    assert [s.sandbox_id for s in listed] == [a.sandbox_id]
    assert listed[0].metadata == {"suite": tag, "role": "a"}
    both = Sandbox.list(query=SandboxQuery(metadata={"suite": tag})).next_items()
    assert {s.sandbox_id for s in both} == {a.sandbox_id, b.sandbox_id}

    info = a.get_info()
    assert info.metadata["role"] == "a" and info.template_id == "code-interpreter-v1"
    a.run_code("kept = 'yes'")
    again = Sandbox.connect(a.sandbox_id)
    assert again.run_code("kept").text == "'yes'"
    a.set_timeout(120)
    assert 100 < (a.get_info().end_at.timestamp() - time.time()) <= 121
    # a short lifetime ends the sandbox, idle or not (the pool's cooldown is longer)
    b.run_code("1")
    time.sleep(3.5)
    assert not b.is_running()
    with pytest.raises(Exception, match="not found"):
        Sandbox.connect(b.sandbox_id)
    a.kill()
    assert not a.is_running()
    assert Sandbox.list(query=SandboxQuery(metadata={"suite": tag})).next_items() == []


def test_the_async_sdk(e2b_env: str) -> None:
    async def flow() -> None:
        sbx = await AsyncSandbox.create(metadata={"sdk": "async"})
        try:
            await sbx.run_code("n = 6")
            seen: list[str] = []
            execution = await sbx.run_code(
                "print(n * 7); n * 7", on_stdout=lambda m: seen.append(m.line)
            )
            assert execution.text == "42" and seen == ["42\n"]
            ctx = await sbx.create_code_context()
            assert (await sbx.run_code("'n' in dir()", context=ctx)).text == "False"
        finally:
            await sbx.kill()
        assert not await sbx.is_running()

    asyncio.run(flow())


def test_refusals_are_clear(
    e2b_env: str, server: ServerProcess, request: pytest.FixtureRequest
) -> None:
    # the default pool has no network: asking for the internet is refused, not ignored
    with pytest.raises(SandboxException, match=r"allow_internet_access: template .* no network"):
        Sandbox.create(allow_internet_access=True)
    with pytest.raises(SandboxException, match="template 'no-such-pool' not found"):
        Sandbox.create(template="no-such-pool")
    api = httpx.Client(base_url=server.url, headers={"X-API-KEY": e2b_env})
    request.addfinalizer(api.close)
    for field, value in (
        ("volumeMounts", [{"name": "v", "path": "/data"}]),
        ("mcp", {"github": {}}),
        ("autoPause", True),
        ("network", {"allowOut": ["0.0.0.0/0"]}),
    ):
        r = api.post("/v2/sandboxes", json={"templateID": "code-interpreter-v1", field: value})
        assert r.status_code == 400 and r.json()["message"].startswith(field), r.text
    with Sandbox.create() as sbx:
        r = api.post(f"/sandboxes/{sbx.sandbox_id}/pause")
        assert r.status_code == 501 and "not supported by this server" in r.json()["message"]
    # Idempotency-Key: the same key and body make one sandbox; another body is a conflict
    body = {"templateID": "code-interpreter-v1", "timeout": 30}
    first = api.post("/v2/sandboxes", json=body, headers={"Idempotency-Key": "k1"})
    second = api.post("/v2/sandboxes", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == second.status_code == 201
    assert first.json()["sandboxID"] == second.json()["sandboxID"]
    other = api.post(
        "/v2/sandboxes", json={**body, "timeout": 31}, headers={"Idempotency-Key": "k1"}
    )
    assert other.status_code == 409
    assert api.delete(f"/sandboxes/{first.json()['sandboxID']}").status_code == 204


def test_tenants_tokens_and_keys(
    e2b_env: str, server: ServerProcess, request: pytest.FixtureRequest
) -> None:
    with Sandbox.create() as sbx:
        sbx.run_code("secret = 'mine'")
        # another tenant: the sandbox is not found, through the SDK and every route
        other = e2b_key(server, f"other-{uuid.uuid4().hex[:8]}")
        with pytest.raises(Exception, match="not found"):
            Sandbox.connect(sbx.sandbox_id, api_key=other)
        api = httpx.Client(base_url=server.url, headers={"X-API-KEY": other})
        request.addfinalizer(api.close)
        for method, path in (
            ("GET", f"/sandboxes/{sbx.sandbox_id}"),
            ("DELETE", f"/sandboxes/{sbx.sandbox_id}"),
            ("POST", f"/sandboxes/{sbx.sandbox_id}/timeout"),
            ("POST", f"/v2/sandboxes/{sbx.sandbox_id}/connect"),
            ("POST", f"/sandboxes/{sbx.sandbox_id}/pause"),
        ):
            r = api.request(method, path, json={"timeout": 10})
            assert r.status_code == 404, (method, path, r.text)
        assert api.get("/v2/sandboxes").json() == []
        # a wrong API key: 401, the SDK's AuthenticationException
        with pytest.raises(AuthenticationException):
            Sandbox.create(api_key="e2b_" + "0" * 76)
        # sandbox traffic: a wrong or missing token 401, an unknown sandbox 502
        code = {"code": "secret"}
        with httpx.Client(base_url=server.url) as raw:
            wrong = raw.post("/execute", json=code, headers=sandbox_headers(sbx, token="x" * 48))
            assert wrong.status_code == 401
            bare = {k: v for k, v in sandbox_headers(sbx).items() if k != "X-Access-Token"}
            assert raw.post("/execute", json=code, headers=bare).status_code == 401
            unknown = {**sandbox_headers(sbx), "E2b-Sandbox-Id": "i" + "0" * 19}
            # as E2B's proxy answers for a sandbox not running (the SDKs' is_running() reads it)
            assert raw.post("/execute", json=code, headers=unknown).status_code == 502
            # the right token also works in the host form ({port}-{id}.{domain})
            host = {"Host": f"49999-{sbx.sandbox_id}.sandbox.test"}
            token = {"X-Access-Token": sandbox_headers(sbx)["X-Access-Token"]}
            r = raw.post("/execute", json=code, headers={**host, **token})
            assert r.status_code == 200 and '"text":"\'mine\'"' in r.text
            assert raw.post("/execute", json=code, headers=host).status_code == 401
