#!/bin/sh
# Check the settings, optionally migrate the database, then run the command:
# uwsgi by default, which leaves haproxy's rotation before it stops (below);
# any other command is exec'd so that it is PID 1 and receives SIGTERM. With
# PLACEMENT_SRC, the placement tree there is run instead of the installed
# release, and reloaded when it changes (reloader.py); with options from etcd,
# they are reloaded when they change, the same way.
set -eu

die() {
    echo "placedock: $*" >&2
    exit 1
}

# NAME_FILE=/run/secrets/... for the settings that hold credentials.
# shellcheck source=common/file-env.sh
. /usr/local/lib/placedock/file-env.sh

# The keys' command (docs/etcd.md) runs as it is: no seeding, no checks.
if [ "${1:-}" = placedock-etcd ]; then
    exec "$@"
fi

# Options from etcd (compose.etcd.yaml, placedock_etcd.py): the options etcd
# governs (PLACEDOCK_ETCD_OPTIONS) are put there from their variables if etcd
# has none yet, then unset, so that etcd's values are the ones read. Exit 3:
# no etcd source is configured.
etcd=false
if [ -n "${OS_DEFAULT__CONFIG_SOURCE:-}" ]; then
    if governed=$(placedock-etcd seed); then
        etcd=true
        for var in $governed; do
            unset "$var"
        done
    elif [ $? -ne 3 ]; then
        exit 1
    fi
fi
if $etcd && [ -n "${PLACEMENT_SRC:-}" ]; then
    die "PLACEMENT_SRC and options from etcd (OS_DEFAULT__CONFIG_SOURCE) do not go together: use one of them"
fi

if [ "${1:-}" = uwsgi ]; then
    case "${OS_API__AUTH_STRATEGY:-}" in
        noauth2) ;;
        keystone)
            # From etcd, preflight.py checks them where they are.
            $etcd ||
            for var in OS_KEYSTONE_AUTHTOKEN__AUTH_URL OS_KEYSTONE_AUTHTOKEN__PASSWORD; do
                eval "value=\${$var:-}"
                [ -n "$value" ] || die "$var is not set: OS_API__AUTH_STRATEGY=keystone needs it"
            done
            ;;
        "") die "OS_API__AUTH_STRATEGY is not set: use noauth2 or keystone" ;;
        *) die "OS_API__AUTH_STRATEGY=$OS_API__AUTH_STRATEGY is not supported: use noauth2 or keystone" ;;
    esac
fi

if [ -n "${PLACEMENT_SRC:-}" ]; then
    [ -r "$PLACEMENT_SRC/placement/__init__.py" ] ||
        die "PLACEMENT_SRC=$PLACEMENT_SRC has no placement/__init__.py readable by uid $(id -u): it must name a placement checkout that this user can read"
    # Ahead of the venv's site-packages: the tree's placement package wins,
    # every dependency stays the image's pinned one.
    export PYTHONPATH="$PLACEMENT_SRC${PYTHONPATH:+:$PYTHONPATH}"
fi

for var in DB_SYNC DB_SCHEMA_WAIT; do
    eval "value=\${$var:=False}"
    case "$value" in
        True | False) ;;
        *) die "$var=$value is not valid: use True or False" ;;
    esac
done

# Option values, memcached (keystone mode), database: see preflight.py. uwsgi
# runs these checks itself as it loads the app (placedock_wsgi.py), unless the
# migrations must run first.
if [ "${1:-}" != uwsgi ] || [ "$DB_SYNC" = True ]; then
    python3 /usr/local/lib/placedock/preflight.py
fi

if [ "$DB_SYNC" = True ]; then
    echo "placedock: DB_SYNC=True: running placement-manage db sync" >&2
    placement-manage db sync
fi

# Another one migrates (a swarm job, as swarm/stack.yaml): wait for its schema.
if [ "$DB_SCHEMA_WAIT" = True ]; then
    python3 /usr/local/lib/placedock/schemawait.py
fi

[ "${1:-}" = uwsgi ] || exec "$@"

# Stopping without failing a request. haproxy keeps connections open to the
# replica and may send a request on one at the moment the replica closes it;
# a GET is then sent again, a POST cannot be. So SIGTERM (docker stop, a scale
# down) first takes the replica out of every haproxy's rotation: its answer to
# their health checks turns to 404 (placedock_wsgi.py; haproxy.cfg's
# http-check disable-on-404), and after PLACEMENT_STOP_DRAIN seconds, time
# for the next check, the server gets the SIGTERM and finishes what is in
# flight. For this one job the shell stays PID 1 (the reloader does the
# same itself); other signals pass through.
drain=${PLACEMENT_STOP_DRAIN:-3}
case "$drain" in
    "" | *[!0-9]*) die "PLACEMENT_STOP_DRAIN=$drain is not valid: use whole seconds, e.g. 3 (0: no drain)" ;;
esac
export PLACEDOCK_STOPPING=/tmp/placedock-stopping
rm -f "$PLACEDOCK_STOPPING"

# The reloader (a tree, or options from etcd) drains the same way itself.
if [ -n "${PLACEMENT_SRC:-}" ] || $etcd; then
    export PLACEMENT_STOP_DRAIN="$drain"
    exec python3 /usr/local/lib/placedock/reloader.py "$@"
fi

"$@" &
server=$!
stop() {
    trap '' TERM
    if : 2>/dev/null >"$PLACEDOCK_STOPPING"; then
        echo "placedock: SIGTERM: out of haproxy's rotation, stopping in ${drain}s" >&2
    else
        echo "placedock: SIGTERM: cannot write $PLACEDOCK_STOPPING, so stopping without leaving rotation first" >&2
    fi
    sleep "$drain"
    kill -TERM "$server" 2>/dev/null || true
}
trap stop TERM
for signal in HUP INT QUIT USR1 USR2; do
    # shellcheck disable=SC2064 # the signal's name now, the server's pid then
    trap "kill -$signal \$server 2>/dev/null || true" "$signal"
done
# wait returns early when a trapped signal arrives: wait again until the
# server itself has exited, and exit as it did.
while :; do
    status=0
    wait "$server" || status=$?
    kill -0 "$server" 2>/dev/null || exit "$status"
done
