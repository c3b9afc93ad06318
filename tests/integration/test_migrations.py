"""The three migrators on a real PostgreSQL: same table, same result, safe to mix and repeat."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from rtmh.db import migrate

# every shipped migration; the issue fixes the first two
FILES = [f.version for f in migrate.load_files()]
assert FILES[:2] == ["001_initial_schema.sql", "002_sample_data.sql"]
N = len(FILES)


def rtmh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtmh.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def shell(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=120
    )


def applied_rows(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT version, checksum FROM schema_migrations ORDER BY version"
        ).fetchall()


def test_status_apply_and_rerun_across_migrators(
    empty_db_url: str, cli_env: dict[str, str], repo_root: Path
) -> None:
    env = {**cli_env, "POSTGRES_URL": empty_db_url}
    status = rtmh(env, "migrate", "--status")
    assert status.returncode == 0, status.stderr
    for name in FILES:
        assert name in status.stdout
    assert status.stdout.count("pending") == N

    first = rtmh(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert f"{N} migration(s) applied" in first.stdout
    rows = applied_rows(empty_db_url)
    assert [v for v, _ in rows] == FILES

    sh_status = shell(repo_root / "infra/migrate.sh", env, "--status")
    assert sh_status.returncode == 0, sh_status.stderr
    assert sh_status.stdout.count("applied") == N and "pending" not in sh_status.stdout

    again = shell(repo_root / "infra/migrate.sh", env)
    assert again.returncode == 0, again.stderr
    assert "nothing to apply" in again.stdout
    assert rtmh(env, "migrate").stdout.strip().endswith("nothing to apply")
    assert applied_rows(empty_db_url) == rows


def test_shell_migrator_first_then_python_agrees(
    empty_db_url: str, cli_env: dict[str, str], repo_root: Path
) -> None:
    env = {**cli_env, "POSTGRES_URL": empty_db_url}
    result = shell(repo_root / "infra/migrate.sh", env)
    assert result.returncode == 0, result.stderr
    assert "applied 001_initial_schema.sql" in result.stdout
    with psycopg.connect(empty_db_url) as conn:
        statuses = migrate.status(conn, migrate.load_files())
    assert [s.state for s in statuses] == ["applied"] * N
    # checksums written by sha256sum equal hashlib's
    assert [c for _, c in applied_rows(empty_db_url)] == [f.checksum for f in migrate.load_files()]


def test_concurrent_runs_never_double_apply(
    empty_db_url: str, cli_env: dict[str, str], repo_root: Path
) -> None:
    env = {**cli_env, "POSTGRES_URL": empty_db_url}
    results: list[subprocess.CompletedProcess[str]] = []

    def run(kind: int) -> None:
        if kind % 2:
            results.append(shell(repo_root / "infra/migrate.sh", env))
        else:
            results.append(rtmh(env, "migrate"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert [v for v, _ in applied_rows(empty_db_url)] == FILES
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM alert_rules").fetchone() == (4,)


def _copy_migrations(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    shutil.copytree(migrate.migrations_dir(), folder)
    return folder


def test_changed_applied_file_stops_every_migrator(
    empty_db_url: str, cli_env: dict[str, str], repo_root: Path, tmp_path: Path
) -> None:
    folder = _copy_migrations(tmp_path)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.apply_pending(conn, migrate.load_files(folder))
    (folder / "002_sample_data.sql").write_text("-- edited after the fact\nSELECT 1;\n")
    (folder / "900_new.sql").write_text("CREATE TABLE should_not_exist (id int);\n")
    with (
        psycopg.connect(empty_db_url, autocommit=True) as conn,
        pytest.raises(migrate.MigrationError, match=r"002_sample_data\.sql was changed"),
    ):
        migrate.apply_pending(conn, migrate.load_files(folder))
    env = {**cli_env, "POSTGRES_URL": empty_db_url, "MIGRATIONS_DIR": str(folder)}
    result = shell(repo_root / "infra/migrate.sh", env)
    assert result.returncode != 0
    assert "002_sample_data.sql was changed after it was applied" in result.stderr
    status = shell(repo_root / "infra/migrate.sh", env, "--status")
    assert "changed" in status.stdout
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('should_not_exist')").fetchone() == (None,)


@pytest.mark.parametrize("migrator", ["python", "shell"])
def test_failed_file_leaves_nothing_half_applied(
    migrator: str,
    empty_db_url: str,
    cli_env: dict[str, str],
    repo_root: Path,
    tmp_path: Path,
) -> None:
    folder = _copy_migrations(tmp_path)
    (folder / "900_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nINSERT INTO half_done VALUES (1);\n"
        "SELECT * FROM no_such_table;\n"
    )
    if migrator == "python":
        with (
            psycopg.connect(empty_db_url, autocommit=True) as conn,
            pytest.raises(migrate.MigrationError, match=r"900_broken\.sql failed"),
        ):
            migrate.apply_pending(conn, migrate.load_files(folder))
    else:
        env = {**cli_env, "POSTGRES_URL": empty_db_url, "MIGRATIONS_DIR": str(folder)}
        result = shell(repo_root / "infra/migrate.sh", env)
        assert result.returncode != 0
        assert "900_broken.sql failed and was rolled back" in result.stderr
        assert "no_such_table" in result.stderr
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert sorted(versions) == FILES


def _fake_docker(tmp_path: Path, url: str) -> dict[str, str]:
    """A stand-in `docker` that checks the exec arguments and runs the psql it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    script = bin_dir / "docker"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {log}\n'
        '[ "$1" = exec ] && [ "$2" = -i ] || { echo "unexpected: $*" >&2; exit 99; }\n'
        '[ "$3" = "$EXPECT_CONTAINER" ] || { echo "Error: No such container: $3" >&2; exit 1; }\n'
        '[ "$4" = psql ] && [ "$5" = -U ] && [ "$7" = -d ] || exit 98\n'
        'user="$6"; db="$8"; shift 8\n'
        f'exec psql "{url.rsplit("/", 1)[0]}/$db?user=$user" "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "DOCKER_LOG": str(log)}


