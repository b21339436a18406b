"""Kubernetes manifests: valid against the bundled schemas (offline) and wired
to what the platform really serves, reads and runs."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import typer
import yaml

from aistack.cli import app
from aistack.contract import get_use_case
from aistack.settings import Settings

K8S = Path(__file__).parents[2] / "deploy" / "k8s"
VERSION = "1.37.0"  # kubernetes-validate's bundled schemas: no network


def documents() -> list[dict]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


def pod_specs() -> dict[str, dict]:
    specs = {n: d["spec"]["template"]["spec"] for n, d in by_kind("Deployment").items()}
    for name, job in by_kind("CronJob").items():
        specs[name] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


@pytest.mark.parametrize(
    "doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_every_manifest_is_valid_against_the_kubernetes_schema(doc) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)  # raises when invalid


def test_the_api_probes_ready_and_health_on_its_port_and_scales() -> None:
    api = by_kind("Deployment")["aistack-api"]["spec"]["template"]["spec"]
    (container,) = api["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    settings = by_kind("ConfigMap")["aistack-settings"]["data"]
    assert int(settings["AISTACK_PORT"]) == port
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    hpa = by_kind("HorizontalPodAutoscaler")["aistack-api"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "aistack-api"
    assert hpa["minReplicas"] >= 2
    service = by_kind("Service")["aistack-api"]["spec"]
    assert service["ports"][0]["targetPort"] == "http"


def test_pods_run_as_non_root_with_resources() -> None:
    for name, spec in pod_specs().items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name  # the image's
        for container in spec["containers"]:
            assert {"requests", "limits"} <= set(container["resources"]), name


def test_references_resolve_and_settings_are_real(monkeypatch, tmp_path) -> None:
    defined = {(d["kind"], d["metadata"]["name"]) for d in documents()}
    fields = set(Settings.model_fields)
    for name, spec in pod_specs().items():
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                kind = "ConfigMap" if "configMapRef" in source else "Secret"
                ref = source.get("configMapRef") or source["secretRef"]
                assert (kind, ref["name"]) in defined, name
            for env in container.get("env", []):
                ref = env["valueFrom"]["secretKeyRef"]
                assert ("Secret", ref["name"]) in defined, name
        for volume in spec["volumes"]:
            claim = volume.get("persistentVolumeClaim")
            if claim:
                assert ("PersistentVolumeClaim", claim["claimName"]) in defined
    for kind in ("ConfigMap", "Secret"):
        for doc in by_kind(kind).values():
            for key in {**doc.get("data", {}), **doc.get("stringData", {})}:
                if key.startswith("AISTACK_") and key != "AISTACK_FRAUD_SOURCE":
                    setting = key.removeprefix("AISTACK_").lower()
                    assert setting in fields, f"{kind} {key}: no such setting"
    secrets = by_kind("Secret")
    env = {
        **by_kind("ConfigMap")["aistack-settings"]["data"],
        **secrets["aistack-secrets"]["stringData"],
    }
    for key, value in env.items():  # as the pods get them: environment variables
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no aistack.toml
    settings = Settings()  # they validate (tokens, PostgreSQL URI, ...)
    assert settings.mlflow_uri.startswith("postgresql+psycopg://")
    assert len(settings.api_tokens) == 1
    source = secrets["aistack-pipeline-source"]["stringData"]["url"]
    get_use_case("fraud").params.model_validate({"source": source})


def test_containers_run_real_commands_with_real_options() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name, spec in pod_specs().items():
        for container in spec["containers"]:
            command, use_case, *rest = container["args"]
            assert command in commands, name
            get_use_case(use_case)
            options = {o for p in commands[command].params for o in p.opts}
            if command == "run":  # use-case options
                options |= {
                    "--" + f.replace("_", "-")
                    for f in get_use_case(use_case).params.model_fields
                }
            given = {a for a in rest if a.startswith("--")}
            assert given <= options, (name, given - options)


def test_a_wrong_manifest_is_rejected_offline() -> None:
    doc = by_kind("Deployment")["aistack-api"]
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"][
        "paht"
    ] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(doc, VERSION, strict=True)
