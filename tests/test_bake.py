"""Bake every supported combination and check the generated project.

Each test takes the module-scoped ``baked`` fixture (see conftest.py), so a
combo is rendered once and all its checks run against that render.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import bake
import manifests

# --- the render itself --------------------------------------------------------


def test_expected_files(baked: bake.Baked) -> None:
    present, absent = bake.expected_paths(baked.options, baked.package)
    missing = [p for p in present if not (baked.path / p).exists()]
    leftover = [p for p in absent if (baked.path / p).exists()]
    assert not missing, f"missing for {baked.options}: {missing}"
    assert not leftover, f"should have been dropped for {baked.options}: {leftover}"


def test_no_unrendered_template_syntax(baked: bake.Baked) -> None:
    problems = bake.unrendered(baked.path)
    assert not problems, "unrendered template syntax:\n" + "\n".join(problems)


def test_nothing_refers_to_auth_without_it(baked: bake.Baked) -> None:
    if bake.is_on(baked.options.get("use_auth")):
        pytest.skip("auth is on in this combination")
    found = bake.mentions(baked.path, bake.AUTH_MENTION)
    assert not found, "the project refers to the auth module it does not have:\n" + "\n".join(found)


def test_nothing_refers_to_admin_without_it(baked: bake.Baked) -> None:
    if bake.is_on(baked.options.get("use_admin")):
        pytest.skip("admin is on in this combination")
    found = bake.mentions(baked.path, bake.ADMIN_MENTION)
    assert not found, "the project refers to the admin module it does not have:\n" + "\n".join(
        found
    )


def test_dropped_modules_leave_no_trace(baked: bake.Baked) -> None:
    problems = bake.module_traces(baked.path, baked.options)
    assert not problems, "a dropped module is still referred to:\n" + "\n".join(problems)


def test_env_file_holds_secret_and_is_git_ignored(baked: bake.Baked) -> None:
    env_file = baked.path / ".env"
    example = baked.path / ".env.example"
    assert env_file.is_file(), ".env was not written"
    secret = bake.read_env_file(env_file).get("SECRET_KEY", "")
    assert len(secret) >= 32, f"SECRET_KEY in .env missing or short: {secret!r}"
    assert secret not in example.read_text(encoding="utf-8"), "SECRET_KEY leaked into .env.example"
    if not (baked.path / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=baked.path, check=True)
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=baked.path, check=False)
    assert ignored.returncode == 0, ".env is not git-ignored"
    tracked = subprocess.run(
        ["git", "check-ignore", "-q", ".env.example"], cwd=baked.path, check=False
    )
    assert tracked.returncode == 1, ".env.example is git-ignored but must be committed"


def test_dependencies_pinned(baked: bake.Baked) -> None:
    problems = bake.unpinned_dependencies(baked.path / "pyproject.toml")
    assert not problems, "dependencies not pinned with ==:\n" + "\n".join(problems)


def test_shared_venv_has_the_pinned_versions(baked: bake.Baked) -> None:
    """The shared venv runs this project's tools: it must hold exactly its pins."""
    problems = bake.venv_mismatches(baked.path / "pyproject.toml")
    assert not problems, "shared .venv differs from the project's pins (make install?):\n" + (
        "\n".join(problems)
    )


def test_secret_key_differs_between_bakes(tmp_path: Path) -> None:
    context = {"project_name": "Bake Secret Twice"}
    first = bake.bake(context, tmp_path / "one")
    second = bake.bake(context, tmp_path / "two")
    secrets = [bake.read_env_file(p / ".env").get("SECRET_KEY") for p in (first, second)]
    assert secrets[0], "no SECRET_KEY in .env"
    assert secrets[0] != secrets[1], "two bakes got the same SECRET_KEY"


# --- the lock ------------------------------------------------------------------


def test_lock_names_the_project_and_holds_its_pins(baked: bake.Baked) -> None:
    lock = tomllib.loads((baked.path / "uv.lock").read_text(encoding="utf-8"))
    versions = {p["name"]: p["version"] for p in lock["package"]}
    slug = baked.path.name  # cookiecutter names the folder after the slug
    assert versions.get(slug) == "0.1.0", f"uv.lock has no project {slug!r}"
    project = tomllib.loads((baked.path / "pyproject.toml").read_text(encoding="utf-8"))
    deps = [*project["project"]["dependencies"], *project["dependency-groups"]["dev"]]
    for dep in deps:
        name, _, version = dep.partition("==")
        name = name.split("[")[0].lower()
        assert versions.get(name) == version, f"{dep}: uv.lock has {versions.get(name)}"


