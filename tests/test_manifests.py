"""Static checks of the deployment files in cluster/ and docker/.

Nothing here starts Ray, Docker or Kubernetes: every YAML file is parsed and
checked for what a real cluster would need (required keys, image tags that match
the Ray and Python pinned in pyproject.toml, GPU limits, secrets that only come
from Secret objects, ports bound to 127.0.0.1), the launcher config goes through
Ray's own schema, and cluster/local.sh is syntax-checked and run only as far as
its argument parsing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
DOCKER = REPO / "docker"
LAUNCHER = CLUSTER / "cluster.yaml"
COMPOSE = DOCKER / "compose.yaml"
LOCAL_SH = CLUSTER / "local.sh"
SECRETS_EXAMPLE = KUBERAY / "secrets.example.yaml"

# Environment variables whose values must never be written into a manifest.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN", re.IGNORECASE)
RAY_IMAGE = re.compile(r"(^|/)(rayproject/ray|tune-app):")

YAML_FILES = sorted(
    p for base in (CLUSTER, DOCKER) for p in base.rglob("*") if p.suffix in {".yaml", ".yml"}
)


def _pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def pinned_ray_version() -> str:
    """The X in the ``ray[...]==X`` dependency of pyproject.toml."""
    for dep in _pyproject()["project"]["dependencies"]:
        match = re.fullmatch(r"ray\[[^\]]*\]==(\d+\.\d+\.\d+)", dep.replace(" ", ""))
        if match:
            return match.group(1)
    raise AssertionError("pyproject.toml has no ray[...]==X.Y.Z pin")


def python_tag() -> str:
    """``py311`` from ``requires-python = ">=3.11,<3.12"``."""
    spec = _pyproject()["project"]["requires-python"]
    match = re.search(r">=\s*3\.(\d+)", spec)
    assert match, f"cannot read the minimum Python from requires-python={spec!r}"
    return f"py3{match.group(1)}"


RAY_VERSION = pinned_ray_version()
PY_TAG = python_tag()


def load(path: Path) -> list[dict[str, Any]]:
    """Every document of a YAML file (empty documents dropped)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} has no YAML documents"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
    return docs


def kuberay_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(KUBERAY.glob("*.yaml")) for d in load(p)]


def walk(node: Any) -> Iterator[Any]:
    """Every mapping and list in a parsed YAML tree, depth first."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every container (and init container) anywhere in a Kubernetes object."""
    for node in walk(doc):
        if isinstance(node, dict):
            for key in ("containers", "initContainers"):
                for c in node.get(key) or []:
                    if isinstance(c, dict) and "image" in c:
                        yield c


def image_tag(image: str) -> str:
    name = image.rsplit("/", 1)[-1]
    assert ":" in name, f"image {image!r} has no tag"
    return name.split(":", 1)[1]


def ray_cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """(name, RayClusterSpec) of every RayCluster and every RayJob's own cluster."""
    specs = []
    for path, doc in kuberay_docs():
        if doc.get("kind") == "RayCluster":
            specs.append((f"{path.name}:{doc['metadata']['name']}", doc["spec"]))
        elif doc.get("kind") == "RayJob" and "rayClusterSpec" in doc["spec"]:
            specs.append((f"{path.name}:{doc['metadata']['name']}", doc["spec"]["rayClusterSpec"]))
    return specs


def env_dict(environment: Any) -> dict[str, Any]:
    """Compose ``environment`` as a dict, whether written as a mapping or a list."""
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return dict(environment or {})


# --- every file ----------------------------------------------------------------------------------


def test_expected_files_exist() -> None:
    expected = [
        LAUNCHER,
        LOCAL_SH,
        KUBERAY / "raycluster.yaml",
        KUBERAY / "rayjob.yaml",
        KUBERAY / "mlflow.yaml",
        SECRETS_EXAMPLE,
        DOCKER / "Dockerfile",
        COMPOSE,
        DOCKER / ".env.example",
    ]
    missing = [str(p.relative_to(REPO)) for p in expected if not p.is_file()]
    assert not missing, f"missing: {missing}"


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_parses(path: Path) -> None:
    load(path)


def test_pins_are_read_from_pyproject() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", RAY_VERSION)
    assert re.fullmatch(r"py3\d+", PY_TAG)


