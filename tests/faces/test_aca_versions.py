"""api-version on the dynamic-sessions face: every version a published client sends, a newer one
served as the newest, malformed ones refused by name; the first preview's ``python/execute``."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.faces.helpers import OLD, V2410, V2502, V2510, assert_error, q

pytestmark = pytest.mark.jail

#: a date after every version this server knows: the newest behaviour
NEWER = "2026-09-01-preview"

PLOT = (
    "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
    "plt.plot([1, 2, 3], [3, 1, 2])\nplt.show()"
)


def test_every_published_version_runs_code(http: httpx.Client, ident: str) -> None:
    body = {
        "properties": {"codeInputType": "inline", "executionType": "synchronous", "code": "6*7"}
    }
    old = http.post(f"/pools/default/code/execute{q(ident, OLD)}", json=body)
    assert old.status_code == 200, old.text
    assert old.json()["properties"]["result"] == "42"
    for version, status in ((V2410, 202), (V2502, 200), (V2510, 200), (NEWER, 200)):
        r = http.post(
            f"/pools/default/executions{q(ident, version)}",
            json={"codeInputType": "Inline", "executionType": "Synchronous", "code": "6*7"},
        )
        assert r.status_code == status, (version, r.text)
        assert r.json()["result"]["executionResult"] == "42", version


def test_an_unknown_newer_version_gets_the_newest_shapes(http: httpx.Client, ident: str) -> None:
    up = http.post(
        f"/pools/default/files{q(ident, NEWER, path='/mnt/data')}",
        files={"file": ("n.txt", b"newer", "text/plain")},
    )
    assert up.status_code == 200, up.text
    assert up.json()["name"] == "n.txt" and up.json()["directory"] == "/mnt/data"
    listed = http.get(f"/pools/default/files{q(ident, NEWER)}")
    assert listed.status_code == 200
    assert [f["name"] for f in listed.json()["value"]] == ["n.txt"]
    assert "nextLink" in listed.json()
    got = http.get(f"/pools/default/files/n.txt/content{q(ident, NEWER)}")
    assert got.content == b"newer"
    session = http.get(f"/pools/default/session{q(ident, NEWER)}")
    assert session.status_code == 200 and session.json()["identifier"] == ident
    # case and surrounding blanks do not matter
    shouting = http.get(f"/pools/default/session{q(ident, '2025-10-02-PREVIEW')}")
    assert shouting.status_code == 200


def test_delete_session_at_2025_10_02_preview(http: httpx.Client, ident: str) -> None:
    """LangChain's ``delete_session()`` sends this version (its other calls older ones)."""
    body = {"properties": {"code": "kept = 1"}}
    assert http.post(f"/pools/default/code/execute{q(ident, OLD)}", json=body).status_code == 200
    assert http.get(f"/pools/default/session{q(ident, V2510)}").status_code == 200
    gone = http.delete(f"/pools/default/session{q(ident, V2510)}")
    assert gone.status_code == 204, gone.text
    assert_error(http.get(f"/pools/default/session{q(ident, V2510)}"), 404)
    # idempotent, and at a newer version too
    assert http.delete(f"/pools/default/session{q(ident, V2510)}").status_code == 204
    assert http.delete(f"/pools/default/session{q(ident, NEWER)}").status_code == 204


@pytest.mark.parametrize(
    "version",
    ["latest", "2025-13-01-preview", "2025-02-30", "2025-02-02-beta", "", "2025-2-2", "v1"],
)
def test_malformed_versions_are_refused_by_name(
    http: httpx.Client, ident: str, version: str
) -> None:
    for r in (
        http.post(f"/pools/default/executions{q(ident, version)}", json={"code": "1"}),
        http.post(f"/pools/default/code/execute{q(ident, version)}", json={"code": "1"}),
        http.get(f"/pools/default/files{q(ident, version)}"),
        http.delete(f"/pools/default/session{q(ident, version)}"),
    ):
        assert_error(r, 400, "UnsupportedApiVersion")
        message = r.json()["error"]["message"]
        assert repr(version) in message and V2510 in message


def test_python_execute_answers_flat(http: httpx.Client, ident: str) -> None:
    """LlamaIndex TS's route: ``pythonCode`` in a ``properties`` envelope, the result's fields
    at the top level of the answer."""
    body = {
        "properties": {
            "identifier": ident,
            "codeInputType": "inline",
            "executionType": "synchronous",
            "pythonCode": "x = 40\nprint('hi')\nx + 2",
        }
    }
    r = http.post(f"/pools/default/python/execute{q(ident, OLD)}", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert "properties" not in out
    assert out["status"] == "Success"
    assert (out["result"], out["stdout"], out["stderr"]) == ("42", "hi\n", "")
    assert isinstance(out["executionTimeInMilliseconds"], int)
    # the same session as code/execute's
    again = http.post(f"/pools/default/code/execute{q(ident, OLD)}", json={"code": "x"})
    assert again.json()["properties"]["result"] == "40"
    failed = http.post(
        f"/pools/default/python/execute{q(ident, OLD)}", json={"pythonCode": "1/0"}
    ).json()
    assert failed["status"] == "Failure" and "ZeroDivisionError" in failed["stderr"]
    assert failed["result"] == ""


def test_python_execute_image_result(http: httpx.Client, ident: str) -> None:
    r = http.post(f"/pools/default/python/execute{q(ident, OLD)}", json={"pythonCode": PLOT})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["type"] == "image" and result["format"] == "png"
    assert base64.b64decode(result["base64_data"]).startswith(b"\x89PNG")


def test_python_execute_refuses_another_identifier_and_bad_bodies(
    http: httpx.Client, ident: str
) -> None:
    other = {"properties": {"identifier": "someone-else", "pythonCode": "1"}}
    assert_error(
        http.post(f"/pools/default/python/execute{q(ident, OLD)}", json=other),
        400,
        "IdentifierMismatch",
    )
    no_code = {"properties": {"identifier": ident, "code": "1"}}
    assert_error(
        http.post(f"/pools/default/python/execute{q(ident, OLD)}", json=no_code),
        400,
        "InvalidRequestBody",
    )
