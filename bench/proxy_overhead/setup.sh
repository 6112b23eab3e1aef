#!/usr/bin/env bash
# Installs what the proxy-overhead benchmark needs, only when it is missing:
#   nginx (static upstream), wrk (load generator) and valgrind (relay_cpu.py --instructions)
#   from Debian;
#   LiteLLM and sglang-router, each in its own venv under bench/.venvs/ so that their
#   pinned dependencies never mix with each other or with the project's .venv.
# Idempotent and quick when everything is there; run.py calls it before every run.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
venvs="$root/bench/.venvs"
python="${PYTHON:-python3}"

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# venv_with NAME EXECUTABLE PIP-SPEC: creates bench/.venvs/NAME and installs PIP-SPEC
# unless EXECUTABLE is already there.
venv_with() {
    local name="$1" exe="$2" spec="$3"
    if [[ -x "$venvs/$name/bin/$exe" ]]; then
        return
    fi
    echo "setup: installing $spec into bench/.venvs/$name"
    "$python" -m venv "$venvs/$name"
    "$venvs/$name/bin/pip" install -q --disable-pip-version-check "$spec"
}
venv_with litellm litellm 'litellm[proxy]'
venv_with sglang sglang-router sglang-router
# Only for run.py --profile: py-spy samples Triage's Python stacks from outside.
venv_with pyspy py-spy py-spy
