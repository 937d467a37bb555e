"""Locked key memory, and the key written only into buffers that can be zeroed."""

from __future__ import annotations

import secrets

from core.wipe import wipe_bytes
from proxy.keyring import SessionKey
from proxy.secret_memory import LockedBuffer


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


def test_wipe_bytes_zeroes_in_place() -> None:
    block = b"x-api-key: " + _key() + b"\r\n"
    wipe_bytes(block)
    assert block == bytes(len(block))


def test_clearing_a_key_wipes_its_locked_page() -> None:
    raw = _key()
    memory = LockedBuffer(len(raw))
    view = memory.view()
    view[:] = raw
    key = SessionKey()
    key.arm(view, memory)
    head = bytearray(key.size)
    key.copy_into(memoryview(head))
    assert head == raw  # copied from the page into a buffer its user zeroes
    key.clear()
    assert not key.armed
    assert bytes(view) == bytes(len(raw))  # our view keeps the page mapped: it reads zeros
