#!/usr/bin/env bash
# Install what the tests need, then check and test.
#
#   scripts/test.sh [pytest args...]         everything: ruff, mypy, unit tests and the sandbox
#                                            tests that drive the real `ringfence` against this
#                                            kernel (what CI runs, through .ci/run). Run as root,
#                                            the sandbox tests run twice: as root and as the
#                                            unprivileged user ringfence-test, created here.
#   scripts/test.sh --unit [pytest args...]  the fast lane: ruff, mypy and tests/unit only; no
#                                            user is created and nothing runs in a sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."

lane=all
if [ "${1:-}" = --unit ]; then
  lane=unit
  shift
fi

need=()
command -v git >/dev/null || need+=(git)
command -v ps >/dev/null || need+=(procps)
command -v setsid >/dev/null || need+=(util-linux)
[ -x /usr/bin/python3 ] || need+=(python3)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || need+=(libseccomp2)  # the test oracle
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "scripts/test.sh: missing ${need[*]}; install them (e.g. sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

venv=${RINGFENCE_VENV:-.venv}
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q -e '.[dev]'

if [ "$lane" = all ] && [ "$(id -u)" = 0 ]; then
  id ringfence-test >/dev/null 2>&1 || useradd --create-home --shell /bin/sh ringfence-test
  export RINGFENCE_TEST_USER=ringfence-test RINGFENCE_REQUIRE_UNPRIVILEGED=1
fi

"$venv/bin/ruff" check src tests bench examples
"$venv/bin/ruff" format --check src tests bench examples
"$venv/bin/mypy" src
"$venv/bin/mypy" --platform win32 src/ringfence/platforms/windows  # the ctypes side, as Windows sees it
if [ "$lane" = unit ]; then
  exec "$venv/bin/python" -m pytest tests/unit "$@"
fi
exec "$venv/bin/python" -m pytest "$@"