def test_every_image_is_pinned_and_ray_images_match_the_pinned_ray() -> None:
    images: list[tuple[str, str]] = []
    for path in YAML_FILES:
        for doc in load(path):
            for node in walk(doc):
                if isinstance(node, dict) and isinstance(node.get("image"), str):
                    images.append((str(path.relative_to(REPO)), node["image"]))
    assert len(images) >= 5, images
    ray_images = [(where, image) for where, image in images if RAY_IMAGE.search(image)]
    assert ray_images, "no Ray image found"
    for where, image in images:
        tag = image_tag(image)
        assert tag != "latest", f"{where}: {image} is not pinned"
    for where, image in ray_images:
        tag = image_tag(image)
        assert RAY_VERSION in tag and PY_TAG in tag, f"{where}: {image} != Ray {RAY_VERSION}"
        assert tag.endswith("-gpu"), f"{where}: {image} is not the GPU variant"


# --- Ray cluster launcher ------------------------------------------------------------------------


def test_launcher_has_cpu_head_and_gpu_workers() -> None:
    (cfg,) = load(LAUNCHER)
    for key in (
        "cluster_name",
        "provider",
        "available_node_types",
        "head_node_type",
        "max_workers",
    ):
        assert key in cfg, f"cluster.yaml lacks {key}"
    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    assert head in types, f"head_node_type {head!r} is not in available_node_types"
    assert types[head]["resources"].get("GPU", 0) == 0, "the head must not offer GPUs"
    workers = {name: t for name, t in types.items() if name != head}
    gpu_workers = {n: t for n, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_workers, "no worker type with GPUs"
    for name, t in gpu_workers.items():
        assert t.get("min_workers", 0) <= t["max_workers"] <= cfg["max_workers"], name
        assert t["max_workers"] >= 1, name


def test_launcher_passes_rays_own_schema() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    (cfg,) = load(LAUNCHER)
    validate_config(prepare_config(cfg))


def test_launcher_keeps_dashboard_on_loopback_and_auth_on() -> None:
    (cfg,) = load(LAUNCHER)
    head_cmds = " ".join(cfg["head_start_ray_commands"])
    worker_cmds = " ".join(cfg["worker_start_ray_commands"])
    assert re.search(r"ray start --head\b", head_cmds)
    assert "--dashboard-host=127.0.0.1" in head_cmds
    assert "0.0.0.0" not in head_cmds + worker_cmds
    assert "RAY_AUTH_MODE=token" in head_cmds and "RAY_AUTH_MODE=token" in worker_cmds
    assert "--num-gpus" not in worker_cmds, "let Ray detect the workers' GPUs"
    assert any("auth_token" in remote for remote in cfg["file_mounts"])
    image = cfg["docker"]["image"]
    assert image == f"rayproject/ray:{RAY_VERSION}-{PY_TAG}-gpu"
    assert any(re.search(r"pip install .*-e\b", c) for c in cfg["setup_commands"])
    assert "." in cfg["file_mounts"].values(), "the repository is not copied to the nodes"


# --- KubeRay -------------------------------------------------------------------------------------


def test_kuberay_kinds_and_versions() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for _, d in kuberay_docs()}
    assert ("ray.io/v1", "RayCluster") in kinds
    assert ("ray.io/v1", "RayJob") in kinds
    specs = ray_cluster_specs()
    assert len(specs) == 2, [name for name, _ in specs]
    for name, spec in specs:
        assert spec["rayVersion"] == RAY_VERSION, name
        assert spec.get("authOptions", {}).get("mode") == "token", f"{name}: token auth is off"
        assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP", name


def test_kuberay_gpu_workers_and_cpu_head() -> None:
    for name, spec in ray_cluster_specs():
        head = spec["headGroupSpec"]
        assert head["rayStartParams"].get("num-gpus") == "0", name
        for c in head["template"]["spec"]["containers"]:
            for kind in ("limits", "requests"):
                assert "nvidia.com/gpu" not in c.get("resources", {}).get(kind, {}), name
        groups = spec["workerGroupSpecs"]
        assert groups, f"{name}: no worker group"
        for group in groups:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
            (worker,) = group["template"]["spec"]["containers"]
            res = worker["resources"]
            gpus = res["limits"]["nvidia.com/gpu"]
            assert int(gpus) >= 1, f"{name}/{group['groupName']}: no GPUs"
            assert res["requests"]["nvidia.com/gpu"] == gpus, "GPU requests must equal limits"


def test_kuberay_dashboard_bindings() -> None:
    specs = dict(ray_cluster_specs())
    (cluster,) = [s for n, s in specs.items() if n.startswith("raycluster.yaml")]
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    for _, doc in kuberay_docs():
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", doc["metadata"]["name"]
        assert doc["kind"] != "Ingress"


