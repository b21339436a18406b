"""`aistack principal`, `grants`, `whoami`, `audit`, `trace`, `vacuum`: governance."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from aistack.cli._app import (
    SeedOpt,
    TrackingOpt,
    WorkspaceOpt,
    app,
    authorize,
    console,
    open_workspace,
)
from aistack.errors import AIStackError, ConfigError
from aistack.settings import Settings, load_settings

principal_app = typer.Typer(help="Principals of the policy file (AISTACK_POLICY).")
audit_app = typer.Typer(help="The hash-chained audit log.")
app.add_typer(principal_app, name="principal")
app.add_typer(audit_app, name="audit")

NameArg = Annotated[str, typer.Argument(help="Principal name.")]


class AuditError(AIStackError):
    """The audit chain does not verify."""


def _settings(workspace: WorkspaceOpt) -> Settings:
    settings = load_settings(workspace=workspace)
    if settings.policy is None:
        raise ConfigError("policy: not set; name a policy file in AISTACK_POLICY")
    return settings


def _grant_change(settings: Settings, name: str, what: str, **details: object) -> None:
    """Check the caller may manage grants (bootstrap: none yet), then audit."""
    from aistack.governance.audit import audit_event, audit_log
    from aistack.governance.principals import Policy, local_admin

    policy = Policy.load(settings.policy)
    actor = (
        authorize(settings, "grant").name
        if policy.principals
        else local_admin().name  # bootstrap: the file's first principal
    )
    log = audit_log(settings, os.environ)
    audit_event(log, actor, "grant", subject=name, change=what, **details)


@principal_app.command("add")
def principal_add(
    name: NameArg,
    role: Annotated[list[str], typer.Option("--role", help="Role(s) to hold.")],
    grant: Annotated[
        list[str] | None, typer.Option("--grant", help="Extra grant(s).")
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Add a principal and print its token, once (only its hash is kept)."""
    from aistack.governance.principals import (
        ROLES,
        Policy,
        Principal,
        check_grant,
        hash_token,
        new_token,
    )

    settings = _settings(workspace)
    policy = Policy.load(settings.policy)
    unknown = [r for r in role if r not in ROLES]
    if unknown:
        raise ConfigError(f"--role: unknown {unknown}, expected one of {list(ROLES)}")
    if not policy.principals and "admin" not in role:
        raise ConfigError("--role: the first principal must be an admin")
    if name in policy.principals:
        raise ConfigError(f"principal {name}: exists (rotate: aistack principal token)")
    extra = tuple(check_grant(g) for g in grant or ())
    _grant_change(settings, name, "add", roles=list(role), grants=list(extra))
    token = new_token()
    policy.principals[name] = Principal(name, tuple(role), extra, hash_token(token))
    policy.save()
    console.print(f"principal {name} added; token (shown once): {token}")


@principal_app.command("token")
def principal_token(name: NameArg, workspace: WorkspaceOpt = None) -> None:
    """Give a principal a new token (the old one stops working); print it once."""
    from dataclasses import replace

    from aistack.governance.principals import Policy, hash_token, new_token

    settings = _settings(workspace)
    policy = Policy.load(settings.policy)
    if name not in policy.principals:
        raise ConfigError(f"principal {name}: not in the policy {settings.policy}")
    _grant_change(settings, name, "token")
    token = new_token()
    policy.principals[name] = replace(
        policy.principals[name], token_sha256=hash_token(token)
    )
    policy.save()
    console.print(f"new token for {name} (shown once): {token}")


