"""The real clients, unmodified, through cluster gateways (tests/cluster/conftest.py).

Each client runs a real flow as in its conformance test (tests/clients/, tests/client/): state
kept across calls, a matplotlib PNG where the client returns images, a file round trip where it
moves files. sessionpool's own client sets state through one gateway and reads it through the
other; Semantic Kernel goes through an https gateway; the openai SDK runs a Responses
code-interpreter flow against a gateway with the agents faces on, and its container comes back
with its files after its node's engine crashed. ``sessionpool cluster`` runs as a subprocess.
"""

from __future__ import annotations

import ast
import base64
import gc
import hashlib
import io
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionpool import Client
from sessionpool.agents.containers import session_key as container_key
from sessionpool.client._cli import AUTH, NOT_FOUND, OK, UNREACHABLE
from sessionpool.server.testing import ServerProcess
from sessionpool.tenancy import DEFAULT_TENANT
from tests.clients.conftest import (
    CLIENT_WARNINGS,
    LANGCHAIN_DEPRECATED,
    PAYLOAD,
    PLOT,
    ignores_aiohttp_leak,
)
from tests.cluster.helpers import holder, new_ident, view, wait_until

pytestmark = [pytest.mark.jail, LANGCHAIN_DEPRECATED, *CLIENT_WARNINGS]

Gateways = tuple[ServerProcess, ServerProcess]
PNG = b"\x89PNG\r\n\x1a\n"
CHART_TOOL: Any = {"type": "code_interpreter", "container": {"type": "auto"}}


# --- sessionpool's own client: one session, two gateways ----------------------------------------


def test_sdk_keeps_state_files_and_images_across_two_gateways(gateways: Gateways) -> None:
    a, b = gateways
    ident = new_ident("sdk")
    with (
        Client(a.endpoint(), api_key=a.api_key) as via_a,
        Client(b.endpoint(), api_key=b.api_key) as via_b,
    ):
        sa, sb = via_a.session(ident), via_b.session(ident)
        first = sa.run("x = 41\nprint('set')")
        assert (first.stdout, first.text, first.error) == ("set\n", "", None)
        assert sb.run("x += 1\nx").text == "42"  # the state set through a, read through b
        assert sa.run("x").text == "42"

        image = sb.run(PLOT).images[0]
        assert image.format == "png" and image.data.startswith(PNG)

        info = sa.upload(PAYLOAD, "data.bin")
        assert (info.name, info.size) == ("data.bin", len(PAYLOAD))
        assert {f.name: f.size for f in sb.files()} == {"data.bin": len(PAYLOAD)}
        assert sb.download("data.bin") == PAYLOAD
        shell = sb.run_shell("sha256sum /mnt/data/data.bin")
        assert shell.exit_code == 0, shell
        assert shell.stdout.split()[0] == hashlib.sha256(PAYLOAD).hexdigest()

        events = list(sb.stream("for i in range(3):\n    print('tick', i, flush=True)\nx"))
        assert "".join(e.text for e in events if e.kind == "stdout") == "tick 0\ntick 1\ntick 2\n"
        assert events[-1].kind == "result" and events[-1].result is not None
        assert events[-1].result.text == "42"

        assert ident in {s.identifier for s in via_b.sessions()}  # listed from every node
        sa.close()
        assert ident not in {s.identifier for s in via_b.sessions()}
        again = sb.run("x")  # b's route is stale: a fresh session, the old state is gone
        assert again.error is not None and again.error.name == "NameError"
        sb.close()


# --- LangChain ------------------------------------------------------------------------------------


def test_langchain_python_tool(gateways: Gateways) -> None:
    from langchain_azure_dynamic_sessions import SessionsPythonREPLTool

    _, b = gateways
    token = b.api_key
    tool = SessionsPythonREPLTool(
        pool_management_endpoint=b.endpoint(),
        access_token_provider=lambda: token,
        session_id=new_ident("lc"),
    )
    assert tool.execute("x = 41")["status"] == "Success"
    props = tool.execute("```python\nx += 1\nprint(x)\nx\n```")
    assert (props["status"], props["stdout"], props["result"]) == ("Success", "42\n", "42")
    assert json.loads(tool.run("x * 2")) == {"result": "84", "stdout": "", "stderr": ""}

    result = tool.execute(PLOT)["result"]
    assert (result["type"], result["format"]) == ("image", "png")
    assert base64.b64decode(result["base64_data"]).startswith(PNG)

    meta = tool.upload_file(data=io.BytesIO(PAYLOAD), remote_file_path="lc_data.bin")
    assert (meta.filename, meta.size_in_bytes) == ("lc_data.bin", len(PAYLOAD))
    assert {m.filename: m.size_in_bytes for m in tool.list_files()} == {"lc_data.bin": len(PAYLOAD)}
    assert tool.download_file(remote_file_path="lc_data.bin").read() == PAYLOAD
    seen = tool.execute(
        f"open('/mnt/data/lc_data.bin','rb').read() == bytes.fromhex({PAYLOAD.hex()!r})"
    )
    assert seen["result"] == "True"
    tool.close()


