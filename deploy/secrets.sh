#!/usr/bin/env bash
# Writes fresh secrets into deploy/secrets/ for compose and Kubernetes:
# random database passwords (postgres.env, <service>.env), one peer key per
# service and an admin key, with their SHA-256 hashes in auth.toml. Prints the
# admin key once; it is stored nowhere else.
#
#   deploy/secrets.sh                 refuses to overwrite existing files
#   deploy/secrets.sh --db-host HOST  database host in the URLs (default: postgres)
#   deploy/secrets.sh --force         overwrite
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets"
db_host=postgres
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --db-host) db_host="$2"; shift 2 ;;
    --force) force=1; shift ;;
    *) echo "usage: $0 [--db-host HOST] [--force]" >&2; exit 2 ;;
  esac
done

services=(accounts funnel revenue scoring success)
if [ "$force" -eq 0 ]; then
  for f in postgres.env gateway.env auth.toml "${services[@]/%/.env}"; do
    if [ -e "$dir/$f" ]; then
      echo "$dir/$f exists; pass --force to replace every secret" >&2
      exit 1
    fi
  done
fi

random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
key() { echo "bt_$(random)"; }
hash() { printf '%s' "$1" | sha256sum | awk '{ print "sha256:" $1 }'; }

umask 077
{
  echo "POSTGRES_USER=postgres"
  echo "POSTGRES_PASSWORD=$(random)"
} >"$dir/postgres.env"
{
  echo "# Accepted API keys (SHA-256 hashes), written by deploy/secrets.sh."
  echo
  echo "# Calls per second each key may make, by its scope (docs/configuration.md, \"Auth\")."
  echo "# The peer keys below are exempt."
  printf '[auth.rate_limits.%s]\nper_second = %s\nburst = %s\n\n' \
    read 500.0 1000 write 500.0 1000 admin 50.0 100
} >"$dir/auth.toml"

for svc in "${services[@]}" gateway; do
  peer_key="$(key)"
  {
    if [ "$svc" != gateway ]; then
      upper="$(echo "$svc" | tr '[:lower:]' '[:upper:]')"
      password="$(random)"
      echo "${upper}_DB_PASSWORD=$password" >>"$dir/postgres.env"
      echo "BOWTIE__${upper}__DATABASE__URL=postgres://$svc:$password@$db_host:5432/bowtie"
    fi
    echo "BOWTIE__PEERS__API_KEY=$peer_key"
  } >"$dir/$svc.env"
  printf '\n[[auth.keys]]\nname = "peer-%s"\nhash = "%s"\nscopes = ["read"]\nrate_limit = { per_second = 0.0 }\n' \
    "$svc" "$(hash "$peer_key")" >>"$dir/auth.toml"
done

admin_key="$(key)"
printf '\n[[auth.keys]]\nname = "admin"\nhash = "%s"\nscopes = ["admin"]\n' \
  "$(hash "$admin_key")" >>"$dir/auth.toml"

echo "wrote $dir/{postgres,accounts,funnel,revenue,scoring,success,gateway}.env and auth.toml"
echo "admin API key (shown once, store it in your password manager): $admin_key"
