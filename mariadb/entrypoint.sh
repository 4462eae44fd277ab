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
# shellcheck source=common/file-env.sh
. /usr/local/lib/placedock/file-env.sh
# shellcheck source=common/url-password.sh
. /usr/local/lib/placedock/url-password.sh

datadir=/var/lib/mysql
init=/run/mysqld/placedock-init.sql

if [ ! -d "$datadir/mysql" ]; then
    echo "placedock-mariadb: empty data directory: initialising $datadir" >&2
    mariadb-install-db --datadir="$datadir" --skip-test-db --auth-root-authentication-method=socket >/dev/null
fi

# A string literal for SQL: backslashes and quotes escaped.
sql_string() {
    local s=$1 bs="\\" q="'"
    s=${s//"$bs"/"$bs$bs"}
    s=${s//"$q"/"$bs$q"}
    printf "'%s'" "$s"
}

umask 077
{
    # Passwordless and only able to connect: the healthcheck's account.
    echo "CREATE USER IF NOT EXISTS 'healthcheck'@'127.0.0.1';"
    echo "CREATE USER IF NOT EXISTS 'healthcheck'@'localhost';"
    # The statements below quote with backslashes: whatever the server's
    # default, this session reads them so.
    echo "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '');"
    for var in $(compgen -e); do
        [[ $var =~ ^[A-Z0-9_]*DATABASE__CONNECTION$ ]] && [[ ${!var} == mysql* ]] || continue
        url=${!var}
        re='^mysql(\+[a-z]+)?://([A-Za-z0-9_.-]+):([^@/]*)@[^/]+/([A-Za-z0-9_]+)(\?.*)?$'
        [[ $url =~ $re ]] ||
            die "$var is not mysql+pymysql://USER:PASSWORD@HOST/DB (USER and DB: letters, digits, _ . -; in the password escape @ as %40, / as %2F, % as %25)"
        user=${BASH_REMATCH[2]} db=${BASH_REMATCH[4]}
        url_password "$var" "${BASH_REMATCH[3]}"
        echo "placedock-mariadb: database $db, account $user (from $var)" >&2
        echo "CREATE DATABASE IF NOT EXISTS \`$db\`;"
        printf '%s\n' "CREATE USER IF NOT EXISTS '$user'@'%' IDENTIFIED BY $(sql_string "$password");"
        printf '%s\n' "ALTER USER '$user'@'%' IDENTIFIED BY $(sql_string "$password");"
        echo "GRANT ALL PRIVILEGES ON \`$db\`.* TO '$user'@'%';"
    done
} >"$init"

# The init file holds every account's password: it leaves the container's
# files as soon as the server has run it. mariadbd runs it before it takes
# connections, so the first query that works means it is done. This runs
# beside mariadbd (`$$`, the pid the execs below give to it, or to
# galera-node and then to mariadbd), and the next start writes it again.
forget_init() {
    local server=$1
    while kill -0 "$server" 2>/dev/null; do
        if mariadb -u healthcheck -N -B --connect-timeout=1 -e "SELECT 1" >/dev/null 2>&1; then
            rm -f "$init"
            return
        fi
        sleep 1
    done
}

if [ "${1:-}" = mariadbd ]; then
    forget_init $$ &
    # A node of a Galera cluster (compose.galera.yaml) decides first how it starts.
    if [ -n "${GALERA_CLUSTER_ADDRESS:-}" ]; then
        exec galera-node "$init" "$@"
    fi
    shift
    exec mariadbd --init-file="$init" "$@"
fi
exec "$@"