def test_rayjob_runs_a_comparison_and_cleans_up() -> None:
    (job,) = [d for _, d in kuberay_docs() if d["kind"] == "RayJob"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    entry = " ".join(spec["entrypoint"].split())
    assert entry.startswith("python -m tune_app compare ")
    assert "--strategies grid,random,optuna,hyperopt,asha,hyperband" in entry
    assert "--storage-path" in entry, "multi-node runs need a shared --storage-path"
    assert "rayClusterSpec" in spec or "clusterSelector" in spec


def test_ray_pods_track_to_the_mlflow_service_and_share_run_storage() -> None:
    services = {d["metadata"]["name"]: d for _, d in kuberay_docs() if d["kind"] == "Service"}
    claims = {
        d["metadata"]["name"] for _, d in kuberay_docs() if d["kind"] == "PersistentVolumeClaim"
    }
    for name, spec in ray_cluster_specs():
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for group in groups:
            pod = group["template"]["spec"]
            (ray_container,) = [c for c in pod["containers"] if c["name"].startswith("ray-")]
            env = {e["name"]: e.get("value") for e in ray_container.get("env", [])}
            uri = env.get("MLFLOW_TRACKING_URI")
            assert uri, f"{name}: no MLFLOW_TRACKING_URI"
            match = re.fullmatch(r"http://([^:/]+):(\d+)", uri)
            assert match, f"{name}: {uri} is not http://SERVICE:PORT"
            host, port = match.groups()
            assert host in services, f"{name}: {uri} names no Service"
            assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]]
            pvcs = [
                v["persistentVolumeClaim"]["claimName"]
                for v in pod.get("volumes", [])
                if "persistentVolumeClaim" in v
            ]
            assert pvcs and set(pvcs) <= claims, f"{name}: run storage claim missing"


