#!/usr/bin/env bash
# leaninfra-drill: proves that the backups restore into a working environment. It restores the latest
# backup (or the database as it was at a point in time) from the bucket into a scratch PostgreSQL
# cluster, checks every table against production, starts the release of the app that serves now
# against the restored database and requires its health path to answer 200, then removes all of it.
# Managed by LeanInfra (role "backups"): change components/backups/files/leaninfra-drill.sh in the repository, not this file.
#
#   leaninfra-drill                                         the latest backup (what the weekly timer runs)
#   leaninfra-drill --target-time '2025-11-28 09:00:00+00'  the database as it was then (by hand; the
#                                                           metrics stay those of the last drill of the latest backup)
#
# It never writes to production: the scratch cluster has its own directory (scratch_dir) and port
# (scratch_port), no archiving; the script refuses to run when either is production's; production is
# only read (SELECT count(*) in read-only transactions). The app's container runs with LEANINFRA_DRILL=1
# and the drill's own settings (app_env) on an internal Docker network (drill_network): no route out,
# only the scratch cluster on the host's address there. Result: metrics_file (node_exporter)
# and one line per drill in drill_log. Exit 0 = passed, 1 = failed, 2 = refused or wrong usage.
# shellcheck source=components/host/files/leaninfra-lib.sh
source "${BASH_SOURCE[0]%/*}/../../host/files/leaninfra-lib.sh" # @lib
# shellcheck source=components/backups/files/pgbackrest-lib.sh
source "${BASH_SOURCE[0]%/*}/pgbackrest-lib.sh" # @lib
# The scratch cluster's files and the drill's env file hold production's data and secrets: owner only.
umask 077

readonly tool=drill
# @settings-begin
readonly stanza='main'
readonly database='app'
readonly production_port=5432
readonly production_data_dir='/srv/data/postgresql/17/main'
readonly scratch_dir='/srv/data/leaninfra-drill'
readonly scratch_port=5499
readonly scratch_tablespaces='/srv/data/leaninfra-drill-tablespaces'
readonly pg_bin='/usr/lib/postgresql/17/bin'
readonly production_hba='/etc/postgresql/17/main/pg_hba.conf'
readonly pgbackrest_conf='/etc/pgbackrest/pgbackrest.conf'
readonly secrets_file='/etc/leaninfra/secrets/backups.env'
readonly deploy_conf='/etc/leaninfra/app/deploy.conf'
readonly metrics_file='/var/lib/prometheus/node-exporter/leaninfra_drill.prom'
readonly drill_log='/var/log/leaninfra/drill.log'
readonly lock_file='/run/lock/leaninfra-drill.lock'
readonly container_name='leaninfra-drill-app'
readonly docker_bridge_subnet='172.17.0.0/16'
readonly drill_network='leaninfra-drill'
readonly drill_bridge='leaninfra-drill'
readonly drill_subnet='172.16.99.0/24'
readonly drill_gateway='172.16.99.1'
readonly row_tolerance_percent=5
readonly exact_below_rows=100
readonly max_data_age_minutes=1560
readonly freshness_query=''
readonly app_health_timeout_seconds=0
readonly restore_timeout_minutes=120
readonly -a app_env=()
# @settings-end
readonly production_socket_dir=/var/run/postgresql

# The metrics in drillMetrics' order (components/backups/drill.ts), filled in from this run's state.
write_metrics() {
  local success=$1 now
  now=$(date +%s)
  if ((success)); then last_success=$now; fi
  {
    gauge leaninfra_drill_success '1 when the last restore drill passed, 0 when it failed.' "$success"
    gauge leaninfra_drill_timestamp_seconds 'When the last restore drill ended (Unix time).' "$now"
    gauge leaninfra_drill_last_success_timestamp_seconds 'When a restore drill last passed (Unix time, 0 = never).' "$last_success"
    gauge leaninfra_drill_duration_seconds 'How long the last drill took from restore to a healthy app (RTO).' "$(elapsed "$started_ms")"
    gauge leaninfra_drill_restore_seconds 'How long restoring and replaying WAL took in the last drill.' "$restore_seconds"
    gauge leaninfra_drill_data_age_seconds 'How old the newest restored data was when the last drill restored it (RPO).' "$data_age_seconds"
    gauge leaninfra_drill_app_checked '1 when the last drill started the app against the restored database, 0 when there was no app to start.' "$app_checked"
    gauge leaninfra_drill_tables_checked "Tables of the app's database the last drill compared with production." "$tables_checked"
  } | write_textfile "$metrics_file"
}

