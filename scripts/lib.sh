# Shared by scripts/run and scripts/test: create .venv and install the project into it,
# reinstalling only when pyproject.toml changed since the last install.
VENV="${METRUX_VENV:-.venv}"

ensure_venv() {
  local extras="$1"
  local stamp="$VENV/.installed$extras"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".$extras"
    touch "$stamp"
  fi
}
