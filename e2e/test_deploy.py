"""The deployment files of SPEC section 12 are real: each kustomize overlay renders
with `kubectl kustomize`, every rendered object validates against the Kubernetes
API schemas (PyPI kubernetes-validate), the Istio objects have the shape Istio
reads, and the Portcullis config inside each ConfigMap passes `portcullis check`
(with the `${NAME}` placeholders the pod's environment fills set).

Needs `kubectl` with kustomize v3 or later on PATH (kustomize v5 ships with
kubectl 1.27+); PORTCULLIS_BIN names the binary (default: the release build).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
OVERLAYS = ["gateway", "linkerd-sidecar", "istio-ext-authz"]
BIN = os.environ.get("PORTCULLIS_BIN", str(ROOT / "target" / "release" / "portcullis"))
K8S_VERSION = kubernetes_validate.latest_version()
ISTIO_MESH = DEPLOY / "kubernetes" / "overlays" / "istio-ext-authz" / "mesh-config.yaml"

# SPEC section 8, every metric the dashboard must show.
SPEC_METRICS = {
    "portcullis_requests_total",
    "portcullis_request_duration_seconds",
    "portcullis_upstream_duration_seconds",
    "portcullis_auth_failures_total",
    "portcullis_jwks_refresh_total",
    "portcullis_jwks_keys",
    "portcullis_tls_handshake_failures_total",
    "portcullis_rate_limited_total",
    "portcullis_config_reloads_total",
    "portcullis_token_cache_total",
    "portcullis_shared_state_up",
    "portcullis_sessions",
    "portcullis_outbound_token_fetch_total",
    "portcullis_mcp_calls_total",
}

# What the pod's environment gives `${NAME}` in a config (the downward API's
# status.podIP for POD_IP).
POD_ENV = {"POD_IP": "10.42.0.17"}


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not on PATH (it renders the kustomize overlays)")
    return path


def render(overlay: str) -> list[dict]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / "kubernetes" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"kubectl kustomize {overlay} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def portcullis_container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    found = [c for c in containers if c["name"] == "portcullis"]
    assert len(found) == 1, f"{deployment['metadata']['name']}: one portcullis container"
    return found[0]


def configs(objects: list[dict]) -> list[tuple[str, str]]:
    """(ConfigMap name, portcullis.yaml text) of every ConfigMap holding a config."""
    return [
        (cm["metadata"]["name"], cm["data"]["portcullis.yaml"])
        for cm in by_kind(objects, "ConfigMap")
        if "portcullis.yaml" in cm.get("data", {})
    ]


def run_check(text: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    path = tmp_path / "portcullis.yaml"
    path.write_text(text)
    return subprocess.run(
        [BIN, "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if k != "PORTCULLIS_CONFIG"}, **env},
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_to_valid_kubernetes_objects(overlay: str) -> None:
    objects = render(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds, kinds
    for obj in objects:
        if obj["apiVersion"].endswith("istio.io/v1"):
            continue  # no published schema: checked by shape below
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_metrics_port_and_references(overlay: str) -> None:
    objects = render(overlay)
    config_names = {name for name, _ in configs(objects)}
    claims = {p["metadata"]["name"] for p in by_kind(objects, "PersistentVolumeClaim")}
    for dep in by_kind(objects, "Deployment"):
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        c = portcullis_container(dep)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert "metrics" in ports, "the Prometheus port is named `metrics`"
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        for vol in pod["spec"]["volumes"]:
            if "configMap" in vol:
                assert vol["configMap"]["name"] in config_names, vol
            if "persistentVolumeClaim" in vol:
                assert vol["persistentVolumeClaim"]["claimName"] in claims, vol
        # The admin port the probes use is the one the config listens on.
        for _, text in configs(objects):
            admin = yaml.safe_load(text)["admin"]["listen"]
            assert admin.endswith(f":{ports['metrics']}"), admin
        for pdb in by_kind(objects, "PodDisruptionBudget"):
            assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for svc in by_kind(objects, "Service"):
        assert "metrics" in {p["name"] for p in svc["spec"]["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_config_in_each_configmap_passes_check(overlay: str, tmp_path: Path) -> None:
    found = configs(render(overlay))
    assert found, "a ConfigMap with portcullis.yaml"
    for name, text in found:
        wanted = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
        missing = wanted - POD_ENV.keys()
        assert not missing, f"{name}: no value for {missing}"
        out = run_check(text, tmp_path, POD_ENV)
        assert out.returncode == 0, f"{name}: check failed:\n{out.stderr}"
        assert out.stdout.strip() == "ok"
        assert "warning:" not in out.stderr, out.stderr


def test_check_really_reads_the_placeholders(tmp_path: Path) -> None:
    """The check above is not vacuous: without POD_IP the sidecar config fails."""
    [(_, text)] = configs(render("linkerd-sidecar"))
    out = run_check(text, tmp_path, {})
    assert out.returncode == 1
    assert "POD_IP" in out.stderr


def test_linkerd_sidecar_trusts_only_the_pod_itself() -> None:
    objects = render("linkerd-sidecar")
    [(_, text)] = configs(objects)
    config = yaml.safe_load(text)
    # Linkerd 2.11+ connects from the pod IP (linkerd2 #6495, linkerd2-proxy #1161).
    assert config["server"]["trusted_proxies"] == ["127.0.0.1/32", "${POD_IP}/32"]
    assert config["workload_identity"]["accept"] == ["linkerd"]
    [dep] = by_kind(objects, "Deployment")
    pod = dep["spec"]["template"]
    assert pod["metadata"]["annotations"]["linkerd.io/inject"] == "enabled"
    env = {e["name"]: e for e in portcullis_container(dep).get("env", [])}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert len(names) == 2, "Portcullis beside the application, in one pod"
    upstream = config["routes"][0]["upstream"]
    assert upstream.startswith("http://127.0.0.1:"), "the app is reached on loopback"


def test_istio_objects_have_the_shape_istio_reads() -> None:
    objects = render("istio-ext-authz")
    [policy] = by_kind(objects, "AuthorizationPolicy")
    assert policy["apiVersion"] == "security.istio.io/v1"
    spec = policy["spec"]
    assert set(spec) <= {"selector", "targetRefs", "action", "provider", "rules"}, spec
    assert spec["action"] == "CUSTOM"
    assert spec["selector"]["matchLabels"], "applies to chosen workloads"
    assert isinstance(spec["rules"], list) and spec["rules"], "CUSTOM needs rules"
    for rule in spec["rules"]:
        assert set(rule) <= {"from", "to", "when"}, rule
        for to in rule.get("to", []):
            assert set(to) == {"operation"} and to["operation"]["paths"], to

    mesh = yaml.safe_load(ISTIO_MESH.read_text())
    assert mesh["apiVersion"] == "install.istio.io/v1alpha1"
    assert mesh["kind"] == "IstioOperator"
    providers = mesh["spec"]["meshConfig"]["extensionProviders"]
    [provider] = [p for p in providers if p["name"] == spec["provider"]["name"]]
    grpc = provider["envoyExtAuthzGrpc"]
    assert set(grpc) <= {
        "service", "port", "timeout", "failOpen", "statusOnError",
        "includeRequestBodyInCheck", "clearRouteCache",
    }, grpc
    assert grpc["failOpen"] is False, "an unreachable authorizer must deny"

    # The provider's service:port is the rendered Service, its gRPC port leads to
    # the container port, and that is where the config's ext_authz listens.
    [svc] = [
        s for s in by_kind(objects, "Service")
        if grpc["service"] == f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc.cluster.local"
    ]
    [port] = [p for p in svc["spec"]["ports"] if p["port"] == grpc["port"]]
    assert port["name"].startswith("grpc"), "Istio picks the protocol from the port name"
    [dep] = by_kind(objects, "Deployment")
    container_ports = {p["name"]: p["containerPort"] for p in portcullis_container(dep)["ports"]}
    target = container_ports[port["targetPort"]]
    [(_, text)] = configs(objects)
    listen = yaml.safe_load(text)["ext_authz"]["grpc_listen"]
    assert listen.endswith(f":{target}"), listen


def test_dashboard_covers_the_spec_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana" / "portcullis.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", m)
        for e in exprs
        for m in re.findall(r"portcullis_[a-z_]+", e)
    }
    assert used == SPEC_METRICS, (used - SPEC_METRICS, SPEC_METRICS - used)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}"


def test_dockerfile_is_multi_stage_non_root_and_ships_the_binary_alone() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    froms = [line for line in lines if line.upper().startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage"
    final = froms[-1].split()[1]
    assert final.startswith(("gcr.io/distroless/", "scratch")), final
    last_stage = lines[lines.index(froms[-1]):]
    copies = [line for line in last_stage if line.upper().startswith("COPY ")]
    assert len(copies) == 1 and copies[0].split()[-2].endswith("/portcullis"), copies
    users = [line.split()[1] for line in last_stage if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}, users
    assert any('"/usr/local/bin/portcullis"' in line for line in last_stage if "ENTRYPOINT" in line)
