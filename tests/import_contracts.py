"""A custom import-linter contract (pyproject.toml registers it): SQL only in stores.

import-linter sees `sqlalchemy` as one external package, so the built-in contracts cannot
tell a statement builder (`select`, `text`) from the types a service passes around
(`AsyncConnection`, `IntegrityError`). This contract reads each import's line instead.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


class SqlOnlyIn(Contract):
    """Modules under `source` outside `allowed` (fnmatch patterns) may import from the
    external package only the submodules in `harmless` (types, exceptions)."""

    source = fields.StringField()
    package = fields.StringField()
    allowed = fields.ListField(subfield=fields.StringField())
    harmless = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        source, package = str(self.source), str(self.package)
        allowed: list[str] = list(self.allowed)  # type: ignore[call-overload]
        harmless = {f"from {name} import" for name in self.harmless}  # type: ignore[attr-defined]
        harmless |= {f"import {name}" for name in self.harmless}  # type: ignore[attr-defined]
        illegal: list[dict[str, Any]] = []
        for module in sorted(graph.find_descendants(source) | {source}):
            if any(fnmatch.fnmatchcase(module, pattern) for pattern in allowed):
                continue
            for detail in graph.get_import_details(importer=module, imported=package):
                line = " ".join(detail["line_contents"].split())
                if not any(line.startswith(prefix + " ") for prefix in harmless):
                    illegal.append({"module": module, **detail})
        return ContractCheck(kept=not illegal, metadata={"illegal": illegal})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for found in check.metadata["illegal"]:
            output.print_error(
                f"{found['module']}:{found['line_number']}: {found['line_contents'].strip()}",
                bold=False,
            )
            output.new_line()
