#!/usr/bin/env bash
# leaninfra-deploy: puts one release of the app container behind nginx without dropping a request.
# Managed by LeanInfra (role "app"): change components/app in the repository, not this file.
# Its settings (image, release, ports, timeouts) are in /etc/leaninfra/app/deploy.conf.
#
#   leaninfra-deploy             deploy the release named in deploy.conf (what `pulumi up` runs)
#   leaninfra-deploy RELEASE     deploy another tag of the same image, e.g. roll back to the previous one
#                                (a release is a tag, or a tag pinned to its digest: 1.8.4@sha256:<64 hex>)
#   leaninfra-deploy --check     exit 0 when deploy.conf's release serves with the current settings, 3 when not
#   leaninfra-deploy --status    print what serves now
#   leaninfra-deploy --health    exit 0 when the serving release answers its health path with 200
#
# A deploy: pull the image (unless it is already here) -> run the migration in it (optional) -> start it
# in the idle slot -> wait for its health path to answer 200 -> point nginx at it (nginx -t, reload) ->
# let the old slot drain -> stop the old slot -> remove old images. Until nginx is switched, a failure
# (or SIGINT/SIGTERM/SIGHUP) leaves the serving release and nginx exactly as they were. The app's own
# output (migration, container) goes to the journal only, never to this script's output: it may carry
# secrets, and the output of `pulumi up` is kept in its state and CI logs. Every journal line of a
# container carries its release in the field LEANINFRA_RELEASE (journalctl LEANINFRA_RELEASE=1.8.4).
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

readonly conf=/etc/leaninfra/app/deploy.conf

# Everything deploy.conf sets, with empty defaults so a missing line is caught below, not by set -u.
image=''
release=''
registry_host=''
registry_user=''
registry_password_file=''
env_files=()
sentry_env_file=''
container_port=''
health_path=''
health_timeout_seconds=''
drain_seconds=''
stop_timeout_seconds=''
keep_images=''
migration_command=()
memory_mb=''
pids_limit=''
capabilities=()
host_alias=''
blue_port=''
green_port=''
upstream_file=''
release_file=''
deploy_log=''
metrics_file=''
state_dir=''

say() { printf '[deploy %s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$*"; }
die() {
  say "FAILED: $*" >&2
  exit 1
}

# Deploy state, read by the EXIT trap.
deploying=0
phase=''
want=''
new_slot=''
new_name=''
new_started=0
switched=0
nginx_files_saved=0
ran_digest=''
started_ms=0
docker_config_dir=''
serving_slot=''
serving_port=''
serving_release=''
serving_config=''
serving_running=''
serving_digest=''
common_opts=()
release_options=()
config_digest=''

load_conf() {
  if [[ ! -r $conf ]]; then die "$conf is missing: apply the app role (pulumi up) first"; fi
  # shellcheck source=/dev/null
  source "$conf"
  local name
  for name in image release container_port health_path health_timeout_seconds drain_seconds stop_timeout_seconds \
    keep_images memory_mb pids_limit host_alias blue_port green_port upstream_file release_file deploy_log metrics_file state_dir; do
    if [[ -z ${!name} ]]; then die "$conf does not set $name"; fi
  done
  for name in container_port health_timeout_seconds drain_seconds stop_timeout_seconds keep_images memory_mb pids_limit blue_port green_port; do
    if [[ ! ${!name} =~ ^[0-9]+$ ]]; then die "$conf: $name=${!name} is not a whole number"; fi
  done
}

# "v1.8.3 from slot blue", or "nothing".
serving_now() {
  if [[ -n $serving_release ]]; then echo "$serving_release from slot $serving_slot"; else echo nothing; fi
}

valid_release() { [[ $1 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[0-9a-f]{64})?$ ]]; }

# What docker pulls and runs for a release: image:tag, or image@sha256:... when the release pins a digest.
release_ref() {
  if [[ $1 == *@* ]]; then echo "$image@${1#*@}"; else echo "$image:$1"; fi
}

# The release's name in the journal (the tag, without a pinned digest): journalctl -t app-<tag>.
log_name() { echo "${1%%@*}"; }

slot_port() { if [[ $1 == blue ]]; then echo "$blue_port"; else echo "$green_port"; fi; }