def test_mlflow_server_on_postgres_and_s3() -> None:
    docs = load(KUBERAY / "mlflow.yaml")
    by_kind = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "mlflow"), ("Service", "mlflow"), ("Service", "postgres")} <= by_kind
    assert ("StatefulSet", "postgres") in by_kind or ("Deployment", "postgres") in by_kind
    (mlflow,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow"]
    (server,) = mlflow["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"ghcr\.io/mlflow/mlflow:v\d+\.\d+\.\d+(-full)?", server["image"])
    args = " ".join(server.get("command", []) + server.get("args", []))
    env = {e["name"]: e for e in server["env"]}
    assert "--backend-store-uri" in args and "--artifacts-destination" in args
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql://")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")
    assert "MLFLOW_S3_ENDPOINT_URL" in env
    for probe in ("readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["path"] == "/health", probe
    postgres = [d for d in docs if d["metadata"]["name"] == "postgres" and d["kind"] != "Service"]
    (pg_spec,) = [d["spec"] for d in postgres]
    assert pg_spec.get("volumeClaimTemplates") or any(
        d["kind"] == "PersistentVolumeClaim" for d in docs
    ), "PostgreSQL has no persistent volume"


def test_kubernetes_secrets_come_only_from_secret_objects() -> None:
    referenced: set[tuple[str, str]] = set()
    for path, doc in kuberay_docs():
        if doc["kind"] == "Secret":
            assert path == SECRETS_EXAMPLE, f"{path.name} defines a Secret"
            continue
        for c in containers(doc):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add((ref["name"], ref["key"]))
                if SECRET_NAME.search(e["name"]):
                    assert "value" not in e, f"{path.name}: {e['name']} has a literal value"
                    assert ref, f"{path.name}: {e['name']} is not from a secretKeyRef"
        for node in walk(doc):
            if isinstance(node, dict) and isinstance(node.get("authOptions"), dict):
                secret = node["authOptions"].get("secretName")
                assert secret, f"{path.name}: authOptions without secretName"
                referenced.add((secret, "auth_token"))
    examples = {
        (d["metadata"]["name"], key): value
        for d in load(SECRETS_EXAMPLE)
        for key, value in d.get("stringData", {}).items()
    }
    assert referenced, "no secretKeyRef found"
    missing = referenced - examples.keys()
    assert not missing, f"secrets.example.yaml lacks {sorted(missing)}"
    for (name, key), value in examples.items():
        assert "EXAMPLE" in str(value), f"{name}/{key} is not marked as an example value"


# --- docker --------------------------------------------------------------------------------------


def test_dockerfile_builds_on_the_pinned_ray_image() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert froms == [f"rayproject/ray:{RAY_VERSION}-{PY_TAG}-gpu"], froms
    assert re.search(r"pip install --no-cache-dir -e \.", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}, f"runs as {users[-1:]}"
    for line in re.findall(r"^(?:ENV|ARG)\s+(.+)$", text, re.MULTILINE):
        for name in re.findall(r"([A-Z_]+)=", line):
            assert not SECRET_NAME.search(name), f"secret-like {name} baked into the image"


def _compose() -> dict[str, Any]:
    (doc,) = load(COMPOSE)
    return doc


def test_compose_services_and_healthchecks() -> None:
    services = _compose()["services"]
    assert {"ray-head", "ray-worker", "mlflow", "postgres"} <= services.keys()
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond.get("condition") == "service_healthy", f"{name} -> {dep}"
    assert "ray-head" in services["ray-worker"]["depends_on"]
    assert "postgres" in services["mlflow"]["depends_on"]
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    assert services["postgres"]["image"].split(":")[0] == "postgres"
    head_cmd = services["ray-head"]["command"]
    assert "--head" in head_cmd and "--block" in head_cmd
    assert "--address=ray-head:6379" in services["ray-worker"]["command"]


def test_compose_publishes_only_on_loopback() -> None:
    published = 0
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
        assert svc.get("network_mode") != "host", name
    assert published >= 2, "the dashboard and the MLflow UI should be published on 127.0.0.1"


def test_compose_secrets_are_files_not_values() -> None:
    doc = _compose()
    declared = doc.get("secrets", {})
    assert {"postgres_password", "ray_auth_token"} <= declared.keys()
    for name, secret in declared.items():
        assert set(secret) <= {"file", "environment", "external", "name"}, name
    for name, svc in doc["services"].items():
        for var, value in env_dict(svc.get("environment")).items():
            if SECRET_NAME.search(var):
                assert var.endswith(("_FILE", "_PATH")), f"{name}: {var} holds a secret value"
                assert str(value).startswith("/run/secrets/"), f"{name}: {var}={value}"
                secret = str(value).removeprefix("/run/secrets/")
                assert secret in svc.get("secrets", []), f"{name} does not mount {secret}"
    example = (DOCKER / ".env.example").read_text()
    for line in example.splitlines():
        if re.match(r"^[A-Z_]+=", line):
            assert "EXAMPLE" in line, f".env.example: {line!r} is not a placeholder"


# --- local multi-node script ---------------------------------------------------------------------


def test_local_script_is_valid_bash_bound_to_loopback() -> None:
    assert shutil.which("bash"), "bash is required"
    subprocess.run(["bash", "-n", str(LOCAL_SH)], check=True)
    text = LOCAL_SH.read_text()
    assert LOCAL_SH.stat().st_mode & 0o111, "cluster/local.sh is not executable"
    assert "set -euo pipefail" in text
    assert "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in text
    assert "--dashboard-host 127.0.0.1" in text
    assert text.count("--node-ip-address 127.0.0.1") >= 2, "head and workers on loopback"
    assert "0.0.0.0" not in text
    assert "RAY_AUTH_MODE=token" in text
    assert '"${RAY:-.venv/bin/ray}"' in text or "RAY=${RAY:-.venv/bin/ray}" in text


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--help"], 0, "usage: cluster/local.sh up"),
        ([], 2, "usage:"),
        (["sideways"], 2, "unknown command"),
        (["up", "--workers", "two"], 2, "--workers needs a whole number"),
        (["up", "--port", "6379", "--dashboard-port", "6379"], 2, "must differ"),
        (["up", "--nodes", "2"], 2, "unknown option"),
        (["up", "--temp-dir"], 2, "--temp-dir needs a directory"),
        (["up", "--client-port", "0"], 2, "--client-port must be 1-65535"),
    ],
)
def test_local_script_rejects_bad_input_before_starting_anything(
    args: list[str], code: int, says: str
) -> None:
    # RAY points at a binary that would fail loudly: parsing must stop first.
    proc = subprocess.run(
        ["bash", str(LOCAL_SH), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "RAY": "/bin/false"},
        timeout=30,
        check=False,
    )
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert says in proc.stdout + proc.stderr


def test_local_script_passes_shellcheck() -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed")
    proc = subprocess.run(
        ["shellcheck", str(LOCAL_SH)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout
