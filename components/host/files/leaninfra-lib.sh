#!/usr/bin/env bash
# The shared library of LeanInfra's host scripts. A role script includes it with
#   # shellcheck source=components/host/files/leaninfra-lib.sh
#   source "${BASH_SOURCE[0]%/*}/../../host/files/leaninfra-lib.sh" # @lib
# and the rendered script carries its text in place of that line (components/host/script.ts).

# The common header: strict mode, a known locale and PATH, files readable by their group at most.
set -Eeuo pipefail
shopt -s inherit_errexit
export LC_ALL=C
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 022

# Only printable text (a wrong passphrase makes tools quote binary garbage), and that as one short line.
printable() { tr -cd '\11\12\40-\176'; }
one_line() { printable | tr '\t\n' '  ' | sed 's/  */ /g; s/^ //; s/ $//' | cut -c1-600; }

# log_to FILE TEXT...: one UTC-stamped line appended to FILE, created root:adm 0640 when missing.
log_to() {
  local file=$1
  shift
  if [[ ! -f $file ]]; then
    mkdir -p -- "${file%/*}"
    install -m 0640 -g adm /dev/null "$file" 2>/dev/null || install -m 0640 /dev/null "$file"
  fi
  printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$file"
}

# take_lock FILE SECONDS: holds an exclusive flock on FILE (fd 9) until the script exits; waits at most
# SECONDS (0: not at all). Returns 1 when another holder keeps it.
take_lock() {
  mkdir -p -- "${1%/*}"
  exec 9>>"$1"
  flock --exclusive --wait "$2" 9
}

# write_textfile FILE: stdin becomes FILE atomically (a temp file beside it, then rename), mode 0644.
# node_exporter's textfile collector reads only *.prom, so it never sees a half-written file.
write_textfile() {
  local tmp
  mkdir -p -- "${1%/*}"
  tmp=$(mktemp -- "$1.XXXXXX")
  cat >"$tmp"
  chmod 0644 -- "$tmp"
  mv -f -- "$tmp" "$1"
}

# metric NAME HELP VALUE [LABELS]: one gauge in node_exporter's text format, for write_textfile.
metric() {
  printf '# HELP %s %s\n# TYPE %s gauge\n%s%s %s\n' "$1" "$2" "$1" "$1" "${4:-}" "$3"
}

# say TEXT...: "[<tool> HH:MM:SS] TEXT" on stdout (the including script sets tool).
say() { printf '[%s %s] %s\n' "${tool:?}" "$(date -u +%H:%M:%S)" "$*"; }

# Milliseconds since $1 (date +%s%3N), as seconds with three decimals.
elapsed() {
  local ms=$(($(date +%s%3N) - $1))
  printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

# 'YYYY-MM-DD HH:MM:SS+00' of a Unix time.
utc() { date -u -d "@$1" '+%Y-%m-%d %H:%M:%S+00'; }
