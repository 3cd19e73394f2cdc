"""Per-session egress narrowing through the unmodified client libraries: E2B's
``allow_internet_access`` / ``network`` (create and ``update_network``, ``e2b`` 2.63.0) and
OpenAI's Containers ``network_policy`` (``openai`` 3.54.0), against a real server with jailed
sessions whose default pool has an allowlist.

What a session may reach is checked twice: as the server reports it (E2B's ``get_info``, the
container object) and as its proxy enforces it, from code inside the session (a host the
policy refuses is answered 403 with the reason; ``api.example.com``, which the policy admits,
resolves to loopback here, so the proxy refuses it for its address instead: no upstream
traffic is needed to tell the two apart).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from e2b import ALL_TRAFFIC
from e2b.exceptions import SandboxException
from e2b_code_interpreter import Sandbox

from sessionpool.server.keys import KeyStore
from sessionpool.server.testing import ServerProcess
from sessionpool.tenancy import Scope
from tests.agents.scripted_model import ScriptedModel

pytestmark = pytest.mark.jail

ALLOWED = "api.example.com"
REFUSED_BY_POLICY = "host not in allowlist"
OFF = "network access is off for this session"


def config(model_url: str) -> str:
    return f"""
[server]
egress_hosts = {{"{ALLOWED}" = "127.0.0.1"}}

[pools.default]
ready_sessions = 1
max_sessions = 12
execution_timeout_seconds = 60
network = "allowlist"

[pools.default.egress]
allow = ["*.example.com", "pypi.org"]

[pools.closed]
ready_sessions = 1
max_sessions = 4

[agents]
model_base_url = {json.dumps(model_url)}
default_model = "scripted-echo"
max_steps = 4
model_timeout_seconds = 10
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, scripted_model: ScriptedModel
) -> Iterator[ServerProcess]:
    workdir = Path(tmp_path_factory.mktemp("network-policy"))
    with ServerProcess(workdir, config=config(scripted_model.url)) as srv:
        yield srv


