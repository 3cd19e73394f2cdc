"""LangChain deepagents on a sessionpool session: ``SessionsBashBackend`` from
``langchain-azure-dynamic-sessions`` 1.0.4, unmodified, with the deepagents it targets (0.6.12;
it warns on 0.7 and later).

deepagents 0.6 wants a newer langchain-core (1.8) than the venv's other LangChain clients hold, so
it lives in a side directory (``.venv/side/deepagents``, ``requirements/deepagents.txt``,
installed by the dev install with ``--target``) and the flow runs in a subprocess with that
directory first on ``PYTHONPATH``. The backend speaks 2025-02-02-preview: ``executions`` with
``shellCommand`` (``status`` read as an integer exit code), uploads to ``files?path=/mnt/data``,
downloads from ``files/<name>/content``. A deep agent whose model is scripted runs a task
through it: a command over an uploaded CSV, a file written, a command that fails with its code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sessionpool.server.testing import ServerProcess

pytestmark = pytest.mark.jail

SIDE = Path(sys.prefix) / "side" / "deepagents"

SCRIPT = r"""
import json, os
from typing import Any

from deepagents import create_deep_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_azure_dynamic_sessions.backends.sessions import SessionsBashBackend

backend = SessionsBashBackend(
    os.environ["SP_ENDPOINT"],
    session_id=os.environ["SP_SESSION"],
    access_token_provider=lambda: os.environ["SP_TOKEN"],
)
out: dict[str, Any] = {}
CSV = b"region,revenue\nnorth,120\nsouth,80\nwest,100\n"
up = backend.upload_files([("/mnt/data/sales.csv", CSV), ("notes/todo.txt", b"check totals\n")])
out["upload_errors"] = [u.error for u in up]
ok = backend.execute("echo hi; echo oops >&2")
out["echo"] = [ok.output, ok.exit_code]
out["exit3"] = backend.execute("exit 3").exit_code
out["ls"] = sorted((i["path"], i["is_dir"]) for i in backend.ls_info("/mnt/data"))
out["glob"] = [i["path"] for i in backend.glob_info("*.csv", "/mnt/data")]
out["read"] = backend.read("/mnt/data/sales.csv", offset=1, limit=1)

# a deep agent, its model scripted: three tool calls, then the answer
STEPS = [
    ("execute", {"command": "awk -F, 'NR>1 {s+=$2} END {print s}' /mnt/data/sales.csv"}),
    ("write_file", {"file_path": "/mnt/data/report.md", "content": "total: 300\n"}),
    ("edit_file", {"file_path": "/mnt/data/report.md", "old_string": "300",
                   "new_string": "300 (3 regions)"}),
    ("execute", {"command": "grep -q regions /mnt/data/report.md && exit 4"}),
]


class Scripted(BaseChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: Any, stop: Any = None, **kw: Any) -> ChatResult:
        done = sum(1 for m in messages if m.type == "tool")
        if done < len(STEPS):
            name, args = STEPS[done]
            call = {"name": name, "args": args, "id": f"call_{done}", "type": "tool_call"}
            message = AIMessage(content="", tool_calls=[call])
        else:
            message = AIMessage(content="The revenue totals 300.")
        return ChatResult(generations=[ChatGeneration(message=message)])


agent = create_deep_agent(model=Scripted(), backend=backend)
result = agent.invoke({"messages": [{"role": "user", "content": "Sum the revenue in sales.csv"}]})
out["tools"] = [(m.name, m.content) for m in result["messages"] if m.type == "tool"]
out["answer"] = result["messages"][-1].content
down = backend.download_files(["/mnt/data/report.md", "/mnt/data/todo.txt", "/mnt/data/nope.txt"])
out["downloads"] = [[d.path, d.content.decode() if d.content else None, d.error] for d in down]
print(json.dumps(out))
"""


def test_sessions_bash_backend_runs_a_deep_agent(
    server: ServerProcess, session_id: str, tmp_path: Path
) -> None:
    if not (SIDE / "deepagents").is_dir():
        pytest.skip(f"deepagents is not installed in {SIDE}: make install puts it there")
    script = tmp_path / "deep.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "PYTHONPATH": str(SIDE),
        "SP_ENDPOINT": server.endpoint(),
        "SP_TOKEN": server.api_key or "",
        "SP_SESSION": session_id,
    }
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "does not support deepagents" not in done.stderr  # the version it targets
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["upload_errors"] == [None, None]
    assert out["echo"] == ["hi\noops\n", 0]
    assert out["exit3"] == 3
    # uploads land under /mnt/data by their base name
    assert out["ls"] == [["sales.csv", False], ["todo.txt", False]]
    assert out["glob"] == ["sales.csv"]
    assert out["read"] == "     2\tnorth,120"
    assert out["tools"] == [
        ["execute", "300\n\n[Command succeeded with exit code 0]"],
        ["write_file", "Updated file /mnt/data/report.md"],
        ["edit_file", "Successfully replaced 1 instance(s) of the string in '/mnt/data/report.md'"],
        ["execute", "\n[Command failed with exit code 4]"],
    ]
    assert out["answer"] == "The revenue totals 300."
    assert out["downloads"] == [
        ["/mnt/data/report.md", "total: 300 (3 regions)\n", None],
        ["/mnt/data/todo.txt", "check totals\n", None],
        ["/mnt/data/nope.txt", None, "file_not_found"],
    ]
