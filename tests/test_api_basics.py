"""The API's frame: keys and their applications, problem+json errors, health, OpenAPI,
the server's start and stop, and `mailfleet api` / `keys create` / `run` serving it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from apiserver import ApiServer
from mailfleet import Fleet, ListenFailed
from mailfleet.api import Tenants, serve_api
from mailfleet.api.app import create_app

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
HELPDESK = ROOT / "examples" / "helpdesk" / "helpdesk.py"


async def test_no_key_unknown_key_and_revoked_key_are_401_problems(api: ApiServer) -> None:
    anonymous = api.anonymous()
    for headers in ({}, {"Authorization": "Bearer mf_nonsense"}, {"Authorization": "Basic eA=="}):
        answer = await anonymous.get("/v1/me", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["www-authenticate"].startswith("Bearer")
        body = answer.json()
        assert body["code"] == "unauthorized"
        assert body["status"] == 401
        assert {"type", "title", "detail"} <= set(body)


async def test_a_key_names_its_application(api: ApiServer) -> None:
    mine, theirs = await api.client(), await api.client(application="other")
    assert (await mine.get("/v1/me")).json()["application"] == "test"
    assert (await theirs.get("/v1/me")).json()["application"] == "other"


async def test_a_revoked_key_stops_working(api: ApiServer) -> None:
    _, secret = await api.fleet.create_api_key("short-lived")
    client = await api.client(key=secret)
    assert (await client.get("/v1/me")).status_code == 200
    assert await api.fleet.revoke_api_keys("short-lived") == 1
    await anyio.sleep(1.1)  # the key cache trusts a verified key for a second
    assert (await client.get("/v1/me")).status_code == 401


async def test_unknown_routes_and_methods_are_problems(api: ApiServer) -> None:
    client = await api.client()
    missing = await client.get("/v1/no/such/thing")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    wrong = await client.delete("/healthz")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"


async def test_health_reports_the_store(api: ApiServer) -> None:
    answer = await api.anonymous().get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"store": "ok", "status": "ok"}


async def test_the_openapi_document_is_served_and_checked_in(api: ApiServer) -> None:
    served = (await api.anonymous().get("/openapi.json")).json()
    checked_in = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert served == checked_in, "run `make openapi` and commit docs/openapi.json"
    assert served["components"]["securitySchemes"]
    assert "Problem" in served["components"]["schemas"]


async def test_a_taken_port_is_one_clear_error(fleet: Fleet, api: ApiServer) -> None:
    port = int(api.url.rsplit(":", 1)[1])
    with pytest.raises(ListenFailed, match=rf"cannot listen for HTTP on 127.0.0.1:{port}"):
        await serve_api(create_app(api.tenants), "127.0.0.1", port)


def _wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} never printed; got {seen!r}")


def test_run_serves_the_api_with_a_dev_key(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "mailfleet", "run", str(HELPDESK), "--smtp-port", "0"]
    env = {"MAILFLEET_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            line = _wait_for_line(process, "HTTP API:")
            url = line.split("HTTP API: ", 1)[1].split("/v1", 1)[0]
            key = line.rsplit("API key: ", 1)[1].strip()
            health = httpx.get(f"{url}/healthz", timeout=10)
            assert health.json() == {"store": "ok", "mx": "ok", "workers": "ok", "status": "ok"}
            probe = httpx.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {key}"})
            assert probe.json()["application"] == "default"
            assert probe.json()["admin"] is True
        finally:
            process.terminate()
            assert process.wait(timeout=30) == 0


def test_run_honours_mailfleet_api_key(tmp_path: Path) -> None:
    secret = "mf_a-key-the-developer-chose-0123456789"
    command = [sys.executable, "-m", "mailfleet", "run", str(HELPDESK), "--smtp-port", "0"]
    env = {"MAILFLEET_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "MAILFLEET_API_KEY": secret}
    for _ in range(2):  # the second run finds it registered
        with subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ) as process:
            try:
                line = _wait_for_line(process, "HTTP API:")
                assert line.rstrip().endswith(f"API key: {secret}")
                url = line.split("HTTP API: ", 1)[1].split("/v1", 1)[0]
                probe = httpx.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {secret}"})
                assert probe.status_code == 200
            finally:
                process.terminate()
                assert process.wait(timeout=30) == 0


def test_api_alone_serves_every_application_and_keys_create(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    base = [sys.executable, "-m", "mailfleet", "--database-url", url]
    env = {"MAILFLEET_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    keys = {}
    for application in ("alpha", "beta"):
        made = subprocess.run(
            [*base, "--application", application, "keys", "create", "ci", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        record = json.loads(made.stdout)
        assert record["admin"] is False
        assert record["secret"].startswith("mf_")
        keys[application] = record["secret"]
    with subprocess.Popen(
        [*base, "api", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            line = _wait_for_line(process, "API: http")
            api_url = line.split("API: ", 1)[1].split("/v1", 1)[0]
            for application, key in keys.items():
                probe = httpx.get(f"{api_url}/v1/me", headers={"Authorization": f"Bearer {key}"})
                assert probe.json()["application"] == application
                assert probe.json()["admin"] is False
            health = httpx.get(f"{api_url}/healthz")
            assert health.status_code == 503  # no worker alive
            assert health.json()["workers"] == "down: none alive"
        finally:
            process.terminate()
            assert process.wait(timeout=30) == 0
        assert process.stdout is not None
        assert "API stopped." in process.stdout.read()


async def test_health_counts_a_part_not_run_here_as_no_fault(fleet: Fleet) -> None:
    parts = {"mx": "not run here", "workers": "ok"}

    async def liveness() -> dict[str, str]:
        return dict(parts)

    async with Tenants(fleet.settings, database=fleet.database, liveness=liveness) as tenants:
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_api, create_app(tenants), "127.0.0.1", 0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                healthy = await client.get("/healthz")
                assert healthy.status_code == 200, healthy.text
                assert healthy.json()["status"] == "ok"
                parts["workers"] = "down: none alive"
                down = await client.get("/healthz")
                assert down.status_code == 503
                assert down.json()["status"] == "degraded"
            tg.cancel_scope.cancel()