@pytest.fixture
def e2b_env(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    _, key = KeyStore(server.data_dir / "keys.json").create(
        f"net-{uuid.uuid4().hex[:8]}", frozenset({Scope.EXECUTE, Scope.FILES}), e2b=True
    )
    monkeypatch.setenv("E2B_API_URL", server.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", server.url)
    monkeypatch.setenv("E2B_API_KEY", key)
    return key


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    assert server.api_key
    with openai.OpenAI(
        base_url=server.url + "/v1", api_key=server.api_key, max_retries=0, timeout=120
    ) as c:
        yield c


#: a cell that asks the session's proxy for each host and prints what it answered
PROBE = """
import json, urllib.request, urllib.error
def probe(host):
    try:
        urllib.request.urlopen(f"http://{host}/", timeout=15)
        return "reached"
    except urllib.error.HTTPError as e:
        return f"{e.code} {e.read().decode(errors='replace')}"
    except Exception as e:
        return f"{type(e).__name__}: {e}"
print(json.dumps({h: probe(h) for h in HOSTS}))
"""


def probe_code(*hosts: str) -> str:
    return f"HOSTS = {list(hosts)!r}\n{PROBE}"


def probe(sbx: Sandbox, *hosts: str) -> dict[str, str]:
    execution = sbx.run_code(probe_code(*hosts))
    assert execution.error is None, execution.error
    return dict(json.loads("".join(execution.logs.stdout)))


def refused_for_address(answer: str) -> bool:
    """The policy admitted the host; the proxy then refused where it resolved (loopback)."""
    return answer.startswith("403") and "loopback" in answer and REFUSED_BY_POLICY not in answer


# --- E2B --------------------------------------------------------------------------------------


def test_e2b_sandbox_gets_its_pools_allowlist_or_none(e2b_env: str) -> None:
    with Sandbox.create() as sbx:
        info = sbx.get_info()
        assert info.allow_internet_access is True
        assert info.network == {
            "allow_out": ["*.example.com", "pypi.org"],
            "deny_out": [ALL_TRAFFIC],
        }
        seen = probe(sbx, ALLOWED, "blocked.test")
        assert refused_for_address(seen[ALLOWED]), seen
        assert seen["blocked.test"].startswith("403") and REFUSED_BY_POLICY in seen["blocked.test"]
    with Sandbox.create(allow_internet_access=False) as sbx:
        info = sbx.get_info()
        assert info.allow_internet_access is False
        assert info.network == {"deny_out": [ALL_TRAFFIC]}
        seen = probe(sbx, ALLOWED)
        assert seen[ALLOWED].startswith("403") and OFF in seen[ALLOWED], seen


def test_e2b_allow_out_narrows_before_the_first_cell(e2b_env: str) -> None:
    network: Any = {
        "allow_out": [ALLOWED],
        "deny_out": [ALL_TRAFFIC],
        "rules": {ALLOWED: [{"transform": {"headers": {"Authorization": "Bearer s3cret"}}}]},
    }
    with Sandbox.create(network=network) as sbx:
        info = sbx.get_info()
        assert info.allow_internet_access is True
        assert info.network is not None
        assert info.network["allow_out"] == [ALLOWED]
        assert info.network["deny_out"] == [ALL_TRAFFIC]
        # the header's name is shown, never its value
        rules = info.network["rules"]
        assert list(rules) == [ALLOWED]
        assert list(rules[ALLOWED][0]["transform"]["headers"]) == ["Authorization"]
        assert "s3cret" not in json.dumps(info.network)
        # the very first cell already runs under the narrowed policy: the host is admitted
        # (with its header, so over HTTPS only), its neighbour is not
        seen = probe(sbx, ALLOWED, "other.example.com")
        assert seen[ALLOWED].startswith("403") and "has secrets" in seen[ALLOWED], seen
        assert REFUSED_BY_POLICY in seen["other.example.com"], seen
        # nor can the session see the secret
        env = sbx.run_code("import os; sorted(v for v in os.environ.values() if 's3cret' in v)")
        assert env.text == "[]"


def test_e2b_widening_and_what_cannot_be_honoured_are_refused(e2b_env: str) -> None:
    widening = [
        ({"allow_out": ["evil.test"], "deny_out": [ALL_TRAFFIC]}, "evil.test is not in"),
        ({"allow_out": [ALL_TRAFFIC]}, "unrestricted network"),
    ]
    for network, why in widening:
        with pytest.raises(SandboxException) as caught:
            Sandbox.create(network=network)
        message = str(caught.value)
        assert "pool 'default'" in message and "can only be narrowed" in message, message
        assert why.replace("'", "") in message.replace("'", ""), message
    refused = [
        (
            {"allow_out": ["10.0.0.0/8"], "deny_out": [ALL_TRAFFIC]},
            "network.allowOut: '10.0.0.0/8'",
        ),
        ({"deny_out": ["1.1.1.1"]}, "network.denyOut: 1.1.1.1: denying particular addresses"),
        ({"dns_servers": ["1.1.1.1"]}, "network.dnsServers"),
        ({"egress_proxy": {"address": "proxy.example.com:1080"}}, "network.egressProxy"),
    ]
    for network, why in refused:
        with pytest.raises(SandboxException, match="400") as caught:
            Sandbox.create(network=network)
        assert why in str(caught.value), str(caught.value)
    # a pool without network: asking for the internet says how the operator enables it
    with pytest.raises(SandboxException) as caught:
        Sandbox.create(template="closed", allow_internet_access=True)
    message = str(caught.value)
    assert "allow_internet_access: template 'closed' (pool 'closed') has no network" in message
    assert 'network = "allowlist"' in message and "[pools.closed]" in message
    # ... while asking for none, or nothing, is fine there
    for kwargs in ({"allow_internet_access": False}, {}):
        with Sandbox.create(template="closed", **kwargs) as sbx:
            assert sbx.get_info().allow_internet_access is False


def test_e2b_update_network_at_run_time(e2b_env: str) -> None:
    with Sandbox.create() as sbx:
        sbx.run_code("state = 'kept'")
        sbx.update_network({"allow_internet_access": False})
        assert sbx.get_info().allow_internet_access is False
        assert OFF in probe(sbx, ALLOWED)[ALLOWED]
        sbx.update_network({"allow_out": ["*.example.com"], "deny_out": [ALL_TRAFFIC]})
        info = sbx.get_info()
        assert info.allow_internet_access is True
        assert info.network == {"allow_out": ["*.example.com"], "deny_out": [ALL_TRAFFIC]}
        seen = probe(sbx, ALLOWED, "pypi.org")
        assert refused_for_address(seen[ALLOWED]) and REFUSED_BY_POLICY in seen["pypi.org"], seen
        # widening past the pool is refused whole, and the policy stays as it was
        with pytest.raises(SandboxException, match=r"evil\.test is not in the pool's allowlist"):
            sbx.update_network({"allow_out": ["evil.test"], "deny_out": [ALL_TRAFFIC]})
        assert sbx.get_info().network == info.network
        # an update without rules is E2B's "all traffic": back to the pool's own policy
        sbx.update_network({})
        assert sbx.get_info().network == {
            "allow_out": ["*.example.com", "pypi.org"],
            "deny_out": [ALL_TRAFFIC],
        }
        assert sbx.run_code("state").text == "'kept'"
    with (
        Sandbox.create(template="closed") as sbx,
        pytest.raises(SandboxException, match="has no network access"),
    ):
        sbx.update_network({"allow_internet_access": True})


# --- OpenAI Containers ------------------------------------------------------------------------


def run_in(client: openai.OpenAI, container: str, code: str) -> str:
    resp = client.responses.create(
        model="scripted-echo",
        tools=[{"type": "code_interpreter", "container": container}],
        input=code,
    )
    assert resp.status == "completed", resp.error
    return resp.output_text


def probed(text: str) -> dict[str, str]:
    return dict(json.loads(text[text.index("{") :]))


def test_containers_network_policy_narrows_and_is_echoed(client: openai.OpenAI) -> None:
    plain = client.containers.create(name="pool's policy")
    assert plain.network_policy is not None and plain.network_policy.type == "allowlist"
    assert plain.network_policy.allowed_domains == ["*.example.com", "pypi.org"]

    narrowed = client.containers.create(
        name="narrowed",
        network_policy={"type": "allowlist", "allowed_domains": [ALLOWED]},
    )
    assert narrowed.network_policy is not None
    assert narrowed.network_policy.type == "allowlist"
    assert narrowed.network_policy.allowed_domains == [ALLOWED]
    again = client.containers.retrieve(narrowed.id)
    assert again.network_policy is not None
    assert again.network_policy.model_dump() == narrowed.network_policy.model_dump()
    seen = probed(run_in(client, narrowed.id, probe_code(ALLOWED, "pypi.org")))
    assert refused_for_address(seen[ALLOWED]) and REFUSED_BY_POLICY in seen["pypi.org"], seen

    disabled = client.containers.create(name="offline", network_policy={"type": "disabled"})
    assert disabled.network_policy is not None and disabled.network_policy.type == "disabled"
    assert OFF in probed(run_in(client, disabled.id, probe_code(ALLOWED)))[ALLOWED]
    for c in (plain, narrowed, disabled):
        client.containers.delete(c.id)


def test_containers_network_policy_refusals(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=r"evil\.test is not in the pool's allowlist"):
        client.containers.create(
            name="wider", network_policy={"type": "allowlist", "allowed_domains": ["evil.test"]}
        )
    with pytest.raises(openai.BadRequestError, match="domain_secrets are not supported"):
        client.containers.create(
            name="secrets",
            network_policy={
                "type": "allowlist",
                "allowed_domains": [ALLOWED],
                "domain_secrets": [{"domain": ALLOWED, "name": "API_KEY", "value": "s3cret"}],
            },
        )
    names = [c.name for c in client.containers.list(limit=100).data]
    assert "wider" not in names and "secrets" not in names


def test_code_interpreter_auto_container_network_policy(client: openai.OpenAI) -> None:
    tool: Any = {
        "type": "code_interpreter",
        "container": {"type": "auto", "network_policy": {"type": "disabled"}},
    }
    resp = client.responses.create(model="scripted-echo", tools=[tool], input=probe_code(ALLOWED))
    assert resp.status == "completed", resp.error
    assert OFF in probed(resp.output_text)[ALLOWED]
    (call,) = [item for item in resp.output if item.type == "code_interpreter_call"]
    container = client.containers.retrieve(call.container_id)
    assert container.network_policy is not None and container.network_policy.type == "disabled"
    wider: Any = {
        "type": "code_interpreter",
        "container": {
            "type": "auto",
            "network_policy": {"type": "allowlist", "allowed_domains": ["evil.test"]},
        },
    }
    with pytest.raises(openai.BadRequestError, match=r"evil\.test is not in the pool's allowlist"):
        client.responses.create(model="scripted-echo", tools=[wider], input="1")


def test_containers_skills_are_refused_clearly(client: openai.OpenAI) -> None:
    """Skills are not served: a container that names one is refused, not made without it."""
    with pytest.raises(openai.BadRequestError, match="skills are not supported") as caught:
        client.containers.create(
            name="skilled", skills=[{"type": "skill_reference", "skill_id": "s1"}]
        )
    assert caught.value.body is not None and "skills" in str(caught.value.body)
    tool: Any = {
        "type": "code_interpreter",
        "container": {"type": "auto", "skills": [{"type": "skill_reference", "skill_id": "s1"}]},
    }
    with pytest.raises(openai.BadRequestError, match="skills are not supported"):
        client.responses.create(model="scripted-echo", tools=[tool], input="1")
    assert "skilled" not in [c.name for c in client.containers.list(limit=100).data]
    # an empty list asks for nothing, and is served
    plain = client.containers.create(name="no-skills", skills=[])
    assert plain.name == "no-skills"
