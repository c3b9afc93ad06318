"""`Settings.to_env()` gives a child process the same settings: read back from its environment
(as `rtmh worker` does) or passed as keyword arguments, they equal the original.

No servers: the environment is patched for the length of each read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from unittest.mock import patch

from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field, SecretStr

from rtmh.config import ENV_NAMES, Settings

# what an environment variable can hold: no NUL, no lone surrogates
_ENV_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def _read_back(env: Mapping[str, str], model: type[Settings] = Settings) -> Settings:
    """Settings as a child reads them: these variables over an environment without RTMH's."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RTMH_", "POSTGRES_", "KAFKA_")) and k.lower() not in ENV_NAMES
    }
    with patch.dict(os.environ, {**base, **env}, clear=True):
        return model()


@st.composite
def _settings(draw: st.DrawFn) -> Settings:
    slide = draw(st.integers(1, 600))
    segment = st.text(_ENV_TEXT.filter(lambda c: c != "/"), min_size=1, max_size=12)
    parts = draw(st.lists(segment, min_size=1, max_size=4))
    data_dir = Path(*parts)
    if draw(st.booleans()):
        data_dir = Path("/") / data_dir
    values = {
        "postgres_url": draw(
            st.none()
            | st.sampled_from(
                [
                    "postgresql://rtuser:rtpass@127.0.0.1:5432/rt_monitoring",
                    "postgres://u:p%40ss@db.example.com/x?sslmode=require",
                    "postgresql:///rt?host=/run/postgresql",
                ]
            )
        ),
        "kafka_bootstrap_servers": draw(
            st.none() | st.sampled_from(["127.0.0.1:9092", "a:1,b.example.com:65535"])
        ),
        "topic_prefix": draw(st.text("abcXYZ019._-", min_size=1, max_size=10)),
        "data_dir": data_dir,
        "allowed_targets": draw(st.sampled_from(["", "127.0.0.0/8", "10.0.0.0/8,hooks.internal"])),
        "api_port": draw(st.integers(0, 65_535)),
        "group_id": draw(st.text(_ENV_TEXT, max_size=20)),
        "partitions": draw(st.integers(1, 1024)),
        "batch_max_messages": draw(st.integers(1, 1_000_000)),
        "batch_max_ms": draw(st.integers(1, 60_000)),
        "max_message_bytes": draw(st.integers(1024, 2**31)),
        "retention_days": draw(st.integers(1, 3650)),
        "window_size_s": slide * draw(st.integers(1, 100)),
        "window_slide_s": slide,
        "metrics_port": draw(st.integers(0, 65_535)),
        "session_timeout_ms": draw(st.integers(1000, 600_000)),
        "log_level": draw(st.sampled_from(["debug", "INFO", "Warning", "ERROR"])),
    }
    # a setting added later keeps its default here, and still takes part in the round trip
    return Settings(**{k: v for k, v in values.items() if k in Settings.model_fields})


@given(_settings())
def test_a_child_reads_back_the_same_settings_from_its_environment(settings: Settings) -> None:
    env = settings.to_env()
    assert set(env) <= set(ENV_NAMES.values())
    assert _read_back(env) == settings
    assert Settings(**env) == settings


def test_every_setting_is_written_under_its_environment_name() -> None:
    settings = Settings(
        postgres_url="postgresql://u:p@h/db",
        kafka_bootstrap_servers="h:9092",
        data_dir=Path("/srv/rtmh data"),
        batch_max_ms=50,
    )
    env = settings.to_env()
    assert env["RTMH_BATCH_MAX_MS"] == "50"
    assert env["RTMH_DATA_DIR"] == "/srv/rtmh data"
    assert env["POSTGRES_URL"] == "postgresql://u:p@h/db"
    # derived from the model, not a hand-kept list: every set setting is there
    assert len(env) == len(Settings.model_fields)


def test_an_unset_setting_is_left_out_and_reads_back_unset() -> None:
    settings = Settings(postgres_url=None, kafka_bootstrap_servers=None)
    env = settings.to_env()
    assert "POSTGRES_URL" not in env and "KAFKA_BOOTSTRAP_SERVERS" not in env
    assert _read_back(env) == settings


class _Wider(Settings):
    """Types Settings may grow: booleans, secrets, optional numbers, lists, a default-less
    name (read as DRY_RUN)."""

    dry_run: bool = False
    webhook_secret: SecretStr | None = None
    retry_limit: int | None = None
    ratio: float = 0.5
    channels: list[str] = Field(default_factory=list)


def test_booleans_secrets_optionals_and_lists_round_trip() -> None:
    wider = _Wider(
        dry_run=True,
        webhook_secret=SecretStr("s3cret=="),
        retry_limit=None,
        ratio=0.1,
        channels=["ops", "on call"],
    )
    env = wider.to_env()
    assert env["DRY_RUN"] == "true"
    assert env["WEBHOOK_SECRET"] == "s3cret==", "a child needs the secret itself"
    assert "RETRY_LIMIT" not in env
    assert env["CHANNELS"] == '["ops", "on call"]'
    assert _read_back(env, _Wider) == wider
    assert _read_back(_Wider(dry_run=False, retry_limit=3).to_env(), _Wider).retry_limit == 3
