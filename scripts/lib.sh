# Shared by scripts/run and scripts/test: create .venv and install the project into it
# from a lock file with pinned versions and hashes (requirements/*.lock, made by
# scripts/lock), reinstalling only when pyproject.toml or the lock changed since.
VENV="${METRUX_VENV:-.venv}"

ensure_venv() {
  local lock="$1"  # runtime or test
  local stamp="$VENV/.installed-$lock"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
      || [ "requirements/$lock.lock" -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # Every dependency exactly as locked, each file checked against its hash.
    "$VENV/bin/python" -m pip install --quiet --require-hashes --no-deps \
      -r "requirements/$lock.lock"
    "$VENV/bin/python" -m pip install --quiet --no-deps -e .
    "$VENV/bin/python" -m pip check
    touch "$stamp"
  fi
}
