#!/bin/bash
# Initialise the data directory on first start; then, at every start, create
# (or update) one role and one database it owns for every
# *DATABASE__CONNECTION URL in the environment that names PostgreSQL, e.g.
#   OS_PLACEMENT_DATABASE__CONNECTION=postgresql+psycopg2://placement:pw@postgres/placement
# so each credential is defined once, in the URL the service itself uses (as
# mariadb/entrypoint.sh does). Then the server, as PID 1.
set -euo pipefail

die() {
    echo "placedock-postgres: $*" >&2
    exit 1
}

# NAME_FILE=/run/secrets/... sets NAME.
# shellcheck source=common/file-env.sh
. /usr/local/lib/placedock/file-env.sh
# shellcheck source=common/url-password.sh
. /usr/local/lib/placedock/url-password.sh

[ "${1:-}" = postgres ] || exec "$@"
shift
config=(-c config_file=/etc/placedock/postgres/postgresql.conf)

# Every URL is checked before anything is written.
accounts=()
for var in $(compgen -e); do
    [[ $var =~ ^[A-Z0-9_]*DATABASE__CONNECTION$ ]] && [[ ${!var} == postgresql* ]] || continue
    re='^postgresql(\+[a-z0-9]+)?://([A-Za-z0-9_.-]+):([^@/]*)@[^/]+/([A-Za-z0-9_]+)(\?.*)?$'
    [[ ${!var} =~ $re ]] ||
        die "$var is not postgresql+psycopg2://USER:PASSWORD@HOST/DB (USER and DB: letters, digits, _ . -; in the password escape @ as %40, / as %2F, % as %25)"
    user=${BASH_REMATCH[2]} db=${BASH_REMATCH[4]}
    [ "$user" != postgres ] || die "$var: the role postgres is the server's own: name another"
    url_password "$var" "${BASH_REMATCH[3]}"
    accounts+=("$var" "$user" "$db" "$password")
done

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "placedock-postgres: empty data directory: initialising $PGDATA" >&2
    # The superuser, postgres, has no password: only the socket's peer
    # authentication lets it in (pg_hba.conf).
    initdb -D "$PGDATA" -U postgres --encoding=UTF8 --no-locale --auth-local=peer --auth-host=scram-sha-256 >/dev/null
fi

# The roles and databases, on a server that listens on the socket only: no
# client sees the server before they are there, and `healthy`
# (pg_isready over TCP) means they are.
pg_ctl -D "$PGDATA" -w -t 60 -s -o "${config[*]} -c listen_addresses=''" start
for ((i = 0; i < ${#accounts[@]}; i += 4)); do
    var=${accounts[i]} user=${accounts[i + 1]} db=${accounts[i + 2]} password=${accounts[i + 3]}
    echo "placedock-postgres: database $db, role $user (from $var)" >&2
    # psql quotes the variables itself: :'v' as a literal, :"v" as a name.
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -v user="$user" -v db="$db" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'user') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
ALTER ROLE :"user" WITH LOGIN PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
ALTER DATABASE :"db" OWNER TO :"user";
SQL
done
pg_ctl -D "$PGDATA" -w -t 60 -s -m fast stop
exec postgres "${config[@]}" "$@"
