"""Principals, roles and grants, read from a policy file; tokens stored hashed.

A grant is `action` or `action:scope`: `read:silver.*`, `promote:fraud`,
`predict:*`, `read_pii`. Scopes match with shell wildcards. Tokens are
generated here with 256 bits of entropy, so the policy keeps their SHA-256:
a slow hash (scrypt) guards low-entropy passwords against guessing, which a
256-bit token does not need, and it would cost ~50 ms per API request where
SHA-256 costs ~1 µs. Hashes are compared in constant time, against every
principal, with no early exit.
"""

from __future__ import annotations

import fnmatch
import getpass
import hashlib
import hmac
import json
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from aistack.errors import AIStackError, ConfigError

ACTIONS = (
    "read",
    "write",
    "train",
    "promote",
    "rollback",
    "rollout",
    "predict",
    "read_pii",
    "audit",
    "grant",
)
"""Every action a grant can name; `audit` reads the audit log and traces,
`grant` manages principals."""

ROLES: dict[str, tuple[str, ...]] = {
    "data_engineer": ("read:*", "write:bronze.*", "write:silver.*", "write:gold.*"),
    "data_scientist": ("read:*", "train:*"),
    "ml_engineer": (
        "read:*",
        "train:*",
        "promote:*",
        "rollback:*",
        "rollout:*",
        "predict:*",
    ),
    "auditor": ("read:ops.*", "audit"),
    "service": ("predict:*",),
    "admin": tuple(f"{a}:*" for a in ACTIONS),
}
"""What each role may do, as grants."""


class GrantError(AIStackError):
    """A principal lacks the grant an action needs (CLI exit 2, HTTP 403)."""


class AuthenticationError(AIStackError):
    """No token, or a token no principal holds (CLI exit 2, HTTP 401)."""


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token: what the policy stores."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh token with 256 bits of entropy."""
    return "ast_" + secrets.token_urlsafe(32)


def check_grant(grant: str) -> str:
    """`grant` when it names a known action, else a `ConfigError` naming it."""
    action = grant.partition(":")[0]
    if action not in ACTIONS:
        msg = f"grant {grant!r}: unknown action {action!r}, expected one of {ACTIONS}"
        raise ConfigError(msg)
    return grant


@dataclass(frozen=True)
class Principal:
    """Who acts, and what they may do."""

    name: str
    roles: tuple[str, ...] = ()
    grants: tuple[str, ...] = ()
    token_sha256: str | None = None

    @property
    def effective(self) -> tuple[str, ...]:
        """Grants from the roles, then the extra ones."""
        return tuple(g for r in self.roles for g in ROLES[r]) + self.grants

    def can(self, action: str, on: str | None = None) -> bool:
        """Whether one of the grants allows `action` (on the use case or table `on`)."""
        for grant in self.effective:
            g_action, _, scope = grant.partition(":")
            if g_action != action:
                continue
            if on is None or not scope or fnmatch.fnmatchcase(on, scope):
                return True
        return False

    def require(self, action: str, on: str | None = None) -> None:
        """Raise `GrantError` naming the missing grant unless `can(action, on)`."""
        if not self.can(action, on):
            target = f" on {on}" if on else ""
            msg = f"refused: principal {self.name} lacks grant {action}{target}"
            raise GrantError(msg)


def local_admin() -> Principal:
    """The principal when no policy is configured: the local user, admin."""
    return Principal(getpass.getuser() or "local", roles=("admin",))


@dataclass
class Policy:
    """Principals by name, as a policy file holds them."""

    path: Path | None
    principals: dict[str, Principal] = field(default_factory=dict)
    mtime_ns: int = 0

    @classmethod
    def load(cls, path: Path | None) -> Policy:
        """The policy at `path`; none: the embedded default (no principals)."""
        if path is None:
            return cls(None)
        if not path.exists():
            return cls(path)
        try:
            mtime_ns = path.stat().st_mtime_ns
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"policy {path}: cannot be read: {exc}") from exc
        found: dict[str, Principal] = {}
        for name, entry in raw.get("principals", {}).items():
            roles = tuple(entry.get("roles", ()))
            for role in roles:
                if role not in ROLES:
                    msg = f"policy {path}: principals.{name}.roles: unknown role "
                    raise ConfigError(f"{msg}{role!r}, expected one of {list(ROLES)}")
            try:
                grants = tuple(check_grant(g) for g in entry.get("grants", ()))
            except ConfigError as exc:
                raise ConfigError(f"policy {path}: principals.{name}: {exc}") from exc
            found[name] = Principal(name, roles, grants, entry.get("token_sha256"))
        return cls(path, found, mtime_ns)

    def reloaded(self) -> Policy:
        """This policy, or the file's newer content when it changed."""
        if self.path is None:
            return self
        try:
            changed = self.path.stat().st_mtime_ns != self.mtime_ns
        except FileNotFoundError:
            changed = bool(self.principals)
        return Policy.load(self.path) if changed else self

    @property
    def configured(self) -> bool:
        """A policy file is named in the settings."""
        return self.path is not None

    def authenticate(self, token: str | None) -> Principal:
        """The principal holding `token` (the local admin when no policy is set).

        The file is not read again: a server calls this on every request, and
        reloads the policy (`reloaded`) on its poll, where edits, a deletion
        included, take effect. Only a policy without principals looks for its
        file, to say it is missing.
        """
        if not self.configured:
            return local_admin()
        if not self.principals and not self.path.exists():  # type: ignore[union-attr]
            msg = f"policy {self.path}: no such file; create it with `aistack "
            raise AuthenticationError(msg + "principal add NAME --role admin`")
        if not token:
            raise AuthenticationError(
                f"refused: a policy is set ({self.path}): give a token in AISTACK_TOKEN"
            )
        given = hash_token(token).encode()
        match: Principal | None = None
        for principal in self.principals.values():  # no early exit
            stored = (principal.token_sha256 or "").encode()
            if hmac.compare_digest(given, stored) and principal.token_sha256:
                match = principal
        if match is None:
            raise AuthenticationError("refused: the token matches no principal")
        return match

    def save(self) -> None:
        """Write the policy back (TOML), readable by its owner only."""
        assert self.path is not None
        lines = []
        for p in self.principals.values():
            lines += [
                f"[principals.{json.dumps(p.name)}]",
                f"roles = {json.dumps(list(p.roles))}",
                f"grants = {json.dumps(list(p.grants))}",
            ]
            if p.token_sha256:
                lines.append(f"token_sha256 = {json.dumps(p.token_sha256)}")
            lines.append("")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines))
        tmp.chmod(0o600)
        tmp.replace(self.path)