@app.command("grants")
def grants_command(
    name: Annotated[str | None, typer.Argument(help="Principal to change.")] = None,
    add: Annotated[list[str] | None, typer.Option("--add", help="Grant.")] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", help="Grant to remove.")
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Show every principal's roles and grants, or change one's extra grants."""
    from dataclasses import replace

    from aistack.governance.principals import Policy, check_grant

    settings = load_settings(workspace=workspace)
    if add or remove:
        if name is None:
            raise ConfigError("NAME: give the principal whose grants change")
        settings = _settings(workspace)
        policy = Policy.load(settings.policy)
        if name not in policy.principals:
            raise ConfigError(f"principal {name}: not in the policy {settings.policy}")
        added = [check_grant(g) for g in add or ()]
        _grant_change(settings, name, "grants", added=added, removed=remove or [])
        held = [g for g in policy.principals[name].grants if g not in (remove or [])]
        policy.principals[name] = replace(
            policy.principals[name], grants=tuple(dict.fromkeys(held + added))
        )
        policy.save()
    authorize(settings, "audit")
    policy = Policy.load(settings.policy)
    table = Table(title=f"principals of {settings.policy or 'the embedded default'}")
    for column in ("principal", "roles", "extra grants", "effective grants"):
        table.add_column(column)
    shown = policy.principals if policy.configured else {}
    for p in shown.values():
        table.add_row(
            p.name, ", ".join(p.roles), ", ".join(p.grants), ", ".join(p.effective)
        )
    if not policy.configured:
        table.add_row("(local user)", "admin", "", "every grant")
    console.print(table)


@app.command("whoami")
def whoami_command(workspace: WorkspaceOpt = None) -> None:
    """The principal the token in AISTACK_TOKEN names, and its grants."""
    from aistack.governance.principals import Policy

    settings = load_settings(workspace=workspace)
    token = settings.token.get_secret_value() if settings.token else None
    principal = Policy.load(settings.policy).authenticate(token)
    console.print(f"{principal.name}: {', '.join(principal.effective)}")


@audit_app.command("verify")
def audit_verify(workspace: WorkspaceOpt = None) -> None:
    """Check the hash chain; name the first edited, deleted or reordered record."""
    from aistack.governance.audit import audit_log, verify

    settings = load_settings(workspace=workspace)
    authorize(settings, "audit")
    log = audit_log(settings, os.environ)
    started = time.perf_counter()
    found = verify(log.path, key=log.key, anchor=log.anchor)
    seconds = time.perf_counter() - started
    if found.broken is not None:
        msg = (
            f"audit log {log.path}: chain broken at {found.broken} "
            f"({found.checked:,} records hold)"
        )
        raise AuditError(msg)
    console.print(
        f"audit log {log.path}: {found.checked:,} records verified in {seconds:.2f} s"
    )
    if found.signed:
        console.print(f"signed: {found.seals:,} seals checked with the audit key")
    else:
        console.print(
            f"unsigned: no audit key configured (audit_key_file, or the variable "
            f"{settings.audit_key_env} named by audit_key_env); the hash chain "
            "detects an edited, deleted or reordered record but not a rewrite of "
            f"the whole chain ({found.seals:,} seals not checked)"
        )


@audit_app.command("show")
def audit_show(
    *,
    principal: Annotated[str | None, typer.Option(help="Only this principal.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    since: Annotated[datetime | None, typer.Option(help="From (UTC).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Until (UTC).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most records shown.")] = 50,
    workspace: WorkspaceOpt = None,
) -> None:
    """Audit records, newest last, filtered by principal, action and time."""
    from aistack.governance.audit import audit_path, read

    settings = load_settings(workspace=workspace)
    authorize(settings, "audit")
    lo = _utc(since).isoformat() if since else ""
    hi = _utc(until).isoformat() if until else "~"
    rows = [
        r
        for r in read(audit_path(settings))
        if (principal is None or r["principal"] == principal)
        and (action is None or r["action"] == action)
        and lo <= r["at"] <= hi
    ][-limit:]
    table = Table(title=f"audit log ({len(rows)} shown)")
    for column in ("seq", "at", "principal", "action", "details"):
        table.add_column(column)
    for r in rows:
        details = ", ".join(f"{k}={v}" for k, v in r["details"].items())
        table.add_row(str(r["seq"]), r["at"], r["principal"], r["action"], details)
    console.print(table)


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command("trace")
def trace_command(
    request_id: Annotated[str, typer.Argument(help="A served request's id.")],
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Prediction -> model version -> run -> input tables -> who promoted it."""
    from aistack.monitoring.trace import trace

    ws = open_workspace(workspace, tracking_uri, seed, ("audit", None))
    t = trace(ws, request_id)
    console.print(
        f"request {t.request_id} ({t.use_case}, {t.logged_at.isoformat()}"
        + ("" if t.score is None else f", score {t.score}")  # rankings: none
        + f") asked by {t.requested_by or 'unknown'}"
    )
    console.print(f"  -> model {t.use_case} version {t.model_version}")
    console.print(f"  -> run {t.run_id or '-'}")
    for name, version in sorted(t.inputs.items()):
        console.print(f"    <- {name}@{version}")
    p = t.promotion
    console.print(
        f"  champion since {p.at.isoformat()}, promoted by {p.actor} ({p.reason})"
        if p
        else "  no recorded promotion to champion before the request"
    )


@app.command("vacuum")
def vacuum_command(
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Enforce retention: delete expired rows, compact, vacuum; prune the audit log."""
    from aistack.governance.audit import audit_event, prune
    from aistack.governance.retention import expire, kind_of

    ws = open_workspace(workspace, tracking_uri, seed, ("write", "*"))
    who = authorize(ws.settings, "write", "*").name
    days = ws.settings.retention_days
    if not days:
        raise ConfigError(
            "retention_days: none declared (e.g. AISTACK_RETENTION_DAYS"
            "='{\"prediction_log\": 30}')"
        )
    now = datetime.now(UTC)
    table = Table(title="retention")
    for column in ("table", "kind", "days", "deleted rows", "compacted", "removed"):
        table.add_column(column)
    for info in ws.lake.tables():
        kind = kind_of(info.name)
        if kind is None or kind not in days:
            continue
        done = expire(ws.lake, info.name, days=days[kind], now=now)
        table.add_row(
            info.name,
            kind,
            f"{days[kind]:g}",
            str(done.deleted_rows),
            str(done.compacted_files),
            str(done.removed_files),
        )
        audit_event(
            ws.audit, who, "vacuum", table=info.name, deleted_rows=done.deleted_rows
        )
    if "audit" in days:
        from datetime import timedelta

        pruned = prune(
            ws.audit.path,
            now - timedelta(days=days["audit"]),
            principal=who,
            key=ws.audit.key,
        )
        table.add_row("audit log", "audit", f"{days['audit']:g}", str(pruned), "-", "-")
    console.print(table)