def test_migrate_docker_uses_container_user_and_db(
    empty_db_url: str, cli_env: dict[str, str], repo_root: Path, tmp_path: Path
) -> None:
    db = empty_db_url.rsplit("/", 1)[1]
    fake = _fake_docker(tmp_path, empty_db_url)
    env = {
        **cli_env,
        **fake,
        "EXPECT_CONTAINER": "my_pg",
        "POSTGRES_CONTAINER": "my_pg",
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": db,
    }
    script = repo_root / "infra/migrate-docker.sh"
    assert shell(script, env, "--test").returncode == 0
    status = shell(script, env, "--status")
    assert status.stdout.count("pending") == N
    applied = shell(script, env)
    assert applied.returncode == 0, applied.stderr
    assert "applied 002_sample_data.sql" in applied.stdout
    assert (
        shell(script, env).stdout.strip().endswith("nothing to apply: the database is up to date")
    )
    assert f"exec -i my_pg psql -U postgres -d {db}" in Path(fake["DOCKER_LOG"]).read_text()
    # the Python migrator sees the same history
    assert [v for v, _ in applied_rows(empty_db_url)] == FILES
    wrong = shell(script, {**env, "POSTGRES_CONTAINER": "nope"}, "--test")
    assert wrong.returncode != 0
    assert "container nope" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1


def test_migrate_docker_defaults(cli_env: dict[str, str], repo_root: Path, tmp_path: Path) -> None:
    fake = _fake_docker(tmp_path, "postgresql://127.0.0.1:1/x")
    env = {**cli_env, **fake, "EXPECT_CONTAINER": "rtmh_postgres"}
    result = shell(repo_root / "infra/migrate-docker.sh", env, "--test")
    assert result.returncode != 0  # the stand-in psql cannot connect, but the call was made
    assert (
        "exec -i rtmh_postgres psql -U rtuser -d rt_monitoring"
        in Path(fake["DOCKER_LOG"]).read_text()
    )
