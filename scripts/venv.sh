#!/usr/bin/env bash
# Create the project's virtualenv, explaining (or, as root on Debian/Ubuntu, fixing) what is missing.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

if ! command -v "$python" >/dev/null 2>&1; then
  echo "router: $python not found; install Python 3.11 or newer (Debian/Ubuntu: apt-get install -y python3)" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "router: needs Python 3.11 or newer; $python is $("$python" -V 2>&1)" >&2
  exit 1
fi
[ -x "$venv/bin/python" ] && exit 0

if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
  rm -rf "$venv"
  # Debian and Ubuntu ship venv (ensurepip) as a separate package.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "router: installing python3-venv (Debian/Ubuntu package that provides 'python3 -m venv')"
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    "$python" -m venv "$venv"
  else
    echo "router: '$python -m venv' does not work here; on Debian/Ubuntu run: sudo apt-get install -y python3-venv" >&2
    exit 1
  fi
fi
