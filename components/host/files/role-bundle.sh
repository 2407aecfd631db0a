#!/usr/bin/env bash
# The fixed machinery of every role bundle: components/host/bundle.ts puts this text (below the
# settings block) between the role's own variables and its functions. On its own it is only checked
# by shellcheck, never run; the block holds example values of what the role's part defines.
# shellcheck disable=SC2317 # traps and run_snippet call these functions by name, which shellcheck cannot see
# @settings-begin
readonly role='example'
readonly role_digest='0000000000000000000000000000000000000000000000000000000000000000'
readonly -a packages=('nginx')
readonly -a file_paths=('/etc/example.conf')
readonly -a handler_labels=('systemctl reload example (onChange of /etc/example.conf)')
readonly marker_dir='/var/lib/leaninfra/roles'
readonly backup_dir='/var/lib/leaninfra/backups'
# @settings-end
marker="$marker_dir/$role.sha256"
# Present while a run is between changing its first file and recording success: a run killed there
# (SIGKILL, a lost machine) leaves it, and the next run validates and runs every handler again.
pending="$marker_dir/$role.pending"
recovering=0
backup_root="$backup_dir/$role"
changes=0
step='start'
rollback_armed=0
temp_files=()
file_state=()
due_handlers=()
tmp_file=''
want_group=''
step_status=0

say() { printf '[%s] %s\n' "$role" "$*"; }
change() { changes=$((changes + 1)); say "$*"; }

fail() {
  trap - ERR
  set +e
  if ((BASH_SUBSHELL > 0)); then
    # Inside $(...): report and leave; the main shell rolls back and says where it failed.
    printf '[%s] FAILED during %s: %s\n' "$role" "$step" "$*" >&2
    exit 1
  fi
  if [[ $rollback_armed == 1 ]]; then
    rollback_armed=0
    # Everything put back: the host is as the last good run left it.
    if rollback; then rm -f -- "$pending"; fi
  fi
  printf '[%s] FAILED during %s: %s\n' "$role" "$step" "$*" >&2
  exit 1
}

# INT, TERM or HUP (Ctrl-C, a killed pulumi, a dropped SSH connection): roll back like any failure.
interrupted() {
  fail "interrupted by SIG$1"
}

on_error() {
  fail "line $2: '$3' exited with status $1"
}