# The options every container of the app gets (the service and the migration), and their digest:
# a change of options, image or env files means the serving container is out of date.
container_options() {
  # No capability but those the app declares, no privilege gained through setuid files, bounded memory
  # (swap included) and processes: a compromised or runaway app cannot take the server with it.
  # The journal gets the container's leaninfra.release label as the field LEANINFRA_RELEASE.
  common_opts=(--init --add-host "$host_alias:host-gateway" --log-driver journald --log-opt labels=leaninfra.release
    --label leaninfra.role=app --cap-drop ALL --security-opt no-new-privileges --memory "${memory_mb}m"
    --memory-swap "${memory_mb}m" --pids-limit "$pids_limit")
  local file cap files=("${env_files[@]}")
  if [[ -n $sentry_env_file ]]; then files+=("$sentry_env_file"); fi
  for cap in "${capabilities[@]}"; do common_opts+=(--cap-add "$cap"); done
  for file in "${files[@]}"; do
    if [[ ! -r $file ]]; then die "env file $file is missing: apply the app role (pulumi up) first"; fi
    common_opts+=(--env-file "$file")
  done
  common_opts+=(--env "PORT=$container_port")
  config_digest=$({
    printf '%s\n' "$image" "$container_port" "${common_opts[@]}"
    cat -- "${files[@]}"
  } | sha256sum | cut -c1-16)
}

# What a container of release $1 gets beyond common_opts: RELEASE, with sentryDsn SENTRY_RELEASE (the
# tag: Sentry reads name@version, which a pinned digest is not), and the label the journal field reads.
release_opts() {
  release_options=(--env "RELEASE=$1" --label "leaninfra.release=$1")
  if [[ -n $sentry_env_file ]]; then release_options+=(--env "SENTRY_RELEASE=$(log_name "$1")"); fi
}

need_docker() {
  if ! docker info >/dev/null 2>&1; then die "docker is not running (systemctl status docker)"; fi
}

# Which slot nginx sends traffic to (from its upstream file) and what runs there.
read_serving() {
  local line port='' info
  serving_slot=''
  serving_port=''
  serving_release=''
  serving_config=''
  serving_running=''
  serving_digest=''
  if [[ -f $upstream_file ]]; then
    while IFS= read -r line || [[ -n $line ]]; do
      if [[ $line =~ ^[[:space:]]*server[[:space:]]+127\.0\.0\.1:([0-9]+)[[:space:]]*\; ]]; then
        port=${BASH_REMATCH[1]}
        break
      fi
    done <"$upstream_file"
  fi
  if [[ $port == "$blue_port" ]]; then
    serving_slot=blue
  elif [[ $port == "$green_port" ]]; then
    serving_slot=green
  else
    return 0
  fi
  serving_port=$port
  if info=$(docker container inspect --format \
    '{{.State.Running}} {{index .Config.Labels "leaninfra.release"}} {{index .Config.Labels "leaninfra.config"}} {{index .Config.Labels "leaninfra.digest"}}' \
    -- "app-$serving_slot" 2>/dev/null); then
    read -r serving_running serving_release serving_config serving_digest <<<"$info"
  fi
}

# Exit status 0: deploy.conf's release serves with the current settings; 3: a deploy is due.
check() {
  need_docker
  container_options
  read_serving
  if [[ -z $serving_slot ]]; then
    echo "deploy due: nginx's upstream ($upstream_file) names no app slot yet"
    return 3
  fi
  if [[ $serving_running != true ]]; then
    echo "deploy due: app-$serving_slot, which nginx sends traffic to, is not running"
    return 3
  fi
  if [[ $serving_release != "$release" ]]; then
    echo "deploy due: release ${serving_release:-unknown} serves, $release is wanted"
    return 3
  fi
  if [[ $serving_config != "$config_digest" ]]; then
    echo "deploy due: release $release serves with older settings (image, port or environment changed)"
    return 3
  fi
  echo "release $release serves from slot $serving_slot (127.0.0.1:$serving_port) with the current settings"
}

