"""Model artifacts are code (they are unpickled): each is loaded only if it is
byte for byte what was registered.

At registration the SHA-256 of the version's artifact files (every file, by
relative path) is recorded as a model-version tag. Loading downloads the
artifacts to a private temporary folder, recomputes the digest there and
unpickles that same copy only when both agree, so a file swapped in the
artifact store (or a version registered without a digest) is refused with a
one-line error instead of being run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow

from aistack.errors import RegistryError
from aistack.registry.aliases import Registry

DIGEST_TAG = "aistack.artifact_sha256"
# mlflow draws a progress bar per download; these are small and frequent
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def artifact_digest(folder: Path) -> str:
    """SHA-256 over every file under `folder`: relative path, size, contents."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix().encode()
        digest.update(len(relative).to_bytes(4, "big") + relative)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _download(name: str, version: int, into: str) -> Path:
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=into
        )
    )


def record_digest(registry: Registry, name: str, version: int) -> str:
    """Compute and record the digest of a version just registered."""
    with tempfile.TemporaryDirectory(prefix="aistack-artifact-") as tmp:
        digest = artifact_digest(_download(name, version, tmp))
    registry.client.set_model_version_tag(name, str(version), DIGEST_TAG, digest)
    return digest


def resolve(registry: Registry, name: str, ref: int | str) -> int:
    """A version number from a number or an alias (`champion`)."""
    if isinstance(ref, int):
        return ref
    version = registry.version_of(name, ref)
    if version is None:
        raise RegistryError(f"model {name!r} has no {ref!r} version")
    return version


def load_model(registry: Registry, name: str, ref: int | str) -> Any:  # noqa: ANN401
    """The model of version (or alias) `ref`, after checking its digest."""
    version = resolve(registry, name, ref)
    tags = registry.client.get_model_version(name, str(version)).tags
    expected = tags.get(DIGEST_TAG)
    if not expected:
        msg = (
            f"model {name} version {version} has no recorded artifact digest "
            f"({DIGEST_TAG}): refusing to unpickle it"
        )
        raise RegistryError(msg)
    with tempfile.TemporaryDirectory(prefix="aistack-artifact-") as tmp:
        local = _download(name, version, tmp)
        found = artifact_digest(local)
        if found != expected:
            msg = (
                f"model {name} version {version}: artifact digest {found[:12]}... "
                f"differs from the one recorded at registration {expected[:12]}...; "
                "refusing to load it (the artifact store was changed)"
            )
            raise RegistryError(msg)
        return mlflow.sklearn.load_model(str(local))
