"""Agent frameworks that run their code through the E2B SDK, unmodified, against sessionpool.

- smolagents' ``CodeAgent`` with ``executor_type="e2b"`` (its ``E2BExecutor``): a scripted
  model writes the code, the agent runs it in a sandbox of ours step by step, and ends with
  ``final_answer``, which travels back as the ``FinalAnswerException`` the executor recognises
  by its error name. The model is scripted (no network here); the rest is the framework's own.
- The OpenAI Agents SDK's E2B sandbox extension: a sandbox session whose files and commands go
  through envd (the extension's own client code, on the E2B SDK).

CrewAI's E2B tools cannot be installed beside this environment's pins (its resolver finds no
set), so the OpenAI Agents SDK is the second framework.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionpool.server.keys import KeyStore
from sessionpool.server.testing import ServerProcess

pytestmark = pytest.mark.jail

CONFIG = """
[pools.default]
ready_sessions = 2
max_sessions = 16
"""

#: the model's two steps: compute (state kept in the sandbox), then answer from that state
STEPS = [
    "Thought: I will compute the squares.\n<code>\nsquares = [i * i for i in range(10)]\n"
    "print(len(squares))\n</code>",
    "Thought: Now the sum, from the list the sandbox kept.\n<code>\n"
    "final_answer(sum(squares))\n</code>",
]


@pytest.fixture(scope="module")
def e2b_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("the jail backend needs root")
    with ServerProcess(Path(tmp_path_factory.mktemp("e2b-frameworks")), config=CONFIG) as srv:
        _, key = KeyStore(srv.data_dir / "keys.json").create("agents-e2b", e2b=True)
        env = {"E2B_API_URL": srv.url, "E2B_SANDBOX_URL": srv.url, "E2B_API_KEY": key}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def test_smolagents_code_agent_runs_its_steps_in_a_sandbox(e2b_env: dict[str, str]) -> None:
    from smolagents import CodeAgent
    from smolagents.models import ChatMessage, MessageRole, Model

    class Scripted(Model):
        def __init__(self) -> None:
            super().__init__(model_id="scripted")
            self.calls = 0

        def generate(self, messages: Any, **kwargs: Any) -> ChatMessage:
            reply = STEPS[min(self.calls, len(STEPS) - 1)]
            self.calls += 1
            return ChatMessage(role=MessageRole.ASSISTANT, content=reply)

    model = Scripted()
    agent = CodeAgent(tools=[], model=model, executor_type="e2b", max_steps=4)
    try:
        answer = agent.run("What is the sum of the squares of 0..9?")
        assert answer == 285
        assert model.calls == 2
        # the first step's print came back as the step's logs
        logs = [getattr(s, "observations", "") or "" for s in agent.memory.steps]
        assert any("10" in str(o) for o in logs), logs
    finally:
        agent.cleanup()


async def test_openai_agents_e2b_sandbox_session_does_a_task(e2b_env: dict[str, str]) -> None:
    """The OpenAI Agents SDK's E2B sandbox extension, unmodified: a session on a sandbox of
    ours, its workspace under the sandbox's home, files written and read through envd, commands
    run with their exit codes, and the sandbox ended with the session."""
    from agents.extensions.sandbox.e2b import E2BSandboxClient, E2BSandboxClientOptions
    from agents.sandbox.manifest import Manifest

    options = E2BSandboxClientOptions(
        sandbox_type="e2b",
        allow_internet_access=False,  # sessionpool's sessions have no network
        on_timeout="kill",  # pause is not supported here, and is refused if asked for
        timeout=300,
    )
    client = E2BSandboxClient()
    session = await client.create(manifest=Manifest(root="/home/user/work"), options=options)
    await session.start()
    try:
        data = b"city,temp\nOslo,4\nLima,19\nCairo,27\n"
        await session.write(Path("temps.csv"), io.BytesIO(data))
        script = (
            "import csv; rows = list(csv.DictReader(open('temps.csv')));"
            "hot = max(rows, key=lambda r: int(r['temp']));"
            "open('hottest.txt', 'w').write(hot['city']); print(len(rows))"
        )
        done = await session.exec(f'python3 -c "{script}"')
        assert done.exit_code == 0, done
        assert done.stdout.decode().strip() == "3"
        hottest = await session.read(Path("hottest.txt"))
        assert hottest.read() == b"Cairo"
        failed = await session.exec("exit 3")
        assert failed.exit_code == 3
    finally:
        await session.aclose()
