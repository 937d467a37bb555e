"""The attack suite runs against the same live stack as the end-to-end tests: a control
plane, a real proxy app on a real port, and the fake Anthropic upstream."""

from tests.e2e.conftest import stack  # noqa: F401  (the fixture, shared)
