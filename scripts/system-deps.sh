#!/usr/bin/env bash
# System packages the server tests and `make servers-start` need: PostgreSQL 15 (a throwaway
# cluster), curl (health checks) and Chromium (the browser tests drive /usr/bin/chromium;
# Playwright cannot download a browser here). Installs what is missing with apt when run as
# root; elsewhere it says what is missing, and those tests skip (CI makes that a failure).
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql-15)
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "note: ${missing[*]} not installed (needs root and apt): server tests will be skipped" >&2
fi