# --- llama-index ----------------------------------------------------------------------------------


# upload_file opens the local file and never closes it (a client bug): its ResourceWarning
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*llama_in.bin:pytest.PytestUnraisableExceptionWarning"
)
def test_llamaindex_code_interpreter(gateways: Gateways, tmp_path: Path) -> None:
    from llama_index.tools.azure_code_interpreter import (  # type: ignore[import-untyped]
        AzureCodeInterpreterToolSpec,
    )

    a, _ = gateways
    session_id = new_ident("llama")
    saved_to = tmp_path / "saved"
    saved_to.mkdir()
    tool = AzureCodeInterpreterToolSpec(
        pool_management_endpoint=a.endpoint(), session_id=session_id, local_save_path=str(saved_to)
    )
    token = a.api_key
    tool.access_token_provider = lambda: token

    assert tool.code_interpreter("x = 41")["properties"]["status"] == "Success"
    props = tool.code_interpreter("```python\nx += 1\nprint(x)\nx\n```")["properties"]
    assert (props["status"], props["stdout"], props["result"]) == ("Success", "42\n", "42")

    result = tool.code_interpreter(PLOT)["properties"]["result"]
    assert (result["type"], result["format"], result["saved_to_local_path"]) == (
        "image",
        "png",
        True,
    )
    (saved,) = saved_to.glob(f"{session_id}_*.png")
    assert saved.read_bytes().startswith(PNG)

    local = tmp_path / "llama_in.bin"
    local.write_bytes(PAYLOAD)
    meta = tool.upload_file(local_file_path=str(local))
    assert [(m.filename, m.size_in_bytes) for m in meta] == [("llama_in.bin", len(PAYLOAD))]
    seen = tool.code_interpreter("open('/mnt/data/llama_in.bin','rb').read().hex()")
    assert seen["properties"]["result"].strip("'") == PAYLOAD.hex()
    tool.code_interpreter("open('/mnt/data/made.bin','wb').write(bytes(range(256)))")
    made = tool.download_file_to_local("made.bin")
    assert made is not None and made.read() == bytes(range(256))


# --- AutoGen --------------------------------------------------------------------------------------


class StaticToken:
    """A credential that always hands out the same bearer token."""

    def __init__(self, key: str) -> None:
        self.key = key

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.key, int(time.time()) + 3600)


# The executor may leave an aiohttp connection unreleased (seen once under load); collect it
# here rather than let the garbage collector report it during whichever test runs next.
@ignores_aiohttp_leak
async def test_autogen_executor(gateways: Gateways, tmp_path: Path) -> None:
    from autogen_core import CancellationToken
    from autogen_core.code_executor import CodeBlock
    from autogen_ext.code_executors.azure import ACADynamicSessionsCodeExecutor

    _, b = gateways
    ex = ACADynamicSessionsCodeExecutor(
        pool_management_endpoint=b.endpoint(),
        credential=StaticToken(b.api_key or ""),
        session_id=new_ident("autogen"),
        work_dir=tmp_path,
    )
    token = CancellationToken()

    async def run(*codes: str) -> Any:
        blocks = [CodeBlock(code=code, language="python") for code in codes]
        return await ex.execute_code_blocks(blocks, token)

    try:
        await ex.start()
        assert (await run("x = 41", "x += 1")).exit_code == 0
        out = await run("print(x)", "import os; os.getcwd()")
        assert (out.exit_code, out.output) == (0, "42\n'/mnt/data'")

        out = await run(PLOT)
        assert out.exit_code == 0
        result = ast.literal_eval(out.output)  # the client appends str(result), the dict's repr
        assert (result["type"], result["format"]) == ("image", "png")
        assert base64.b64decode(result["base64_data"]).startswith(PNG)

        (tmp_path / "ag_in.bin").write_bytes(PAYLOAD)
        await ex.upload_files(["ag_in.bin"], token)
        assert "ag_in.bin" in await ex.get_file_list(token)
        code = (
            "data = open('ag_in.bin','rb').read()\n"
            "open('ag_out.bin','wb').write(data[::-1])\nlen(data)"
        )
        assert (await run(code)).output == str(len(PAYLOAD))
        (tmp_path / "ag_in.bin").unlink()
        await ex.download_files(["ag_in.bin", "ag_out.bin"], token)
        assert (tmp_path / "ag_in.bin").read_bytes() == PAYLOAD
        assert (tmp_path / "ag_out.bin").read_bytes() == PAYLOAD[::-1]
    finally:
        await ex.stop()
        gc.collect()