status() {
  need_docker
  container_options
  read_serving
  if [[ -z $serving_slot ]]; then
    echo "nothing serves: nginx's upstream ($upstream_file) names no app slot"
    return 0
  fi
  local settings=current
  if [[ $serving_config != "$config_digest" ]]; then settings=older; fi
  echo "release ${serving_release:-unknown} serves from slot $serving_slot (127.0.0.1:$serving_port, container app-$serving_slot, running: ${serving_running:-no}, settings: $settings, image ${serving_digest:-unknown})"
}

health() {
  need_docker
  read_serving
  if [[ -z $serving_slot ]]; then
    echo "nothing serves: nginx's upstream ($upstream_file) names no app slot" >&2
    return 1
  fi
  if ! curl --fail --silent --show-error --output /dev/null --max-time 5 "http://127.0.0.1:$serving_port$health_path"; then
    echo "release ${serving_release:-unknown} in slot $serving_slot does not answer 200 on http://127.0.0.1:$serving_port$health_path (its log: journalctl -t app-$(log_name "${serving_release:-unknown}"))" >&2
    return 1
  fi
}

ensure_image() {
  local ref=$1 out
  if docker image inspect -- "$ref" >/dev/null 2>&1; then
    say "image $ref is already on this host: no pull, no registry needed"
    return 0
  fi
  if [[ -n $registry_user ]]; then
    # A throwaway client config: the registry password never stays on disk after the deploy.
    docker_config_dir=$(mktemp -d)
    export DOCKER_CONFIG=$docker_config_dir
    say "logging in to ${registry_host:-Docker Hub} as $registry_user"
    if ! out=$(docker login --username "$registry_user" --password-stdin -- ${registry_host:+"$registry_host"} <"$registry_password_file" 2>&1); then
      printf '%s\n' "$out" >&2
      die "docker login to ${registry_host:-Docker Hub} as $registry_user failed: check the app's registry user and password"
    fi
  fi
  say "pulling $ref"
  if ! out=$(docker pull --quiet -- "$ref" 2>&1); then
    printf '%s\n' "$out" >&2
    die "could not pull $ref: is the tag pushed, and can this host reach ${registry_host:-Docker Hub}?"
  fi
}

# The image a release runs, as the registry names it (image@sha256:...), else its local id: what the deploy
# log records, so "which bytes ran" has an answer even for a moving tag.
image_digest() {
  local ref=$1 digests d
  digests=$(docker image inspect --format '{{join .RepoDigests " "}}' -- "$ref")
  for d in $digests; do
    if [[ ${d%@*} == "$image" ]]; then
      echo "$d"
      return 0
    fi
  done
  docker image inspect --format '{{.Id}}' -- "$ref"
}

remember_release() {
  local history=$state_dir/releases tmp
  mkdir -p -- "$state_dir"
  printf '%s\n' "$1" >>"$history"
  if (($(wc -l <"$history") > 200)); then
    tmp=$(mktemp -- "$history.XXXXXX")
    tail -n 100 -- "$history" >"$tmp"
    mv -fT -- "$tmp" "$history"
  fi
}

