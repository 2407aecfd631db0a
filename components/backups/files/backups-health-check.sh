#!/usr/bin/env bash
# The backups role's health check: PostgreSQL archives WAL to the bucket with pgBackRest, the last
# archiving attempt did not fail, and every timer is enabled. The role's bundle runs it as a function in
# a subshell with set -e, last on every run; its output is shown only when it fails.
# Managed by LeanInfra (role "backups"): change components/backups/ in the repository, not this file.

# @settings-begin
readonly port=5432
readonly archive_command='pgbackrest --stanza=main archive-push %p'
readonly stanza='main'
readonly -a timers=('leaninfra-backup@full.timer' 'leaninfra-drill.timer')
# @settings-end

cd /
q() { runuser -u postgres -- psql -X -A -t -q -p "$port" -d postgres -c "$1"; }
if ! pg_ctlcluster 17 main status >/dev/null 2>&1; then
  echo "PostgreSQL 17/main is not running: nothing is archived" >&2
  exit 1
fi
command=$(q "show archive_command")
if [ "$command" != "$archive_command" ]; then
  echo "PostgreSQL's archive_command is '$command', not pgBackRest's: WAL does not reach the bucket (reload PostgreSQL)" >&2
  exit 1
fi
failing=$(q "select last_failed_wal || ' at ' || last_failed_time from pg_stat_archiver
  where last_failed_time is not null and last_failed_time > coalesce(last_archived_time, '-infinity')")
if [ -n "$failing" ]; then
  echo "WAL archiving to the bucket fails (last failure: $failing): see /var/log/pgbackrest/$stanza-archive-push-async.log" >&2
  exit 1
fi
for timer in "${timers[@]}"; do
  if ! systemctl is-enabled --quiet "$timer" 2>/dev/null; then
    echo "$timer is not enabled: the backups would not run" >&2
    exit 1
  fi
done
