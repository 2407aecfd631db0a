#!/usr/bin/env bash
# leaninfra-backup: LeanInfra's backup jobs. systemd runs them (leaninfra-backup@<job>.timer); so can you.
# Managed by LeanInfra (role "backups"): change components/backups/ in the repository, not this file.
#
#   leaninfra-backup full     full pgBackRest backup to the bucket (weekly)
#   leaninfra-backup diff     differential backup: what changed since the last full one (daily)
#   leaninfra-backup check    WAL archiving and the repository work: pushes a WAL segment and waits for it
#   leaninfra-backup verify   reads back every backup and WAL file in the bucket and checks its checksum
#   leaninfra-backup dump     pg_dump of the app database, encrypted, streamed to the bucket (monthly)
#
# Each run writes node_exporter metrics (backup_metrics or dump_metrics below), one line to log_file,
# and exits 1 with the reason when it fails. Jobs run one at a time.
# A dump is read back with (the values below):
#   s3cmd -c <s3cmd_conf> get s3://<bucket>/<key> - | openssl enc -d <dump_cipher_options> -pass env:PASS | pg_restore ...
# where PASS holds PGBACKREST_REPO1_CIPHER_PASS from secrets_file.
# shellcheck source=components/host/files/leaninfra-lib.sh
source "${BASH_SOURCE[0]%/*}/../../host/files/leaninfra-lib.sh" # @lib

# @settings-begin
readonly stanza='main'
readonly pgbackrest_conf='/etc/pgbackrest/pgbackrest.conf'
readonly secrets_file='/etc/leaninfra/secrets/backups.env'
readonly s3cmd_conf='/etc/leaninfra/secrets/backups-s3cmd.cfg'
readonly ca_file=''
readonly endpoint_url='https://0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com'
readonly bucket='leaninfra-prod-backups'
readonly repo_path='/pgbackrest'
readonly dumps_prefix='dumps/'
readonly database='app'
readonly pg_port=5432
readonly backup_metrics='/var/lib/prometheus/node-exporter/leaninfra_backup.prom'
readonly dump_metrics='/var/lib/prometheus/node-exporter/leaninfra_dump.prom'
readonly log_file='/var/log/leaninfra/backup.log'
readonly lock_file='/run/lock/leaninfra-backup.lock'
readonly lock_wait_seconds=21600
readonly bucket_lock_days=14
readonly -a job_time_limits=('full=12h' 'diff=6h' 'check=30m' 'verify=12h' 'dump=12h')
readonly -a dump_cipher_options=('-aes-256-cbc' '-pbkdf2' '-iter' '200000' '-md' 'sha256')
# @settings-end

usage() {
  cat <<'USAGE'
usage: leaninfra-backup full|diff|check|verify|dump
  full     full pgBackRest backup to the bucket
  diff     differential backup: what changed since the last full one
  check    WAL archiving and the repository work
  verify   every backup and WAL file in the bucket reads back with its checksum
  dump     pg_dump of the app database, encrypted, streamed to the bucket
USAGE
}

job=${1:-}
case $job in
  full | diff | check | verify | dump) ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac
