#!/bin/bash
# Initialise the data directory on first start, then start mariadbd with an
# init file that creates (or updates) one database and account for every
# *DATABASE__CONNECTION URL in the environment, e.g.
#   OS_PLACEMENT_DATABASE__CONNECTION=mysql+pymysql://placement:pw@mariadb/placement
# so each credential is defined once, in the URL the service itself uses.
set -euo pipefail

die() {
    echo "placedock-mariadb: $*" >&2
    exit 1
}

# NAME_FILE=/run/secrets/... sets NAME (swarm/stack.yaml gives the URLs so).
# shellcheck source=placement/file-env.sh
. /usr/local/lib/placedock/file-env.sh

datadir=/var/lib/mysql
init=/run/mysqld/placedock-init.sql

if [ ! -d "$datadir/mysql" ]; then
    echo "placedock-mariadb: empty data directory: initialising $datadir" >&2
    mariadb-install-db --datadir="$datadir" --skip-test-db --auth-root-authentication-method=socket >/dev/null
fi

umask 077
{
    # Passwordless and only able to connect: the healthcheck's account.
    echo "CREATE USER IF NOT EXISTS 'healthcheck'@'127.0.0.1';"
    echo "CREATE USER IF NOT EXISTS 'healthcheck'@'localhost';"
    while IFS='=' read -r var url; do
        re='^mysql(\+[a-z]+)?://([A-Za-z0-9_.-]+):([^@/]*)@[^/]+/([A-Za-z0-9_]+)(\?.*)?$'
        [[ $url =~ $re ]] || die "$var is not mysql+pymysql://USER:PASSWORD@HOST/DB (USER and DB: letters, digits, _ . -)"
        user=${BASH_REMATCH[2]} password=${BASH_REMATCH[3]} db=${BASH_REMATCH[4]}
        case $password in
            "" | *"'"* | *\\*) die "$var: the password must be set and contain no quote or backslash" ;;
        esac
        echo "placedock-mariadb: database $db, account $user (from $var)" >&2
        echo "CREATE DATABASE IF NOT EXISTS \`$db\`;"
        echo "CREATE USER IF NOT EXISTS '$user'@'%' IDENTIFIED BY '$password';"
        echo "ALTER USER '$user'@'%' IDENTIFIED BY '$password';"
        echo "GRANT ALL PRIVILEGES ON \`$db\`.* TO '$user'@'%';"
    done < <(env | grep -E '^[A-Z0-9_]*DATABASE__CONNECTION=mysql' || true)
} >"$init"

if [ "${1:-}" = mariadbd ]; then
    # A node of a Galera cluster (compose.galera.yaml) decides first how it starts.
    if [ -n "${GALERA_CLUSTER_ADDRESS:-}" ]; then
        exec galera-node "$init" "$@"
    fi
    shift
    exec mariadbd --init-file="$init" "$@"
fi
exec "$@"
