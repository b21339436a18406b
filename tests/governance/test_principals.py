"""Roles, grants and the policy file, as code calls them (`can`, `require`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aistack.errors import ConfigError
from aistack.governance.principals import (
    ROLES,
    AuthenticationError,
    GrantError,
    Policy,
    Principal,
    hash_token,
    local_admin,
    new_token,
)


def test_only_admin_reads_pii_and_service_only_predicts() -> None:
    holders = {r for r in ROLES if Principal("p", (r,)).can("read_pii")}
    assert holders == {"admin"}
    svc = Principal("svc", ("service",))
    assert svc.can("predict", "fraud")
    assert not any(svc.can(a, "fraud") for a in ("read", "train", "promote", "write"))


def test_scoped_grants_match_their_scope_only() -> None:
    dina = Principal("dina", ("data_engineer",))
    assert dina.can("write", "silver.transactions")
    assert not dina.can("write", "ops.alias_events")
    sam = Principal("sam", ("data_scientist",), ("promote:fraud",))
    assert sam.can("promote", "fraud") and not sam.can("promote", "recommendations")
    with pytest.raises(GrantError, match="principal sam lacks grant rollout on fraud"):
        sam.require("rollout", "fraud")


def test_without_a_policy_the_local_user_is_admin() -> None:
    me = Policy.load(None).authenticate(None)
    assert me == local_admin() and me.can("read_pii") and me.can("grant")


def test_policy_round_trip_authenticates_by_token_hash(tmp_path: Path) -> None:
    token = new_token()
    policy = Policy(tmp_path / "p.toml")
    policy.principals["ana"] = Principal("ana", ("auditor",), (), hash_token(token))
    policy.save()
    loaded = Policy.load(tmp_path / "p.toml")
    assert loaded.authenticate(token).name == "ana"
    assert token not in (tmp_path / "p.toml").read_text()
    with pytest.raises(AuthenticationError, match="matches no principal"):
        loaded.authenticate(token + "x")
    with pytest.raises(AuthenticationError, match="AISTACK_TOKEN"):
        loaded.authenticate(None)


def test_a_changed_policy_file_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[principals.a]\nroles = ["service"]\n')
    first = Policy.load(path)
    assert first.reloaded() is first
    path.write_text('[principals.a]\nroles = ["auditor"]\n')
    os.utime(path, ns=(first.mtime_ns + 10**9, first.mtime_ns + 10**9))
    assert first.reloaded().principals["a"].roles == ("auditor",)


def test_a_deleted_policy_file_refuses_from_the_reload_on(tmp_path: Path) -> None:
    token = new_token()
    path = tmp_path / "p.toml"
    policy = Policy(path)
    policy.principals["svc"] = Principal("svc", ("service",), (), hash_token(token))
    policy.save()
    loaded = Policy.load(path)
    path.unlink()
    # requests do not stat the file: the loaded principals hold until the reload
    assert loaded.authenticate(token).name == "svc"
    with pytest.raises(AuthenticationError, match="no such file"):
        loaded.reloaded().authenticate(token)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[principals.a]\nroles = ["boss"]\n',
            "principals.a.roles: unknown role 'boss'",
        ),
        (
            '[principals.a]\ngrants = ["fly:*"]\n',
            "principals.a: grant 'fly:*': unknown",
        ),
        ("[principals.a\n", "cannot be read"),
    ],
)
def test_a_bad_policy_names_the_field(tmp_path: Path, text, message) -> None:
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        Policy.load(tmp_path / "p.toml")
