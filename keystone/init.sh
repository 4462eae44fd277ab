#!/bin/sh
# One-shot and idempotent, before keystone serves: schema, fernet and
# credential keys (kept in the /var/lib/keystone volume keystone shares), then
# `keystone-manage bootstrap`: the admin user and project, RegionOne and the
# identity endpoints, all read from OS_BOOTSTRAP_* variables. Runs as the
# keystone user, so the keys are its own and --keystone-user/--keystone-group
# (needed when run as root) are not.
set -eu
keystone-manage db_sync
keystone-manage fernet_setup
keystone-manage credential_setup
keystone-manage bootstrap
echo "keystone-init: database, keys and admin account ready" >&2
