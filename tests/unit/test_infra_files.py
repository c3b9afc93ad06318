"""Docker cannot run here: check the compose file and Dockerfile say what the README promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "infra/docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_postgres_service_matches_the_readme() -> None:
    pg = _compose()["services"]["postgres"]
    assert pg["container_name"] == "rtmh_postgres"
    assert pg["environment"] == {
        "POSTGRES_DB": "rt_monitoring",
        "POSTGRES_USER": "rtuser",
        "POSTGRES_PASSWORD": "rtpass",
    }
    assert "5432:5432" in pg["ports"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_kafka_is_single_node_kraft() -> None:
    kafka = _compose()["services"]["kafka"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert "healthcheck" in kafka


def test_rtmh_services_run_after_migration() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["rtmh", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "notifier"):
        svc = services[name]
        assert svc["command"] == ["rtmh", name]
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        env = svc["environment"]
        assert env["POSTGRES_URL"] == "postgres://rtuser:rtpass@postgres:5432/rt_monitoring"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert services["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_dockerfile_builds_the_package() -> None:
    text = (ROOT / "infra/Dockerfile").read_text()
    assert text.startswith("# RTMH image")
    assert "pip install ." in text
    assert "postgresql-client" in text  # infra/migrate.sh works inside the image too
    assert "USER rtmh" in text