# One gauge; an empty value (not measured in this run) leaves it out.
gauge() {
  if [[ -z $3 ]]; then return 0; fi
  metric "$1" "$2" "$3"
}

# State of this run, read by the EXIT trap.
step=start
fail_reason=''
scratch_owned=0
backup_stop=0
scratch_started=0
container_started=0
network_created=0
passed=0
work_dir=''
started_ms=$(date +%s%3N)
target_time=''
target_at=''
backup_label=''
restore_seconds=''
data_age_seconds=''
data_age_source=''
app_checked=''
app_summary='not reached'
tables_checked=''
last_success=0

fail() {
  fail_reason=$*
  say "FAILED: $*" >&2
  exit 1
}

refuse() {
  fail_reason="refused: $*"
  say "REFUSED: $*" >&2
  exit 2
}

usage() {
  echo "usage: leaninfra-drill [--target-time 'YYYY-MM-DD HH:MM:SS+00']" >&2
  exit 2
}

# `a` is `b` or lies below it.
within() { [[ $1 == "$2" || $1 == "$2"/* ]]; }

# The scratch directory must be neither production's data directory, nor inside it, nor around it, and
# the scratch port must not be production's: the scratch directory is deleted after every drill.
check_paths() {
  local scratch production
  scratch=$(realpath -m -- "$scratch_dir")
  production=$(realpath -m -- "$production_data_dir")
  if [[ $scratch == "$production" ]]; then refuse "the scratch directory $scratch_dir is production's data directory ($production_data_dir)"; fi
  if within "$scratch" "$production"; then refuse "the scratch directory $scratch_dir lies inside production's data directory ($production_data_dir)"; fi
  if within "$production" "$scratch"; then refuse "production's data directory ($production_data_dir) lies inside the scratch directory $scratch_dir"; fi
  if [[ $(tr -cd / <<<"$scratch") == / ]]; then refuse "the scratch directory $scratch_dir is too close to / to be deleted after the drill"; fi
  if ((scratch_port == production_port)); then refuse "the scratch port $scratch_port is production's PostgreSQL port"; fi
}

# The same checks against what runs: every cluster Debian knows of, and production itself.
check_live() {
  local version cluster port status dir live_dir scratch
  scratch=$(realpath -m -- "$scratch_dir")
  if command -v pg_lsclusters >/dev/null; then
    while read -r version cluster port status _ dir _; do
      if [[ $port == "$scratch_port" ]]; then refuse "cluster $version/$cluster ($dir, $status) is configured on the scratch port $scratch_port"; fi
      dir=$(realpath -m -- "$dir")
      if within "$scratch" "$dir" || within "$dir" "$scratch"; then refuse "cluster $version/$cluster keeps its data in $dir, which overlaps the scratch directory $scratch_dir"; fi
    done < <(pg_lsclusters --no-header 2>/dev/null || true)
  fi
  if ! live_dir=$(production_sql postgres 'SHOW data_directory' 2>&1); then
    printf '%s\n' "$live_dir" >&2
    fail "production PostgreSQL does not answer on port $production_port (socket $production_socket_dir); the drill compares the restore with it"
  fi
  live_dir=$(realpath -m -- "$live_dir")
  if within "$scratch" "$live_dir" || within "$live_dir" "$scratch"; then refuse "production (port $production_port) keeps its data in $live_dir, which overlaps the scratch directory $scratch_dir"; fi
}

production_sql() {
  local db=$1
  shift
  as_postgres env PGOPTIONS='-c default_transaction_read_only=on -c statement_timeout=900000' \
    "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$production_socket_dir" -p "$production_port" -d "$db" -c "$@"
}

scratch_psql() { as_postgres "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$scratch_dir" -p "$scratch_port" "$@"; }
scratch_sql() { scratch_psql -d "$database" -c "$1"; }

# A scratch cluster or app container left behind by a drill that was killed is removed first.
clear_leftovers() {
  if command -v docker >/dev/null && docker container inspect "$container_name" >/dev/null 2>&1; then
    say "removing the container $container_name left by an earlier drill"
    docker rm --force "$container_name" >/dev/null
  fi
  if command -v docker >/dev/null && docker network inspect "$drill_network" >/dev/null 2>&1; then
    say "removing the network $drill_network left by an earlier drill"
    docker network rm "$drill_network" >/dev/null
  fi
  if [[ -f $scratch_dir/postmaster.pid ]]; then
    local pid_port
    pid_port=$(sed -n 4p "$scratch_dir/postmaster.pid")
    if [[ $pid_port != "$scratch_port" ]]; then refuse "$scratch_dir/postmaster.pid names port $pid_port, not the scratch port $scratch_port: not a drill's cluster, left alone"; fi
    say "stopping the scratch cluster left by an earlier drill"
    as_postgres "$pg_bin/pg_ctl" stop -D "$scratch_dir" -m immediate -w >/dev/null 2>&1 || true
  fi
  if ss -H -l -t -n "sport = :$scratch_port" | grep -q .; then refuse "something else listens on the scratch port $scratch_port (ss -ltnp 'sport = :$scratch_port')"; fi
  rm -rf --one-file-system -- "$scratch_dir" "$scratch_tablespaces"
  scratch_owned=1
}

check_repository() {
  local info stops labels problem
  say "reading the repository (pgbackrest info)"
  if ! info=$(repo_info); then
    printf '%s\n' "$info" | tr -c '[:print:]\n' ' ' >&2
    fail "pgbackrest info failed (output above): the bucket is unreachable, its credentials are wrong, or $pgbackrest_conf is missing"
  fi
  if problem=$(info_problem "$info"); then fail "$problem"; fi
  mapfile -t stops < <(backup_stop_times "$info")
  mapfile -t labels < <(backup_labels "$info")
  if ((${#stops[@]} == 0)); then fail "the repository holds no backup of stanza $stanza yet"; fi
  backup_label=${labels[-1]:-unknown}
  backup_stop=${stops[-1]}
  if [[ -n $target_time ]]; then
    # pgBackRest starts a point-in-time restore from the newest backup that ended before the target.
    local i
    backup_label=''
    for i in "${!stops[@]}"; do
      if ((stops[i] <= target_at)); then backup_label=${labels[i]:-unknown} backup_stop=${stops[i]}; fi
    done
    if [[ -z $backup_label ]]; then fail "no backup finished before $target_time: the oldest ($(utc "${stops[0]}")) is newer"; fi
  fi
  say "${#stops[@]} backup(s); the newest is $backup_label, finished $(utc "$backup_stop")"
}

# The restore needs about production's size again on the data volume; never fill production's disk.
check_space() {
  local size_bytes need_kb avail_kb total_kb parent=${scratch_dir%/*}
  if [[ ! -d $parent ]]; then fail "$parent does not exist: is the data volume mounted?"; fi
  size_bytes=$(production_sql postgres 'SELECT sum(pg_database_size(oid)) FROM pg_database')
  need_kb=$((size_bytes / 1024 + 512 * 1024))
  read -r total_kb avail_kb < <(df -P -k -- "$parent" | awk 'NR == 2 { print $2, $4 }')
  if ((avail_kb - need_kb < total_kb / 10)); then
    fail "not enough space on $parent for a scratch copy: $((need_kb / 1024)) MiB needed, $((avail_kb / 1024)) MiB free, and production keeps at least 10% of the volume"
  fi
}

# The app check runs only with the app role's deploy.conf and Docker; without them no network is made.
app_check_possible() { [[ -r $deploy_conf ]] && command -v docker >/dev/null; }

# Loopback, and the host's address on the drill network when there is one: never docker0's.
listen_addresses() {
  if ((network_created)); then echo "localhost,$drill_gateway"; else echo localhost; fi
}

# The internal network the app's container gets: Docker gives the host its gateway address and the
# container no default route, and forwards nothing between it and any other interface.
create_network() {
  if ! app_check_possible || ! docker info >/dev/null 2>&1; then return 0; fi
  network_created=1
  docker network create --internal --driver bridge --subnet "$drill_subnet" --gateway "$drill_gateway" \
    --opt "com.docker.network.bridge.name=$drill_bridge" --label leaninfra.role=drill "$drill_network" >/dev/null
  local _
  for _ in $(seq 50); do
    if ip -4 -o addr show dev "$drill_bridge" 2>/dev/null | grep -qF " $drill_gateway/"; then break; fi
    sleep 0.1
  done
  if ! ip -4 -o addr show dev "$drill_bridge" 2>/dev/null | grep -qF " $drill_gateway/"; then
    fail "the internal network $drill_network has no host address $drill_gateway on $drill_bridge (docker network inspect $drill_network)"
  fi
  say "created the internal network $drill_network ($drill_subnet, no route out); the host is $drill_gateway on it"
}

restore() {
  local args=(--pg1-path="$scratch_dir" --archive-mode=off --tablespace-map-all="$scratch_tablespaces" --log-level-console=warn) out t0
  if [[ -n $target_time ]]; then args+=(--type=time --target="$target_time" --target-action=promote); fi
  install -d -m 0700 -o postgres -g postgres -- "$scratch_dir" "$scratch_tablespaces"
  say "restoring $([[ -n $target_time ]] && echo "the database as of $target_time" || echo "backup $backup_label and the WAL after it") into $scratch_dir"
  t0=$(date +%s%3N)
  if ! out=$(backrest "${args[@]}" restore 2>&1); then
    printf '%s\n' "$out" | tail -n 30 >&2
    fail "pgbackrest restore failed (output above): the backup could not be read back (corrupt or missing object, wrong passphrase, or the bucket is unreachable)"
  fi
  # Debian keeps postgresql.conf and pg_hba.conf outside the data directory: the copy gets its own.
  {
    echo "# leaninfra-drill's scratch cluster: a restored copy of production, deleted when the drill ends."
    echo "port = $scratch_port"
    echo "unix_socket_directories = '$scratch_dir'"
    echo "listen_addresses = '$(listen_addresses)'"
    echo "archive_mode = off"
    echo "hot_standby = off"
    echo "shared_buffers = 128MB"
    echo "max_connections = 50"
    echo "shared_preload_libraries = ''"
    echo "cluster_name = 'leaninfra-drill'"
    echo "log_connections = on"
  } >"$scratch_dir/postgresql.conf"
  # Production's rules, with its Docker network's address range replaced by the drill network's: the copy
  # answers the drill's container and nothing on docker0.
  if [[ -r $production_hba ]]; then
    sed "s#[[:space:]]${docker_bridge_subnet//./\\.}[[:space:]]# $drill_subnet #" -- "$production_hba" >"$scratch_dir/pg_hba.conf"
  else
    printf 'local all postgres peer\n' >"$scratch_dir/pg_hba.conf"
  fi
  : >"$scratch_dir/pg_ident.conf"
  chown postgres:postgres -- "$scratch_dir/postgresql.conf" "$scratch_dir/pg_hba.conf" "$scratch_dir/pg_ident.conf"
  chmod 0600 -- "$scratch_dir/postgresql.conf" "$scratch_dir/pg_hba.conf" "$scratch_dir/pg_ident.conf"

  say "starting the scratch cluster on port $scratch_port (archiving off); it replays WAL until the end of the archive${target_time:+ or $target_time}"
  scratch_started=1
  # On the command line, so nothing restored in postgresql.auto.conf can turn archiving on or take another port.
  local opts="-c port=$scratch_port -c archive_mode=off -c hot_standby=off -c unix_socket_directories=$scratch_dir"
  opts+=" -c listen_addresses=$(listen_addresses) -c shared_buffers=128MB -c ssl=off -c config_file=$scratch_dir/postgresql.conf"
  if ! out=$(as_postgres "$pg_bin/pg_ctl" start -D "$scratch_dir" -w -t $((restore_timeout_minutes * 60)) -l "$scratch_dir/drill-server.log" -o "$opts" 2>&1); then
    printf '%s\n' "$out" >&2
    scratch_failed "the restored cluster did not start (log above): the WAL could not be replayed${target_time:+ up to $target_time}"
  fi
  # With hot_standby off, pg_ctl may report the server up before recovery has ended: wait for the promotion.
  local deadline=$((SECONDS + restore_timeout_minutes * 60)) state
  while true; do
    state=$(scratch_psql -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null || true)
    if [[ $state == f ]]; then break; fi
    if ! as_postgres "$pg_bin/pg_ctl" status -D "$scratch_dir" >/dev/null 2>&1; then
      scratch_failed "the restored cluster stopped while replaying WAL (log above): the archive is incomplete${target_time:+ or ends before $target_time}"
    fi
    if ((SECONDS >= deadline)); then scratch_failed "the restored cluster is still replaying WAL after $restore_timeout_minutes min"; fi
    sleep 0.5
  done
  restore_seconds=$(elapsed "$t0")
  say "restored and started in ${restore_seconds}s"
}

scratch_failed() {
  say "last lines of the scratch cluster's log:" >&2
  tail -n 30 -- "$scratch_dir/drill-server.log" 2>/dev/null | sed 's/^/    /' >&2 || true
  fail "$1"
}

compare_tables() {
  local production_rows restored_rows line name missing=0 bad=0 compared=0 prod rest diff rule
  declare -A restored=()
  restored_rows=$(table_counts scratch_psql -d "$database")
  production_rows=$(table_counts as_postgres env PGOPTIONS='-c default_transaction_read_only=on -c statement_timeout=900000' \
    "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$production_socket_dir" -p "$production_port" -d "$database")
  while IFS= read -r line; do
    if [[ -n $line ]]; then restored[${line%|*}]=${line##*|}; fi
  done <<<"$restored_rows"
  printf '    %-40s %12s %12s  %s\n' table production restored check
  while IFS= read -r line; do
    if [[ -z $line ]]; then continue; fi
    name=${line%|*}
    prod=${line##*|}
    compared=$((compared + 1))
    if [[ -z ${restored[$name]+set} ]]; then
      printf '    %-40s %12s %12s  %s\n' "$name" "$prod" - MISSING
      missing=$((missing + 1))
      continue
    fi
    rest=${restored[$name]}
    if [[ $prod == unlogged ]]; then
      printf '    %-40s %12s %12s  %s\n' "$name" unlogged "$rest" 'present (unlogged: empty after any restore)'
      continue
    fi
    diff=$((rest > prod ? rest - prod : prod - rest))
    if [[ -n $target_time ]]; then
      rule='present (counts of a past point in time are not compared)'
    elif ((prod < exact_below_rows)); then
      rule=exact
      if ((diff != 0)); then rule='DIFFERS (small table: must match exactly)'; bad=$((bad + 1)); fi
    else
      rule="within ${row_tolerance_percent}%"
      if ((diff * 100 > prod * row_tolerance_percent)); then rule="DIFFERS by more than ${row_tolerance_percent}%"; bad=$((bad + 1)); fi
    fi
    printf '    %-40s %12s %12s  %s\n' "$name" "$prod" "$rest" "$rule"
  done <<<"$production_rows"
  tables_checked=$compared
  if ((compared == 0)); then fail "production's database $database has no tables: nothing to compare (is the app deployed?)"; fi
  if ((missing > 0)); then fail "$missing of $compared table(s) of $database are missing from the restore"; fi
  if ((bad > 0)); then fail "$bad of $compared table(s) of $database differ from production beyond the tolerance (exact below $exact_below_rows rows, else ${row_tolerance_percent}%)"; fi
  say "all $compared table(s) of $database are present$([[ -z $target_time ]] && echo ", row counts within tolerance")"
}

# How old the restored data is: the newest timestamp of freshness_query, else the last restored
# transaction (or the backup's end when newer: a quiet database writes no transactions).
check_freshness() {
  local newest replayed now
  now=$(date +%s)
  if [[ -n $freshness_query ]]; then
    if ! newest=$(scratch_sql "SELECT floor(extract(epoch FROM newest))::bigint FROM ($freshness_query) AS q(newest)" 2>&1); then
      printf '%s\n' "$newest" >&2
      fail "the freshness query failed in the restored database (output above)"
    fi
    if [[ ! $newest =~ ^[0-9]+$ ]]; then fail "the freshness query returned no timestamp ('$newest'): the restored table holds no rows?"; fi
    data_age_source='freshness query'
  else
    replayed=$(scratch_sql 'SELECT coalesce(floor(extract(epoch FROM pg_last_xact_replay_timestamp()))::bigint, 0)')
    newest=$((replayed > backup_stop ? replayed : backup_stop))
    data_age_source=$([[ $newest == "$replayed" ]] && echo 'last restored transaction' || echo 'end of backup')
  fi
  if [[ -n $target_time ]]; then
    if ((newest > target_at)); then fail "the restored data is from $(utc "$newest") ($data_age_source), after the target $target_time: the point-in-time restore went too far"; fi
    say "newest restored data: $(utc "$newest") ($data_age_source), not after the target $target_time"
    return 0
  fi
  data_age_seconds=$((now - newest))
  if ((data_age_seconds < 0)); then data_age_seconds=0; fi
  say "newest restored data: $(utc "$newest") ($data_age_source), $((data_age_seconds / 60)) min old"
  if ((data_age_seconds > max_data_age_minutes * 60)); then
    fail "the restored data is $((data_age_seconds / 60)) min old, more than the allowed $max_data_age_minutes min: backups or WAL archiving are behind"
  fi
}

# The deploy's settings, read in a subshell so none of its names can change this script's.
read_deploy_conf() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  bash -c 'set -eu; source "$1"; printf "%s\n" "$image" "$release" "$container_port" "$health_path" "$health_timeout_seconds" "$host_alias" "$upstream_file" "$blue_port" "$green_port" "$memory_mb" "$pids_limit" "${capabilities[*]}" "${env_files[@]}"' _ "$deploy_conf"
}

check_app() {
  if [[ ! -r $deploy_conf ]]; then
    app_checked=0
    app_summary='skipped (no app role)'
    say "app check SKIPPED: the app role is not installed ($deploy_conf is missing); only the database was checked"
    return 0
  fi
  local conf image release container_port health_path health_timeout host_alias upstream_file blue_port green_port
  local memory_mb pids_limit capabilities=() confinement=() cap
  local env_files=() port='' slot='' ref='' line db_url='' env_file
  mapfile -t conf < <(read_deploy_conf)
  if ((${#conf[@]} < 12)); then fail "could not read $deploy_conf"; fi
  image=${conf[0]} release=${conf[1]} container_port=${conf[2]} health_path=${conf[3]} health_timeout=${conf[4]}
  host_alias=${conf[5]} upstream_file=${conf[6]} blue_port=${conf[7]} green_port=${conf[8]}
  memory_mb=${conf[9]} pids_limit=${conf[10]}
  read -r -a capabilities <<<"${conf[11]}"
  env_files=("${conf[@]:12}")
  # The app's own confinement (leaninfra-deploy's): no capability but those it declares, no privilege gain,
  # its memory and process limits.
  confinement=(--cap-drop ALL --security-opt no-new-privileges --memory "${memory_mb}m" --memory-swap "${memory_mb}m" --pids-limit "$pids_limit")
  for cap in "${capabilities[@]}"; do confinement+=(--cap-add "$cap"); done
  if ((app_health_timeout_seconds > 0)); then health_timeout=$app_health_timeout_seconds; fi
  if ! docker info >/dev/null 2>&1; then fail "docker is not running (systemctl status docker): the app cannot be started against the restore"; fi

  # The release nginx sends traffic to, as leaninfra-deploy --status reports it; deploy.conf's when none serves.
  if [[ -f $upstream_file ]]; then
    port=$(sed -n 's/^[[:space:]]*server[[:space:]]\{1,\}127\.0\.0\.1:\([0-9]\{1,\}\)[[:space:]]*;.*/\1/p' "$upstream_file" | head -n 1)
  fi
  if [[ $port == "$blue_port" ]]; then slot=blue; elif [[ $port == "$green_port" ]]; then slot=green; fi
  if [[ -n $slot ]] && line=$(docker container inspect --format '{{.Config.Image}} {{index .Config.Labels "leaninfra.release"}}' -- "app-$slot" 2>/dev/null); then
    read -r ref release <<<"$line"
  fi
  if [[ -z $ref ]]; then
    # A release pinned to a digest (1.8.4@sha256:...) runs as image@sha256:..., as leaninfra-deploy runs it.
    if [[ $release == *@* ]]; then ref=$image@${release#*@}; else ref=$image:$release; fi
    say "no app container serves now; using the configured release $release ($ref)"
  fi
  if ! docker image inspect "$ref" >/dev/null 2>&1; then fail "the image $ref is not on this host (docker image ls): the drill starts the image that serves, it does not pull"; fi

  work_dir=$(mktemp -d /run/leaninfra-drill.XXXXXX)
  for env_file in "${env_files[@]}"; do
    if [[ ! -r $env_file ]]; then fail "the app's env file $env_file is missing"; fi
    while IFS= read -r line || [[ -n $line ]]; do
      if [[ $line == DATABASE_URL=* ]]; then db_url=${line#DATABASE_URL=}; fi
    done <"$env_file"
  done
  # The same host, user, password and database, on the scratch port. REDIS_URL is left out: the copy must
  # not take jobs from production's queue or write into its cache.
  if [[ ! $db_url =~ ^(postgres(ql)?://)([^@/?#]*@)?([^/?#]*)(.*)$ ]]; then fail "the app's DATABASE_URL is not a postgresql:// URL"; fi
  local user=${BASH_REMATCH[3]%@}
  user=${user%%:*}
  say "the container gets DATABASE_URL=${BASH_REMATCH[1]}${user:+$user:***@}$host_alias:$scratch_port${BASH_REMATCH[5]} (production's, on the scratch port); no REDIS_URL"
  # The app's settings the drill's own (app_env) override are left out, so each key is given once.
  local skip='DATABASE_URL|REDIS_URL|LEANINFRA_DRILL' entry overridden=()
  for entry in "${app_env[@]}"; do skip+="|${entry%%=*}" overridden+=("${entry%%=*}"); done
  if ((${#overridden[@]} > 0)); then say "LEANINFRA_DRILL=1 and the drill's own ${overridden[*]}"; else say "LEANINFRA_DRILL=1"; fi
  {
    for env_file in "${env_files[@]}"; do grep -v -E "^($skip)=" -- "$env_file" || true; done
    printf 'DATABASE_URL=%s%s%s:%s%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[3]}" "$host_alias" "$scratch_port" "${BASH_REMATCH[5]}"
    printf 'LEANINFRA_DRILL=1\n'
    if ((${#app_env[@]} > 0)); then printf '%s\n' "${app_env[@]}"; fi
  } >"$work_dir/drill.env"

  if ((!network_created)); then fail "the internal network $drill_network was not created: the app is never started with a route out"; fi
  say "starting $ref as $container_name on the internal network $drill_network, its database on $host_alias:$scratch_port (the restore)"
  container_started=1
  # No published port: Docker publishes none for a container on an internal network; the host reaches it
  # directly at its address on the network.
  docker run --detach --name "$container_name" --init "${confinement[@]}" --network "$drill_network" --add-host "$host_alias:$drill_gateway" \
    --label leaninfra.role=drill --env-file "$work_dir/drill.env" --env "PORT=$container_port" --env "RELEASE=$release" \
    -- "$ref" >/dev/null
  local address
  address=$(docker container inspect --format "{{(index .NetworkSettings.Networks \"$drill_network\").IPAddress}}" "$container_name")
  if [[ ! $address =~ ^[0-9.]+$ ]]; then fail "$container_name has no address on $drill_network ('$address')"; fi

  local url="http://$address:$container_port$health_path" code='' state t0 deadline
  t0=$(date +%s%3N)
  deadline=$((SECONDS + health_timeout))
  say "waiting up to ${health_timeout}s for $url to answer 200"
  while true; do
    code=$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 2 "$url" || true)
    if [[ $code == 200 ]]; then break; fi
    state=$(docker container inspect --format '{{.State.Status}}' "$container_name" 2>/dev/null || echo missing)
    if [[ $state != running ]] || ((SECONDS >= deadline)); then
      say "last 50 lines of $container_name's log:" >&2
      docker logs --tail 50 "$container_name" 2>&1 | sed 's/^/    /' >&2 || true
      if [[ $state != running ]]; then fail "release $release exited ($state) when started against the restored database (log above)"; fi
      fail "release $release did not answer 200 on $health_path within ${health_timeout}s against the restored database (last answer: HTTP ${code:-none}; log above)"
    fi
    sleep 0.5
  done
  app_checked=1
  app_summary="release $release healthy"
  say "release $release answers 200 on $health_path against the restored database after $(elapsed "$t0")s"
  local connections
  connections=$(grep -cF "connection received: host=${drill_subnet%.*}." "$scratch_dir/drill-server.log" || true)
  if ((connections > 0)); then
    say "the container opened $connections connection(s) to the restored database"
  else
    say "note: the container opened no connection to the restored database; the app contract asks its health path to check the database"
  fi
}

teardown() {
  if ((container_started)); then
    docker rm --force "$container_name" >/dev/null 2>&1 || say "could not remove the container $container_name; remove it: docker rm -f $container_name" >&2
  fi
  if ((network_created)); then
    docker network rm "$drill_network" >/dev/null 2>&1 || say "could not remove the network $drill_network; remove it: docker network rm $drill_network" >&2
  fi
  if ((scratch_started)) && [[ -f $scratch_dir/postmaster.pid ]]; then
    as_postgres "$pg_bin/pg_ctl" stop -D "$scratch_dir" -m immediate -w >/dev/null 2>&1 || say "could not stop the scratch cluster in $scratch_dir" >&2
  fi
  # Only a directory that passed every check (and was emptied by this run) is ever deleted.
  if ((scratch_owned)); then rm -rf --one-file-system -- "$scratch_dir" "$scratch_tablespaces"; fi
  if [[ -n $work_dir ]]; then rm -rf -- "$work_dir"; fi
}

record() {
  local result=$1 line
  line="result=$result target=${target_time:-latest} backup=${backup_label:--} duration=$(elapsed "$started_ms")s"
  line+=" restore=${restore_seconds:--}s data_age=${data_age_seconds:--}s tables=${tables_checked:--} app=\"$app_summary\""
  if [[ $result != ok ]]; then line+=" step=$step reason=\"${fail_reason//\"/\'}\""; fi
  log_to "$drill_log" "$line"
  # The metrics speak for drills of the latest backup; a drill of a past point in time is logged only.
  if [[ -z $target_time ]]; then
    if [[ -f $metrics_file ]]; then
      last_success=$(awk '$1 == "leaninfra_drill_last_success_timestamp_seconds" { print $2 }' "$metrics_file")
      last_success=${last_success:-0}
    fi
    if [[ $result == ok ]]; then write_metrics 1; else write_metrics 0; fi
  fi
}

on_exit() {
  local rc=$?
  trap - EXIT
  set +e
  teardown
  if ((passed)); then
    record ok
    say "drill PASSED in $(elapsed "$started_ms")s: backup $backup_label restored, ${tables_checked} table(s) checked, app: $app_summary"
    exit 0
  fi
  if [[ -z $fail_reason ]]; then fail_reason="exit $rc during step $step"; fi
  record failed
  say "drill FAILED during step $step: $fail_reason" >&2
  if ((rc == 0)); then rc=1; fi
  exit "$rc"
}

main() {
  while (($# > 0)); do
    case $1 in
      --target-time)
        if (($# < 2)); then usage; fi
        target_time=$2
        shift 2
        ;;
      --target-time=*)
        target_time=${1#*=}
        shift
        ;;
      -h | --help) usage ;;
      *) usage ;;
    esac
  done
  if [[ -n $target_time ]] && ! target_at=$(target_epoch "$target_time"); then
    echo "leaninfra-drill: --target-time '$target_time' is not 'YYYY-MM-DD HH:MM:SS+00' (a time with its UTC offset)" >&2
    exit 2
  fi
  if ((EUID != 0)); then echo "leaninfra-drill: run as root (sudo leaninfra-drill)" >&2; exit 2; fi

  trap on_exit EXIT
  trap 'exit 130' INT TERM
  step=guard
  check_paths
  if ! take_lock "$lock_file" 0; then refuse "another drill or restore holds $lock_file"; fi
  if [[ -n $(missing_tools) ]]; then fail "not installed: $(missing_tools)(apply the backups role, which installs them)"; fi
  load_backup_secrets
  check_live
  step=repository
  check_repository
  step=prepare
  clear_leftovers
  check_space
  step=network
  create_network
  step=restore
  restore
  step=tables
  compare_tables
  step=freshness
  check_freshness
  step=app
  check_app
  passed=1
}

main "$@"
