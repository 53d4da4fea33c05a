#!/usr/bin/env bash
# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
#
# The SQLite demo of Turnus, called by "make demo" (after the virtualenv
# and the web client are installed).
#
#   scripts/demo.sh setup   write var/trytond.conf, create the database
#                           (admin/admin) if missing, activate or update
#                           the modules, load the demo data once (it adds
#                           the English user demo-en/demo1234)
#   scripts/demo.sh data    load the demo data (again; it is idempotent)
#   scripts/demo.sh serve   start the mail sink, the WebDAV server and
#                           trytond-cron in the background and trytond in
#                           the foreground (Ctrl-C stops all of them)
#   scripts/demo.sh stop    stop the servers of a run that was killed
#
# The invoices the demo delivers by e-mail go to a local SMTP sink
# (aiosmtpd) that stores every mail as a file in var/mail/new/ (a
# maildir); loading the demo data starts it too, as it delivers invoices.
# The same for the document store of the demo ("Nextcloud (Demo)"): a
# local WebDAV server (wsgidav, anonymous) stores the uploaded invoice PDFs
# in var/dav/.  The DATEV exports (each night's Buchungsstapel and the
# accountant's "Export to DATEV") land in the folder var/datev/.
#
# Environment: DEMO_DB (demo), VENV (.venv), DEMO_LISTEN (0.0.0.0:8000),
# DEMO_ADMIN_PASSWORD (admin), DEMO_ADMIN_EMAIL (admin@example.com),
# DEMO_EN_PASSWORD (demo1234: the password of the English user demo-en,
# set when the demo data creates it; at least 8 characters),
# DEMO_SMTP_PORT (8025), DEMO_DAV_PORT (8090).
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
# the English user (tests/demo_data.py creates it)
EN_LOGIN=demo-en
EN_PASSWORD=${DEMO_EN_PASSWORD:-demo1234}
export DEMO_EN_PASSWORD=$EN_PASSWORD
SMTP_HOST=127.0.0.1
SMTP_PORT=${DEMO_SMTP_PORT:-8025}
DAV_HOST=127.0.0.1
DAV_PORT=${DEMO_DAV_PORT:-8090}
export DEMO_DAV_PORT=$DAV_PORT
MAIL_FROM="Turnus Demo GmbH <rechnung@turnus-demo.example>"
# account_payment_sepa (optional, installed with the test extra): the
# direct debits of the demo are collected with SEPA payments
# edocument_uncefact (optional, installed with the test extra): the
# invoices are delivered with their e-invoice (ZUGFeRD, XRechnung)
MODULES=(recurring_invoice dispatch_order account_payment_sepa edocument_uncefact)

VAR=$ROOT/var
CONF=$VAR/trytond.conf
DB_DIR=$VAR/db
DB_FILE=$DB_DIR/$DB.sqlite
DATA_MARKER=$DB_DIR/$DB.data-loaded
SAO=$VAR/sao/package
RUN=$VAR/run
LOG=$VAR/log
MAIL=$VAR/mail
SMTP_PIDFILE=$RUN/smtp-sink.pid
# the pid of the mail sink when this call started it (stopped on exit
# unless "serve" runs)
SMTP_STARTED=
# the WebDAV server of the document store, the DATEV folder
DAV=$VAR/dav
DAV_PIDFILE=$RUN/webdav.pid
DAV_STARTED=
DATEV=$VAR/datev
export DEMO_DATEV_DIR=$DATEV

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

[email]
# the local mail sink of the demo (scripts/demo.sh), mails land in
# $MAIL/new/
uri = smtp://$SMTP_HOST:$SMTP_PORT
from = $MAIL_FROM
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

# is the pid a running mail sink of this demo (listening on our port)?
smtp_running() {
    local pid=$1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null \
            | grep -q -- "aiosmtpd .*-l $SMTP_HOST:$SMTP_PORT "
}

# is something listening on host $1 port $2 (default: the mail sink's)?
port_open() {
    "$BIN/python" - "${1:-$SMTP_HOST}" "${2:-$SMTP_PORT}" <<'EOF'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()
except OSError:
    sys.exit(1)
EOF
}

# start the SMTP sink that stores every mail in var/mail (unless it runs)
start_smtp() {
    local pid
    if [[ -f $SMTP_PIDFILE ]]; then
        pid=$(<"$SMTP_PIDFILE")
        if smtp_running "$pid"; then
            return 0
        fi
        stop_pidfile "$SMTP_PIDFILE" aiosmtpd
    fi
    if port_open; then
        echo "port $SMTP_HOST:$SMTP_PORT is taken by another program" \
            "(set DEMO_SMTP_PORT to a free port)" >&2
        return 1
    fi
    # a maildir: the sink adds each mail to new/ (via tmp/)
    mkdir -p "$MAIL/new" "$MAIL/cur" "$MAIL/tmp" "$RUN" "$LOG"
    # -n: no setuid to nobody (that could not write var/mail);
    # -u: SMTPUTF8 for non-ASCII addresses
    setsid "$BIN/python" -m aiosmtpd -n -u -l "$SMTP_HOST:$SMTP_PORT" \
        -c aiosmtpd.handlers.Mailbox "$MAIL" \
        >>"$LOG/smtp-sink.log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$SMTP_PIDFILE"
    SMTP_STARTED=$pid
    for _ in $(seq 100); do
        port_open && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the mail sink did not start, see $LOG/smtp-sink.log" >&2
            rm -f "$SMTP_PIDFILE"
            return 1
        fi
        sleep 0.1
    done
    port_open || {
        echo "the mail sink does not answer on $SMTP_HOST:$SMTP_PORT," \
            "see $LOG/smtp-sink.log" >&2
        return 1
    }
    echo "mail sink on $SMTP_HOST:$SMTP_PORT (pid $pid), mails in $MAIL/new/"
}

