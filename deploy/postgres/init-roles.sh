#!/bin/sh
# One login role and one schema per Bowtie service, in database $POSTGRES_DB.
#
# Each role owns its schema and has no privilege on any other: a service (and
# its migration job) can reach only its own tables. The roles may create a
# schema in the database because the services run `CREATE SCHEMA IF NOT
# EXISTS <own schema>` at start, which PostgreSQL checks against that
# privilege even when the schema exists; nothing else is granted. Nobody but
# the owner may use the public schema.
#
# The official postgres image runs this once, on an empty data directory
# (docker-entrypoint-initdb.d). Against a managed database run it by hand with
# the same variables and PGHOST/PGUSER/PGPASSWORD of an administrator:
#
#   POSTGRES_USER=admin POSTGRES_DB=bowtie ACCOUNTS_DB_PASSWORD=... \
#     FUNNEL_DB_PASSWORD=... REVENUE_DB_PASSWORD=... SCORING_DB_PASSWORD=... \
#     SUCCESS_DB_PASSWORD=... \
#     sh deploy/postgres/init-roles.sh
#
# Running it again changes passwords to the given ones and is otherwise a no-op.
set -eu

db="${POSTGRES_DB:-bowtie}"
admin="${POSTGRES_USER:-postgres}"

for svc in accounts funnel revenue scoring success; do
  var="$(echo "$svc" | tr '[:lower:]' '[:upper:]')_DB_PASSWORD"
  eval "password=\${$var:?$var is not set}"
  psql -X -q -v ON_ERROR_STOP=1 --username "$admin" --dbname "$db" \
    -v role="$svc" -v password="$password" -v db="$db" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
ALTER ROLE :"role" SET search_path = :"role";
CREATE SCHEMA IF NOT EXISTS :"role" AUTHORIZATION :"role";
REVOKE ALL ON SCHEMA :"role" FROM PUBLIC;
GRANT CONNECT, CREATE ON DATABASE :"db" TO :"role";
SQL
done

psql -X -q -v ON_ERROR_STOP=1 --username "$admin" --dbname "$db" -v db="$db" <<'SQL'
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL
echo "bowtie: roles and schemas of accounts, funnel, revenue, scoring, success ready in $db"
