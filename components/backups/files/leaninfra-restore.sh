#!/usr/bin/env bash
# leaninfra-restore: restores PRODUCTION's database from the backups, to a point in time or to the
# latest state the backups hold. For the real emergency (a bad migration, deleted rows, a lost disk).
# Managed by LeanInfra (role "backups"): change components/backups/files/leaninfra-restore.sh in the repository, not this file.
#
#   sudo leaninfra-restore --to '2025-11-28 09:00:00+00'   the database as it was at that moment (UTC offset required)
#   sudo leaninfra-restore --latest                         everything the backups and archived WAL hold
#   add --yes to skip the question; without it, type this server's host name (host_name) to go on.
#
# The steps, each printed before it runs:
#   1. stop the app's containers: nginx answers every request with the maintenance page
#   2. stop PostgreSQL
#   3. move the data directory aside (<data_dir>.before-restore-<time>): kept, never deleted
#   4. pgbackrest restore into an empty data directory (--type=time --target-action=promote for --to)
#   5. start PostgreSQL: it replays WAL up to the target and promotes (a new timeline)
#   6. verify: every table of the app's database and its rows, the last restored transaction
#   7. start the app's containers again and wait for its health path
#   8. print how to go back to the moved-aside data directory
# It holds the drill's, the deploy's and the backup jobs' locks from start to end (it refuses while a
# drill, a deploy or a backup job runs), and stops the backup and drill timers until it ends, however it
# ends: the timers are started again on success, failure or interruption.
# Before step 1 it checks, changing nothing: the repository answers and holds a backup from before the
# target, the data volume has room for a second copy, no tablespaces. A failure before step 3 puts
# PostgreSQL and the app back as they were; after it, the script stops and prints how to go back.
# shellcheck source=components/host/files/leaninfra-lib.sh
source "${BASH_SOURCE[0]%/*}/../../host/files/leaninfra-lib.sh" # @lib
# shellcheck source=components/backups/files/pgbackrest-lib.sh
source "${BASH_SOURCE[0]%/*}/pgbackrest-lib.sh" # @lib

readonly tool=restore
# @settings-begin
readonly host_name='app'
readonly stanza='main'
readonly database='app'
readonly production_port=5432
readonly data_dir='/srv/data/postgresql/17/main'
readonly pg_bin='/usr/lib/postgresql/17/bin'
readonly pg_version=17
readonly pg_cluster='main'
readonly pg_unit='postgresql@17-main'
readonly pgbackrest_conf='/etc/pgbackrest/pgbackrest.conf'
readonly secrets_file='/etc/leaninfra/secrets/backups.env'
readonly deploy_script='/usr/local/sbin/leaninfra-deploy'
readonly backup_command='/usr/local/sbin/leaninfra-backup'
readonly restore_log='/var/log/leaninfra/restore.log'
readonly lock_file='/run/lock/leaninfra-drill.lock'
readonly deploy_lock_file='/run/lock/leaninfra-deploy.lock'
readonly backup_lock_file='/run/lock/leaninfra-backup.lock'
readonly -a paused_timers=('leaninfra-backup@full.timer' 'leaninfra-drill.timer')
readonly recovery_timeout_minutes=120
readonly app_health_timeout_seconds=120
# @settings-end
readonly production_socket_dir=/var/run/postgresql

# State, read by the EXIT trap.
target_time=''
target_at=''
target_text=''
assume_yes=0
stamp=$(date -u +%Y%m%dT%H%M%SZ)
aside=$data_dir.before-restore-$stamp
step_no=0
stopped_containers=()
postgres_stopped=0
moved=0
done_ok=0
stopped_timers=()
started_ms=$(date +%s%3N)

readonly total_steps=8
step() {
  step_no=$1
  shift
  printf '\n[restore] step %s/%s: %s\n' "$step_no" "$total_steps" "$*"
}

die() {
  say "FAILED: $*" >&2
  exit 1
}

usage() {
  cat >&2 <<'USAGE'
usage: leaninfra-restore --to 'YYYY-MM-DD HH:MM:SS+00' [--yes]
       leaninfra-restore --latest [--yes]
Restores PRODUCTION's database from the backups. Read the steps it prints before confirming.
USAGE
  exit 2
}

log_line() { log_to "$restore_log" "target=$target_text $*"; }

postgres_running() { as_postgres "$pg_bin/pg_ctl" status -D "$data_dir" >/dev/null 2>&1; }

start_postgres() {
  if [[ -d /run/systemd/system ]]; then systemctl start "$pg_unit"; else pg_ctlcluster "$pg_version" "$pg_cluster" start; fi
}

