"""Secure defaults: patched dependency versions, tensors-only loading, loopback
binds, no secrets in stored or printed tracking URIs."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import DIGITS, REPO
from tune_app.run.request import SearchRequest
from tune_app.run.resume import Manifest
from tune_app.tracking.store import redact_uri

# First releases with the fixes for known CVEs (see README, "Security").
MINIMUMS = {
    "ray": (2, 52, 0),  # token auth + CVE-2025-62593 (dashboard DNS rebinding)
    "mlflow": (3, 1, 0),  # CVE-2025-52967 (SSRF) and earlier path-traversal fixes
    "torch": (2, 8, 0),  # CVE-2025-32434 (torch.load weights_only bypass), CVE-2025-3730
}


def parse(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


@pytest.mark.parametrize("package", sorted(MINIMUMS))
def test_installed_versions_include_cve_fixes(package: str) -> None:
    assert parse(version(package)) >= MINIMUMS[package]


def sources() -> list[Path]:
    return [p for d in ("tune_app", "benchmarks") for p in (REPO / d).rglob("*.py")]


def test_every_torch_load_is_tensors_only() -> None:
    calls = []
    for path in sources():
        for line in path.read_text().splitlines():
            if "torch.load(" in line and not line.lstrip().startswith(("#", ":", "read")):
                calls.append((path.name, line))
    assert calls  # the checkpoint and controller loaders
    assert all("weights_only=True" in line for _, line in calls), calls


def test_nothing_binds_all_interfaces_by_default() -> None:
    for path in sources():
        text = path.read_text()
        assert "0.0.0.0" not in text, path
    script = (REPO / "cluster" / "local.sh").read_text()
    assert "0.0.0.0" not in script


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://tune:s3cret@db:5432/mlflow", "postgresql://tune:***@db:5432/mlflow"),
        ("http://user:pw@127.0.0.1:5000", "http://user:***@127.0.0.1:5000"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_tracking_uri_passwords_are_redacted(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_run_manifest_never_stores_a_password(tmp_path: Path) -> None:
    from tune_app.tracking.store import TrackingError, check_reachable

    request = SearchRequest(budget_epochs=4, num_workers=0, experiment="exp")
    stored = request.stored("s.yaml", None)
    m = Manifest({**stored, "tracking_uri": redact_uri("http://u:hunter2@127.0.0.1:9")}, "d")
    m.save(tmp_path)
    assert "hunter2" not in (tmp_path / "run.json").read_text()
    with pytest.raises(TrackingError) as err:  # nothing listens on port 9
        check_reachable("http://u:hunter2@127.0.0.1:9", timeout_s=1)
    assert "hunter2" not in str(err.value)


def test_credentials_in_an_http_uri_reach_the_server_as_basic_auth() -> None:
    """A password-protected server is reachable with user:pass in the URI (it was
    refused as unreachable); the check sends them as MLflow's client does."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from tune_app.tracking.store import TrackingError, check_reachable

    expected = "Basic " + base64.b64encode(b"user:p@ss").decode()

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/health" and self.headers.get("Authorization") == expected
            self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        check_reachable(f"http://user:p%40ss@127.0.0.1:{port}", timeout_s=5)
        with pytest.raises(TrackingError) as err:
            check_reachable(f"http://user:wrong@127.0.0.1:{port}", timeout_s=5)
        assert "wrong" not in str(err.value)
    finally:
        server.shutdown()
        server.server_close()


def test_the_cli_never_prints_a_password_in_its_mlflow_hint() -> None:
    from tune_app.cli import _mlflow_hint

    hint = _mlflow_hint("postgresql+psycopg2://user:hunter2@db/mlflow", "3")
    assert "hunter2" not in hint and "user:***@db" in hint
    hint = _mlflow_hint("http://u:hunter2@host:5000", "3", "ab12")
    assert hint == "http://host:5000/#/experiments/3/runs/ab12?workflowType=machine_learning"


def test_a_relative_sqlite_uri_is_stored_absolute(tmp_path: Path, monkeypatch) -> None:
    """run.json must name the same store whichever directory resume or sync runs in."""
    from tune_app.errors import TrackingError
    from tune_app.run.driver import _manifest
    from tune_app.tracking.store import resolve_tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNE_APP_HOME", str(tmp_path))
    assert (
        resolve_tracking_uri("sqlite:///runs/mlflow.db") == f"sqlite:///{tmp_path}/runs/mlflow.db"
    )
    assert resolve_tracking_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    plan = SearchRequest(
        space=str(DIGITS), budget_epochs=4, num_workers=0, tracking_uri="sqlite:///mlflow.db"
    ).plan()
    stored = _manifest(plan).tracking_uri
    assert stored == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("databricks") == "databricks"  # MLflow's own scheme-less URI
    for uri in ("file:///tmp/mlruns", "./mlruns"):
        with pytest.raises(TrackingError, match="file-system store"):
            resolve_tracking_uri(uri)


def _listening_sockets() -> list[str]:
    """This process's listening TCP sockets as ``tcp:ADDR:PORT`` (hex, /proc format)."""
    import os

    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    found = []
    for proto in ("tcp", "tcp6"):
        for line in Path(f"/proc/self/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(f"{proto}:{fields[1]}")
    return found


def _worker_listeners(config: dict) -> None:
    import json

    import torch
    import torch.distributed as dist

    total = torch.ones(1)
    dist.all_reduce(total)  # the process group works across the workers
    out = Path(config["out"]) / f"rank{dist.get_rank()}.json"
    out.write_text(json.dumps({"sum": total.item(), "listening": _listening_sockets()}))


# 127.0.0.1 as /proc writes it, in IPv4 and in IPv4-mapped IPv6.
_LOOPBACK = ("tcp:0100007F:", "tcp6:0000000000000000FFFF00000100007F:", "tcp6:" + "0" * 31 + "1:")


@pytest.mark.slow
def test_ray_train_workers_listen_on_loopback_only(ray_cluster, tmp_path: Path) -> None:
    """A two-worker Ray Train group as tune_app starts it: every listening socket of
    every worker is on 127.0.0.1 (Ray's own TorchConfig leaves torch's rendezvous
    store on every interface, `::`)."""
    import json

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    import tune_app.run.train_run as train_run
    from tune_app.run.process_group import BoundTorchConfig

    assert "torch_config=BoundTorchConfig()" in Path(train_run.__file__).read_text()
    TorchTrainer(
        _worker_listeners,
        train_loop_config={"out": str(tmp_path)},
        torch_config=BoundTorchConfig(),
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(tmp_path / "st"), name="listen"),
    ).fit()
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["sum"] for r in ranks] == [2.0, 2.0]
    for r in ranks:
        assert r["listening"], r
        assert all(s.startswith(_LOOPBACK) for s in r["listening"]), r["listening"]
