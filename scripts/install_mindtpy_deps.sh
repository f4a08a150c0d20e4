#!/usr/bin/env bash
# Installs what the `mindtpy` baseline solver (the paper's MindtPy OA call) needs, from Debian
# and PyPI only (no GitHub, no other downloads):
#   * GLPK (`glpsol`, Debian package glpk-utils)                -- the MIP subsolver;
#   * an AMPL `ipopt` executable                                 -- the NLP subsolver.
# Debian ships the Ipopt library (coinor-libipopt-dev, 3.11.9) and the AMPL Solver Library
# (libamplsolver-dev) but no `ipopt` executable. The script builds Ipopt's own AMPL driver
# (src/Apps/AmplSolver: 2 files) from Debian's source package of that same Ipopt version
# (`apt-get source coinor-ipopt`, adding a deb-src entry for deb.debian.org if none exists),
# links it against the Debian libipopt and libamplsolver, and installs it as /usr/local/bin/ipopt.
# Nothing is committed; the source is unpacked in a temporary directory and removed.
#
# Fallback (used by mdp_trt/solve/mindtpy.py only when no `ipopt` is on PATH): the `cyipopt`
# binding (PyPI) plus scipy and Pyomo's pynumero ASL extension, built here against Debian's
# libamplsolver (`python -m pyomo.contrib.pynumero.build -DASL_INCLUDE_DIR=... -DASL_LIBRARY=...`)
# instead of `pyomo build-extensions`, which would download the ASL from GitHub.
#
# Builds run serially (one compiler process). The script ends by printing what is still missing
# (exit 1) or "ready" (exit 0).
#
# Usage (as root, from the repository root): scripts/install_mindtpy_deps.sh [PYTHON]
# PYTHON defaults to .venv/bin/python. IPOPT_PREFIX (default /usr/local) sets where bin/ipopt goes.
set -euo pipefail

PYTHON="${1:-.venv/bin/python}"
IPOPT_PREFIX="${IPOPT_PREFIX:-/usr/local}"
export DEBIAN_FRONTEND=noninteractive

apt-get update
apt-get install -y --no-install-recommends \
    glpk-utils coinor-libipopt-dev libamplsolver-dev liblapack-dev libblas-dev \
    pkg-config build-essential cmake dpkg-dev

MULTIARCH="$(gcc -print-multiarch)"
ASL_INCLUDE=/usr/include/ampl-netlib-solvers
ASL_LIBRARY="/usr/lib/${MULTIARCH}/libamplsolver.so"

# --- 1. the AMPL `ipopt` executable, from Debian's coinor-ipopt source package ----------------
build_ipopt_executable() {
    local src_pkg src_ver work
    src_pkg="$(dpkg-query -W -f='${source:Package}' coinor-libipopt1v5)"
    src_ver="$(dpkg-query -W -f='${source:Version}' coinor-libipopt1v5)"
    if ! grep -rqsE '^[^#]*deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        local codename
        codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
        echo "adding a deb-src entry for deb.debian.org ${codename} main"
        cat > /etc/apt/sources.list.d/mdp-trt-debian-src.sources <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: ${codename}
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        apt-get update
    fi
    work="$(mktemp -d)"
    # same source version as the installed library, so the headers match its ABI
    (cd "$work" && apt-get source --download-only "${src_pkg}=${src_ver}" \
        && dpkg-source -x ./*.dsc src >/dev/null \
        && cd src/Ipopt/src \
        && g++ -O2 -DHAVE_CSTRING -DHAVE_CSTDIO -DHAVE_CSTDDEF -DHAVE_CMATH -DHAVE_CASSERT \
            -I/usr/include/coin -ILinAlg/TMatrices -I"$ASL_INCLUDE" \
            Apps/AmplSolver/AmplTNLP.cpp Apps/AmplSolver/ampl_ipopt.cpp \
            -o "$work/ipopt" -lipopt -lamplsolver -ldl)
    local rc=$?
    if [ "$rc" -eq 0 ]; then
        install -D -m 755 "$work/ipopt" "${IPOPT_PREFIX}/bin/ipopt"
        echo "installed ${IPOPT_PREFIX}/bin/ipopt: $("${IPOPT_PREFIX}/bin/ipopt" -v | head -1)"
    fi
    rm -rf "$work"
    return "$rc"
}

if command -v ipopt >/dev/null 2>&1; then
    echo "ipopt already on PATH: $(command -v ipopt)"
else
    build_ipopt_executable || echo "note: building the ipopt executable failed (see above)" >&2
fi

# --- 2. fallback: cyipopt + pynumero's ASL extension against Debian's libamplsolver ------------
"$PYTHON" -m pip install "cyipopt>=1.3" scipy || \
    echo "note: installing cyipopt/scipy failed (fallback unavailable)" >&2
if ! "$PYTHON" -c 'from pyomo.contrib.pynumero.asl import AmplInterface as A; raise SystemExit(not A.available())' 2>/dev/null; then
    CMAKE_BUILD_PARALLEL_LEVEL=1 "$PYTHON" -m pyomo.contrib.pynumero.build \
        -DASL_INCLUDE_DIR="$ASL_INCLUDE" -DASL_LIBRARY="$ASL_LIBRARY" -DBUILD_AMPLASL_IF_NEEDED=OFF || \
        echo "note: building pynumero's ASL extension failed (cyipopt fallback unavailable)" >&2
fi

"$PYTHON" - <<'PY'
import sys
from mdp_trt.solve.mindtpy import _nlp_solver, mindtpy_unavailable_reason

reason = mindtpy_unavailable_reason()
if reason:
    print("still missing:", reason)
    sys.exit(1)
print(f"ready: the mindtpy solver can run (nlp_solver={_nlp_solver()!r})")
PY
