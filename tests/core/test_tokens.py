"""Tokens: prefixed, 256-bit, stored only as hashes, checked in constant time."""

from __future__ import annotations

import base64

import pytest

from core.tokens import TokenKind, hash_token, new_token, token_kind, tokens_match


@pytest.mark.parametrize("kind", list(TokenKind))
def test_token_has_its_prefix_and_256_bits(kind: TokenKind) -> None:
    token = new_token(kind)
    prefix, _, body = token.partition("_")
    assert prefix == kind.value
    assert len(base64.urlsafe_b64decode(body + "=")) == 32
    assert token_kind(token) is kind


def test_tokens_do_not_repeat() -> None:
    assert len({new_token(TokenKind.SESSION) for _ in range(1000)}) == 1000


def test_hash_is_sha256_hex_and_matches_only_its_token() -> None:
    token = new_token(TokenKind.MEMBER)
    stored = hash_token(token)
    assert len(stored) == 64
    assert token not in stored
    assert tokens_match(token, stored)
    assert not tokens_match(new_token(TokenKind.MEMBER), stored)


@pytest.mark.parametrize(
    "text", ["", "mxk_", "mxk_short", "sk-ant-api03-x", "mxz" + "_" + "a" * 43, "Bearer mxk_x"]
)
def test_strings_that_are_not_our_tokens_have_no_kind(text: str) -> None:
    assert token_kind(text) is None
