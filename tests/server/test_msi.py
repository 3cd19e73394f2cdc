"""The managed-identity token endpoint: what an unmodified DefaultAzureCredential relies on."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time

import httpx
import pytest

from tests.agents.harness import AgentsServer

pytestmark = pytest.mark.jail

CREDENTIAL = """
import json
import ssl
from azure.identity import DefaultAzureCredential
token = DefaultAzureCredential().get_token("https://ml.azure.com/.default")
print(json.dumps({"token": token.token, "expires_on": token.expires_on}))
"""


def test_token_only_for_an_api_key(agents_server: AgentsServer) -> None:
    url = agents_server.url + "/msi/token"
    params = {"api-version": "2019-08-01", "resource": "https://ml.azure.com"}
    tls = ssl.create_default_context(cafile=str(agents_server.ca_bundle))
    with httpx.Client(verify=tls) as client:
        assert client.get(url, params=params).status_code == 401
        wrong = client.get(url, params=params, headers={"X-IDENTITY-HEADER": "guess"})
        assert wrong.status_code == 401 and "IDENTITY_HEADER" in wrong.json()["error"]["message"]
        ok = client.get(url, params=params, headers={"X-IDENTITY-HEADER": agents_server.api_key})
        assert ok.status_code == 200
        body = ok.json()
        assert body["access_token"] == agents_server.api_key
        assert body["resource"] == "https://ml.azure.com" and body["token_type"] == "Bearer"
        assert int(body["expires_on"]) > time.time() + 600
        # the token is accepted by the API like the key it is
        api = client.get(
            agents_server.url + "/v1/assistants",
            headers={"Authorization": f"Bearer {body['access_token']}"},
        )
        assert api.status_code == 200, api.text
        assert client.get(agents_server.url + "/v1/assistants").status_code == 401


def test_default_azure_credential_gets_its_token_from_the_server(
    agents_server: AgentsServer,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CREDENTIAL],
        env=agents_server.client_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    token = json.loads(done.stdout.strip().splitlines()[-1])
    assert token["token"] == agents_server.api_key
    assert token["expires_on"] > time.time()
