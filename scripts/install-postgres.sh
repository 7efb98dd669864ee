#!/usr/bin/env bash
# The PostgreSQL server binaries (initdb, pg_ctl, postgres, psql, pg_dump) that the relay's
# PostgreSQL tests and benchmarks start a throw-away server with (tests/relay/pghelp.py:
# initdb + pg_ctl into a temporary directory on 127.0.0.1). Installs Debian's `postgresql`
# package where they are missing (apt-get, as .ci/run does for openssh-server) and prints
# their directory. Where they cannot be had it says so on stderr, prints nothing and exits 0:
# those tests then skip with that reason. Idempotent.
set -euo pipefail

find_bin() {
    local dir
    # Debian: /usr/lib/postgresql/<major>/bin, newest major first.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4 -rn); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    return 1
}

if ! bin="$(find_bin)"; then
    if command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q postgresql >&2 \
            || { apt-get update -q >&2 && apt-get install -y -q postgresql >&2; } \
            || echo "note: could not install postgresql; the relay's PostgreSQL tests will skip" >&2
    fi
    if ! bin="$(find_bin)"; then
        echo "note: no PostgreSQL server binaries; the relay's PostgreSQL tests will skip" >&2
        exit 0
    fi
fi
echo "$bin"
