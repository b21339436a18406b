"""Principals and grants, through the real CLI (subprocesses) and a real server:
per role, an allowed and a refused action; then `trace` of a served request."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from aistack.governance.audit import audit_path, read, verify
from conftest import other_version, served_copy
from servers import aistack_server

ROLES = {
    "root": "admin",
    "dina": "data_engineer",
    "sam": "data_scientist",
    "mia": "ml_engineer",
    "aud": "auditor",
    "svc": "service",
}


def aistack(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aistack", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **env},
    )


def add_principals(env: dict[str, str]) -> dict[str, str]:
    """Every role's principal, added through the CLI; their tokens."""
    tokens: dict[str, str] = {}
    for name, role in ROLES.items():
        caller = {"AISTACK_TOKEN": tokens["root"]} if tokens else {}
        done = aistack("principal", "add", name, "--role", role, env={**env, **caller})
        assert done.returncode == 0, done.stderr
        found = re.search(r"\(shown once\): (\S+)", done.stdout)
        assert found is not None
        tokens[name] = found.group(1)
    return tokens


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> tuple[dict[str, str], dict[str, str]]:
    root = tmp_path_factory.mktemp("policy")
    env = {
        "AISTACK_WORKSPACE": str(root / "ws"),
        "AISTACK_POLICY": str(root / "policy.toml"),
    }
    return env, add_principals(env)


def test_the_first_principal_must_be_an_admin(tmp_path: Path) -> None:
    env = {
        "AISTACK_POLICY": str(tmp_path / "p.toml"),
        "AISTACK_WORKSPACE": str(tmp_path),
    }
    done = aistack("principal", "add", "ana", "--role", "data_scientist", env=env)
    assert done.returncode == 2
    assert "the first principal must be an admin" in done.stderr
    assert not (tmp_path / "p.toml").exists()


def test_tokens_are_stored_hashed(policy) -> None:
    env, tokens = policy
    text = Path(env["AISTACK_POLICY"]).read_text()
    assert all(token not in text for token in tokens.values())
    assert text.count("token_sha256") == len(ROLES)
    assert Path(env["AISTACK_POLICY"]).stat().st_mode & 0o077 == 0


CLI_CASES = {
    # principal: (allowed command, what it prints, refused command, missing grant)
    "dina": (
        ["tables"],
        "Delta tables",
        ["rollout", "fraud", "--stop"],
        "rollout on fraud",
    ),
    "sam": (
        ["models", "fraud"],
        "registered model fraud",
        ["promote", "fraud", "1"],
        "promote on fraud",
    ),
    "aud": (
        ["audit", "verify"],
        "records verified",
        ["rollback", "fraud"],
        "rollback on fraud",
    ),
    "svc": (["whoami"], "svc: predict:*", ["tables"], "read on *"),
    "mia": (
        ["grants"],  # ml engineers may not read the audit trail of grants
        None,
        ["principal", "add", "eve", "--role", "admin"],
        "grant",
    ),
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_cli_allows_and_refuses_per_role(policy, name) -> None:
    env, tokens = policy
    allowed, shows, refused, missing = CLI_CASES[name]
    caller = {**env, "AISTACK_TOKEN": tokens[name]}
    if shows is not None:
        ok = aistack(*allowed, env=caller)
        assert ok.returncode == 0, ok.stderr
        assert shows in ok.stdout
    no = aistack(*refused, env=caller)
    assert no.returncode == 2
    assert f"refused: principal {name} lacks grant {missing}" in no.stderr


def test_cli_admin_manages_grants_and_a_rotated_token_stops_working(policy) -> None:
    env, tokens = policy
    admin = {**env, "AISTACK_TOKEN": tokens["root"]}
    added = aistack("grants", "sam", "--add", "promote:fraud", env=admin)
    assert added.returncode == 0, added.stderr
    assert "promote:fraud" in added.stdout
    rotated = aistack("principal", "token", "sam", env=admin)
    assert rotated.returncode == 0
    old = aistack("whoami", env={**env, "AISTACK_TOKEN": tokens["sam"]})
    assert old.returncode == 2
    assert "the token matches no principal" in old.stderr
    tokens["sam"] = rotated.stdout.rsplit(" ", 1)[-1].strip()
    assert (
        "promote:fraud"
        in aistack("whoami", env={**env, **{"AISTACK_TOKEN": tokens["sam"]}}).stdout
    )
    changes = [
        r
        for r in read(audit_path(Path(env["AISTACK_WORKSPACE"])))
        if r["action"] == "grant"
    ]
    assert [
        (r["principal"], r["details"]["subject"], r["details"]["change"])
        for r in changes
    ][-2:] == [("root", "sam", "grants"), ("root", "sam", "token")]
    assert len(changes) == len(ROLES) + 2


def test_no_token_is_refused_when_a_policy_is_set(policy) -> None:
    env, _ = policy
    done = aistack("tables", env=env)
    assert done.returncode == 2
    assert "give a token in AISTACK_TOKEN" in done.stderr


API_STATUS = {"root": 200, "mia": 200, "svc": 200, "dina": 403, "sam": 403, "aud": 403}
GOOD = {
    "customer_id": 1,
    "terminal_id": 2,
    "tx_amount": 42.5,
    "tx_datetime": "2018-05-30T12:00:00",
}


def metrics_need_predict(base: str, tokens: dict[str, str], use_case: str) -> None:
    """With a policy, /metrics answers a principal granted predict only (a
    scraper needs a service token); health stays open."""
    metrics = f"{base}/metrics"
    assert httpx.get(metrics).status_code == 401
    refused = httpx.get(metrics, headers={"Authorization": f"Bearer {tokens['aud']}"})
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        f"refused: principal aud lacks grant predict on {use_case}"
    )
    allowed = httpx.get(metrics, headers={"Authorization": f"Bearer {tokens['svc']}"})
    assert allowed.status_code == 200 and "aistack_requests" in allowed.text
    assert httpx.get(f"{base}/health").status_code == 200


