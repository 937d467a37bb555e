"""Property-based tests (hypothesis, derandomised so CI runs are repeatable): the SSE
parser against any chunking, and redaction against any surrounding text and encoding."""

from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from core.redaction import redact_text, redact_value
from proxy.meter.sse import SseEvent, SseParser

settings.register_profile("ci", derandomize=True, max_examples=300, deadline=None)
settings.load_profile("ci")

_KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
anthropic_keys = st.text(_KEY_ALPHABET, min_size=93, max_size=93).map(
    lambda body: f"sk-ant-api03-{body}AA"
)
# Text around a secret: anything printable, including quotes, backslashes and unicode.
surroundings = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
field_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n"), max_size=40
)
event_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20)


@given(
    events=st.lists(st.tuples(event_names, field_text), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
    crlf=st.booleans(),
)
def test_sse_parser_yields_each_event_once_whatever_the_chunking(
    events: list[tuple[str, str]], cuts: list[int], crlf: bool
) -> None:
    newline = "\r\n" if crlf else "\n"
    wire = "".join(
        f"event: {name}{newline}data: {data}{newline}{newline}" for name, data in events
    ).encode()
    points = sorted({min(cut, len(wire)) for cut in cuts})
    chunks = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    parser = SseParser()
    parsed = [event for chunk in chunks for event in parser.feed(chunk)]
    assert parsed == [SseEvent(name, data) for name, data in events]
    assert parser.pending == b""


@given(key=anthropic_keys, before=surroundings, after=surroundings)
def test_redaction_removes_a_key_from_any_context(key: str, before: str, after: str) -> None:
    for text in (
        before + key + after,
        json.dumps({"note": before, "x-api-key": key, "tail": after}),
        json.dumps(json.dumps({"h": before + key + after})),  # JSON inside JSON
        before + quote(key, safe="") + after,  # percent-encoded
        before + "".join(f"\\u{ord(c):04x}" for c in key) + after,  # \u-escaped
    ):
        out = redact_text(text)
        assert key not in out
        assert key[-16:] not in out  # not even the tail a truncation would keep
        assert redact_text(out) == out  # redacting twice changes nothing more


@given(key=anthropic_keys, cut=st.integers(min_value=24, max_value=107))
def test_redaction_catches_truncated_keys(key: str, cut: int) -> None:
    assert key[:cut] not in redact_text(f"error near {key[:cut]}")


@given(text=st.text("0123456789 .,:;()[]{}#%+*/=<>!?", max_size=200))
def test_redaction_leaves_ordinary_text_alone(text: str) -> None:
    assert redact_text(text) == text


@given(
    key=anthropic_keys,
    shape=st.recursive(
        st.none() | st.integers() | field_text,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(field_text, inner, max_size=3),
        max_leaves=10,
    ),
)
def test_redact_value_reaches_keys_nested_anywhere(key: str, shape: object) -> None:
    nested = {"outer": [shape, {"deep": {"value": f"key={key}"}}], "plain": key}
    assert key not in json.dumps(redact_value(nested))
