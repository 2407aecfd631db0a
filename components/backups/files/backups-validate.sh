#!/usr/bin/env bash
# The backups role's validate step: the tools that read the new files check them (PostgreSQL, pgBackRest
# offline, systemd). The role's bundle runs it as a function in a subshell with set -e, after the files
# changed and before any handler; a failure puts the files back.
# Managed by LeanInfra (role "backups"): change components/backups/ in the repository, not this file.

# @settings-begin
readonly postgres_bin='/usr/lib/postgresql/17/bin'
readonly postgres_config_dir='/etc/postgresql/17/main'
readonly archive_command='pgbackrest --stanza=main archive-push %p'
readonly archiving_conf='/etc/postgresql/17/main/conf.d/30-leaninfra-archiving.conf'
readonly pgbackrest_conf='/etc/pgbackrest/pgbackrest.conf'
readonly stanza='main'
readonly -a units=('leaninfra-backup@full.service' 'leaninfra-backup@full.timer' 'leaninfra-drill.timer')
readonly drill_bin='/usr/local/sbin/leaninfra-drill'
readonly drill_service='leaninfra-drill.service'
# @settings-end

cd /
# PostgreSQL reads every conf.d file: a bad line fails here, and a later file must not override ours.
value=$(runuser -u postgres -- "$postgres_bin/postgres" -D "$postgres_config_dir" -C archive_command)
if [ "$value" != "$archive_command" ]; then
  echo "PostgreSQL's configuration sets archive_command to '$value', not pgBackRest's (a conf.d file after $archiving_conf?)" >&2
  exit 1
fi
# pgBackRest reads its configuration without touching the bucket: an unknown option is a warning there.
out=$(runuser -u postgres -- pgbackrest --config="$pgbackrest_conf" --stanza="$stanza" help backup repo1-type 2>&1) || {
  echo "$out" >&2
  exit 1
}
if echo "$out" | grep -E 'WARN:|ERROR:' >&2; then
  echo "pgBackRest does not accept $pgbackrest_conf (above)" >&2
  exit 1
fi
# systemd reads the units (by name: it finds them in /etc/systemd/system, and the template needs an
# instance to be checked); the drill's service only once leaninfra-drill is installed.
systemd-analyze verify "${units[@]}"
if [ -x "$drill_bin" ]; then systemd-analyze verify "$drill_service"; fi
