#!/usr/bin/env bash
# The backups role's apply step: the stanza in the bucket (created once), then archiving on (a reload, only
# when PostgreSQL does not use it yet: the stanza must exist before WAL is pushed), pgbackrest check, and
# the timers enabled. Prints one line per change. The role's bundle runs it as a function in a subshell
# with set -e, on every run.
# Managed by LeanInfra (role "backups"): change components/backups/ in the repository, not this file.

# @settings-begin
readonly port=5432
readonly pgbackrest_conf='/etc/pgbackrest/pgbackrest.conf'
readonly stanza='main'
readonly ca_file=''
readonly endpoint_url='https://0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com'
readonly repo='s3://leaninfra-prod-backups/pgbackrest'
readonly archive_command='pgbackrest --stanza=main archive-push %p'
readonly archive_timeout_seconds=60
readonly archiving_conf='/etc/postgresql/17/main/conf.d/30-leaninfra-archiving.conf'
readonly postgres_unit='postgresql@17-main'
readonly -a timers=('leaninfra-backup@full.timer' 'leaninfra-drill.timer')
# @settings-end

cd /
die() {
  echo "$*" >&2
  exit 1
}
backrest() { runuser -u postgres -- pgbackrest --config="$pgbackrest_conf" --stanza="$stanza" "$@"; }
q() { runuser -u postgres -- psql -X -A -t -q -p "$port" -d postgres -c "$1"; }

if ! pg_ctlcluster 17 main status >/dev/null 2>&1; then
  die "PostgreSQL 17/main is not running: apply the postgres role first (pg_lsclusters shows the cluster)"
fi
# Without a test CA the system's CAs verify R2's certificate.
tls=()
if [ -n "$ca_file" ]; then tls=(--cacert "$ca_file"); fi
if ! error=$(curl --silent --show-error --output /dev/null --max-time 20 "${tls[@]}" "$endpoint_url/" 2>&1); then
  die "the bucket's endpoint $endpoint_url does not answer ($error): check the network and the endpoint (leaninfra:backup* settings)"
fi

# The stanza: 0 = fine, 2 = fine but no backup yet, 1 and 3 = missing (created here), anything else is a problem.
# Printable ASCII only: with a wrong passphrase pgBackRest quotes binary garbage, which jq refuses.
info=$(timeout 300 runuser -u postgres -- pgbackrest --config="$pgbackrest_conf" --stanza="$stanza" --output=json info | tr -cd '\40-\176') ||
  die "pgbackrest info failed; see /var/log/pgbackrest/"
code=$(jq -r '.[0].status.code' <<<"$info")
case $code in
  0 | 2) ;;
  1 | 3)
    for attempt in 1 2 3 4 5; do
      if out=$(backrest --log-level-console=warn stanza-create 2>&1); then break; fi
      # An archive-push still running (e.g. from an earlier setup) holds the stanza's lock for a moment.
      if [ "$attempt" = 5 ] || ! grep -q 'unable to acquire lock' <<<"$out"; then
        echo "$out" | tr -cd '\11\12\40-\176' >&2
        die "pgbackrest stanza-create failed (output above)"
      fi
      sleep 10
    done
    echo "created pgBackRest stanza $stanza in $repo"
    ;;
  *)
    message=$(jq -r '.[0].repo[0].status.message // .[0].status.message' <<<"$info" | tr -cd '\11\12\40-\176' | head -n 1)
    if grep -qE 'FormatError|CryptoError' <<<"$message"; then
      die "$repo does not decrypt with this passphrase: it was created with another repo1-cipher-pass. Restore the old passphrase, or start a new repository path. pgBackRest: $message"
    fi
    die "pgBackRest cannot use $repo (status $code): $message"
    ;;
esac

# Archiving on: PostgreSQL reloads the conf.d file (without systemd, as in the tests, pg_ctlcluster does it).
archiving() { q "select setting from pg_settings where name in ('archive_command', 'archive_timeout') order by name"; }
want=$(printf '%s\n%s' "$archive_command" "$archive_timeout_seconds")
if [ "$(archiving)" != "$want" ]; then
  if [ -d /run/systemd/system ]; then
    systemctl reload "$postgres_unit"
  else
    pg_ctlcluster 17 main reload >&2
  fi
  for _ in $(seq 50); do
    if [ "$(archiving)" = "$want" ]; then break; fi
    sleep 0.2
  done
  [ "$(archiving)" = "$want" ] || die "PostgreSQL was reloaded but does not use $archiving_conf: $(archiving | paste -sd ' ')"
  echo "reloaded PostgreSQL: WAL is archived to $repo (archive_timeout $archive_timeout_seconds s)"
fi

# Archiving and the repository work end to end: one WAL segment pushed and found in the bucket.
if ! out=$(backrest check 2>&1); then
  echo "$out" | tr -cd '\11\12\40-\176' >&2
  die "pgbackrest check failed (output above): WAL does not reach $repo"
fi

for timer in "${timers[@]}"; do
  if ! systemctl is-enabled --quiet "$timer" 2>/dev/null; then
    systemctl enable --quiet "$timer" 2>/dev/null || systemctl enable "$timer" >&2
    echo "enabled $timer"
  fi
  if [ -d /run/systemd/system ] && ! systemctl is-active --quiet "$timer"; then
    systemctl start "$timer"
    echo "started $timer"
  fi
done
