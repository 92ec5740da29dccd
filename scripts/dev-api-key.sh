#!/usr/bin/env bash
# Print the dev tenant's API key: the one kept (git-ignored) in $DEV_API_KEY_FILE (default
# var/dev-api-key) while it still works, else a new one (first run, database reset, key revoked), kept there.
set -euo pipefail
key_file=${DEV_API_KEY_FILE:-var/dev-api-key}
if [[ -s $key_file ]] && pulse-admin check-api-key <"$key_file" >/dev/null 2>&1; then
  cat "$key_file"
  exit
fi
key=$(pulse-admin create-api-key --tenant dev --scopes send,read,admin | tail -n 1)
mkdir -p "$(dirname "$key_file")"
(umask 077 && printf '%s\n' "$key" >"$key_file")
printf '%s\n' "$key"