# --- Semantic Kernel, over https ------------------------------------------------------------------


async def test_semantic_kernel_over_https(
    tls_gateway: ServerProcess, tls_gateway_ca: str, tmp_path: Path
) -> None:
    import re

    from semantic_kernel.core_plugins.sessions_python_tool import (
        SessionsPythonSettings,
        SessionsPythonTool,
    )

    def parse(text: str) -> dict[str, str]:
        m = re.fullmatch(
            r"Status:\n(.*)\nResult:\n(.*)\nStdout:\n(.*)\nStderr:\n(.*)", text, flags=re.DOTALL
        )
        assert m, text
        return dict(zip(("status", "result", "stdout", "stderr"), m.groups(), strict=True))

    token = tls_gateway.api_key
    context = ssl.create_default_context(cafile=tls_gateway_ca)
    async with httpx.AsyncClient(verify=context, timeout=60) as client:
        tool = SessionsPythonTool(
            pool_management_endpoint=tls_gateway.endpoint(),
            auth_callback=lambda: token,
            settings=SessionsPythonSettings(identifier=new_ident("sk")),
            http_client=client,
            env_file_path=None,
            enable_dangerous_file_uploads=True,
            allowed_upload_directories={str(tmp_path)},
        )
        assert parse(await tool.execute_code("x = 41"))["status"] == "Success"
        out = parse(await tool.execute_code("```python\nx += 1\nprint(x)\nx\n```"))
        assert out == {"status": "Success", "result": "42", "stdout": "42\n", "stderr": ""}

        out = parse(await tool.execute_code(PLOT))
        result = ast.literal_eval(out["result"])  # SK puts the dict's repr into the text
        assert (out["status"], result["type"], result["format"]) == ("Success", "image", "png")
        assert base64.b64decode(result["base64_data"]).startswith(PNG)

        local = tmp_path / "sk_in.bin"
        local.write_bytes(PAYLOAD)
        meta = await tool.upload_file(local_file_path=str(local), remote_file_path="renamed.bin")
        assert (meta.filename, meta.size_in_bytes) == ("renamed.bin", len(PAYLOAD))
        listed = {m.filename: m.size_in_bytes for m in await tool.list_files()}
        assert listed == {"renamed.bin": len(PAYLOAD)}
        back = await tool.download_file(remote_file_name="renamed.bin")
        assert back is not None and back.read() == PAYLOAD
        check = f"open('/mnt/data/renamed.bin','rb').read() == bytes.fromhex({PAYLOAD.hex()!r})"
        assert parse(await tool.execute_code(check))["result"] == "True"


# --- the openai SDK: Responses with the code interpreter, through a gateway with agents --------


def _calls(resp: Any) -> list[Any]:
    return [item for item in resp.output if item.type == "code_interpreter_call"]


def _cited(resp: Any) -> dict[str, Any]:
    (message,) = [item for item in resp.output if item.type == "message"]
    return {
        ann.filename: ann
        for part in message.content
        for ann in part.annotations
        if ann.type == "container_file_citation"
    }


