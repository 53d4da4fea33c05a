#!/usr/bin/env bash
# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
#
# The SQLite demo of Turnus, called by "make demo" (after the virtualenv
# and the web client are installed).
#
#   scripts/demo.sh setup   write var/trytond.conf, create the database
#                           (admin/admin) if missing, activate or update
#                           the modules, load the demo data once
#   scripts/demo.sh data    load the demo data (again; it is idempotent)
#   scripts/demo.sh serve   start trytond-cron in the background and
#                           trytond in the foreground (Ctrl-C stops both)
#   scripts/demo.sh stop    stop the servers of a run that was killed
#
# Environment: DEMO_DB (demo), VENV (.venv), DEMO_LISTEN (0.0.0.0:8000),
# DEMO_ADMIN_PASSWORD (admin), DEMO_ADMIN_EMAIL (admin@example.com).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-.venv}
[[ $VENV = /* ]] || VENV=$ROOT/$VENV
BIN=$VENV/bin
DB=${DEMO_DB:-demo}
LISTEN=${DEMO_LISTEN:-0.0.0.0:8000}
ADMIN_PASSWORD=${DEMO_ADMIN_PASSWORD:-admin}
ADMIN_EMAIL=${DEMO_ADMIN_EMAIL:-admin@example.com}
MODULES=(recurring_invoice dispatch_order)

VAR=$ROOT/var
CONF=$VAR/trytond.conf
DB_DIR=$VAR/db
DB_FILE=$DB_DIR/$DB.sqlite
DATA_MARKER=$DB_DIR/$DB.data-loaded
SAO=$VAR/sao/package
RUN=$VAR/run
LOG=$VAR/log

# The demo is SQLite and configured by var/trytond.conf only: ignore the
# variables used to run the tests on PostgreSQL.
unset TRYTOND_DATABASE_URI TRYTOND_DATABASE__URI TRYTOND_DATABASE__PATH \
    TRYTOND_CONFIG DB_NAME DB_CACHE

say() { printf '\n== %s\n' "$*"; }

write_config() {
    mkdir -p "$VAR" "$DB_DIR" "$RUN" "$LOG"
    cat > "$CONF.tmp" <<EOF
# Written by scripts/demo.sh -- changes are overwritten.
[database]
uri = sqlite://
path = $DB_DIR
language = en

[web]
listen = $LISTEN
root = $SAO

[session]
# keep the demo session for a working day
timeout = 28800
EOF
    mv "$CONF.tmp" "$CONF"
}

db_initialised() {
    [[ -s $DB_FILE ]] && "$BIN/python" - "$DB_FILE" <<'EOF'
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
try:
    conn.execute("SELECT 1 FROM ir_configuration LIMIT 1")
    conn.execute("SELECT 1 FROM res_user WHERE login = 'admin'").fetchone()
except sqlite3.Error:
    sys.exit(1)
EOF
}

init_db() {
    if db_initialised; then
        return
    fi
    say "creating the database $DB ($DB_FILE)"
    rm -f "$DB_FILE" "$DB_FILE-shm" "$DB_FILE-wal" "$DATA_MARKER"
    touch "$DB_FILE"  # trytond's SQLite backend opens existing files only
    local passfile
    passfile=$(mktemp)
    printf '%s\n' "$ADMIN_PASSWORD" > "$passfile"
    if ! TRYTONPASSFILE=$passfile "$BIN/trytond-admin" -c "$CONF" -d "$DB" \
            --all --email "$ADMIN_EMAIL"; then
        rm -f "$passfile" "$DB_FILE"
        return 1
    fi
    rm -f "$passfile"
}

activate_modules() {
    # activates the modules and their dependencies the first time, updates
    # them (picks up changed code) afterwards
    say "activating/updating ${MODULES[*]}"
    "$BIN/trytond-admin" -c "$CONF" -d "$DB" -u "${MODULES[@]}" \
        --activate-dependencies
}

load_data() {
    say "loading the demo data"
    "$BIN/python" tests/demo_data.py -d "$DB" -c "$CONF"
    touch "$DATA_MARKER"
}

setup() {
    write_config
    stop
    init_db
    activate_modules
    if [[ -f $DATA_MARKER ]]; then
        say "demo data already loaded ($DATA_MARKER; 'make demo-data' loads it again)"
    else
        load_data
    fi
}

# stop the process group of an earlier run recorded in a pid file (only
# when its leader is still the same program)
stop_pidfile() {
    local pidfile=$1 program=$2 pid
    [[ -f $pidfile ]] || return 0
    pid=$(<"$pidfile")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
            && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null \
                | grep -q -- "$program"; then
        echo "stopping $program of an earlier run (pid $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$pidfile"
}

# servers of an earlier run that are still up (e.g. after a kill -9)
stop() {
    stop_pidfile "$RUN/trytond-cron.pid" trytond-cron
    stop_pidfile "$RUN/trytond.pid" "bin/trytond "
}

serve() {
    write_config
    if [[ ! -f $SAO/index.html ]]; then
        echo "web client missing in $SAO (run 'make sao')" >&2
        return 1
    fi
    stop
    # each server in its own process group, so that stopping it also stops
    # the worker processes trytond-cron forks
    setsid "$BIN/trytond-cron" -c "$CONF" -d "$DB" >>"$LOG/trytond-cron.log" 2>&1 &
    local cron_pid=$!
    echo "$cron_pid" > "$RUN/trytond-cron.pid"

    setsid "$BIN/trytond" -c "$CONF" -d "$DB" &
    local server_pid=$!
    echo "$server_pid" > "$RUN/trytond.pid"

    # shellcheck disable=SC2064
    trap "kill -TERM -- -$server_pid -$cron_pid 2>/dev/null; wait; rm -f '$RUN/trytond.pid' '$RUN/trytond-cron.pid'" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    say "Turnus demo: http://localhost:${LISTEN##*:}/  database '$DB', user admin / $ADMIN_PASSWORD"
    echo "   (trytond-cron pid $cron_pid, log $LOG/trytond-cron.log; Ctrl-C stops)"
    wait "$server_pid"
}

if [[ ! -x $BIN/trytond ]]; then
    echo "no trytond in $BIN (run 'make venv')" >&2
    exit 1
fi
[[ $# -gt 0 ]] || set -- setup serve
for command in "$@"; do
    case $command in
        setup) setup ;;
        data) write_config; load_data ;;
        serve) serve ;;
        stop) stop ;;
        *) echo "usage: $0 [setup] [data] [serve] [stop]" >&2; exit 2 ;;
    esac
done
