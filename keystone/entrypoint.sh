#!/bin/sh
# Commands that use keystone's database first wait for it (bounded, logged);
# then exec the command (uwsgi by default) so that it gets SIGTERM.
set -eu
# NAME_FILE=/run/secrets/... for the URL and passwords (swarm/keystone.yaml).
# shellcheck source=common/file-env.sh
. /usr/local/lib/placedock/file-env.sh
case "${1:-}" in
    uwsgi | keystone-init | keystone-manage)
        python3 /usr/local/lib/placedock/dbcheck.py OS_DATABASE__CONNECTION
        ;;
esac
exec "$@"