# is the pid a running WebDAV server of this demo (listening on our port)?
dav_running() {
    local pid=$1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null \
            | grep -q -- "wsgidav --host $DAV_HOST --port $DAV_PORT "
}

# start the WebDAV server of the document store that stores the uploaded
# files in var/dav (unless it runs)
start_dav() {
    local pid
    mkdir -p "$DATEV"
    if [[ -f $DAV_PIDFILE ]]; then
        pid=$(<"$DAV_PIDFILE")
        if dav_running "$pid"; then
            return 0
        fi
        stop_pidfile "$DAV_PIDFILE" wsgidav
    fi
    if port_open "$DAV_HOST" "$DAV_PORT"; then
        echo "port $DAV_HOST:$DAV_PORT is taken by another program" \
            "(set DEMO_DAV_PORT to a free port)" >&2
        return 1
    fi
    if [[ ! -x $BIN/wsgidav ]]; then
        echo "no wsgidav in $BIN (run 'make venv')" >&2
        return 1
    fi
    mkdir -p "$DAV" "$RUN" "$LOG"
    # anonymous read and write on var/dav as the share /; --no-config: no
    # wsgidav.yaml of the current directory
    setsid "$BIN/wsgidav" --host "$DAV_HOST" --port "$DAV_PORT" \
        --root "$DAV" --auth anonymous --no-config -q \
        >>"$LOG/webdav.log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$DAV_PIDFILE"
    DAV_STARTED=$pid
    for _ in $(seq 100); do
        port_open "$DAV_HOST" "$DAV_PORT" && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the WebDAV server did not start, see $LOG/webdav.log" >&2
            rm -f "$DAV_PIDFILE"
            return 1
        fi
        sleep 0.1
    done
    port_open "$DAV_HOST" "$DAV_PORT" || {
        echo "the WebDAV server does not answer on $DAV_HOST:$DAV_PORT," \
            "see $LOG/webdav.log" >&2
        return 1
    }
    echo "WebDAV server on http://$DAV_HOST:$DAV_PORT/ (pid $pid)," \
        "files in $DAV/"
}

# stop the mail sink and the WebDAV server at exit if this call started
# them for loading data
stop_started_sinks() {
    if [[ -n $SMTP_STARTED ]]; then
        stop_pidfile "$SMTP_PIDFILE" aiosmtpd >/dev/null
    fi
    if [[ -n $DAV_STARTED ]]; then
        stop_pidfile "$DAV_PIDFILE" wsgidav >/dev/null
    fi
}
trap stop_started_sinks EXIT

load_data() {
    # the demo data generates invoices, some of them delivered by e-mail
    # and uploaded to the document store
    start_smtp
    start_dav
    say "loading the demo data"
    "$BIN/python" tests/demo_data.py -d "$DB" -c "$CONF"
    touch "$DATA_MARKER"
    echo "invoices uploaded to the document store: $DAV/;" \
        "DATEV exports: $DATEV/"
}

setup() {
    write_config
    stop_servers
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
stop_servers() {
    stop_pidfile "$RUN/trytond-cron.pid" trytond-cron
    stop_pidfile "$RUN/trytond.pid" "bin/trytond "
}

stop() {
    stop_servers
    stop_pidfile "$SMTP_PIDFILE" aiosmtpd
    stop_pidfile "$DAV_PIDFILE" wsgidav
}

serve() {
    write_config
    if [[ ! -f $SAO/index.html ]]; then
        echo "web client missing in $SAO (run 'make sao')" >&2
        return 1
    fi
    stop_servers
    # the nightly run e-mails invoices: the sink runs as long as the
    # servers (the one "setup" started is reused)
    start_smtp
    local smtp_pid
    smtp_pid=$(<"$SMTP_PIDFILE")
    SMTP_STARTED=
    # and the night uploads to the document store
    start_dav
    local dav_pid
    dav_pid=$(<"$DAV_PIDFILE")
    DAV_STARTED=
    # each server in its own process group, so that stopping it also stops
    # the worker processes trytond-cron forks
    setsid "$BIN/trytond-cron" -c "$CONF" -d "$DB" >>"$LOG/trytond-cron.log" 2>&1 &
    local cron_pid=$!
    echo "$cron_pid" > "$RUN/trytond-cron.pid"

    setsid "$BIN/trytond" -c "$CONF" -d "$DB" &
    local server_pid=$!
    echo "$server_pid" > "$RUN/trytond.pid"

    # shellcheck disable=SC2064
    trap "kill -TERM -- -$server_pid -$cron_pid -$smtp_pid -$dav_pid 2>/dev/null; wait; rm -f '$RUN/trytond.pid' '$RUN/trytond-cron.pid' '$SMTP_PIDFILE' '$DAV_PIDFILE'" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    say "Turnus demo: http://localhost:${LISTEN##*:}/  database '$DB'," \
        "users admin / $ADMIN_PASSWORD (German), $EN_LOGIN / $EN_PASSWORD (English)"
    echo "   (trytond-cron pid $cron_pid, log $LOG/trytond-cron.log; Ctrl-C stops)"
    echo "   mails (invoices delivered automatically): SMTP sink on" \
        "$SMTP_HOST:$SMTP_PORT stores each one as a file in $MAIL/new/"
    echo "   document store \"Nextcloud (Demo)\": WebDAV server on" \
        "http://$DAV_HOST:$DAV_PORT/ stores the uploaded invoices in $DAV/"
    echo "   DATEV exports (nightly runs, Financial > Reporting > Export to" \
        "DATEV): folder $DATEV/"
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
