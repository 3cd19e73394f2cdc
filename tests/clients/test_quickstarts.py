"""Every quickstart in docs/integrations/examples runs, as a user would run it, against a server.

Each script reads only SESSIONPOOL_ENDPOINT and SESSIONPOOL_API_KEY (plus SESSIONPOOL_CA for the
https recipe) and prints what the matching docs page says to expect.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sessionpool.server.testing import ServerProcess
from tests.agents.harness import AgentsServer

pytestmark = pytest.mark.jail

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "integrations" / "examples"
#: where the dev install puts deepagents 0.6 and the npm packages of the JavaScript clients
DEEPAGENTS = Path(sys.prefix) / "side" / "deepagents"
LLAMAINDEX_TS = Path(__file__).resolve().parent / "llamaindex_ts" / "node_modules"


def run_script(
    command: list[str], env: dict[str, str], cwd: Path, timeout: float = 180
) -> list[str]:
    """Run a quickstart as a user would; it must succeed. Returns its stdout's lines."""
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def run_example(name: str, server: ServerProcess, cwd: Path, *args: str, **extra: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONPOOL_")}
    env.update(
        SESSIONPOOL_ENDPOINT=server.endpoint(),
        SESSIONPOOL_API_KEY=server.api_key or "",
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        **extra,
    )
    return run_script([sys.executable, str(EXAMPLES / name), *args], env, cwd)


def run_agents_example(agents_server: AgentsServer, name: str, cwd: Path) -> list[str]:
    env = {k: v for k, v in agents_server.client_env().items() if not k.startswith("SESSIONPOOL_")}
    env.update(SESSIONPOOL_URL=agents_server.url, SESSIONPOOL_API_KEY=agents_server.api_key)
    return run_script([sys.executable, str(EXAMPLES / name)], env, cwd)


def test_langchain(server: ServerProcess, tmp_path: Path) -> None:
    (line,) = run_example("langchain_tool.py", server, tmp_path)
    assert ast.literal_eval(line) == {
        "result": "120",
        "stdout": "hello from the sandbox\n",
        "stderr": "",
    }


def test_llamaindex(server: ServerProcess, tmp_path: Path) -> None:
    lines = run_example("llamaindex_tool.py", server, tmp_path)
    assert lines[0] == "Success [1, 2, 3]"
    assert lines[1] == "['notes.txt']"
    assert lines[2] == "'uploaded with llama-index'"
    assert lines[3] == "['code_interpreter', 'list_files']"


def test_semantic_kernel_over_https(tls_server: ServerProcess, ca_pem: str, tmp_path: Path) -> None:
    lines = run_example("semantic_kernel_tool.py", tls_server, tmp_path, SESSIONPOOL_CA=ca_pem)
    assert "\n".join(lines).startswith("Status:\nSuccess\nResult:\n42")


def test_autogen(server: ServerProcess, tmp_path: Path) -> None:
    lines = run_example("autogen_executor.py", server, tmp_path)
    assert lines[0] == "exit code 0"
    assert lines[1] == str(sys.version_info[:2])


def test_openai_function_calling(server: ServerProcess, tmp_path: Path) -> None:
    python, shell = run_example("openai_functions.py", server, tmp_path)
    assert json.loads(python) == {"stdout": "", "stderr": "", "result": "45"}
    assert json.loads(shell) == {"stdout": "ok\n", "stderr": "", "exit_code": 0}
    # the schema is what the OpenAI API accepts for strict function tools
    tools = json.loads("\n".join(run_example("openai_functions.py", server, tmp_path, "--schema")))
    assert [t["function"]["name"] for t in tools] == ["run_python", "run_shell"]
    for tool in tools:
        fn = tool["function"]
        assert tool["type"] == "function" and fn["strict"] is True
        params = fn["parameters"]
        assert params["type"] == "object" and params["additionalProperties"] is False
        assert set(params["required"]) == set(params["properties"])


def test_mcp_desktop_config(server: ServerProcess, tmp_path: Path) -> None:
    tools, result = run_example("mcp_desktop.py", server, tmp_path)
    assert "runPythonCodeInRemoteEnvironment" in tools and "launchShell" in tools
    assert json.loads(result)["result"] == "1024"
    http = json.loads((EXAMPLES / "mcp_http.json").read_text())["servers"]["sessionpool"]
    assert http["url"].endswith("/mcp")
    assert http["headers"]["Authorization"].startswith("Bearer ")


def test_agents_responses(agents_server: AgentsServer, tmp_path: Path) -> None:
    """The agents quickstart, unmodified OpenAI SDK over TLS (the server's CA through
    SSL_CERT_FILE); its model is the scripted one, which draws the chart."""
    lines = run_agents_example(agents_server, "agents_responses.py", tmp_path)
    assert lines[0] == "completed"
    assert lines[1].startswith("ran code in cntr_")
    assert lines[2].startswith("answer: Here is the bar chart")
    assert lines[3:] == ["saved chart.png", "saved chart_data.csv"]
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
    assert b"Company B,2.5" in (tmp_path / "chart_data.csv").read_bytes()


def test_community_interpreter(server: ServerProcess, tmp_path: Path) -> None:
    lines = run_example("community_interpreter.py", server, tmp_path)
    assert lines == ["Success 200", "['sales.csv']"]


def test_deepagents_backend(server: ServerProcess, tmp_path: Path) -> None:
    if not (DEEPAGENTS / "deepagents").is_dir():
        pytest.skip(f"deepagents is not installed in {DEEPAGENTS}: make install puts it there")
    lines = run_example("deepagents_backend.py", server, tmp_path, PYTHONPATH=str(DEEPAGENTS))
    assert lines == ["200 0", "1"]


def test_llamaindex_ts(server: ServerProcess, tmp_path: Path) -> None:
    """The script as a user has it: next to a node_modules holding @llamaindex/azure."""
    if shutil.which("node") is None:
        pytest.skip("no Node.js on this machine (make install puts Debian's there)")
    if not (LLAMAINDEX_TS / "@llamaindex" / "azure").is_dir():
        pytest.skip("@llamaindex/azure is not installed: make install runs npm ci for it")
    shutil.copy(EXAMPLES / "llamaindex_ts.mjs", tmp_path)
    (tmp_path / "node_modules").symlink_to(LLAMAINDEX_TS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONPOOL_")}
    env.update(
        AZURE_POOL_MANAGEMENT_ENDPOINT=server.endpoint(), SESSIONPOOL_API_KEY=server.api_key or ""
    )
    assert run_script(["node", "llamaindex_ts.mjs"], env, tmp_path, timeout=120) == [
        'Success 42 "hello from the sandbox\\n"',
        "data.csv",
    ]


def test_openai_agents_code_interpreter(agents_server: AgentsServer, tmp_path: Path) -> None:
    ran, answer = run_agents_example(agents_server, "openai_agents_tool.py", tmp_path)
    assert ran.startswith("ran code in cntr_")
    assert answer.startswith("answer: Here is the bar chart")


def test_pydantic_ai_code_execution(agents_server: AgentsServer, tmp_path: Path) -> None:
    ran, image, answer = run_agents_example(agents_server, "pydantic_ai_tool.py", tmp_path)
    assert ran.startswith("ran code in cntr_")
    assert image == "image: image/png"
    assert answer.startswith("answer: Here is the bar chart")


def test_agent_framework_streamed(agents_server: AgentsServer, tmp_path: Path) -> None:
    code, answer = run_agents_example(agents_server, "agent_framework_tool.py", tmp_path)
    assert code.startswith("code lines: ") and int(code.split(": ")[1]) > 5
    assert answer.startswith("answer: Here is the bar chart")
