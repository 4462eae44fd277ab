# Sourced by the database entrypoints (mariadb, postgres), which define die().
# shellcheck shell=bash

# url_password VAR PASSWORD-AS-IN-THE-URL sets `password` to the password as
# SQLAlchemy reads it, and so placement and keystone: each %XX escape decoded
# once (urllib.parse.unquote), a % without two hex digits kept. Printable
# ASCII only: PyMySQL sends a password in latin-1 while the server hashes the
# UTF-8 of `IDENTIFIED BY`, so any other character would give the account a
# password no client can send (PostgreSQL has the same rule, for one rule).
url_password() {
    local var=$1 rest=$2 out='' byte LC_ALL=C
    while [[ $rest == *%* ]]; do
        out+=${rest%%\%*}
        rest=${rest#*%}
        if [[ $rest =~ ^[0-9A-Fa-f]{2} ]]; then
            printf -v byte '%b' "\\x${rest:0:2}"
            out+=${byte:-$'\n'} # %00 is refused below; a newline stands for it here
            rest=${rest:2}
        else
            out+=%
        fi
    done
    out+=$rest
    [ -n "$out" ] || die "$var: the password must be set"
    [[ $out != *[![:print:]]* ]] ||
        die "$var: the password may hold printable ASCII only (letters, digits, punctuation, space), escaped in the URL where needed"
    # shellcheck disable=SC2034 # the result, read by the caller
    password=$out
}