def test_lock_is_current_offline(baked: bake.Baked) -> None:
    """`uv sync --locked` (make install, CI) accepts this lock: checked with no network."""
    env = {"UV_OFFLINE": "1", "UV_CACHE_DIR": str(baked.scratch / "uv-cache")}
    proc = bake.run_tool(baked.path, bake.tool("uv"), "lock", "--check", "--offline", env=env)
    assert proc.returncode == 0, bake.describe(proc)
    # and it is byte for byte what uv writes (the renamed project sits where uv sorts it)
    before = (baked.path / "uv.lock").read_bytes()
    proc = bake.run_tool(baked.path, bake.tool("uv"), "lock", "--offline", env=env)
    assert proc.returncode == 0, bake.describe(proc)
    assert (baked.path / "uv.lock").read_bytes() == before, "uv lock rewrote the kept lock"


# --- every rendered CI, bot and container file passes its validator ----------


def test_github_workflows_pass_actionlint_and_shellcheck(baked: bake.Baked) -> None:
    workflows = sorted(str(p) for p in (baked.path / ".github" / "workflows").glob("*.y*ml"))
    if not workflows:
        pytest.skip("no GitHub workflows in this combination")
    proc = bake.run_tool(
        baked.path,
        bake.tool("actionlint"),
        "-no-color",
        "-shellcheck",
        bake.tool("shellcheck"),
        *workflows,
    )
    assert proc.returncode == 0, bake.describe(proc)


SCHEMAS = {
    ".github/workflows/ci.yml": "vendor.github-workflows",
    ".github/dependabot.yml": "vendor.dependabot",
    ".gitlab-ci.yml": "vendor.gitlab-ci",
    "renovate.json": "vendor.renovate",
    "compose.yaml": "vendor.compose-spec",
}


@pytest.mark.parametrize("rel", sorted(SCHEMAS))
def test_file_matches_its_schema(baked: bake.Baked, rel: str) -> None:
    if not (baked.path / rel).exists():
        pytest.skip(f"no {rel} in this combination")
    proc = bake.run_tool(
        baked.path,
        bake.tool("check-jsonschema"),
        "--builtin-schema",
        SCHEMAS[rel],
        rel,
    )
    assert proc.returncode == 0, bake.describe(proc)


def test_dockerfile_passes_hadolint(baked: bake.Baked) -> None:
    if not (baked.path / "Dockerfile").exists():
        pytest.skip("no Dockerfile in this combination")
    proc = bake.run_tool(baked.path, bake.tool("hadolint"), "--no-color", "Dockerfile")
    assert proc.returncode == 0, bake.describe(proc)


# --- the Kubernetes manifests (use_docker) -------------------------------------

KUBERNETES = "deploy/kubernetes"
OVERLAY = f"{KUBERNETES}/overlays/production"
# The oldest Kubernetes the manifests are checked against, and the newest schemas shipped.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


def kustomizations(baked: bake.Baked) -> list[Path]:
    root = baked.path / KUBERNETES
    if not root.is_dir():
        pytest.skip("no deploy/kubernetes in this combination")
    return sorted(p.parent for p in root.rglob("kustomization.yaml"))


def test_kubernetes_manifests_match_their_schemas(baked: bake.Baked) -> None:
    for directory in kustomizations(baked):
        objects = manifests.build(directory)
        assert objects, directory
        problems = manifests.schema_problems(objects, KUBERNETES_VERSIONS)
        assert not problems, f"{directory}:\n" + "\n".join(problems)


def test_kubectl_kustomize_builds_what_the_tests_build(baked: bake.Baked) -> None:
    """The tests' small kustomize against the real one, where kubectl is installed."""
    directories = kustomizations(baked)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    for directory in directories:
        proc = bake.run_tool(baked.path, kubectl, "kustomize", str(directory))
        assert proc.returncode == 0, bake.describe(proc)
        theirs = [doc for doc in manifests.yaml.safe_load_all(proc.stdout) if doc]
        ours = manifests.build(directory)
        assert sorted(theirs, key=manifests.key) == sorted(ours, key=manifests.key), directory


