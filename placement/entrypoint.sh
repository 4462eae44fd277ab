#!/bin/sh
# Check the settings, optionally migrate the database, then exec the command
# (uwsgi by default) so that it is PID 1 and receives SIGTERM. With
# PLACEMENT_SRC, the placement tree there is run instead of the installed
# release, and reloaded when it changes (reloader.py).
set -eu

die() {
    echo "placedock: $*" >&2
    exit 1
}

# NAME_FILE=/run/secrets/... for the settings that hold credentials.
# shellcheck source=placement/file-env.sh
. /usr/local/lib/placedock/file-env.sh

if [ "${1:-}" = uwsgi ]; then
    case "${OS_API__AUTH_STRATEGY:-}" in
        noauth2) ;;
        keystone)
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

if [ "${1:-}" = uwsgi ] && [ -n "${PLACEMENT_SRC:-}" ]; then
    exec python3 /usr/local/lib/placedock/reloader.py "$@"
fi
exec "$@"