stop_postgres() {
  if [[ -d /run/systemd/system ]]; then systemctl stop "$pg_unit"; else pg_ctlcluster "$pg_version" "$pg_cluster" stop -m fast; fi
}

psql_db() { as_postgres "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$production_socket_dir" -p "$production_port" -d "$1" "${@:2}"; }
sql() { psql_db "$1" -c "$2"; }

start_app() {
  if ((${#stopped_containers[@]} == 0)); then return 0; fi
  say "starting ${stopped_containers[*]}"
  docker start "${stopped_containers[@]}" >/dev/null
}

# take_other_lock FILE WHAT: an exclusive flock on FILE, held until the script exits; refuses at once
# when someone holds it (a deploy or a backup job can take hours: the owner decides, not a timeout).
take_other_lock() {
  local file=$1 what=$2 fd
  mkdir -p -- "${file%/*}"
  exec {fd}>>"$file"
  if ! flock --exclusive --nonblock "$fd"; then
    die "$what holds $file; wait until it ends (or stop it), then run leaninfra-restore again. Nothing was changed."
  fi
}

# No backup job or drill starts while production is restored: a full backup of a half-restored data
# directory, or a drill reading it, would be worse than none. Only the timers that were active are
# started again.
pause_timers() {
  local timer
  if [[ ! -d /run/systemd/system ]]; then return 0; fi
  for timer in "${paused_timers[@]}"; do
    if systemctl is-active --quiet "$timer"; then stopped_timers+=("$timer"); fi
  done
  if ((${#stopped_timers[@]} == 0)); then return 0; fi
  systemctl stop "${stopped_timers[@]}"
  say "stopped ${stopped_timers[*]} until the restore ends"
}

resume_timers() {
  if ((${#stopped_timers[@]} == 0)); then return 0; fi
  if systemctl start "${stopped_timers[@]}"; then
    say "started ${stopped_timers[*]} again"
  else
    say "could not start ${stopped_timers[*]} again: systemctl start ${stopped_timers[*]}" >&2
  fi
  stopped_timers=()
}

print_plan() {
  cat <<PLAN
[restore] This restores PRODUCTION's database on $host_name to $target_text.
  1. stop the app's containers: nginx answers with the maintenance page until step 7
  2. stop PostgreSQL ($pg_unit)
  3. move $data_dir aside to $aside (kept, never deleted)
  4. pgbackrest restore into an empty $data_dir$([[ -n $target_time ]] && echo " (--type=time --target='$target_time' --target-action=promote)")
  5. start PostgreSQL; it replays WAL up to the target and promotes
  6. verify: every table of $database and its rows, the last restored transaction
  7. start the app's containers again and wait for its health path
  8. print how to go back to $aside
Changes made to the database after the target are not in the restored database; they stay in $aside.
PLAN
}

preflight() {
  local info stops labels data_kb avail_kb problem
  say "checking before changing anything"
  if [[ ! -f $pgbackrest_conf ]]; then die "$pgbackrest_conf is missing: apply the backups role (pulumi up) first"; fi
  if [[ -n $(missing_tools) ]]; then die "not installed: $(missing_tools)(apply the backups role, which installs them)"; fi
  if [[ ! -d $data_dir ]]; then die "production's data directory $data_dir does not exist: is the data volume mounted (findmnt ${data_dir%%/postgresql*})?"; fi
  if [[ -n $(ls -A -- "$data_dir/pg_tblspc" 2>/dev/null) ]]; then die "production has tablespaces ($data_dir/pg_tblspc); this script restores the data directory only: restore by hand (pgbackrest restore --tablespace-map)"; fi
  if ! info=$(repo_info); then
    printf '%s\n' "$info" | tr -c '[:print:]\n' ' ' >&2
    die "pgbackrest info failed (output above): the bucket is unreachable, or its credentials are wrong. Nothing was changed."
  fi
  if problem=$(info_problem "$info"); then die "$problem. Nothing was changed."; fi
  mapfile -t stops < <(backup_stop_times "$info")
  mapfile -t labels < <(backup_labels "$info")
  if ((${#stops[@]} == 0)); then die "the repository holds no backup of stanza $stanza. Nothing was changed."; fi
  say "${#stops[@]} backup(s) in the repository, from ${labels[0]} ($(utc "${stops[0]}")) to ${labels[-1]} ($(utc "${stops[-1]}"))"
  if [[ -n $target_time ]]; then
    if ((target_at > $(date +%s))); then die "the target $target_time is in the future. Nothing was changed."; fi
    if ((stops[0] > target_at)); then die "no backup finished before $target_time (the oldest finished $(utc "${stops[0]}")): that point cannot be restored. Nothing was changed."; fi
  fi
  data_kb=$(du -s -k -x -- "$data_dir" | cut -f1)
  avail_kb=$(df -P -k -- "${data_dir%/*}" | awk 'NR == 2 { print $4 }')
  if ((avail_kb < data_kb + data_kb / 10 + 262144)); then
    die "the data volume has $((avail_kb / 1024)) MiB free; the restore needs about $((data_kb / 1024)) MiB next to the moved-aside copy. Free space first. Nothing was changed."
  fi
}

confirm() {
  local answer=''
  if ((assume_yes)); then say "confirmed by --yes"; return 0; fi
  printf '\nType the host name of this server (%s) to restore PRODUCTION, anything else cancels: ' "$host_name"
  if ! IFS= read -r answer; then answer=''; fi
  if [[ $answer != "$host_name" ]]; then
    echo
    say "CANCELLED: the answer was not $host_name; nothing was changed (use --yes to skip the question)" >&2
    exit 3
  fi
}

stop_app() {
  local name
  if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
    say "no Docker here: no app container to stop"
    return 0
  fi
  while IFS= read -r name; do
    if [[ -n $name ]]; then stopped_containers+=("$name"); fi
  done < <(docker ps --filter label=leaninfra.role=app --format '{{.Names}}')
  if ((${#stopped_containers[@]} == 0)); then say "no app container runs"; return 0; fi
  say "stopping ${stopped_containers[*]} (nginx now serves the maintenance page)"
  docker stop --time 30 "${stopped_containers[@]}" >/dev/null
}

server_log() {
  say "last lines of /var/log/postgresql/postgresql-$pg_version-$pg_cluster.log:" >&2
  tail -n 20 -- "/var/log/postgresql/postgresql-$pg_version-$pg_cluster.log" 2>/dev/null | sed 's/^/    /' >&2 || true
}

wait_promoted() {
  local deadline=$((SECONDS + recovery_timeout_minutes * 60)) state='' shown=0
  while true; do
    state=$(sql postgres 'SELECT pg_is_in_recovery()' 2>/dev/null || true)
    if [[ $state == f ]]; then return 0; fi
    if ! postgres_running; then
      server_log
      die "PostgreSQL stopped while replaying WAL: the target may lie after the newest archived WAL, or the archive is incomplete (see /var/log/postgresql/postgresql-$pg_version-$pg_cluster.log, journalctl -u $pg_unit)"
    fi
    if ((SECONDS >= deadline)); then server_log; die "PostgreSQL is still replaying WAL after $recovery_timeout_minutes min"; fi
    if ((SECONDS - shown >= 10)); then say "replaying WAL$([[ $state == t ]] && echo " (accepting read-only connections)")..."; shown=$SECONDS; fi
    sleep 1
  done
}

verify() {
  local counts last last_text timeline tables=0 line
  counts=$(table_counts psql_db "$database")
  while IFS= read -r line; do
    if [[ -n $line ]]; then printf '    %-40s %s\n' "${line%|*}" "${line##*|}"; tables=$((tables + 1)); fi
  done <<<"$counts"
  last=$(sql postgres 'SELECT coalesce(floor(extract(epoch FROM pg_last_xact_replay_timestamp()))::bigint, 0)')
  timeline=$(sql postgres 'SELECT timeline_id FROM pg_control_checkpoint()')
  if ((last == 0)); then last_text='none after the backup'; else last_text=$(utc "$last"); fi
  say "$tables table(s) in $database; timeline $timeline; last restored transaction: $last_text"
  if [[ -n $target_time ]] && ((last > target_at)); then die "the last restored transaction ($(utc "$last")) is after the target $target_time"; fi
  if [[ $(sql postgres 'SELECT pg_is_in_recovery()') != f ]]; then die "PostgreSQL is still in recovery"; fi
}

wait_app() {
  if ((${#stopped_containers[@]} == 0)); then say "no app container was running before the restore: nothing to start"; return 0; fi
  start_app
  if [[ ! -x $deploy_script ]]; then return 0; fi
  local deadline=$((SECONDS + app_health_timeout_seconds))
  until "$deploy_script" --health >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then die "the app does not answer its health path ${app_health_timeout_seconds}s after the restore ($deploy_script --health); the database is restored"; fi
    sleep 1
  done
  say "the app answers its health path: $("$deploy_script" --status)"
}

print_way_back() {
  cat <<BACK

[restore] How to go back to the data directory as it was before this restore:
    sudo docker stop ${stopped_containers[*]:-app-blue app-green}      # maintenance page
    sudo systemctl stop $pg_unit
    sudo mv $data_dir $data_dir.restored-$stamp
    sudo mv $aside $data_dir
    sudo systemctl start $pg_unit
    sudo docker start ${stopped_containers[*]:-<the app container>}
  Once you are sure you will not need it: sudo rm -rf $aside
BACK
}

on_exit() {
  local rc=$?
  trap - EXIT
  set +e
  resume_timers
  if ((done_ok)); then exit 0; fi
  if ((step_no == 0)); then exit "$rc"; fi
  say "the restore FAILED in step $step_no (exit $rc)" >&2
  log_line "result=failed step=$step_no"
  if ((moved)); then
    say "production's previous data directory is untouched in $aside; the app stays in maintenance." >&2
    print_way_back >&2
  else
    say "the data directory was not touched; putting PostgreSQL and the app back as they were" >&2
    if ((postgres_stopped)) && ! postgres_running; then start_postgres || say "could not start PostgreSQL: systemctl start $pg_unit" >&2; fi
    start_app || say "could not start ${stopped_containers[*]}: docker start ${stopped_containers[*]}" >&2
  fi
  if ((rc == 0)); then rc=1; fi
  exit "$rc"
}

main() {
  local to_given=0 latest=0
  while (($# > 0)); do
    case $1 in
      --to)
        if (($# < 2)); then usage; fi
        to_given=1 target_time=$2
        shift 2
        ;;
      --to=*)
        to_given=1 target_time=${1#*=}
        shift
        ;;
      --latest) latest=1; shift ;;
      --yes) assume_yes=1; shift ;;
      *) usage ;;
    esac
  done
  if ((to_given + latest != 1)); then usage; fi
  if ((to_given)); then
    if ! target_at=$(target_epoch "$target_time"); then
      echo "leaninfra-restore: --to '$target_time' is not 'YYYY-MM-DD HH:MM:SS+00' (a time with its UTC offset)" >&2
      exit 2
    fi
    target_text="$target_time ($(utc "$target_at"))"
  else
    target_time=''
    target_text='the latest state the backups hold'
  fi
  if ((EUID != 0)); then echo "leaninfra-restore: run as root (sudo leaninfra-restore ...)" >&2; exit 2; fi

  print_plan
  if ! take_lock "$lock_file" 0; then die "a drill or another restore holds $lock_file; wait for it to finish"; fi
  take_other_lock "$deploy_lock_file" "a deploy of the app (leaninfra-deploy)"
  take_other_lock "$backup_lock_file" "a backup job (systemctl list-units 'leaninfra-backup@*' shows which)"
  load_backup_secrets
  preflight
  confirm
  trap on_exit EXIT
  # An interruption (Ctrl-C, kill, a closed terminal) ends through on_exit too: timers back, the way back printed.
  trap 'exit 130' INT TERM HUP
  pause_timers
  log_line "result=started"

  step 1 "stop the app's traffic: stop its containers (nginx serves the maintenance page meanwhile)"
  stop_app
  step 2 "stop PostgreSQL ($pg_unit)"
  postgres_stopped=1
  stop_postgres
  if postgres_running; then die "PostgreSQL still runs on $data_dir after stopping it"; fi
  step 3 "move $data_dir aside to $aside"
  mv -T -- "$data_dir" "$aside"
  moved=1
  install -d -m 0700 -o postgres -g postgres -- "$data_dir"
  say "moved; an empty $data_dir is ready"
  local args=(--pg1-path="$data_dir" --log-level-console=info)
  if [[ -n $target_time ]]; then args+=(--type=time --target="$target_time" --target-action=promote); fi
  step 4 "pgbackrest --stanza=$stanza restore ${args[*]}"
  backrest "${args[@]}" restore 2>&1 | sed 's/^/    /'
  step 5 "start PostgreSQL and wait until it has replayed WAL up to the target and promoted"
  # A long replay can outlast pg_ctl's wait for a consistent state; what counts is that it still runs.
  if ! start_postgres; then
    if ! postgres_running; then die "PostgreSQL did not start (see /var/log/postgresql/postgresql-$pg_version-$pg_cluster.log, journalctl -u $pg_unit)"; fi
    say "the start command gave up waiting, but PostgreSQL runs: waiting for it here"
  fi
  wait_promoted
  step 6 "verify the restored database"
  verify
  step 7 "start the app again"
  wait_app
  step 8 "done: how to go back"
  done_ok=1
  log_line "result=ok aside=$aside duration=$(elapsed "$started_ms")s"
  say "PRODUCTION's database is restored to $target_text in $(elapsed "$started_ms")s; the previous data directory is kept in $aside"
  print_way_back
  echo
  say "take a new full backup now, so the next restore starts from this timeline: sudo $backup_command"
}

main "$@"
