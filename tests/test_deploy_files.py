"""The deployment files agree with each other and with the configuration (no Docker needed)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bulkproc.config import VARIABLES

REPO = Path(__file__).resolve().parent.parent
COMPOSE_ONLY = {"SIMULATOR_PORT", "SIMULATOR_DELAY", "PUBLISH_PORT", "POSTGRES_PASSWORD"}
# Beyond the contract's table (config.py): tuning that rarely needs touching, left out of .env.example.
TUNING = {"BULKPROC_BATCH_DEADLINE", "BULKPROC_WAKE_TIMEOUT", "BULKPROC_BACKOFF_SECONDS", "BULKPROC_RATE_LIMIT_PAUSE"}


def _render() -> dict:
    return yaml.safe_load((REPO / "render.yaml").read_text())


def _example() -> dict[str, str]:
    """Variable -> default text, from the commented `# NAME=value` lines of .env.example."""
    lines = (REPO / ".env.example").read_text().splitlines()
    return dict(re.fullmatch(r"# ([A-Z_]+)=(.*)", line).groups() for line in lines
                if re.fullmatch(r"# [A-Z_]+=.*", line))


def test_one_python_version_everywhere():
    pinned = (REPO / ".python-version").read_text().strip()
    image = re.search(r"^FROM python:(\S+)", (REPO / "Dockerfile").read_text(), re.M).group(1)
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
    assert procfile == f"web: {web['startCommand']}"
    assert env["DATABASE_URL"]["fromDatabase"] == {"name": blueprint["databases"][0]["name"],
                                                   "property": "connectionString"}
    assert env["BULKPROC_API_TOKEN"] == {"key": "BULKPROC_API_TOKEN", "sync": False}
    assert int(env["WEB_CONCURRENCY"]["value"]) >= 1


def test_env_example_lists_every_variable_with_the_code_s_default():
    example = _example()

    assert set(VARIABLES) - TUNING <= example.keys()
    for variable, text in example.items():
        if variable in VARIABLES and text:
            assert text == VARIABLES[variable][0], variable


def test_compose_passes_on_every_setting_of_env_example():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    passed = {entry.split("=")[0] for entry in compose["services"]["web"]["environment"]}

    assert set(_example()) - COMPOSE_ONLY - {"PORT"} <= passed
    assert compose["services"]["simulator"]["profiles"] == ["local"]
    assert compose["services"]["web"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert "pg_isready" in compose["services"]["db"]["healthcheck"]["test"]
