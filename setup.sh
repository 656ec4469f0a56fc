#!/usr/bin/env bash
# Creates (or refreshes) the project environment in .venv at the repository root.
#   - .venv is created when absent, from $PYTHON or the first python3.1x/python3 found (>= 3.10).
#     If that interpreter already has torch (a GPU user's build), the venv sees it
#     (--system-site-packages) and it is left alone.
#   - torch==2.13.0 (a CPU build) is installed only when no torch is importable.
#   - The package is installed editable with its test extra.
#   - A stamp (hash of pyproject.toml and this script) makes a second run a no-op in about a second;
#     editing pyproject.toml triggers a reinstall.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
root=$(pwd)
venv="$root/.venv"
py="$venv/bin/python"

find_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    for cand in python3.13 python3.12 python3.11 python3.10 python3; do
        if command -v "$cand" >/dev/null 2>&1 &&
           "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
            echo "$cand"; return
        fi
    done
    echo "setup.sh: no Python >= 3.10 found (set PYTHON=/path/to/python)" >&2
    exit 1
}

stamp_of() { cat "$root/pyproject.toml" "$root/setup.sh" | sha256sum | cut -d' ' -f1; }

if [ ! -x "$py" ]; then
    base=$(find_python)
    if "$base" -c 'import torch' >/dev/null 2>&1; then
        echo "setup.sh: $base already has torch; the venv will use it (--system-site-packages)"
        "$base" -m venv --system-site-packages "$venv"
    else
        "$base" -m venv "$venv"
    fi
fi

want=$(stamp_of)
if [ -f "$venv/.setup-stamp" ] && [ "$(cat "$venv/.setup-stamp")" = "$want" ] &&
   (cd / && "$py" -c 'import torch, dnnlib, torch_utils') >/dev/null 2>&1; then
    echo "setup.sh: .venv is up to date"
    exit 0
fi

pip=("$py" -m pip --disable-pip-version-check -q)
if "$py" -c 'import torch' >/dev/null 2>&1; then
    echo "setup.sh: keeping the installed torch $("$py" -c 'import torch; print(torch.__version__)')"
else
    echo "setup.sh: installing torch==2.13.0"
    "${pip[@]}" install "torch==2.13.0"
fi
echo "setup.sh: installing the package (editable) with its test extra"
"${pip[@]}" install -e "$root[test]"
echo "$want" > "$venv/.setup-stamp"
echo "setup.sh: done ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
