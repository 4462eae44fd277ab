#!/bin/sh
# Check the settings, optionally migrate the database, then exec the command
# (uwsgi by default) so that it is PID 1 and receives SIGTERM.
set -eu

die() {
    echo "placedock: $*" >&2
    exit 1
}

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

case "${DB_SYNC:=False}" in
    True | False) ;;
    *) die "DB_SYNC=$DB_SYNC is not valid: use True or False" ;;
esac

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

exec "$@"
