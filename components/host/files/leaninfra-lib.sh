#!/usr/bin/env bash
# The shared library of LeanInfra's host scripts. A role script includes it with
#   # shellcheck source=components/host/files/leaninfra-lib.sh
#   source "$(dirname "${BASH_SOURCE[0]}")/../../host/files/leaninfra-lib.sh" # @lib
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

# What leaninfra-drill and leaninfra-restore share: output, psql and pgBackRest as postgres, the
# repository's state. They read the including script's readonly tool, stanza, pgbackrest_conf and secrets_file.

# say TEXT...: "[<tool> HH:MM:SS] TEXT" on stdout.
say() { printf '[%s %s] %s\n' "${tool:?}" "$(date -u +%H:%M:%S)" "$*"; }

# Runs as the OS user postgres (peer authentication, file ownership), from a directory it can read.
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

# The repository's S3 key, secret and passphrase for the pgbackrest processes started here (and the
# archive-get of the clusters started here): the PGBACKREST_* lines of the root-only secrets file.
load_backup_secrets() {
  local line
  if [[ ! -f ${secrets_file:?} ]]; then return 0; fi
  while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line =~ ^(PGBACKREST_[A-Z0-9_]+)=(.*)$ ]]; then export "${BASH_REMATCH[1]}=${BASH_REMATCH[2]}"; fi
  done <"$secrets_file"
}

# The tools the backups role installs, named when missing.
missing_tools() {
  local t
  for t in pgbackrest jq; do if ! command -v "$t" >/dev/null; then printf '%s ' "$t"; fi; done
}

backrest() { as_postgres pgbackrest --config="${pgbackrest_conf:?}" --stanza="${stanza:?}" "$@"; }

# Unix time of a 'YYYY-MM-DD HH:MM:SS+00' target; fails on anything else.
target_epoch() {
  local zone='(Z|[+-][0-9]{2}(:?[0-9]{2})?)'
  if [[ ! $1 =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}[\ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?$zone$ ]]; then return 1; fi
  date -u -d "$1" +%s 2>/dev/null
}

# pgbackrest info --output=json, read with jq (the backups role installs it). Bytes of a file that does
# not decrypt can reach its messages raw, and jq refuses control characters: they become spaces.
repo_info() {
  local out
  if ! out=$(backrest --output=json info 2>&1); then
    printf '%s\n' "$out"
    return 1
  fi
  tr '\001-\037' ' ' <<<"$out"
}
info_status() { jq -r '.[0].status.code // 99' <<<"$1"; }
# pgBackRest's own words about a stanza it cannot use, printable and short.
info_message() {
  jq -r '[.[0].status.message, .[0].repo[]?.status.message] | map(select(. != null and . != "ok")) | unique | join("; ")' <<<"$1" |
    tr -c '[:print:]' ' ' | cut -c1-400
}
# Unix end time of every backup, oldest first, and their labels.
backup_stop_times() { jq -r '.[0].backup[]?.timestamp.stop' <<<"$1"; }
backup_labels() { jq -r '.[0].backup[]?.label' <<<"$1"; }

# Exit status 0 when the stanza cannot be restored from, printing why (for fail or die).
info_problem() {
  local code message
  code=$(info_status "$1")
  message=$(info_message "$1")
  case $code in
    0) return 1 ;;
    2) echo "the repository holds no backup of stanza $stanza yet (pgBackRest: $message)" ;;
    *)
      if grep -qE 'FormatError|CryptoError' <<<"$message"; then
        echo "the repository's info files do not decrypt: a wrong repository passphrase (PGBACKREST_REPO1_CIPHER_PASS in $secrets_file, repo1-cipher-pass in $pgbackrest_conf) or damaged files (pgBackRest: $message)"
      else
        echo "pgBackRest cannot use stanza $stanza (status $code): $message"
      fi
      ;;
  esac
}

# Milliseconds since $1 (date +%s%3N), as seconds with three decimals.
elapsed() {
  local ms=$(($(date +%s%3N) - $1))
  printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

utc() { date -u -d "@$1" '+%Y-%m-%d %H:%M:%S+00'; }

# Every table of the database (partitioned tables once, not their partitions) and its row count,
# as "schema.table|count" lines; unlogged tables are listed as "|unlogged" (a restore leaves them empty).
table_counts() {
  local psql=("$@")
  "${psql[@]}" <<'SQL'
SELECT CASE WHEN c.relpersistence = 'u'
            THEN format('SELECT %L || ''|unlogged''', format('%I.%I', n.nspname, c.relname))
            ELSE format('SELECT %L || ''|'' || count(*) FROM %I.%I', format('%I.%I', n.nspname, c.relname), n.nspname, c.relname) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence IN ('p', 'u')
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
ORDER BY n.nspname, c.relname
\gexec
SQL
}
