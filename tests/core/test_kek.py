"""The local KEK provider: where its key comes from and how that file is protected."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from core.crypto.kek import LocalKek, load_kek, load_local_kek_bytes
from core.crypto.provider import KekError
from core.logging import configure_logging
from core.settings import LogFormat, Settings


def test_key_from_settings_is_used_and_no_file_is_written(tmp_path: Path) -> None:
    kek = os.urandom(32)
    settings = Settings(data_dir=tmp_path, key_encryption_key=kek)
    assert load_local_kek_bytes(settings) == kek
    assert not (tmp_path / "kek.key").exists()


def test_generated_key_file_is_private_reused_and_warned_about(tmp_path: Path) -> None:
    """Without KEY_ENCRYPTION_KEY a 0600 key file is created once, reused, and each load
    logs a development-only warning."""
    stream = io.StringIO()
    settings = Settings(data_dir=tmp_path / "data", log_format=LogFormat.JSON)
    configure_logging(settings, stream=stream)
    first = load_local_kek_bytes(settings)
    second = load_local_kek_bytes(settings)
    path = tmp_path / "data" / "kek.key"
    assert first == second
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stream.getvalue().count("local_kek_file_in_use") == 2
    assert first.hex() not in stream.getvalue()


def test_group_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o640)
    with pytest.raises(KekError, match="chmod 600"):
        load_local_kek_bytes(Settings(data_dir=tmp_path))


async def test_kek_id_is_stable_per_key_and_reveals_nothing() -> None:
    key = os.urandom(32)
    assert LocalKek(key).kek_id == LocalKek(key).kek_id
    assert LocalKek(key).kek_id != LocalKek(os.urandom(32)).kek_id
    assert key.hex()[:16] not in LocalKek(key).kek_id
    assert key.hex() not in repr(LocalKek(key))


def test_load_kek_returns_the_local_provider(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert (
        load_kek(Settings(data_dir=tmp_path, key_encryption_key=key)).kek_id == LocalKek(key).kek_id
    )
