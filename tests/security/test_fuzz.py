"""Schemathesis over every route of the served OpenAPI description: zero 5xx, zero responses
that contradict the schema. Bounded: a fixed number of examples per operation, no database.

A server of its own (no preload, few sessions, a short timeout and cooldown), so that the
sessions the fuzzer allocates with random identifiers cannot crowd the shared server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from sessionpool.server.testing import ServerProcess
from tests.security.conftest import jail_possible

pytestmark = pytest.mark.jail

#: examples per operation; 12 operations under /pools/{pool}, so about 3,000 cases in all
EXAMPLES = 250

FUZZ_CONFIG = """
[pools.default]
preload = []
ready_sessions = 1
max_sessions = 6
execution_timeout_seconds = 2
interrupt_grace_seconds = 1
cooldown_seconds = 3

[pools.default.limits]
file_bytes = "1MiB"
disk_bytes = "8MiB"
output_bytes = "64KiB"
"""


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not jail_possible():
        pytest.skip("the jail backend needs root")
    with ServerProcess(Path(tmp_path_factory.mktemp("fuzz")), config=FUZZ_CONFIG) as srv:
        yield srv


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_server: ServerProcess) -> Any:
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


VERSIONS = ["2024-02-02-preview", "2024-10-02-preview", "2025-02-02-preview", "2025-10-02-preview"]

#: the operations the server describes today (one test each; later additions: the last test)
OPERATIONS = [
    ("POST", "/pools/{pool}/code/execute"),
    ("POST", "/pools/{pool}/executions"),
    ("GET", "/pools/{pool}/executions/{execution_id}"),
    ("POST", "/pools/{pool}/files/upload"),
    ("POST", "/pools/{pool}/files"),
    ("GET", "/pools/{pool}/files"),
    ("GET", "/pools/{pool}/files/{file_path}"),
    ("DELETE", "/pools/{pool}/files/{file_path}"),
    ("GET", "/pools/{pool}/session"),
    ("DELETE", "/pools/{pool}/session"),
    ("GET", "/pools/{pool}/listSessions"),
    ("GET", "/pools/{pool}/metadata"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]


def fuzz(operation: Any, server: ServerProcess, examples: int = EXAMPLES) -> list[int]:
    """Run ``examples`` generated cases against one operation; the statuses seen."""
    seen: list[int] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        # a quarter of the cases as generated; the rest steered past the first checks (a real
        # pool, then also a valid identifier, then also a known api-version) to reach deeper
        step = len(seen) % 4
        params = case.path_parameters or {}
        if "pool" in params and step >= 1:
            params["pool"] = "default"
        if step >= 2 and case.query is not None and "identifier" in case.query:
            case.query["identifier"] = f"fuzz-{len(seen) % 5}"
        if step >= 3 and case.query is not None:
            case.query["api-version"] = VERSIONS[len(seen) % len(VERSIONS)]
            body = case.body if isinstance(case.body, dict) else None
            inner = body.get("properties") if body is not None else None
            for target in (body, inner):
                if isinstance(target, dict) and "codeInputType" in target:
                    target["codeInputType"] = "inline"
        response = case.call(headers=server.auth, timeout=30)
        seen.append(response.status_code)
        case.validate_response(response, checks=(not_a_server_error, response_schema_conformance))

    run()
    return seen


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_operation(
    fuzz_schema: Any, fuzz_server: ServerProcess, method: str, path: str
) -> None:
    seen = fuzz(fuzz_schema[path][method], fuzz_server)
    assert seen and max(seen) < 500
    if "{" not in path.rsplit("/", 1)[-1] and path != "/pools/{pool}/executions":
        assert any(200 <= s < 300 for s in seen), "the fuzzer never got past the first checks"


def test_operations_added_later_are_fuzzed_too(
    fuzz_schema: Any, fuzz_server: ServerProcess
) -> None:
    """Whatever else the schema describes (a route added after this list was written) gets a
    smaller run of its own, so no described route goes unfuzzed."""
    for result in fuzz_schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) not in OPERATIONS:
            seen = fuzz(op, fuzz_server, examples=100)
            assert seen and max(seen) < 500, (op.method, op.path)