def test_kubernetes_runs_the_image_as_compose_does(baked: bake.Baked) -> None:
    """The commands, port, user, settings and references of the overlay fit this project."""
    kustomizations(baked)
    objects = manifests.build(baked.path / OVERLAY)
    slug = baked.path.name
    by_kind: dict[str, dict[str, manifests.Manifest]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    api, worker = by_kind["Deployment"][f"{slug}-api"], by_kind["Deployment"][f"{slug}-worker"]
    (job,) = by_kind["Job"].values()
    (config,) = by_kind["ConfigMap"].values()
    settings = config["data"]
    assert "Secret" not in by_kind, "a Secret is created by hand, never kept in the repository"
    dockerfile = (baked.path / "Dockerfile").read_text(encoding="utf-8")
    server, uid = manifests.dockerfile_command(dockerfile)
    compose = manifests.yaml.safe_load((baked.path / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]

    # every pod: the project's image as non-root with a read-only root filesystem
    for obj in (api, worker, job):
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == uid
        assert pod["automountServiceAccountToken"] is False
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            assert manifests.image_name(container["image"]).endswith(f"/{slug}")
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"]
            assert "memory" in container["resources"]["limits"]
            refs = container["envFrom"]
            assert {"configMapRef": {"name": f"{slug}-config"}} in refs
            assert {"secretRef": {"name": f"{slug}-secrets"}} in refs
            for variable in container.get("env", []):
                assert variable["valueFrom"]["secretKeyRef"]["name"] == f"{slug}-secrets"
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]

    # the API: the image's server without its migration step, on the image's port
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["command"] == server
    port = int(server[server.index("--port") + 1])
    assert re.search(rf"^EXPOSE {port}$", dockerfile, re.M)
    metrics_port = int(settings["METRICS_PORT"])
    assert container["ports"] == [
        {"name": "http", "containerPort": port},
        {"name": "metrics", "containerPort": metrics_port},
    ]
    probes = {name: container[name]["httpGet"] for name in ("startupProbe", "livenessProbe")}
    probes["readinessProbe"] = container["readinessProbe"]["httpGet"]
    assert {name: probe["path"] for name, probe in probes.items()} == {
        "startupProbe": "/health/live",
        "livenessProbe": "/health/live",
        "readinessProbe": "/health/ready",
    }
    hosts = settings["ALLOWED_HOSTS"].split(",")
    for probe in probes.values():
        assert probe["port"] == "http"
        (header,) = probe["httpHeaders"]
        assert header["name"] == "Host" and header["value"] in hosts
    assert "replicas" not in api["spec"], "the autoscaler sets the API's replicas"
    required = {v["name"] for v in container["env"]}
    assert required == {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"}

    # the worker: compose's command; stopped after its running jobs had their time
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["command"] == services["worker"]["command"]
    assert {v["name"] for v in container["env"]} == required
    assert container["ports"] == [{"name": "metrics", "containerPort": metrics_port}]
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= float(settings["JOBS_SHUTDOWN_SECONDS"]) + 10

    # the migrations: compose's one-off command, once, before the API and the workers serve
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    for obj in (api, worker):
        (wait,) = obj["spec"]["template"]["spec"]["initContainers"]
        assert "alembic current --check-heads" in wait["command"][-1]

    # settings: names the project reads, production, the same ones in every environment
    example = (baked.path / ".env.example").read_text(encoding="utf-8")
    known = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", example, re.M))
    assert set(settings) <= known, set(settings) - known
    assert settings["ENVIRONMENT"] == "production"
    assert "*" not in settings["FORWARDED_ALLOW_IPS"]

    # metrics: on a port of their own in the API and worker pods, for Prometheus to scrape
    # the pods (annotations); listening on the pod's address; never behind the Service
    assert metrics_port != port
    assert settings["METRICS_HOST"] == "0.0.0.0"
    for obj in (api, worker):
        annotations = obj["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == settings["METRICS_PORT"]
        assert annotations["prometheus.io/path"] == "/metrics"
    assert "annotations" not in job["spec"]["template"].get("metadata", {})

    # the Service, Ingress, autoscaler and disruption budget reach the API's pods
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"] == labels
    (service,) = by_kind["Service"].values()
    assert service["spec"]["selector"] == labels
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]  # not `metrics`
    (ingress,) = by_kind["Ingress"].values()
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in hosts
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    (autoscaler,) = by_kind["HorizontalPodAutoscaler"].values()
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", api["metadata"]["name"])
    assert autoscaler["spec"]["minReplicas"] >= 2
    (budget,) = by_kind["PodDisruptionBudget"].values()
    assert budget["spec"]["selector"]["matchLabels"] == labels
    assert budget["spec"]["minAvailable"] < autoscaler["spec"]["minReplicas"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def probe(port: int, path: str, host: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def start(baked: bake.Baked, command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        cwd=baked.path,
        env=bake.tool_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: stop sh and what it started
    )


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    output = process.stdout.read() if process.stdout and not process.stdout.closed else ""
    process.wait()
    return output


def test_kubernetes_commands_migrate_and_serve(
    baked: bake.Baked, redis_env: dict[str, str]
) -> None:
    """The overlay's Job, init container and API container, run as the pods run them (the
    ConfigMap's settings, the Secret's keys, the image's working directory and PYTHONPATH):
    the API waits for the migrations, then starts in production and passes its probes."""
    kustomizations(baked)
    objects = manifests.build(baked.path / OVERLAY)
    slug = baked.path.name
    api = manifests.find(objects, "Deployment", f"{slug}-api")
    (job,) = [obj for obj in objects if obj["kind"] == "Job"]
    (config,) = [obj for obj in objects if obj["kind"] == "ConfigMap"]
    pod = api["spec"]["template"]["spec"]
    (wait,), (container,) = pod["initContainers"], pod["containers"]
    env = {
        **config["data"],
        # the Secret the docs have you create
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": f"sqlite+aiosqlite:///{baked.scratch / 'kubernetes.db'}",
        "REDIS_URL": redis_env.get("TEST_REDIS_URL", ""),
        "JOBS_QUEUE": f"kubernetes-{secrets.token_hex(8)}",
        "PYTHONPATH": "src",  # the image's
    }

    waiting = start(baked, wait["command"], env)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=8)  # no migration yet: it keeps waiting
    finally:
        stop(waiting)
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    proc = bake.run_tool(baked.path, *migrate["command"], env=env)
    assert proc.returncode == 0, bake.describe(proc)
    waiting = start(baked, wait["command"], env)
    try:
        assert waiting.wait(timeout=60) == 0
    finally:
        stop(waiting)

    command = list(container["command"])
    port = free_port()  # the pod's port, 8000, may be taken here
    metrics_port = free_port()  # and the metrics' (METRICS_PORT, 9100)
    env["METRICS_PORT"] = str(metrics_port)
    command[command.index("--port") + 1] = str(port)
    server = start(baked, command, env)
    try:
        headers = {
            p: container[p]["httpGet"]["httpHeaders"][0]["value"]
            for p in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        deadline = time.monotonic() + 60
        while True:  # until the server answers at all, as the startup probe waits
            assert server.poll() is None, "the API exited"
            try:
                probe(port, "/health/live", "127.0.0.1")
                break
            except OSError:
                assert time.monotonic() < deadline, "the API did not answer within 60 s"
                time.sleep(0.3)
        for name in ("startupProbe", "livenessProbe", "readinessProbe"):
            status, body = probe(port, container[name]["httpGet"]["path"], headers[name])
            assert status == 200, f"{name}: {status} {body}"
        # production: the Ingress host is served, an unknown one refused
        (ingress,) = [obj for obj in objects if obj["kind"] == "Ingress"]
        assert probe(port, "/health/live", ingress["spec"]["rules"][0]["host"])[0] == 200
        assert probe(port, "/health/live", "unknown.invalid")[0] == 400
        # the metrics: on their own port (the pod's address, METRICS_HOST), not the API's
        status, body = probe(metrics_port, "/metrics", "127.0.0.1")
        assert status == 200, body
        assert 'http_server_request_duration_seconds_count{method="GET",route="/health/live"' in (
            body
        )
        assert probe(port, "/metrics", "127.0.0.1")[0] == 404
    finally:
        output = stop(server)
        print(output)  # shown with a failure above
    # a graceful stop (uvicorn ends by re-raising the SIGTERM it handled)
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output, output


def test_pre_commit_passes_without_github(
    baked: bake.Baked, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every hook is local; pre-commit-hooks comes from PyPI into one shared PRE_COMMIT_HOME."""
    import yaml

    config = yaml.safe_load((baked.path / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    assert {repo["repo"] for repo in config["repos"]} == {"local"}, "a hook would be cloned"
    if not (baked.path / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=baked.path, check=True)
        subprocess.run(["git", "add", "-A"], cwd=baked.path, check=True)
    env = {
        "PRE_COMMIT_HOME": str(bake.PRE_COMMIT_HOME),
        "MYPY_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "mypy-cache"),
    }
    proc = bake.run(
        baked.path, "pre_commit", "run", "--all-files", "--show-diff-on-failure", env=env
    )
    assert proc.returncode == 0, bake.describe(proc)


# --- tools inside the project, with the shared venv's interpreter -------------


def test_ruff_check(baked: bake.Baked) -> None:
    bake.check(baked.path, "ruff", "check", ".")


def test_ruff_format(baked: bake.Baked) -> None:
    bake.check(baked.path, "ruff", "format", "--check", ".")


def test_mypy_strict(baked: bake.Baked, tmp_path_factory: pytest.TempPathFactory) -> None:
    # One cache per xdist worker (its basetemp): later bakes on the worker
    # reuse the third-party part; bakes never share a cache concurrently.
    cache = tmp_path_factory.getbasetemp() / "mypy-cache"
    env = {"MYPY_CACHE_DIR": str(cache)}
    bake.check(baked.path, "mypy", "--strict", "src", "tests", env=env)


def test_project_pytest_sqlite(baked: bake.Baked, redis_env: dict[str, str]) -> None:
    bake.check(baked.path, "pytest", "-q", "-p", "no:cacheprovider", env=redis_env)


def test_migrations_sqlite(baked: bake.Baked) -> None:
    url = f"sqlite+aiosqlite:///{baked.scratch / 'migrations.db'}"
    bake.migration_checks(baked.path, url)


def test_project_pytest_postgresql(
    baked: bake.Baked, postgres_urls: dict[str, str], redis_env: dict[str, str]
) -> None:
    env = {"TEST_DATABASE_URL": postgres_urls["tests"], **redis_env}
    bake.check(baked.path, "pytest", "-q", "-p", "no:cacheprovider", env=env)


def test_migrations_postgresql(baked: bake.Baked, postgres_urls: dict[str, str]) -> None:
    bake.migration_checks(baked.path, postgres_urls["migrate"])


# --- documentation -------------------------------------------------------------


ROUTE_TABLE = re.compile(r"<!-- route-table:start -->\n(.*?)<!-- route-table:end -->", re.S)


def test_auth_docs_route_table_is_the_apps(baked: bake.Baked) -> None:
    """docs/auth.md's route -> requirement table is the all-modules project's, as it is."""
    if baked.combo_id != "defaults":
        pytest.skip("the table in docs/auth.md is the one of the project with every module")
    code = (
        f"from {baked.package}.main import app\n"
        f"from {baked.package}.core.contract import markdown_table\n"
        "print(markdown_table(app), end='')\n"
    )
    proc = bake.run_tool(baked.path, sys.executable, "-c", code, env={"PYTHONPATH": "src"})
    assert proc.returncode == 0, bake.describe(proc)
    documented = ROUTE_TABLE.search((bake.ROOT / "docs" / "auth.md").read_text(encoding="utf-8"))
    assert documented, "docs/auth.md has no route-table markers"
    assert documented.group(1).strip() == proc.stdout.strip(), (
        "docs/auth.md's route table differs from the app's; paste this between its markers:\n"
        + proc.stdout
    )


def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    if not (bake.ROOT / "mkdocs.yml").is_file():
        pytest.skip("no mkdocs.yml yet")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=bake.ROOT,
        capture_output=True,
        text=True,
        timeout=bake.TOOL_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, bake.describe(proc)
