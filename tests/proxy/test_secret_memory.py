"""Locked key memory and in-place wiping of the copies CPython makes."""

from __future__ import annotations

import secrets

from core.wipe import wipe_bytes
from proxy.keyring import SessionKey
from proxy.secret_memory import LockedBuffer, wipe_str


def _key() -> bytes:
    return b"sk-ant-api03-" + secrets.token_urlsafe(70)[:93].encode() + b"AA"


def test_locked_buffer_holds_exactly_its_size_and_is_zeroed_on_close() -> None:
    key = _key()
    memory = LockedBuffer(len(key))
    view = memory.view()
    assert len(view) == len(key)
    view[:] = key
    assert bytes(view) == key
    assert "sk-ant" not in repr(memory)
    view.release()
    memory.close()
    memory.close()  # idempotent


def test_wipe_str_zeroes_the_characters_only_when_they_match() -> None:
    buffer = bytearray(_key())
    text = str(buffer, "ascii")
    other = bytearray(b"x" * len(buffer))
    assert not wipe_str(text, other)  # a mismatch is left alone
    assert text == buffer.decode()
    assert wipe_str(text, buffer)
    assert text == "\0" * len(buffer)


def test_wipe_bytes_zeroes_in_place() -> None:
    block = b"x-api-key: " + _key() + b"\r\n"
    wipe_bytes(block)
    assert block == bytes(len(block))


def test_clearing_a_key_wipes_its_header_string_and_locked_page() -> None:
    raw = _key()
    memory = LockedBuffer(len(raw))
    view = memory.view()
    view[:] = raw
    key = SessionKey()
    key.arm(view, memory)
    header = key.header_value()
    assert header.encode() == raw
    assert key.header_value() is header  # one str per armed key
    key.clear()
    assert header == "\0" * len(raw)
    assert not key.armed