cleanup() {
  if ((${#temp_files[@]})); then rm -f -- "${temp_files[@]}"; fi
}

# Runs a function in a subshell with errexit on, stdout and stderr into files; sets step_status.
run_captured() {
  trap - ERR
  set +e
  ( set -e; "$1" ) >"$2" 2>"$3" 9>&- </dev/null
  step_status=$?
  set -e
  trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR
}

show_output() {
  local file
  for file in "$@"; do
    if [[ -s $file ]]; then sed "s/^/[$role]   /" "$file" >&2; fi
  done
}

# Sets want_group to the group a file or directory should have: the given one, else the owner's own.
resolve_owner() {
  if ! id -u -- "$1" >/dev/null 2>&1; then
    fail "user '$1' does not exist (list the package that creates it in packages, or create it in an earlier role)"
  fi
  want_group=${2:-$(id -gn -- "$1")}
  if ! getent group -- "$want_group" >/dev/null; then
    fail "group '$want_group' does not exist"
  fi
}

install_packages() {
  step='packages'
  local name status missing=()
  for name in "${packages[@]}"; do
    # shellcheck disable=SC2016 # dpkg-query's own format syntax, not a shell expansion
    status=$(dpkg-query -W -f='${db:Status-Status}' "$name" 2>/dev/null || true)
    if [[ $status != installed ]]; then missing+=("$name"); fi
  done
  if ((${#missing[@]} == 0)); then return 0; fi
  local log
  log=$(mktemp)
  temp_files+=("$log")
  local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if ! "${apt[@]}" update >"$log" 2>&1; then
    show_output "$log"
    fail "apt-get update failed (output above)"
  fi
  if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    show_output "$log"
    fail "apt-get install ${missing[*]} failed (output above)"
  fi
  for name in "${missing[@]}"; do change "installed package $name"; done
}

# ensure_dir PATH MODE OWNER GROUP: create it, or fix its mode/owner/group.
ensure_dir() {
  local dir=$1 mode=$2 owner=$3 created=0 have
  step="directory $dir"
  if [[ -L $dir || ( -e $dir && ! -d $dir ) ]]; then
    fail "$dir exists but is not a directory; move it away, then run again"
  fi
  resolve_owner "$owner" "$4"
  if [[ ! -d $dir ]]; then
    mkdir -p -- "$dir"
    created=1
  fi
  have=$(stat -c '%a %U:%G' -- "$dir")
  if [[ $have != "$mode $owner:$want_group" ]]; then
    chmod "$(printf '%05d' "$mode")" -- "$dir"
    chown -- "$owner:$want_group" "$dir"
  fi
  if ((created)); then
    change "created directory $dir ($mode $owner:$want_group)"
  elif [[ $have != "$mode $owner:$want_group" ]]; then
    change "fixed directory $dir: $have -> $mode $owner:$want_group"
  fi
}

# new_temp INDEX: a fresh root-only temp file beside file INDEX (so the final mv is atomic) in tmp_file.
new_temp() {
  local target=${file_paths[$1]}
  local dir=${target%/*}
  if [[ ! -d ${dir:-/} ]]; then
    fail "directory ${dir:-/} does not exist; add it to the role's directories or packages"
  fi
  if [[ -L $target || ( -e $target && ! -f $target ) ]]; then
    fail "$target exists but is not a regular file; move it away, then run again"
  fi
  tmp_file=$(mktemp -- "${dir:-}/.${target##*/}.leaninfra-new.XXXXXX")
  temp_files+=("$tmp_file")
}

backup_file() {
  local target=$1
  if [[ ! -d $backup_root ]]; then
    mkdir -p -- "$backup_root"
    chmod 0700 -- "$backup_root"
  fi
  mkdir -p -- "$(dirname -- "$backup_root$target")"
  cp -a -- "$target" "$backup_root$target"
}

# put_file INDEX MODE OWNER GROUP: install tmp_file as file INDEX when its content, mode or owner differ.
put_file() {
  local index=$1 mode=$2 owner=$3 target=${file_paths[$1]} have
  resolve_owner "$owner" "$4"
  local want="$mode $owner:$want_group"
  if [[ -f $target ]] && cmp -s -- "$tmp_file" "$target"; then
    rm -f -- "$tmp_file"
    have=$(stat -c '%a %U:%G' -- "$target")
    if [[ $have == "$want" ]]; then return 0; fi
    backup_file "$target"
    file_state[index]=existed
    chmod "$(printf '%05d' "$mode")" -- "$target"
    chown -- "$owner:$want_group" "$target"
    change "fixed file $target: $have -> $want"
    return 0
  fi
  chmod "$(printf '%05d' "$mode")" -- "$tmp_file"
  chown -- "$owner:$want_group" "$tmp_file"
  if [[ -f $target ]]; then
    backup_file "$target"
    file_state[index]=existed
    mv -fT -- "$tmp_file" "$target"
    change "updated file $target ($want; previous version in $backup_root$target)"
  else
    rm -f -- "$backup_root$target"
    file_state[index]=new
    mv -fT -- "$tmp_file" "$target"
    change "created file $target ($want)"
  fi
}

# Puts back every file this run changed, newest first; files this run created are removed.
# Returns non-zero when a file could not be put back.
rollback() {
  local i target tmp status=0
  for ((i = ${#file_paths[@]} - 1; i >= 0; i--)); do
    target=${file_paths[i]}
    case ${file_state[i]:-} in
      existed)
        if tmp=$(mktemp -- "$(dirname -- "$target")/.${target##*/}.leaninfra-restore.XXXXXX") &&
          cp -a -- "$backup_root$target" "$tmp" && mv -fT -- "$tmp" "$target"; then
          say "restored $target to its previous version" >&2
        else
          rm -f -- "${tmp:-}"
          status=1
          say "COULD NOT restore $target; its previous version is in $backup_root$target" >&2
        fi
        ;;
      new)
        if rm -f -- "$target"; then
          say "removed $target (it did not exist before this run)" >&2
        else
          status=1
          say "COULD NOT remove $target (it did not exist before this run)" >&2
        fi
        ;;
    esac
    file_state[i]=''
  done
  local h
  for h in "${due_handlers[@]}"; do
    if (set -e; "handler_$h") >/dev/null 2>&1 9>&- </dev/null; then
      say "re-ran handler ${handler_labels[h]} for the restored files" >&2
    else
      say "handler ${handler_labels[h]} also failed for the restored files; the service needs a look" >&2
    fi
  done
  return "$status"
}

# Before the first file changes: from here until the marker is written, a killed run is noticed.
mark_pending() {
  mkdir -p -- "$marker_dir"
  : >"$pending"
  rollback_armed=1
}

any_file_changed() {
  local i
  for i in "$@"; do
    if [[ -n ${file_state[i]:-} ]]; then return 0; fi
  done
  return 1
}

run_snippet() {
  local name=$1 what=$2 out err
  out=$(mktemp)
  err=$(mktemp)
  temp_files+=("$out" "$err")
  run_captured "$name" "$out" "$err"
  if ((step_status != 0)); then
    show_output "$out" "$err"
    fail "$what failed (exit $step_status, output above)"
  fi
  snippet_out=$out
  snippet_err=$err
}
snippet_out=''
snippet_err=''

# A handler's own lines (e.g. a skipped restart) are shown, but only state changes are counted.
show_handler_output() {
  if [[ -s $snippet_out ]]; then sed "s/^/[$role]   /" "$snippet_out"; fi
  if [[ -s $snippet_err ]]; then sed "s/^/[$role]   /" "$snippet_err" >&2; fi
}

# apply prints one line per thing it changed: each is counted and shown as a change.
record_apply_changes() {
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    if [[ -n $line ]]; then change "$line"; fi
  done <"$snippet_out"
  if [[ -s $snippet_err ]]; then cat -- "$snippet_err" >&2; fi
}

write_marker() {
  step='marker'
  rm -f -- "$pending"
  if [[ -f $marker && $(<"$marker") == "$role_digest" ]]; then return 0; fi
  mkdir -p -- "$marker_dir"
  local tmp
  tmp=$(mktemp -- "$marker.XXXXXX")
  temp_files+=("$tmp")
  printf '%s\n' "$role_digest" >"$tmp"
  chmod 0644 -- "$tmp"
  mv -fT -- "$tmp" "$marker"
  change "recorded role digest in $marker"
}

finish() {
  if ((changes == 0)); then
    say "no changes"
  else
    say "$changes change(s)"
  fi
}

start() {
  trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR
  trap cleanup EXIT
  trap 'interrupted INT' INT
  trap 'interrupted TERM' TERM
  trap 'interrupted HUP' HUP
  if [[ $EUID -ne 0 ]]; then
    fail "must run as root (the Host runs it with: sudo bash -s < bundle)"
  fi
  mkdir -p /run/lock
  exec 9>/run/lock/leaninfra-bundle.lock
  if ! flock -w 900 9; then
    fail "another LeanInfra bundle held /run/lock/leaninfra-bundle.lock for 15 minutes"
  fi
  if [[ -f $pending ]]; then
    # shellcheck disable=SC2034 # read by the role's main, which bundle.ts renders after this file
    recovering=1
    say "an earlier run was stopped after changing files: validating them and running every handler again"
  fi
}
