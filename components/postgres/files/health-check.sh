# shellcheck shell=bash
# The postgres role's health check (components/postgres/index.ts): runs as root inside the role's bundle,
# last, on every run; exits non-zero with what is wrong on stderr.
# @settings-begin
readonly port=5432
readonly db='app'
readonly user='app'
readonly pgpass='/etc/leaninfra/secrets/postgres-app.pgpass'
readonly data_directory='/srv/data/postgresql/17/main'
readonly conf_d='/etc/postgresql/17/main/conf.d'
readonly unit='postgresql@17-main'
readonly -a managed_settings=('listen_addresses' 'work_mem')
# @settings-end
cd /
if ! pg_ctlcluster 17 main status >/dev/null 2>&1; then
  echo "PostgreSQL 17/main is not running: see pg_lsclusters and /var/log/postgresql/postgresql-17-main.log" >&2
  exit 1
fi
q() { runuser -u postgres -- psql -X -A -t -q -p "$port" -d postgres -c "$1"; }
data=$(q 'show data_directory')
if [ "$data" != "$data_directory" ]; then
  echo "PostgreSQL runs from $data, not from the data volume ($data_directory)" >&2
  exit 1
fi
# The settings the role's conf.d files set, as an SQL list: 'a', 'b', ...
names=$(printf "'%s', " "${managed_settings[@]}")
overridden=$(q "select string_agg(name || ' (from ' || coalesce(sourcefile, source) || ')', ', ') from pg_settings
  where name in (${names%, }) and coalesce(sourcefile, '') not like '$conf_d/%'")
if [ -n "$overridden" ]; then
  echo "settings overridden outside $conf_d (ALTER SYSTEM? see postgresql.auto.conf): $overridden" >&2
  exit 1
fi
pending=$(q "select string_agg(name, ', ') from pg_settings where pending_restart")
if [ -n "$pending" ]; then
  echo "settings waiting for a restart: $pending (sudo systemctl restart $unit)" >&2
  exit 1
fi
if ! PGPASSFILE=$pgpass PGCONNECT_TIMEOUT=5 psql -w -X -A -t -q \
  "host=127.0.0.1 port=$port dbname=$db user=$user" -c 'select 1' >/dev/null; then
  echo "the app role $user cannot log in to $db on 127.0.0.1:$port with its password" >&2
  exit 1
fi
