"""The deployment files agree with each other and with the configuration (no Docker needed)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bulkproc.config import VARIABLES

REPO = Path(__file__).resolve().parent.parent
COMPOSE_ONLY = {"SIMULATOR_PORT", "SIMULATOR_DELAY", "PUBLISH_PORT", "POSTGRES_PASSWORD"}
# Fixed inside the compose stack: nginx looks for gunicorn on 8000.
NOT_PASSED = {"PORT"}


def _render() -> dict:
    return yaml.safe_load((REPO / "render.yaml").read_text())


def _example() -> dict[str, str]:
    """Variable -> default text, from the commented `# NAME=value` lines of .env.example."""
    lines = (REPO / ".env.example").read_text().splitlines()
    return dict(re.fullmatch(r"# ([A-Z_]+)=(.*)", line).groups() for line in lines
                if re.fullmatch(r"# [A-Z_]+=.*", line))


def test_one_python_version_everywhere():
    pinned = (REPO / ".python-version").read_text().strip()
    image = re.search(r"^FROM python:(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE).group(1)
    render = {v["key"]: v.get("value") for v in _render()["services"][0]["envVars"]}["PYTHON_VERSION"]

    assert re.fullmatch(r"3\.\d+", pinned)
    assert image.startswith(pinned + "-") or image.startswith(pinned + ".")
    assert render.startswith(pinned + ".") and re.fullmatch(r"3\.\d+\.\d+", render)  # Render needs a full version


def test_render_blueprint_runs_what_the_procfile_runs_against_its_own_database():
    blueprint = _render()
    web = blueprint["services"][0]
    env = {v["key"]: v for v in web["envVars"]}
    procfile = (REPO / "Procfile").read_text().strip()

    assert (web["type"], web["runtime"], web["healthCheckPath"]) == ("web", "python", "/readyz")
    assert web["buildCommand"] == "pip install -r requirements.txt"
    assert procfile == f"web: {web['startCommand']}" == "web: python -m bulkproc.serve"
    assert env["DATABASE_URL"]["fromDatabase"] == {"name": blueprint["databases"][0]["name"],
                                                   "property": "connectionString"}
    assert env["BULKPROC_API_TOKEN"] == {"key": "BULKPROC_API_TOKEN", "sync": False}
    # /metrics would be public on Render: a generated token (Render's 256-bit base64) closes it.
    assert env["BULKPROC_METRICS_TOKEN"] == {"key": "BULKPROC_METRICS_TOKEN", "generateValue": True}
    assert int(env["WEB_CONCURRENCY"]["value"]) >= 1


def test_env_example_lists_every_variable_of_the_config_table_with_its_default():
    example = _example()

    assert example.keys() - COMPOSE_ONLY == set(VARIABLES)
    for variable, text in example.items():
        if variable in VARIABLES:
            assert text == (VARIABLES[variable][0] or ""), variable


def test_compose_passes_on_every_variable_of_the_config_table():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    passed = {entry.split("=")[0] for entry in compose["services"]["web"]["environment"]}

    assert passed == set(VARIABLES) - NOT_PASSED
    assert compose["services"]["simulator"]["profiles"] == ["local"]
    assert compose["services"]["web"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert "pg_isready" in compose["services"]["db"]["healthcheck"]["test"]


def test_the_public_port_goes_to_the_buffering_proxy_and_stops_wait_for_gunicorn():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    graceful = re.search(r"^graceful_timeout = (\d+)", (REPO / "gunicorn.conf.py").read_text(), re.MULTILINE).group(1)

    assert "ports" not in services["web"] and services["web"]["expose"] == ["8000"]
    assert services["proxy"]["ports"] == ["127.0.0.1:${PUBLISH_PORT:-8000}:8080"]
    assert services["proxy"]["build"]["context"] == "deploy/proxy"
    assert "proxy_pass $bulkproc_upstream" in (REPO / "deploy" / "proxy" / "nginx.conf").read_text()
    assert int(services["web"]["stop_grace_period"].removesuffix("s")) > int(graceful)


def test_no_anonymous_volume_is_left_behind():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    named = set(compose["volumes"])

    assert not re.search(r"^VOLUME", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in named, volume