run_migration() {
  local ref=$1
  if ((${#migration_command[@]} == 0)); then return 0; fi
  local tag rc=0
  tag=app-migrate-$(log_name "$want")
  say "running the migration in $ref: ${migration_command[*]} (its output: journalctl -t $tag)"
  docker rm --force app-migrate >/dev/null 2>&1 || true
  release_opts "$want"
  docker run --rm --name app-migrate "${common_opts[@]}" "${release_options[@]}" \
    --log-opt "tag=$tag" -- "$ref" "${migration_command[@]}" </dev/null >/dev/null 2>&1 || rc=$?
  if ((rc != 0)); then
    die "the migration of release $want failed (exit $rc; its output: journalctl -t $tag); $(serving_now) keeps serving, nginx was not touched"
  fi
  say "migration of release $want done"
}

start_new() {
  local ref=$1 port
  port=$(slot_port "$new_slot")
  if docker container inspect "$new_name" >/dev/null 2>&1; then
    say "removing the leftover container $new_name (nginx does not send it traffic)"
    docker rm --force "$new_name" >/dev/null
  fi
  say "starting $new_name: $ref on 127.0.0.1:$port"
  new_started=1
  release_opts "$want"
  docker run --detach --name "$new_name" --restart unless-stopped --publish "127.0.0.1:$port:$container_port" \
    "${common_opts[@]}" "${release_options[@]}" --label "leaninfra.config=$config_digest" \
    --label "leaninfra.digest=$ran_digest" --log-opt "tag=app-$(log_name "$want")" -- "$ref" >/dev/null
}

unhealthy() {
  say "release $want did not become healthy: $1" >&2
  say "its log stays in the journal on this server: journalctl -t app-$(log_name "$want") -n 50" >&2
  die "release $want never became healthy; $(serving_now) keeps serving, nginx was not touched"
}

wait_healthy() {
  local url code state status restarts exit_code oom
  url="http://127.0.0.1:$(slot_port "$new_slot")$health_path"
  local deadline=$((SECONDS + health_timeout_seconds))
  say "waiting up to ${health_timeout_seconds}s for $url to answer 200"
  while true; do
    code=$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 2 "$url" || true)
    if [[ $code == 200 ]]; then
      say "health ok: release $want answers 200 on $url"
      return 0
    fi
    state=$(docker container inspect --format '{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}} {{.State.OOMKilled}}' -- "$new_name" 2>/dev/null || echo 'missing 0 0 false')
    read -r status restarts exit_code oom <<<"$state"
    if [[ $status != running || $restarts != 0 ]]; then
      if [[ $oom == true ]]; then
        unhealthy "its container ran out of its ${memory_mb} MB (appMemoryMb) and was killed"
      fi
      unhealthy "its container is $status (exit code $exit_code, restarted $restarts times)"
    fi
    if ((SECONDS >= deadline)); then
      unhealthy "no 200 from $url within ${health_timeout_seconds}s (last answer: HTTP ${code:-none})"
    fi
    sleep 0.5
  done
}

reload_nginx() {
  if [[ -d /run/systemd/system ]]; then
    systemctl reload nginx
  else
    nginx -s reload
  fi
}

# Copies of nginx's include files taken before the switch ('' when a file did not exist).
declare -A previous_files=()

# Puts both include files back as they were before the switch (once; also from the EXIT trap, so a
# deploy interrupted between the two files never leaves nginx pointing half at each release).
restore_nginx_files() {
  local file
  if ((!nginx_files_saved)); then return 0; fi
  for file in "$upstream_file" "$release_file"; do
    if [[ -n ${previous_files[$file]} ]]; then mv -fT -- "${previous_files[$file]}" "$file"; else rm -f -- "$file"; fi
  done
  nginx_files_saved=0
}

# Writes content as file by rename, so nginx never reads half a file.
replace_file() {
  local file=$1 content=$2 tmp
  tmp=$(mktemp -- "${file%/*}/.${file##*/}.new.XXXXXX")
  printf '%s\n' "$content" >"$tmp"
  chmod 0644 -- "$tmp"
  mv -fT -- "$tmp" "$file"
}

# Points nginx at the new slot; on a failed check or reload both files are put back as they were.
switch_nginx() {
  local port out file
  port=$(slot_port "$new_slot")
  if [[ ! -d ${upstream_file%/*} || ! -d ${release_file%/*} ]]; then
    die "${upstream_file%/*} does not exist: apply the proxy role (nginx) before deploying the app"
  fi
  if ! command -v nginx >/dev/null; then die "nginx is not installed: apply the proxy role before deploying the app"; fi
  for file in "$upstream_file" "$release_file"; do
    previous_files[$file]=''
    if [[ -f $file ]]; then
      previous_files[$file]=$(mktemp -- "${file%/*}/.${file##*/}.previous.XXXXXX")
      cp -p -- "$file" "${previous_files[$file]}"
    fi
  done
  nginx_files_saved=1
  say "pointing nginx at slot $new_slot: $upstream_file -> 127.0.0.1:$port, $release_file -> $want"
  replace_file "$upstream_file" "server 127.0.0.1:$port;"
  # shellcheck disable=SC2016 # $leaninfra_release is an nginx variable, written literally
  replace_file "$release_file" 'set $leaninfra_release "'"$want"'";'
  say "checking the nginx configuration (nginx -t)"
  if ! out=$(nginx -t 2>&1); then
    printf '%s\n' "$out" >&2
    restore_nginx_files
    die "nginx -t failed with the new upstream (output above); the previous files are back, $(serving_now) keeps serving"
  fi
  say "reloading nginx"
  if ! out=$(reload_nginx 2>&1); then
    printf '%s\n' "$out" >&2
    restore_nginx_files
    reload_nginx >/dev/null 2>&1 || true
    die "reloading nginx failed (output above); the previous files are back, $(serving_now) keeps serving"
  fi
  switched=1
  nginx_files_saved=0
  for file in "$upstream_file" "$release_file"; do
    if [[ -n ${previous_files[$file]} ]]; then rm -f -- "${previous_files[$file]}"; fi
  done
}

retire_old() {
  if [[ -z $serving_slot ]] || ! docker container inspect -- "app-$serving_slot" >/dev/null 2>&1; then return 0; fi
  say "draining: app-$serving_slot (${serving_release:-unknown release}) keeps running ${drain_seconds}s for requests in flight"
  sleep "$drain_seconds"
  say "stopping app-$serving_slot"
  docker stop --time "$stop_timeout_seconds" -- "app-$serving_slot" >/dev/null
  docker rm -- "app-$serving_slot" >/dev/null
}

contains() {
  local needle=$1 item
  shift
  for item in "$@"; do
    if [[ $item == "$needle" ]]; then return 0; fi
  done
  return 1
}

# Keeps the last keep_images releases deployed here, plus the serving and the previous one; images of
# the repository that were never deployed here are not this script's to remove. A release pinned to a
# digest is its image@sha256:... reference; an image that a kept release also runs stays.
prune_images() {
  local history=$state_dir/releases release ref id keep=() keep_ids=()
  mapfile -t keep < <(tac -- "$history" | awk -v n="$keep_images" 'NF && !seen[$0]++ && count++ < n')
  keep+=("$want")
  if [[ -n $serving_release ]]; then keep+=("$serving_release"); fi
  for release in "${keep[@]}"; do
    if id=$(docker image inspect --format '{{.Id}}' -- "$(release_ref "$release")" 2>/dev/null); then keep_ids+=("$id"); fi
  done
  while IFS= read -r release; do
    if contains "$release" "${keep[@]}"; then continue; fi
    ref=$(release_ref "$release")
    if ! id=$(docker image inspect --format '{{.Id}}' -- "$ref" 2>/dev/null) || contains "$id" "${keep_ids[@]}"; then continue; fi
    say "removing image $ref (keeping the last $keep_images releases, the serving one and the previous one)"
    docker image rm -- "$ref" >/dev/null || say "could not remove $ref; it stays" >&2
  done < <(awk 'NF && !seen[$0]++' "$history")
}

write_metrics() {
  local success=$1 duration=$2 live_release=$serving_release live_slot=$serving_slot dir=${metrics_file%/*} tmp
  if ((switched)); then
    live_release=$want
    live_slot=$new_slot
  fi
  mkdir -p -- "$dir"
  tmp=$(mktemp -- "$dir/.${metrics_file##*/}.XXXXXX")
  {
    echo '# HELP leaninfra_app_release_info The app release nginx sends traffic to (always 1).'
    echo '# TYPE leaninfra_app_release_info gauge'
    if [[ -n $live_release ]]; then
      printf 'leaninfra_app_release_info{release="%s",slot="%s"} 1\n' "$live_release" "$live_slot"
    fi
    echo '# HELP leaninfra_app_deploy_timestamp_seconds When the last deploy attempt ended (Unix time).'
    echo '# TYPE leaninfra_app_deploy_timestamp_seconds gauge'
    printf 'leaninfra_app_deploy_timestamp_seconds %s\n' "$(date +%s)"
    echo '# HELP leaninfra_app_deploy_success 1 when the last deploy attempt succeeded, 0 when it failed.'
    echo '# TYPE leaninfra_app_deploy_success gauge'
    printf 'leaninfra_app_deploy_success %s\n' "$success"
    echo '# HELP leaninfra_app_deploy_duration_seconds How long the last deploy attempt took.'
    echo '# TYPE leaninfra_app_deploy_duration_seconds gauge'
    printf 'leaninfra_app_deploy_duration_seconds %s\n' "$duration"
  } >"$tmp"
  chmod 0644 -- "$tmp"
  mv -fT -- "$tmp" "$metrics_file"
}

# One line per deploy attempt in the deploy log, and the metrics node_exporter reads.
record_result() {
  local result=$1 duration_ms duration
  duration_ms=$(($(date +%s%3N) - started_ms))
  duration=$(printf '%d.%03d' $((duration_ms / 1000)) $((duration_ms % 1000)))
  mkdir -p -- "${deploy_log%/*}"
  if [[ ! -e $deploy_log ]]; then
    install -m 0640 /dev/null "$deploy_log"
    chgrp adm -- "$deploy_log" 2>/dev/null || true
  fi
  local failed_step=''
  if [[ $result != ok ]]; then failed_step=" step=$phase"; fi
  printf '%s release=%s slot=%s result=%s duration=%ss previous=%s image=%s ran=%s%s\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$want" "${new_slot:--}" "$result" "$duration" "${serving_release:--}" \
    "$image" "${ran_digest:--}" "$failed_step" >>"$deploy_log"
  if [[ $result == ok ]]; then write_metrics 1 "$duration"; else write_metrics 0 "$duration"; fi
}

on_exit() {
  local rc=$?
  trap - EXIT
  set +e
  if ((deploying)); then
    if ((rc != 0)); then
      say "deploy of release $want failed during step '$phase' (exit $rc)" >&2
      if ((nginx_files_saved)); then
        say "putting nginx's include files back as they were before the switch" >&2
        restore_nginx_files
        if nginx -t >/dev/null 2>&1; then reload_nginx >/dev/null 2>&1; fi
      fi
      if ((new_started && !switched)); then
        say "removing $new_name; $(serving_now) keeps serving" >&2
        docker rm --force "$new_name" >/dev/null 2>&1
      fi
      record_result failed
    fi
  fi
  if [[ -n $docker_config_dir ]]; then rm -rf -- "$docker_config_dir"; fi
  exit "$rc"
}

deploy() {
  want=$1
  started_ms=$(date +%s%3N)
  need_docker
  container_options
  read_serving
  new_slot=blue
  if [[ $serving_slot == blue ]]; then new_slot=green; fi
  new_name=app-$new_slot
  local ref
  ref=$(release_ref "$want")
  deploying=1
  say "deploying $ref to slot $new_slot (127.0.0.1:$(slot_port "$new_slot")); serving now: $(serving_now)"
  phase=pull
  ensure_image "$ref"
  ran_digest=$(image_digest "$ref")
  say "release $want is image $ran_digest"
  remember_release "$want"
  phase=migrate
  run_migration "$ref"
  phase=start
  start_new "$ref"
  phase=health
  wait_healthy
  phase=switch
  switch_nginx
  phase=drain
  retire_old
  phase=prune
  prune_images
  phase=record
  record_result ok
  deploying=0
  say "release $want serves from slot $new_slot"
}

main() {
  if ((EUID != 0)); then die "run as root: sudo leaninfra-deploy $*"; fi
  if (($# > 1)); then die "usage: leaninfra-deploy [--check | --status | --health | RELEASE]"; fi
  load_conf
  case ${1:-} in
    --check) check ;;
    --status) status ;;
    --health) health ;;
    -*) die "unknown option $1 (usage: leaninfra-deploy [--check | --status | --health | RELEASE])" ;;
    *)
      local target=${1:-$release}
      if ! valid_release "$target"; then die "'$target' is not a Docker tag ([A-Za-z0-9_][A-Za-z0-9_.-]*, at most 128), optionally pinned: TAG@sha256:<64 hex>"; fi
      mkdir -p /run/lock
      exec 8>>/run/lock/leaninfra-deploy.lock
      if ! flock -w 600 8; then die "another deploy held /run/lock/leaninfra-deploy.lock for 10 minutes"; fi
      trap on_exit EXIT
      # A signal ends the deploy through the EXIT trap, which puts back what the deploy had changed.
      trap 'exit 130' INT
      trap 'exit 143' TERM
      trap 'exit 129' HUP
      deploy "$target"
      ;;
  esac
}

main "$@"