if (($# != 1)); then
  echo "usage: leaninfra-backup full|diff|check|verify|dump (one job)" >&2
  exit 2
fi
if [[ $EUID -ne 0 ]]; then
  echo "leaninfra-backup: run it as root: sudo leaninfra-backup $job" >&2
  exit 2
fi

declare -A time_limit=()
for limit in "${job_time_limits[@]}"; do time_limit[${limit%%=*}]=${limit#*=}; done
declare -A help=(
  [success]='1 when the last run of the job succeeded, 0 when it failed.'
  [last_run_timestamp_seconds]='Unix time the last run of the job ended.'
  [last_success_timestamp_seconds]='Unix time the last successful run of the job ended; 0 = never.'
  [duration_seconds]='Seconds the last run of the job took.'
  [repo_size_bytes]='Bytes the last successful backup of this type added to the bucket (compressed, encrypted).'
  [database_size_bytes]='Bytes of the database the last successful backup of this type covers.'
  [size_bytes]='Bytes of the last successful dump in the bucket (compressed, encrypted).'
)
families=(success last_run_timestamp_seconds last_success_timestamp_seconds duration_seconds repo_size_bytes database_size_bytes size_bytes)

if [[ $job == dump ]]; then
  metrics=$dump_metrics prefix=leaninfra_dump labels="{database=\"$database\"}"
else
  metrics=$backup_metrics prefix=leaninfra_backup labels="{type=\"$job\"}"
fi
# Read by write_metrics and fail() from inside other functions: readonly, so a local of the same name
# fails loudly instead of silently relabelling the job's metrics.
readonly metrics prefix labels

work=$(mktemp -d)
uploader=''
cleanup() {
  if [[ -n $uploader ]]; then kill "$uploader" 2>/dev/null || true; fi
  rm -rf -- "$work"
}
trap cleanup EXIT
started=$(date +%s)

# The value of one of this job's samples in the current file, or nothing.
previous() {
  if [[ -f $metrics ]]; then awk -v k="${prefix}_$1$labels" '$1 == k { print $2 }' "$metrics"; fi
}

# write_metrics family=value...: rewrites the file atomically (a temp file beside it, then rename; node_exporter
# reads only *.prom). Other jobs' samples stay as they were; a family with no value is left out.
write_metrics() {
  local -A value=()
  local pair family name others
  for pair in "$@"; do value[${pair%%=*}]=${pair#*=}; done
  {
    for family in "${families[@]}"; do
      name=${prefix}_$family
      others=''
      if [[ -f $metrics ]]; then
        others=$(awk -v n="$name{" -v k="$name$labels" 'index($1, n) == 1 && $1 != k' "$metrics")
      fi
      if [[ -z ${value[$family]:-} && -z $others ]]; then continue; fi
      printf '# HELP %s %s\n# TYPE %s gauge\n' "$name" "${help[$family]}" "$name"
      if [[ -n $others ]]; then printf '%s\n' "$others"; fi
      if [[ -n ${value[$family]:-} ]]; then printf '%s%s %s\n' "$name" "$labels" "${value[$family]}"; fi
    done
  } | write_textfile "$metrics"
}

log_line() { log_to "$log_file" "$job $*"; }

# succeed SUMMARY [family=value...]
succeed() {
  local summary=$1 now
  shift
  now=$(date +%s)
  write_metrics success=1 last_run_timestamp_seconds="$now" last_success_timestamp_seconds="$now" \
    duration_seconds=$((now - started)) "$@"
  log_line "ok $((now - started))s $summary"
  echo "leaninfra-backup $job: ok in $((now - started)) s: $summary"
}

# fail MESSAGE: the failure metric (the last success and sizes stay as they were), a log line, exit 1.
fail() {
  trap - ERR
  local message now last
  message=$(printf '%s' "$*" | one_line)
  now=$(date +%s)
  last=$(previous last_success_timestamp_seconds)
  write_metrics success=0 last_run_timestamp_seconds="$now" last_success_timestamp_seconds="${last:-0}" \
    duration_seconds=$((now - started)) repo_size_bytes="$(previous repo_size_bytes)" \
    database_size_bytes="$(previous database_size_bytes)" size_bytes="$(previous size_bytes)"
  log_line "FAILED $((now - started))s: $message"
  echo "leaninfra-backup $job: FAILED after $((now - started)) s: $message" >&2
  exit 1
}
# Inside $(...) an error only ends the subshell: the command that used it reports, once.
trap 'status=$?; if ((BASH_SUBSHELL > 0)); then exit "$status"; fi; fail "unexpected error at line $LINENO: $BASH_COMMAND exited with status $status"' ERR

# A fast, plain answer when the bucket is unreachable (pgBackRest itself retries for many minutes).
# Any HTTP answer will do; TLS is verified as pgBackRest and s3cmd verify it.
probe_bucket() {
  local tls=() error
  if [[ -n $ca_file ]]; then tls=(--cacert "$ca_file"); fi
  if ! error=$(curl --silent --show-error --output /dev/null --max-time 20 "${tls[@]}" "$endpoint_url/" 2>&1); then
    fail "the bucket's endpoint $endpoint_url does not answer ($error): check the server's network and R2's status; nothing was backed up"
  fi
}

# Why pgBackRest failed, in one line a person can act on.
explain_pgbackrest() {
  local command=$1 status=$2 out=$work/pgbackrest.out error
  error=$(grep -a -m1 -o 'ERROR: \[[0-9]*\]: .*' "$out" | one_line || true)
  error=${error:-pgbackrest exited with status $status}
  if grep -aq 'unable to load info file' "$out" && grep -aqE 'FormatError|CryptoError|cipher' "$out"; then
    echo "the repository s3://$bucket$repo_path does not decrypt with this passphrase: repo1-cipher-pass in $pgbackrest_conf is not the passphrase the repository was created with ($error)"
  elif grep -aqE 'unable to find primary cluster|no database found|DbConnectError' "$out"; then
    echo "pgBackRest cannot connect to PostgreSQL on port $pg_port: is it running? (pg_lsclusters; journalctl -u postgresql@17-main) ($error)"
  elif grep -aqE 'HostConnectError|HostNotFound|unable to connect to .[^=]*:[0-9]+|TLS|certificate' "$out"; then
    echo "pgBackRest cannot reach the bucket at $endpoint_url ($error)"
  elif grep -aqE 'AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|\[403\]' "$out"; then
    echo "the bucket refused the S3 credentials in $pgbackrest_conf; pulumi up writes the current ones ($error)"
  elif grep -aq 'unable to acquire lock' "$out"; then
    echo "another pgBackRest process holds the stanza's lock, e.g. a backup started by hand ($error)"
  else
    echo "pgbackrest $command failed: $error"
  fi
}

# pgBackRest as postgres with this configuration, from / (postgres cannot read root's working directory).
pgbackrest_as_postgres() { (cd / && runuser -u postgres -- pgbackrest --config="$pgbackrest_conf" "$@"); }

# The stanza's backups as JSON (printable: a wrong passphrase makes pgBackRest quote binary garbage).
backup_info() { pgbackrest_as_postgres --stanza="$stanza" --output=json info | printable; }

# run_pgbackrest COMMAND [OPTIONS...]: pgBackRest as postgres, within the job's time limit. Output in
# $work/pgbackrest.out; on failure it is shown and the job fails with the reason.
run_pgbackrest() {
  local command=$1 status=0
  (cd / && timeout --kill-after=2m "${time_limit[$job]}" runuser -u postgres -- \
    pgbackrest --config="$pgbackrest_conf" --stanza="$stanza" "$@") >"$work/pgbackrest.out" 2>&1 || status=$?
  if ((status == 0)); then return 0; fi
  printable <"$work/pgbackrest.out" >&2
  if ((status == 124 || status == 137)); then
    fail "pgbackrest $command did not finish within ${time_limit[$job]} and was stopped"
  fi
  fail "$(explain_pgbackrest "$command" "$status")"
}

# pgBackRest deletes a backup that stopped half-way before it starts the next one. Under the bucket lock
# the bucket refuses that delete until the stopped backup's newest file is older than the lock, so until
# then every backup fails: say so, with the date, instead of pgBackRest's retried 403.
refuse_if_locked_partial() {
  if ((bucket_lock_days == 0)); then return 0; fi
  local dirs latest files newest unlock good
  dirs=$(pgbackrest_as_postgres --output=json repo-ls "backup/$stanza" 2>/dev/null | printable) || return 0
  latest=$(jq -r 'to_entries | map(select(.value.type == "path" and (.key | test("^[0-9]{8}-[0-9]{6}F(_[0-9]{8}-[0-9]{6}[DI])?$"))) | .key) | sort | last // empty' <<<"$dirs") || return 0
  if [[ -z $latest ]]; then return 0; fi
  files=$(pgbackrest_as_postgres --output=json repo-ls --recurse "backup/$stanza/$latest" 2>/dev/null | printable) || return 0
  if jq -e 'has("backup.manifest")' <<<"$files" >/dev/null; then return 0; fi
  newest=$(jq '[.[] | select(.type == "file") | .time] | max // 0' <<<"$files") || return 0
  unlock=$((newest + bucket_lock_days * 86400))
  if ((unlock <= $(date +%s))); then return 0; fi
  good=$(backup_info 2>/dev/null | jq -r '.[0].backup[-1].label // "none"' || echo unknown)
  fail "backup $latest stopped half-way at $(date -u -d "@$newest" '+%Y-%m-%d %H:%M UTC'); pgBackRest must delete its files before any new backup, and the ${bucket_lock_days}-day bucket lock keeps them until $(date -u -d "@$unlock" '+%Y-%m-%d %H:%M UTC'), when backups resume by themselves. WAL archiving goes on, so every point since backup $good stays restorable (the drill proves it). To back up sooner: lower leaninfra:backupLockDays and pulumi up (README: 'A backup that stopped half-way')"
}

backup() {
  probe_bucket
  refuse_if_locked_partial
  run_pgbackrest backup --type="$job"
  local info row label type repo_size db_size
  info=$(backup_info)
  row=$(jq -r '.[0].backup[-1] | [.label, .type, .info.repository.delta, .info.size] | @tsv' <<<"$info")
  IFS=$'\t' read -r label type repo_size db_size <<<"$row"
  # A diff with no full backup to build on becomes a full one (pgBackRest says so).
  succeed "backup $label ($type), $repo_size bytes added to s3://$bucket$repo_path, database $db_size bytes" \
    repo_size_bytes="$repo_size" database_size_bytes="$db_size"
}

check() {
  probe_bucket
  run_pgbackrest check
  succeed "WAL archiving to s3://$bucket$repo_path works"
}

# pgBackRest verify exits 0 even when it finds damaged files, and without --verbose says nothing when all
# is well: its full report must say "status: ok".
verify() {
  probe_bucket
  run_pgbackrest verify --output=text --verbose
  if ! grep -qx 'status: ok' "$work/pgbackrest.out"; then
    local problems
    problems=$(grep -aE 'status: (error|invalid)|(missing|checksum invalid|size invalid|other): [1-9]|No stanzas' "$work/pgbackrest.out" |
      sed 's/^ *//' | paste -sd ';' | one_line || true)
    printable <"$work/pgbackrest.out" >&2
    fail "pgBackRest verify found damaged or missing files in s3://$bucket$repo_path: ${problems:-its report has no 'status: ok'} (details: /var/log/pgbackrest/$stanza-verify.log)"
  fi
  succeed "every backup and WAL file in s3://$bucket$repo_path reads back with its checksum"
}

# pg_dump -Fc | openssl | s3cmd put -, through a FIFO this script holds open: s3cmd sees the end of its
# input (and completes the upload) only after pg_dump and openssl succeeded. On failure it is killed
# with the upload unfinished, so no truncated dump is ever stored (the bucket lock would keep it).
dump() {
  probe_bucket
  if [[ ! -r $s3cmd_conf ]]; then fail "$s3cmd_conf is missing: apply the backups role (pulumi up)"; fi
  local passphrase stamp key url size
  passphrase=$(sed -n 's/^PGBACKREST_REPO1_CIPHER_PASS=//p' "$secrets_file" 2>/dev/null || true)
  if [[ -z $passphrase ]]; then fail "$secrets_file has no PGBACKREST_REPO1_CIPHER_PASS: apply the backups role (pulumi up)"; fi
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  key=$(printf '%s%s-%s.pgdump.enc' "$dumps_prefix" "$database" "$stamp")
  url="s3://$bucket/$key"
  mkfifo -m 0600 "$work/upload"
  s3cmd --config="$s3cmd_conf" --no-progress put - "$url" <"$work/upload" >"$work/s3cmd.out" 2>&1 &
  uploader=$!
  exec 7>"$work/upload"
  dump_database | encrypt_stream >&7
  if [[ $(<"$work/pg_dump.status") != 0 || $(<"$work/openssl.status") != 0 ]]; then
    kill "$uploader" 2>/dev/null || true
    wait "$uploader" 2>/dev/null || true
    uploader=''
    exec 7>&-
    printable <"$work/pg_dump.err" >&2
    if [[ $(<"$work/pg_dump.status") == 124 ]]; then fail "pg_dump of $database did not finish within ${time_limit[dump]}; nothing was stored"; fi
    fail "pg_dump of $database failed ($(tail -n 3 "$work/pg_dump.err" "$work/openssl.err" | one_line)); nothing was stored: the unfinished upload was abandoned and the bucket's lifecycle removes its parts within a day"
  fi
  exec 7>&-
  local status=0
  wait "$uploader" || status=$?
  uploader=''
  if ((status != 0)); then
    printable <"$work/s3cmd.out" >&2
    fail "uploading the dump to $url failed (s3cmd exit $status: $(tail -n 3 "$work/s3cmd.out" | one_line))"
  fi
  size=$(s3cmd --config="$s3cmd_conf" ls "$url" 2>"$work/ls.err" | awk -v u="$url" '$NF == u { print $3 }' || true)
  if [[ ! $size =~ ^[0-9]+$ ]]; then
    fail "the dump is not in the bucket after its upload: s3cmd ls $url found nothing ($(one_line <"$work/ls.err"))"
  fi
  succeed "$url ($size bytes: pg_dump -Fc, encrypted)" size_bytes="$size"
}

dump_database() {
  local status=0
  (cd / && timeout --kill-after=2m "${time_limit[dump]}" runuser -u postgres -- \
    pg_dump --port="$pg_port" --format=custom --compress=zstd --dbname="$database") 2>"$work/pg_dump.err" || status=$?
  echo "$status" >"$work/pg_dump.status"
}

encrypt_stream() {
  local status=0
  LEANINFRA_DUMP_PASS=$passphrase openssl enc "${dump_cipher_options[@]}" -salt -pass env:LEANINFRA_DUMP_PASS 2>"$work/openssl.err" || status=$?
  echo "$status" >"$work/openssl.status"
}

if ! take_lock "$lock_file" "$lock_wait_seconds"; then
  fail "another leaninfra-backup job held $lock_file for $((lock_wait_seconds / 3600)) hours"
fi
started=$(date +%s)

case $job in
  full | diff) backup ;;
  check) check ;;
  verify) verify ;;
  dump) dump ;;
esac
