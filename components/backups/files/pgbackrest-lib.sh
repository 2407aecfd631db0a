#!/usr/bin/env bash
# What the backups role's PostgreSQL and pgBackRest scripts share (leaninfra-drill, leaninfra-restore).
# A script includes it after the shared library with
#   # shellcheck source=components/backups/files/pgbackrest-lib.sh
#   source "${BASH_SOURCE[0]%/*}/pgbackrest-lib.sh" # @lib
# and the rendered script carries its text in place of that line (components/host/script.ts).
# It reads the including script's stanza, pgbackrest_conf and secrets_file.

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
