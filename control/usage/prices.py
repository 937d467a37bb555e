"""The price table: turns a call's usage into cost, at read time.

Prices are data (control/usage/prices.json, or the file METRUX_PRICES_FILE names), never
code: a table carries its version, and every cost computed says which version priced it.
A model is priced by its longest matching name prefix, so `claude-sonnet-4-5-20250929`
takes the `claude-sonnet-4-5` row and an unknown `claude-sonnet-…` the family row; a model
no row matches is reported unpriced rather than guessed.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any

MILLION = Decimal(1_000_000)
_KINDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


class PriceTableError(ValueError):
    """The price file is missing a field or holds a value that is not a price."""


@dataclasses.dataclass(frozen=True, slots=True)
class ModelPrice:
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal


@dataclasses.dataclass(frozen=True, slots=True)
class Cost:
    total: Decimal
    by_kind: dict[str, Decimal]
    priced_as: str  # the table row that matched


@dataclasses.dataclass(frozen=True, slots=True)
class PriceTable:
    version: str
    currency: str
    models: dict[str, ModelPrice]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PriceTable:
        try:
            models = {
                name: ModelPrice(**{kind: Decimal(str(row[kind])) for kind in _KINDS})
                for name, row in data["models"].items()
            }
            return cls(str(data["version"]), str(data.get("currency", "USD")), models)
        except (KeyError, TypeError, ArithmeticError) as exc:
            raise PriceTableError(f"bad price table: {type(exc).__name__}: {exc}") from None

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The table at `path`, or the one shipped with the service."""
        if path is None:
            text = (files("control.usage") / "prices.json").read_text()
        else:
            text = path.read_text()
        return cls.from_json(json.loads(text))

    def price_for(self, model: str | None) -> tuple[str, ModelPrice] | None:
        if not model:
            return None
        matches = [name for name in self.models if model.startswith(name)]
        if not matches:
            return None
        name = max(matches, key=len)
        return name, self.models[name]

    def cost(self, model: str | None, usage: dict[str, Any] | None) -> Cost | None:
        """The cost of one call from Anthropic's usage object as it came, or None if the
        model has no price or there is no usage."""
        match = self.price_for(model)
        if match is None or not usage:
            return None
        name, price = match
        tokens = split_usage(usage)
        by_kind = {
            kind: tokens[kind] * getattr(price, kind) / MILLION for kind in _KINDS if tokens[kind]
        }
        return Cost(sum(by_kind.values(), Decimal(0)), by_kind, name)


def split_usage(usage: dict[str, Any]) -> dict[str, int]:
    """Token counts by price kind. Cache writes are split by TTL when Anthropic says how
    (`cache_creation`); without the split they are priced as 5-minute writes."""

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    split = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else None
    if split is not None:
        write_5m = count(split.get("ephemeral_5m_input_tokens"))
        write_1h = count(split.get("ephemeral_1h_input_tokens"))
    else:
        write_5m, write_1h = count(usage.get("cache_creation_input_tokens")), 0
    return {
        "input": count(usage.get("input_tokens")),
        "output": count(usage.get("output_tokens")),
        "cache_write_5m": write_5m,
        "cache_write_1h": write_1h,
        "cache_read": count(usage.get("cache_read_input_tokens")),
    }
