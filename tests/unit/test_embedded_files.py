"""What RTMH creates on disk for the embedded servers, checked without starting one (issue 19):
its own files private, a server home refused rather than repaired, hard links only to files
already fit to share. The servers themselves: tests/integration/test_private_dirs.py."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from rtmh.embedded import serverhome
from rtmh.embedded.files import open_private_log, private_dir
from rtmh.embedded.postgres import SYSTEM_USER
from rtmh.embedded.serverhome import ServerHome
from tests.modes import ancestor_modes, is_root, mode, modes_now

as_root = pytest.mark.skipif(not is_root(), reason="the server account is used only as root")


# --- the server home --------------------------------------------------------------------------
@as_root
def test_binaries_are_hard_links_only_when_already_readable(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    secret = tmp_path / "secret"
    shared.write_text("public")
    shared.chmod(0o644)
    secret.write_text("private")
    secret.chmod(0o600)
    serverhome._link_or_copy(shared, tmp_path / "shared.out")
    serverhome._link_or_copy(secret, tmp_path / "secret.out")
    assert (tmp_path / "shared.out").stat().st_ino == shared.stat().st_ino
    assert (tmp_path / "secret.out").stat().st_ino != secret.stat().st_ino
    assert mode(tmp_path / "secret.out") == 0o644
    assert mode(secret) == 0o600, "the source keeps its mode"


@as_root
def test_a_home_others_can_write_is_refused(reachable_home: Path) -> None:
    reachable_home.mkdir(mode=0o777)
    reachable_home.chmod(0o777)
    home = ServerHome(reachable_home, pwd.getpwnam(SYSTEM_USER))
    with pytest.raises(serverhome.ServerHomeError, match="writable by root alone"):
        home.prepare()
    assert mode(reachable_home) == 0o777, "refused, not repaired"


@as_root
def test_an_unreachable_home_is_one_line(tmp_path: Path) -> None:
    home = ServerHome(tmp_path / "home", pwd.getpwnam(SYSTEM_USER))
    before = ancestor_modes(tmp_path)
    with pytest.raises(serverhome.ServerHomeError, match="cannot enter") as err:
        home.prepare()
    assert "\n" not in str(err.value)
    assert modes_now(before) == before


# --- files RTMH writes ------------------------------------------------------------------------
def test_private_dir_and_log_modes_whatever_the_umask(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    old_umask = os.umask(0)
    try:
        made = private_dir(existing / "a" / "b")
        with open_private_log(made / "server.log") as log:
            log.write(b"hmac_secret=...\n")
    finally:
        os.umask(old_umask)
    assert mode(existing) == 0o755, "an existing directory keeps its mode"
    assert mode(existing / "a") == 0o700 and mode(made) == 0o700
    assert mode(made / "server.log") == 0o600
