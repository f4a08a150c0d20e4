#!/usr/bin/env bash
# Installs what the `mindtpy` baseline solver (the paper's MindtPy OA call) needs:
#   * GLPK (`glpsol`, Debian package glpk-utils)         -- the MIP subsolver;
#   * Ipopt                                              -- the NLP subsolver.
# Ipopt: Pyomo drives either an AMPL `ipopt` executable on PATH or the `cyipopt` binding.
# Debian ships only the Ipopt library (coinor-libipopt-dev, 3.11.9), not the executable, so this
# script builds `cyipopt` against it. Pyomo's cyipopt route additionally needs scipy and
# pynumero's compiled ASL extension (`pyomo build-extensions`), which downloads the AMPL Solver
# Library source from GitHub: where that is unreachable, put an `ipopt` executable on PATH by
# other means. The script ends by printing what is still missing (exit 1) or "ready" (exit 0).
#
# Usage (as root, from the repository root): scripts/install_mindtpy_deps.sh [PYTHON]
# PYTHON defaults to .venv/bin/python.
set -euo pipefail

PYTHON="${1:-.venv/bin/python}"
export DEBIAN_FRONTEND=noninteractive

apt-get update
apt-get install -y --no-install-recommends \
    glpk-utils coinor-libipopt-dev liblapack-dev libblas-dev pkg-config build-essential

if ! command -v ipopt >/dev/null 2>&1; then
    "$PYTHON" -m pip install "cyipopt>=1.3" scipy
    # Best effort: needs network access to GitHub; harmless when it fails.
    "$(dirname "$PYTHON")/pyomo" build-extensions || \
        echo "note: 'pyomo build-extensions' failed (pynumero ASL extension unavailable)" >&2
fi

"$PYTHON" - <<'PY'
import sys
from mdp_trt.solve.mindtpy import mindtpy_unavailable_reason

reason = mindtpy_unavailable_reason()
if reason:
    print("still missing:", reason)
    sys.exit(1)
print("ready: the mindtpy solver can run")
PY
