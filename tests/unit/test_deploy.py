"""deploy/: the Kubernetes manifests are valid and agree with the Dockerfile, README and CLI.

Core resources are validated against the Kubernetes 1.33 OpenAPI schemas that the
`kubernetes-validate` package ships (strict: an unknown field is an error). No registry
package ships KubeRay's CRDs, so the RayJob is validated against a structural schema of the
KubeRay v1.6.2 ``ray.io/v1`` fields it uses (from KubeRay's API reference; unknown fields
refused), and each of its pod templates as a core ``PodTemplateSpec``.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from jobs import cli

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.33.0"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
IMAGE = f"matchjobs:{PROJECT['version']}"
RAY_VERSION = next(
    line.split("==")[1]
    for line in (ROOT / "requirements.lock").read_text().splitlines()
    if line.startswith("ray==")
)

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_INT = {"type": "integer", "minimum": 0}
_GROUP_COMMON = {
    "rayStartParams": _STR_MAP,
    "template": {"type": "object"},
    "serviceType": {"type": "string"},
    "enableIngress": {"type": "boolean"},
}
RAYJOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["entrypoint", "rayClusterSpec"],
            "additionalProperties": False,
            "properties": {
                "entrypoint": {"type": "string", "minLength": 1},
                "runtimeEnvYAML": {"type": "string"},
                "submissionMode": {
                    "enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]
                },
                "backoffLimit": _INT,
                "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": _INT,
                "suspend": {"type": "boolean"},
                "submitterPodTemplate": {"type": "object"},
                "rayClusterSpec": {
                    "type": "object",
                    "required": ["headGroupSpec"],
                    "additionalProperties": False,
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "authOptions": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "mode": {"enum": ["disabled", "token"]},
                                "secretName": {"type": "string"},
                            },
                        },
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        "headGroupSpec": {
                            "type": "object",
                            "required": ["rayStartParams", "template"],
                            "additionalProperties": False,
                            "properties": _GROUP_COMMON,
                        },
                        "workerGroupSpecs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["groupName", "template"],
                                "additionalProperties": False,
                                "properties": {
                                    **_GROUP_COMMON,
                                    "groupName": {"type": "string"},
                                    "replicas": _INT,
                                    "minReplicas": _INT,
                                    "maxReplicas": _INT,
                                    "numOfHosts": {"type": "integer", "minimum": 1},
                                    "suspend": {"type": "boolean"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def by_kind(kind: str) -> dict[str, Any]:
    (found,) = [
        doc
        for path in sorted(DEPLOY.glob("*.yaml"))
        for doc in documents(path.name)
        if doc.get("kind") == kind
    ]
    return found


def rayjob() -> dict[str, Any]:
    (job,) = documents("rayjob-nightly.yaml")
    return job


def ray_templates(job: dict[str, Any]) -> list[dict[str, Any]]:
    spec = job["spec"]["rayClusterSpec"]
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


def pod_specs() -> list[dict[str, Any]]:
    """Every pod spec of the manifests: the RayJob's, the CronJob's, the Deployment's."""
    return [
        *(t["spec"] for t in ray_templates(rayjob())),
        by_kind("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        by_kind("Deployment")["spec"]["template"]["spec"],
    ]


def core_resources() -> list[dict[str, Any]]:
    names = ["cronjob-nightly.yaml", "worker-deployment.yaml", "secret.example.yaml"]
    return [doc for name in names for doc in documents(name)]


@pytest.mark.parametrize(
    "resource", core_resources(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}"
)
def test_core_resources_validate_against_the_kubernetes_schema(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_the_validator_refuses_an_unknown_field() -> None:
    """The check above can fail: a misspelt field of a Deployment is an error."""
    bad = by_kind("Deployment")
    bad["spec"]["template"]["spec"]["containers"][0]["comand"] = ["matchjobs"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_the_rayjob_matches_the_kuberay_fields_and_its_pods_are_valid() -> None:
    job = rayjob()
    jsonschema.validate(job, RAYJOB_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**job, "spec": {**job["spec"], "entrypont": "x"}}, RAYJOB_SCHEMA)
    for template in ray_templates(job):
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "ray"},
            "template": template,
        }
        kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)


def test_the_rayjob_runs_the_readmes_command_with_token_auth() -> None:
    readme = (ROOT / "README.md").read_text()
    (submit,) = [b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "ray job submit" in b]
    entrypoint = shlex.split(submit.replace("\\\n", " "))
    job = rayjob()["spec"]
    assert shlex.split(job["entrypoint"]) == entrypoint[entrypoint.index("--") + 1 :]
    # python -m jobs is the console script's module.
    assert PROJECT["scripts"]["matchjobs"] == "jobs.cli:main"
    assert (ROOT / "jobs" / "__main__.py").exists()
    cluster = job["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["rayVersion"] == RAY_VERSION
    assert job["shutdownAfterJobFinishes"] is True


def test_every_pod_runs_the_image_with_the_env_the_cli_reads() -> None:
    secret = by_kind("Secret")
    for spec in pod_specs():
        for container in spec["containers"]:
            if container["name"] == "create-rayjob":
                continue
            assert container["image"] == IMAGE
            assert "resources" in container and container["resources"]["limits"]
            env = {e["name"]: e for e in container.get("env", [])}
            assert set(env) == {cli.DATABASE_ENV}
            ref = env[cli.DATABASE_ENV]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"]
    (worker,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    assert worker["command"] == ["matchjobs", "worker"]
    # The Dockerfile's user is the one the Deployment requires.
    assert "useradd --create-home --uid 10001 matchjobs" in (ROOT / "Dockerfile").read_text()
    assert (
        by_kind("Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    )


def test_the_cronjob_creates_the_rayjob_from_its_configmap() -> None:
    cron = by_kind("CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["kubectl", "create", "-f"]
    mounted = Path(container["command"][3])
    (volume,) = pod["volumes"]
    (mount,) = container["volumeMounts"]
    assert mount["name"] == volume["name"] and Path(mount["mountPath"]) == mounted.parent
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    (generated,) = kustomization["configMapGenerator"]
    assert generated["name"] == volume["configMap"]["name"]
    assert generated["files"] == [mounted.name] and (DEPLOY / mounted.name).exists()
    assert "generateName" in rayjob()["metadata"]  # kubectl create, a new RayJob each night
    (rule,) = by_kind("Role")["rules"]
    assert rule == {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}
    assert pod["serviceAccountName"] == by_kind("ServiceAccount")["metadata"]["name"]
    for name in kustomization["resources"]:
        assert (DEPLOY / name).exists()
