"""The transcript chain's links: their definition, byte for byte."""

from __future__ import annotations

import hashlib

from core.transcript import EMPTY_SHA256, ChainHead, genesis, next_link


def test_genesis_is_bound_to_the_session() -> None:
    assert genesis("s1") == hashlib.sha256(b"metrux-transcript-v1:s1").hexdigest()
    assert genesis("s1") != genesis("s2")
    assert ChainHead.start("s1") == ChainHead(0, genesis("s1"))


def test_a_link_hashes_the_previous_link_both_digests_and_the_record_id() -> None:
    previous = genesis("s1")
    request = hashlib.sha256(b'{"model":"m"}').hexdigest()
    response = hashlib.sha256(b"event: message_stop\n\n").hexdigest()
    expected = hashlib.sha256(
        bytes.fromhex(previous) + bytes.fromhex(request) + bytes.fromhex(response) + b"rec-1"
    ).hexdigest()
    assert next_link(previous, request, response, "rec-1") == expected
    # Every input matters.
    assert next_link(previous, request, response, "rec-2") != expected
    assert next_link(previous, response, request, "rec-1") != expected
    assert next_link(genesis("s2"), request, response, "rec-1") != expected


def test_a_missing_digest_stands_for_no_bytes() -> None:
    previous = genesis("s")
    assert next_link(previous, "", None, "r") == next_link(
        previous, EMPTY_SHA256, EMPTY_SHA256, "r"
    )
