# shellcheck shell=bash
# The postgres role's validate step (components/postgres/index.ts): runs as root inside the role's bundle
# when a file changed, before the handlers; a non-zero exit puts the changed files back.
# @settings-begin
readonly pg_bin='/usr/lib/postgresql/17/bin'
readonly config_dir='/etc/postgresql/17/main'
readonly hba='/etc/postgresql/17/main/pg_hba.conf'
# @settings-end
cd /
# PostgreSQL itself reads postgresql.conf and every conf.d file: an unknown name or a bad value fails here.
data=$(runuser -u postgres -- "$pg_bin/postgres" -D "$config_dir" -C data_directory)
# A running server checks the new pg_hba.conf too (it reads the file on disk for this view).
if pg_ctlcluster 17 main status >/dev/null 2>&1 && [ -f "$data/postmaster.pid" ]; then
  port=$(sed -n 4p "$data/postmaster.pid")
  errors=$(runuser -u postgres -- psql -X -A -t -q -p "$port" -d postgres \
    -c "select 'line ' || line_number || ': ' || error from pg_hba_file_rules where error is not null")
  if [ -n "$errors" ]; then
    echo "$hba has errors:" >&2
    echo "$errors" >&2
    exit 1
  fi
fi