@pytest.mark.slow  # 85 s at load average 11 on 2 cores (fraud run + 10 CLI calls)
def test_api_grants_audit_and_trace_of_a_served_request(fraud_run, tmp_path) -> None:
    ws = served_copy(fraud_run, tmp_path / "served")
    env = {
        "AISTACK_WORKSPACE": str(ws.settings.workspace),
        "AISTACK_POLICY": str(tmp_path / "policy.toml"),
    }
    tokens = add_principals(env)
    champion = ws.registry.version_of("fraud", "champion")
    chosen = other_version(ws.registry, "fraud", champion)
    promoted = aistack(
        "promote",
        "fraud",
        str(chosen),
        "--force",
        "--reason",
        "test",
        env={**env, "AISTACK_TOKEN": tokens["mia"]},
    )
    assert promoted.returncode == 0, promoted.stderr
    refused = aistack(
        "promote", "fraud", str(champion), env={**env, "AISTACK_TOKEN": tokens["sam"]}
    )
    assert "refused: principal sam lacks grant promote on fraud" in refused.stderr
    ids: dict[str, str] = {}
    serving = {**env, "AISTACK_TOKEN": tokens["svc"]}  # `serve` needs predict
    with aistack_server(ws.settings.workspace, env=serving) as (base, proc):
        url = f"{base}/v1/fraud/predict"
        assert httpx.post(url, json=GOOD).status_code == 401
        metrics_need_predict(base, tokens, "fraud")
        for k, (name, expected) in enumerate(sorted(API_STATUS.items())):
            answer = httpx.post(
                url,
                json={**GOOD, "transaction_id": 500 + k},
                headers={"Authorization": f"Bearer {tokens[name]}"},
            )
            assert answer.status_code == expected, (name, answer.text)
            if expected == 403:
                assert answer.json()["detail"] == (
                    f"refused: principal {name} lacks grant predict on fraud"
                )
            else:
                ids[name] = answer.json()["request_id"]
                assert answer.json()["model_version"] == chosen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    path = audit_path(ws.settings)
    assert verify(path).broken is None
    predictions = [r for r in read(path) if r["action"] == "predict"]
    assert sorted(
        (r["principal"], r["details"]["request_id"]) for r in predictions
    ) == sorted((name, rid) for name, rid in ids.items())
    assert all(r["details"]["model_version"] == chosen for r in predictions)
    assert b"tx_amount" not in path.read_bytes()  # no payload in the audit log
    promotions = [r for r in read(path) if r["action"] == "promote"]
    assert promotions[-1]["principal"] == "mia"
    assert promotions[-1]["details"]["to_version"] == chosen
    auditor = {**env, "AISTACK_TOKEN": tokens["aud"]}
    traced = aistack("trace", ids["svc"], env=auditor)
    assert traced.returncode == 0, traced.stderr
    out = traced.stdout
    assert f"request {ids['svc']} (fraud" in out and "asked by svc" in out
    assert f"-> model fraud version {chosen}" in out
    run_id = ws.registry.client.get_model_version("fraud", str(chosen)).run_id
    assert f"-> run {run_id}" in out
    assert re.search(r"<- silver\.transactions@\d+", out)
    assert (
        "promoted by mia (forced past failed gates" in out
        or "promoted by mia (test" in out
    )
    shown = aistack(
        "audit", "show", "--principal", "svc", "--action", "predict", env=auditor
    )
    assert shown.returncode == 0 and ids["svc"] in shown.stdout
    refused_trace = aistack(
        "trace", ids["svc"], env={**env, "AISTACK_TOKEN": tokens["svc"]}
    )
    assert "refused: principal svc lacks grant audit" in refused_trace.stderr


def test_plain_api_tokens_with_a_policy_are_refused_naming_the_fix(tmp_path) -> None:
    env = {
        "AISTACK_WORKSPACE": str(tmp_path / "ws"),
        "AISTACK_POLICY": str(tmp_path / "policy.toml"),
        "AISTACK_API_TOKENS": '["s3cret"]',
    }
    done = aistack("whoami", env=env)  # any command: the settings are refused
    assert done.returncode == 2
    assert "a policy is set" in done.stderr and "AISTACK_API_TOKENS" in done.stderr