def test_openai_responses_chart_then_its_container_survives_an_engine_crash(
    agents_gateway: ServerProcess,
) -> None:
    import openai

    gw = agents_gateway
    with openai.OpenAI(
        base_url=gw.url + "/v1", api_key=gw.api_key, max_retries=0, timeout=120
    ) as client:
        resp = client.responses.create(
            model="scripted-chart", tools=[CHART_TOOL], input="bar chart please"
        )
        assert resp.status == "completed", resp.error
        (call,) = _calls(resp)
        assert "savefig" in (call.code or "") and call.status == "completed"
        container_id = call.container_id
        assert container_id.startswith("cntr_")
        assert call.outputs is not None
        assert "saved chart" in "".join(o.logs for o in call.outputs if o.type == "logs")
        (image,) = [o for o in call.outputs if o.type == "image"]
        assert base64.b64decode(image.url.split("base64,", 1)[1]).startswith(PNG)
        cited = _cited(resp)
        assert set(cited) >= {"chart.png", "chart_data.csv"}
        png = client.containers.files.content.retrieve(
            cited["chart.png"].file_id, container_id=container_id
        )
        assert png.read().startswith(PNG)

        # the container is a session of the cluster: crash the engine of the node holding it
        # (under its session key in the pool: a reserved form no identifier can name)
        node_id = holder(gw, container_key(DEFAULT_TENANT, container_id))
        node = next(n for n in view(gw)["nodes"] if n["node_id"] == node_id)
        os.kill(int(node["pid"]), signal.SIGKILL)

        def restarted() -> bool:
            now = next((n for n in view(gw)["nodes"] if n["node_id"] == node_id), None)
            return (
                now is not None
                and now["state"] == "active"
                and now["incarnation"] != node["incarnation"]
            )

        wait_until(restarted, 120, "Ray did not restart the node engine")
        same_container: Any = [{"type": "code_interpreter", "container": container_id}]
        # the first run to meet the loss reports it (docs/cluster.md, agents in cluster mode):
        # the run's session_error, which the Responses face's codes make server_error
        lost = client.responses.create(
            model="scripted-read_file", tools=same_container, input="what does the csv say?"
        )
        assert lost.status == "failed" and lost.error is not None, lost
        assert lost.error.code == "server_error", lost.error
        assert "was lost" in lost.error.message and container_id in lost.error.message
        # the next gets a fresh session, with the container's files written back
        after = client.responses.create(
            model="scripted-read_file", tools=same_container, input="what does the csv say?"
        )
        assert after.status == "completed", after.error
        assert "Company A" in after.output_text  # the first turn's CSV, read by the code
        (again,) = _calls(after)
        assert again.container_id == container_id
        assert holder(gw, container_key(DEFAULT_TENANT, container_id))  # placed again
        png = client.containers.files.content.retrieve(
            cited["chart.png"].file_id, container_id=container_id
        )
        assert png.read().startswith(PNG)


# --- the command line: sessionpool cluster ------------------------------------------------------


def cli(
    gw: ServerProcess, *args: str, endpoint: str | None = None, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONPOOL_")}
    env["HOME"] = str(gw.workdir)  # no client config file of the host's
    flags = ["--endpoint", endpoint or gw.endpoint(), "--api-key", key or gw.api_key or ""]
    return subprocess.run(
        [sys.executable, "-m", "sessionpool.cli", "cluster", *args, *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_lists_drains_and_undrains_nodes(gateways: Gateways) -> None:
    a, b = gateways
    nodes = view(a)["nodes"]
    done = cli(a)
    assert done.returncode == OK, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NODE", "STATE", "FREE", "MEM", "default", "small"]
    for node in nodes:
        (row,) = [line for line in lines if line.startswith(node["node_id"][:12])]
        assert row.split()[1] == "active" and "GiB" in row

    at_root = cli(a, "--json", endpoint=a.url)  # the server's root works as well
    assert at_root.returncode == OK, at_root.stderr
    assert {n["node_id"] for n in json.loads(at_root.stdout)["nodes"]} == {
        n["node_id"] for n in nodes
    }

    target = nodes[0]["node_id"]
    drained = cli(a, "drain", target[:12])  # a unique start of the id is enough
    assert drained.returncode == OK, drained.stderr
    assert target in drained.stdout
    try:
        state = {n["node_id"]: n["state"] for n in view(b)["nodes"]}
        assert state[target] == "draining"
        assert "draining" in cli(b).stdout
    finally:
        back = cli(b, "undrain", target, "--json")
        assert back.returncode == OK, back.stderr
        assert json.loads(back.stdout) == {"node_id": target, "draining": False}
    assert {n["node_id"]: n["state"] for n in view(a)["nodes"]}[target] == "active"

    unknown = cli(a, "drain", "nope")
    assert unknown.returncode == NOT_FOUND
    assert "no node 'nope'" in unknown.stderr
    refused = cli(a, key="not-the-key")
    assert refused.returncode == AUTH, refused.stderr
    nobody = cli(a, endpoint="http://127.0.0.1:1/pools/default")
    assert nobody.returncode == UNREACHABLE, nobody.stderr
