"""The lock files install what pyproject.toml asks for, with hashes; the image and both
README commands install from them; bandit catches what it is there to catch."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
BANDIT = str(Path(sys.executable).with_name("bandit"))


def _locked(name: str) -> dict[str, str]:
    """Package name → pinned version; every pin must carry at least one sha256 hash."""
    text = (ROOT / "requirements" / f"{name}.lock").read_text()
    pins = {}
    for block in re.split(r"\n(?=\S)", text):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if match is None:
            continue
        assert "--hash=sha256:" in block, f"{match[1]} is locked without a hash"
        pins[_canonical(match[1])] = match[2]
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extras: tuple[str, ...]) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra in extras:
        names += project["optional-dependencies"][extra]
    return {_canonical(Requirement(n).name) for n in names}


def test_every_declared_dependency_is_locked_with_hashes() -> None:
    runtime, test = _locked("runtime"), _locked("test")
    assert _declared(("aws", "sentry")) <= set(runtime)
    assert _declared(("aws", "sentry", "test")) <= set(test)
    # The service runs the same versions it is tested with.
    assert {name: test[name] for name in runtime} == runtime


def test_installs_go_through_the_locks() -> None:
    lib = (ROOT / "scripts" / "lib.sh").read_text()
    assert '--require-hashes --no-deps \\\n      -r "requirements/$lock.lock"' in lib
    assert "ensure_venv runtime" in (ROOT / "scripts" / "run").read_text()
    assert "ensure_venv test" in (ROOT / "scripts" / "test").read_text()
    assert "scripts/audit" in (ROOT / "scripts" / "test").read_text()
    docker = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes --no-deps -r requirements/runtime.lock" in docker


def test_bandit_gate_fails_on_a_high_severity_finding(tmp_path: Path) -> None:
    """A positive control: the flags scripts/audit uses do catch a planted problem."""
    planted = tmp_path / "planted.py"
    planted.write_text("import subprocess\n\ndef run(cmd):\n    subprocess.call(cmd, shell=True)\n")
    flags = ["--quiet", "--severity-level", "high", "--confidence-level", "high"]
    caught = subprocess.run([BANDIT, *flags, str(planted)], capture_output=True, check=False)
    assert caught.returncode == 1
    assert b"B602" in caught.stdout
    clean = subprocess.run(
        [BANDIT, *flags, "--recursive", "core", "control", "proxy", "sandbox"],
        capture_output=True,
        check=False,
        cwd=ROOT,
    )
    assert clean.returncode == 0, clean.stdout.decode()
