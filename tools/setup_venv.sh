#!/usr/bin/env bash
# Builds .venv from uv.lock with the Python that .python-version names (`make setup`).
#
# Which interpreter, in this order:
#   1. pyenv's copy of that exact version (the project's machines have it);
#   2. a python3.10 on PATH;
#   3. neither (current Ubuntu, Debian, macOS): uv's own managed Python 3.10, which
#      `uv python install` downloads. uv itself comes from PyPI through any python3, into a
#      bootstrap venv under .uv/, or from uv's standalone installer when there is no python3.
# Then `uv sync --frozen` from the lock, as before.
#
# SETUP_DRY_RUN=1 prints the commands instead of running them (tests/tools/test_setup_venv.py).
set -euo pipefail

UV_VERSION="${UV_VERSION:-0.13.9}"
VERSION="$(cat .python-version)"   # e.g. 3.10.13
MINOR="${VERSION%.*}"              # 3.10
BOOT=".uv"                         # bootstrap venv (or standalone install) for uv itself

run() {
	if [ "${SETUP_DRY_RUN:-}" = 1 ]; then echo "+ $*" >&2; else "$@"; fi
}

find_interpreter() {
	local prefix
	if command -v pyenv >/dev/null 2>&1 && prefix="$(pyenv prefix "$VERSION" 2>/dev/null)" \
		&& [ -x "$prefix/bin/python$MINOR" ]; then
		echo "$prefix/bin/python$MINOR"
		return
	fi
	if command -v "python$MINOR" >/dev/null 2>&1; then
		command -v "python$MINOR"
	fi
}

# Prints the command that runs uv, installing uv when there is none.
find_uv() {
	if command -v uv >/dev/null 2>&1; then
		command -v uv
	elif [ -x "$BOOT/bin/uv" ]; then
		echo "$BOOT/bin/uv"
	elif command -v python3 >/dev/null 2>&1; then
		run python3 -m venv "$BOOT" >&2
		run "$BOOT/bin/python" -m pip install -q "uv==$UV_VERSION" >&2
		echo "$BOOT/bin/uv"
	elif command -v curl >/dev/null 2>&1; then
		# uv's standalone installer (needs the internet; not reachable on the project's machines)
		run sh -c "curl -LsSf https://astral.sh/uv/$UV_VERSION/install.sh | env UV_INSTALL_DIR=$BOOT/bin UV_NO_MODIFY_PATH=1 sh" >&2
		echo "$BOOT/bin/uv"
	else
		echo "setup: no python$MINOR, no python3 and no curl: install one of them (or uv)" >&2
		exit 1
	fi
}

PY="$(find_interpreter)"
if [ -n "$PY" ]; then
	echo "setup: Python $VERSION at $PY"
	if ! "$PY" -m uv --version >/dev/null 2>&1; then
		run "$PY" -m pip install -q "uv==$UV_VERSION"
	fi
	run "$PY" -m uv sync --frozen --compile-bytecode --python "$PY"
else
	echo "setup: no Python $MINOR here (pyenv or python$MINOR on PATH): uv installs its own"
	UV="$(find_uv)"
	run "$UV" python install "$VERSION"
	run "$UV" sync --frozen --compile-bytecode --python "$VERSION" --managed-python
fi
