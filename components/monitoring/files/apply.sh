# shellcheck shell=bash
# The monitoring role's apply step (components/monitoring/index.ts): runs as root inside the role's bundle
# on every run. The PostgreSQL role postgres_exporter logs in as (pg_monitor, its SCRAM verifier), then
# every service enabled and running. One line per change; the test roots have no systemd.
cd /
# The verifier first: its '$' signs are literal (this directive covers that one line).
# shellcheck disable=SC2016
# @settings-begin
readonly verifier='SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy'
readonly -a units=('prometheus' 'prometheus-alertmanager')
readonly postgres_port=5432
readonly monitor_user='leaninfra_monitor'
# @settings-end
export PGOPTIONS='-c client_min_messages=warning'

# psql as the superuser over the local socket (peer); SQL comes on stdin, values as psql variables.
sql() { runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -p "$postgres_port" -d postgres -v user="$monitor_user" -v verifier="$verifier"; }

state=$(sql <<'SQL'
select case
  when not exists (select 1 from pg_roles where rolname = :'user') then 'missing'
  when (select rolpassword from pg_authid where rolname = :'user') is distinct from :'verifier' then 'password'
  when not pg_has_role(:'user', 'pg_monitor', 'member') then 'grant'
  else 'ok' end;
SQL
)
case "$state" in
  missing)
    sql <<'SQL'
create role :"user" login connection limit 3 password :'verifier';
grant pg_monitor to :"user";
SQL
    echo "created the PostgreSQL role $monitor_user (pg_monitor) for postgres_exporter"
    ;;
  password)
    sql <<'SQL'
alter role :"user" password :'verifier';
SQL
    echo "set the password of the PostgreSQL role $monitor_user"
    ;;
  grant)
    sql <<'SQL'
grant pg_monitor to :"user";
SQL
    echo "granted pg_monitor to the PostgreSQL role $monitor_user"
    ;;
  ok) ;;
  *)
    echo "could not read the PostgreSQL role $monitor_user: $state" >&2
    exit 1
    ;;
esac

if [ -d /run/systemd/system ]; then
  for unit in "${units[@]}"; do
    if ! systemctl is-enabled --quiet "$unit"; then
      systemctl enable --quiet "$unit"
      echo "enabled $unit at boot"
    fi
    if ! systemctl is-active --quiet "$unit"; then
      systemctl start "$unit"
      echo "started $unit"
    fi
  done
fi
