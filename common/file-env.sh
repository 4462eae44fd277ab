# Sourced by the entrypoints (placement, mariadb, keystone, haproxy): settings
# that hold credentials may come from files, as Docker and swarm secrets are
# given (/run/secrets/NAME). For a variable NAME ending in __CONNECTION,
# PASSWORD or SECRET_KEY, NAME_FILE=PATH sets NAME to the file's content (a
# trailing newline dropped), over any value NAME already had (an image default).
# shellcheck shell=sh
for file_var in $(env | sed -n 's/^\([A-Z0-9_]*\(__CONNECTION\|PASSWORD\|SECRET_KEY\)_FILE\)=.*/\1/p'); do
    eval "path=\${$file_var}"
    # shellcheck disable=SC2154 # set by the eval above
    if [ ! -f "$path" ] || [ ! -r "$path" ]; then
        echo "placedock: $file_var=$path: no readable file there" >&2
        exit 1
    fi
    export "${file_var%_FILE}=$(cat "$path")"
    unset "$file_var"
done
unset file_var path
