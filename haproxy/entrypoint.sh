#!/bin/sh
# haproxy's settings may come from files, as swarm secrets are given:
# HAPROXY_STATS_PASSWORD_FILE (common/file-env.sh). Then haproxy, as PID 1.
set -eu
# shellcheck source=common/file-env.sh
. /usr/local/lib/placedock/file-env.sh
exec "$@"
