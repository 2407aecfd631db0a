import { LAYOUT } from "../host/layout";
import { APP_PATHS } from "../app/render";
import { POSTGRES_DEFAULT_PORT, POSTGRES_PATHS, POSTGRES_VERSION, POSTGRES_CLUSTER } from "../postgres/config";
import { BACKUPS } from "./layout";

/**
 * What `leaninfra-drill` needs to know. Only `database` is required; everything else defaults to the
 * layout the roles share (BACKUPS, POSTGRES_PATHS, APP_PATHS).
 */
export interface DrillSettings {
  /** The app's database (leaninfra:postgresDatabase): every table of it is checked. */
  database: string;
  /** Production's PostgreSQL port (the postgres role's port; default 5432). */
  productionPort?: number;
  /** Production's data directory (default POSTGRES_PATHS.dataDirectory). */
  productionDataDir?: string;
  /** Where the scratch cluster is restored (default BACKUPS.scratchDir); removed after every drill. */
  scratchDir?: string;
  /** The scratch cluster's port (default BACKUPS.scratchPort). */
  scratchPort?: number;
  /** Where the app's container started against the scratch database listens on 127.0.0.1 (default BACKUPS.drillAppPort). */
  appPort?: number;
  /** Tables with at least exactBelowRows rows in production may differ by this many percent (default 5). */
  rowTolerancePercent?: number;
  /** Tables with fewer rows than this in production must match exactly (default 100). */
  exactBelowRows?: number;
  /**
   * A query, run in the restored database, returning one timestamp: the newest data, e.g.
   * "SELECT max(created_at) FROM orders". Without it the data's age is the last restored transaction's
   * commit time (or the backup's end when newer).
   */
  freshnessQuery?: string;
  /** The restored data may be at most this old (RPO), minutes (default 1560 = 26 h: a daily backup plus slack). */
  maxDataAgeMinutes?: number;
  /** How long the app's container may take to answer 200 on its health path; 0 (default) = the app role's healthTimeoutSeconds. */
  appHealthTimeoutSeconds?: number;
  /** How long restoring and replaying WAL may take before the drill gives up, minutes (default 120). */
  restoreTimeoutMinutes?: number;
  /** Extra KEY=value settings for the drill's app container only, e.g. "MAIL_DELIVERY=off". */
  appEnv?: string[];
  /** Default BACKUPS.metrics.drill; the tests point it into a temp directory. */
  metricsFile?: string;
  /** Default BACKUPS.logs.drill. */
  logFile?: string;
}

/** What `leaninfra-restore` needs to know. */
export interface RestoreSettings {
  /** The server's host name (leaninfra:hostname): typed at the prompt to confirm a restore of production. */
  hostName: string;
  /** The app's database (leaninfra:postgresDatabase), verified after the restore. */
  database: string;
  /** Production's PostgreSQL port (default 5432). */
  productionPort?: number;
  /** Production's data directory (default POSTGRES_PATHS.dataDirectory). */
  dataDir?: string;
  /** How long replaying WAL up to the target may take, minutes (default 120). */
  recoveryTimeoutMinutes?: number;
  /** How long the app may take to answer its health path after the restore, seconds (default 120). */
  appHealthTimeoutSeconds?: number;
  /** One line per restore (default LAYOUT.logs/restore.log). */
  logFile?: string;
}

export const DRILL_DEFAULTS = Object.freeze({
  rowTolerancePercent: 5,
  exactBelowRows: 100,
  maxDataAgeMinutes: 26 * 60,
  restoreTimeoutMinutes: 120,
  appHealthTimeoutSeconds: 0,
});

export const DRILL_CONTAINER_NAME = "leaninfra-drill-app";
/** Read by leaninfra-drill and leaninfra-restore so they never run at the same time. */
export const DRILL_LOCK_FILE = "/run/lock/leaninfra-drill.lock";
export const RESTORE_LOG = `${LAYOUT.logs}/restore.log`;
/** Settings the drill gives the app container itself; appEnv may not redefine them. */
const DRILL_RESERVED_ENV = ["DATABASE_URL", "REDIS_URL", "PORT", "RELEASE", "LEANINFRA_DRILL"];

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;
// Paths go into single quotes, PostgreSQL's -c options and a socket path (at most 107 bytes): keep them plain.
const SAFE_PATH = /^\/[A-Za-z0-9._\/-]{1,90}$/;
const ENV_ENTRY = /^[A-Za-z_][A-Za-z0-9_]*=[^\x00-\x1f\x7f]*$/;
const HOST_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** One single-quoted shell word. */
function shq(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

function isPort(value: number): boolean {
  return Number.isInteger(value) && value >= 1024 && value <= 65535;
}

function wholeNumber(value: number, min: number, max: number): boolean {
  return Number.isInteger(value) && value >= min && value <= max;
}

/** `a` is `b` or lies below it (both normalised, absolute). */
function within(a: string, b: string): boolean {
  const norm = (p: string) => p.replace(/\/+$/, "").replace(/\/+/g, "/");
  return norm(a) === norm(b) || norm(a).startsWith(`${norm(b)}/`);
}

function resolvedDrill(s: DrillSettings) {
  return {
    database: s.database,
    productionPort: s.productionPort ?? POSTGRES_DEFAULT_PORT,
    productionDataDir: s.productionDataDir ?? POSTGRES_PATHS.dataDirectory,
    scratchDir: s.scratchDir ?? BACKUPS.scratchDir,
    scratchPort: s.scratchPort ?? BACKUPS.scratchPort,
    appPort: s.appPort ?? BACKUPS.drillAppPort,
    rowTolerancePercent: s.rowTolerancePercent ?? DRILL_DEFAULTS.rowTolerancePercent,
    exactBelowRows: s.exactBelowRows ?? DRILL_DEFAULTS.exactBelowRows,
    freshnessQuery: (s.freshnessQuery ?? "").trim().replace(/;\s*$/, ""),
    maxDataAgeMinutes: s.maxDataAgeMinutes ?? DRILL_DEFAULTS.maxDataAgeMinutes,
    appHealthTimeoutSeconds: s.appHealthTimeoutSeconds ?? DRILL_DEFAULTS.appHealthTimeoutSeconds,
    restoreTimeoutMinutes: s.restoreTimeoutMinutes ?? DRILL_DEFAULTS.restoreTimeoutMinutes,
    appEnv: s.appEnv ?? [],
    metricsFile: s.metricsFile ?? BACKUPS.metrics.drill,
    logFile: s.logFile ?? BACKUPS.logs.drill,
  };
}

/** Every problem with the drill's settings, each naming its field; empty when the script can be rendered. */
export function drillSettingsProblems(settings: DrillSettings): string[] {
  const s = resolvedDrill(settings);
  const problems: string[] = [];
  const add = (field: string, message: string) => problems.push(`${field}: ${message}`);
  if (typeof s.database !== "string" || !IDENTIFIER.test(s.database)) add("database", `${JSON.stringify(s.database)} is not a PostgreSQL identifier (a-z, 0-9, _)`);
  for (const key of ["productionPort", "scratchPort", "appPort"] as const) {
    if (!isPort(s[key])) add(key, `${s[key]} must be a port number, 1024..65535`);
  }
  if (s.scratchPort === s.productionPort) add("scratchPort", `${s.scratchPort} is production's PostgreSQL port; the drill must never talk to production's server as if it were its scratch copy`);
  for (const key of ["productionDataDir", "scratchDir", "metricsFile", "logFile"] as const) {
    if (!SAFE_PATH.test(s[key]) || s[key].split("/").includes("..")) add(key, `${JSON.stringify(s[key])} must be an absolute path of letters, digits and . _ - / (at most 90 characters)`);
  }
  if (within(s.scratchDir, s.productionDataDir) || within(s.productionDataDir, s.scratchDir)) {
    add("scratchDir", `${s.scratchDir} overlaps production's data directory ${s.productionDataDir}; the scratch cluster needs a directory of its own (it is deleted after every drill)`);
  }
  if (s.scratchDir.split("/").filter(Boolean).length < 2) add("scratchDir", `${s.scratchDir} is too close to / to be deleted after every drill (e.g. ${BACKUPS.scratchDir})`);
  if (!wholeNumber(s.rowTolerancePercent, 0, 100)) add("rowTolerancePercent", `${s.rowTolerancePercent} must be a whole number of percent, 0..100`);
  if (!wholeNumber(s.exactBelowRows, 0, 1_000_000_000)) add("exactBelowRows", `${s.exactBelowRows} must be a whole number of rows, 0 or more`);
  if (!wholeNumber(s.maxDataAgeMinutes, 1, 525_600)) add("maxDataAgeMinutes", `${s.maxDataAgeMinutes} must be a whole number of minutes, 1..525600`);
  if (!wholeNumber(s.appHealthTimeoutSeconds, 0, 3600)) add("appHealthTimeoutSeconds", `${s.appHealthTimeoutSeconds} must be 0 (the app role's) or 1..3600 seconds`);
  if (!wholeNumber(s.restoreTimeoutMinutes, 1, 2880)) add("restoreTimeoutMinutes", `${s.restoreTimeoutMinutes} must be 1..2880 minutes`);
  if (s.freshnessQuery !== "") {
    if (!/^(select|with)\b/i.test(s.freshnessQuery)) add("freshnessQuery", "must be one SELECT (or WITH ... SELECT) returning one timestamp, e.g. SELECT max(created_at) FROM orders");
    else if (s.freshnessQuery.includes(";")) add("freshnessQuery", "must be a single statement (no ';' inside)");
    // eslint-disable-next-line no-control-regex
    else if (/[\x00\\]/.test(s.freshnessQuery)) add("freshnessQuery", "may not contain NUL or backslashes");
  }
  s.appEnv.forEach((entry, i) => {
    if (typeof entry !== "string" || !ENV_ENTRY.test(entry)) add(`appEnv[${i}]`, "must be KEY=value on one line");
    else if (DRILL_RESERVED_ENV.includes(entry.split("=")[0])) add(`appEnv[${i}]`, `${entry.split("=")[0]} is set by the drill itself (${DRILL_RESERVED_ENV.join(", ")})`);
  });
  return problems;
}

function assertNoProblems(what: string, problems: string[]): void {
  if (problems.length > 0) throw new Error(`${what} settings have ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join("\n")}`);
}

/** The values a drill measured, for its node_exporter metrics file. */
export interface DrillResult {
  success: boolean;
  /** When the drill ended, Unix seconds. */
  endedAt: number;
  /** When the last drill passed (this one when it passed), Unix seconds; 0 when none ever did. */
  lastSuccessAt: number;
  /** Restore, checks and app start, seconds: the recovery time a real restore would need. */
  durationSeconds: number;
  restoreSeconds?: number;
  /** How old the restored data was (RPO), seconds; absent when the drill failed before measuring it. */
  dataAgeSeconds?: number;
  /** 1 when the app was started against the restored database, 0 when that was skipped (no app role yet). */
  appChecked?: boolean;
  tablesChecked?: number;
}

/**
 * The drill's metrics file (node_exporter textfile format). The script writes the same lines from bash;
 * this renderer is its specification and what the tests and alert rules are written against.
 */
export function drillMetrics(r: DrillResult): string {
  const lines: string[] = [];
  const gauge = (name: string, help: string, value: number | undefined) => {
    if (value === undefined) return;
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${value}`);
  };
  gauge("leaninfra_drill_success", "1 when the last restore drill passed, 0 when it failed.", r.success ? 1 : 0);
  gauge("leaninfra_drill_timestamp_seconds", "When the last restore drill ended (Unix time).", r.endedAt);
  gauge("leaninfra_drill_last_success_timestamp_seconds", "When a restore drill last passed (Unix time, 0 = never).", r.lastSuccessAt);
  gauge("leaninfra_drill_duration_seconds", "How long the last drill took from restore to a healthy app (RTO).", r.durationSeconds);
  gauge("leaninfra_drill_restore_seconds", "How long restoring and replaying WAL took in the last drill.", r.restoreSeconds);
  gauge("leaninfra_drill_data_age_seconds", "How old the newest restored data was when the last drill restored it (RPO).", r.dataAgeSeconds);
  gauge("leaninfra_drill_app_checked", "1 when the last drill started the app against the restored database, 0 when there was no app to start.", r.appChecked === undefined ? undefined : r.appChecked ? 1 : 0);
  gauge("leaninfra_drill_tables_checked", "Tables of the app's database the last drill compared with production.", r.tablesChecked);
  return `${lines.join("\n")}\n`;
}

/** The metric lines as bash printf calls, in drillMetrics' order (the script's variables fill them in). */
const METRICS_WRITER = String.raw`write_metrics() {
  local success=$1 now dir=${"$"}{metrics_file%/*} tmp
  now=$(date +%s)
  if ((success)); then last_success=$now; fi
  mkdir -p -- "$dir"
  tmp=$(mktemp -- "$dir/.${"$"}{metrics_file##*/}.XXXXXX")
  {
    gauge leaninfra_drill_success '1 when the last restore drill passed, 0 when it failed.' "$success"
    gauge leaninfra_drill_timestamp_seconds 'When the last restore drill ended (Unix time).' "$now"
    gauge leaninfra_drill_last_success_timestamp_seconds 'When a restore drill last passed (Unix time, 0 = never).' "$last_success"
    gauge leaninfra_drill_duration_seconds 'How long the last drill took from restore to a healthy app (RTO).' "$(elapsed "$started_ms")"
    gauge leaninfra_drill_restore_seconds 'How long restoring and replaying WAL took in the last drill.' "$restore_seconds"
    gauge leaninfra_drill_data_age_seconds 'How old the newest restored data was when the last drill restored it (RPO).' "$data_age_seconds"
    gauge leaninfra_drill_app_checked '1 when the last drill started the app against the restored database, 0 when there was no app to start.' "$app_checked"
    gauge leaninfra_drill_tables_checked "Tables of the app's database the last drill compared with production." "$tables_checked"
  } >"$tmp"
  chmod 0644 -- "$tmp"
  mv -fT -- "$tmp" "$metrics_file"
}

# One gauge; an empty value (not measured in this run) leaves it out.
gauge() {
  if [[ -z $3 ]]; then return 0; fi
  printf '# HELP %s %s\n# TYPE %s gauge\n%s %s\n' "$1" "$2" "$1" "$1" "$3"
}`;

/** Shell functions both scripts use: output, pgBackRest with the repository's secrets, psql as postgres. */
const COMMON = String.raw`say() { printf '[%s %s] %s\n' "$tool" "$(date -u +%H:%M:%S)" "$*"; }

# Runs as the OS user postgres (peer authentication, file ownership), from a directory it can read.
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

# The repository's S3 key, secret and passphrase for the pgbackrest processes started here (and the
# archive-get of the clusters started here): the PGBACKREST_* lines of the root-only secrets file.
load_backup_secrets() {
  local line
  if [[ ! -f $secrets_file ]]; then return 0; fi
  while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line =~ ^(PGBACKREST_[A-Z0-9_]+)=(.*)$ ]]; then export "${"$"}{BASH_REMATCH[1]}=${"$"}{BASH_REMATCH[2]}"; fi
  done <"$secrets_file"
}

# The tools the backups role installs, named when missing.
missing_tools() {
  local t
  for t in pgbackrest jq; do if ! command -v "$t" >/dev/null; then printf '%s ' "$t"; fi; done
}

backrest() { as_postgres pgbackrest --config="$pgbackrest_conf" --stanza="$stanza" "$@"; }

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
  "${"$"}{psql[@]}" <<'SQL'
SELECT CASE WHEN c.relpersistence = 'u'
            THEN format('SELECT %L || ''|unlogged''', format('%I.%I', n.nspname, c.relname))
            ELSE format('SELECT %L || ''|'' || count(*) FROM %I.%I', format('%I.%I', n.nspname, c.relname), n.nspname, c.relname) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence IN ('p', 'u')
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
ORDER BY n.nspname, c.relname
\gexec
SQL
}`;

/**
 * `leaninfra-drill`: restores the latest backup (or a point in time) into a scratch cluster, checks it
 * against production, starts the serving release of the app against it, and removes everything again.
 * Throws an Error listing every invalid setting.
 */
export function drillScript(settings: DrillSettings): string {
  assertNoProblems("Drill", drillSettingsProblems(settings));
  const s = resolvedDrill(settings);
  return `#!/usr/bin/env bash
# leaninfra-drill: proves that the backups restore into a working environment. It restores the latest
# backup (or the database as it was at a point in time) from the bucket into a scratch PostgreSQL
# cluster, checks every table against production, starts the release of the app that serves now
# against the restored database and requires its health path to answer 200, then removes all of it.
# Managed by LeanInfra (role "backups"): change components/backups/drill.ts in the repository, not this file.
#
#   leaninfra-drill                                         the latest backup (what the weekly timer runs)
#   leaninfra-drill --target-time '2025-11-28 09:00:00+00'  the database as it was then (by hand; the
#                                                           metrics stay those of the last drill of the latest backup)
#
# It never writes to production: the scratch cluster has its own directory (${s.scratchDir}) and port
# (${s.scratchPort}), no archiving; the script refuses to run when either is production's; production is
# only read (SELECT count(*) in read-only transactions). Result: ${s.metricsFile} (node_exporter)
# and one line per drill in ${s.logFile}. Exit 0 = passed, 1 = failed, 2 = refused or wrong usage.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 077

readonly tool=drill
readonly stanza=${shq(BACKUPS.stanza)}
readonly database=${shq(s.database)}
readonly production_port=${s.productionPort}
readonly production_data_dir=${shq(s.productionDataDir)}
readonly production_socket_dir=/var/run/postgresql
readonly scratch_dir=${shq(s.scratchDir)}
readonly scratch_port=${s.scratchPort}
readonly scratch_tablespaces=${shq(`${s.scratchDir}-tablespaces`)}
readonly app_port=${s.appPort}
readonly pg_bin=${shq(POSTGRES_PATHS.bin)}
readonly production_hba=${shq(POSTGRES_PATHS.hba)}
readonly pgbackrest_conf=${shq(BACKUPS.pgbackrestConf)}
readonly secrets_file=${shq(BACKUPS.secretsFile)}
readonly deploy_conf=${shq(APP_PATHS.deployConf)}
readonly metrics_file=${shq(s.metricsFile)}
readonly drill_log=${shq(s.logFile)}
readonly lock_file=${shq(DRILL_LOCK_FILE)}
readonly container_name=${shq(DRILL_CONTAINER_NAME)}
readonly docker_bridge_address=${shq(LAYOUT.dockerBridge.address)}
readonly docker_bridge_prefix=${shq(LAYOUT.dockerBridge.address.split(".").slice(0, 2).join(".") + ".")}
readonly row_tolerance_percent=${s.rowTolerancePercent}
readonly exact_below_rows=${s.exactBelowRows}
readonly max_data_age_minutes=${s.maxDataAgeMinutes}
readonly freshness_query=${shq(s.freshnessQuery)}
readonly app_health_timeout_seconds=${s.appHealthTimeoutSeconds}
readonly restore_timeout_minutes=${s.restoreTimeoutMinutes}
readonly -a app_env=(${s.appEnv.map(shq).join(" ")})

${COMMON}

${METRICS_WRITER}

# State of this run, read by the EXIT trap.
step=start
fail_reason=''
scratch_owned=0
backup_stop=0
scratch_started=0
container_started=0
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

# \`a\` is \`b\` or lies below it.
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
  if ((app_port == scratch_port || app_port == production_port)); then refuse "the drill's app port $app_port is a PostgreSQL port"; fi
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
    printf '%s\\n' "$live_dir" >&2
    fail "production PostgreSQL does not answer on port $production_port (socket $production_socket_dir); the drill compares the restore with it"
  fi
  live_dir=$(realpath -m -- "$live_dir")
  if within "$scratch" "$live_dir" || within "$live_dir" "$scratch"; then refuse "production (port $production_port) keeps its data in $live_dir, which overlaps the scratch directory $scratch_dir"; fi
}

production_sql() {
  local db=$1
  shift
  as_postgres env PGOPTIONS='-c default_transaction_read_only=on -c statement_timeout=900000' \\
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
  if [[ -f $scratch_dir/postmaster.pid ]]; then
    local pid_port
    pid_port=$(sed -n 4p "$scratch_dir/postmaster.pid")
    if [[ $pid_port != "$scratch_port" ]]; then refuse "$scratch_dir/postmaster.pid names port $pid_port, not the scratch port $scratch_port: not a drill's cluster, left alone"; fi
    say "stopping the scratch cluster left by an earlier drill"
    as_postgres "$pg_bin/pg_ctl" stop -D "$scratch_dir" -m immediate -w >/dev/null 2>&1 || true
  fi
  if ss -H -l -t -n "sport = :$scratch_port" | grep -q .; then refuse "something else listens on the scratch port $scratch_port (ss -ltnp 'sport = :$scratch_port')"; fi
  if ss -H -l -t -n "sport = :$app_port" | grep -q .; then refuse "something else listens on the drill's app port $app_port (ss -ltnp 'sport = :$app_port')"; fi
  rm -rf --one-file-system -- "$scratch_dir" "$scratch_tablespaces"
  scratch_owned=1
}

check_repository() {
  local info stops labels problem
  say "reading the repository (pgbackrest info)"
  if ! info=$(repo_info); then
    printf '%s\\n' "$info" | tr -c '[:print:]\\n' ' ' >&2
    fail "pgbackrest info failed (output above): the bucket is unreachable, its credentials are wrong, or $pgbackrest_conf is missing"
  fi
  if problem=$(info_problem "$info"); then fail "$problem"; fi
  mapfile -t stops < <(backup_stop_times "$info")
  mapfile -t labels < <(backup_labels "$info")
  if ((${"$"}{#stops[@]} == 0)); then fail "the repository holds no backup of stanza $stanza yet"; fi
  backup_label=${"$"}{labels[-1]:-unknown}
  backup_stop=${"$"}{stops[-1]}
  if [[ -n $target_time ]]; then
    # pgBackRest starts a point-in-time restore from the newest backup that ended before the target.
    local i
    backup_label=''
    for i in "${"$"}{!stops[@]}"; do
      if ((stops[i] <= target_at)); then backup_label=${"$"}{labels[i]:-unknown} backup_stop=${"$"}{stops[i]}; fi
    done
    if [[ -z $backup_label ]]; then fail "no backup finished before $target_time: the oldest ($(utc "${"$"}{stops[0]}")) is newer"; fi
  fi
  say "${"$"}{#stops[@]} backup(s); the newest is $backup_label, finished $(utc "$backup_stop")"
}

# The restore needs about production's size again on the data volume; never fill production's disk.
check_space() {
  local size_bytes need_kb avail_kb total_kb parent=${"$"}{scratch_dir%/*}
  if [[ ! -d $parent ]]; then fail "$parent does not exist: is the data volume mounted?"; fi
  size_bytes=$(production_sql postgres 'SELECT sum(pg_database_size(oid)) FROM pg_database')
  need_kb=$((size_bytes / 1024 + 512 * 1024))
  read -r total_kb avail_kb < <(df -P -k -- "$parent" | awk 'NR == 2 { print $2, $4 }')
  if ((avail_kb - need_kb < total_kb / 10)); then
    fail "not enough space on $parent for a scratch copy: $((need_kb / 1024)) MiB needed, $((avail_kb / 1024)) MiB free, and production keeps at least 10% of the volume"
  fi
}

restore() {
  local args=(--pg1-path="$scratch_dir" --archive-mode=off --tablespace-map-all="$scratch_tablespaces" --log-level-console=warn) out t0
  if [[ -n $target_time ]]; then args+=(--type=time --target="$target_time" --target-action=promote); fi
  install -d -m 0700 -o postgres -g postgres -- "$scratch_dir" "$scratch_tablespaces"
  say "restoring $([[ -n $target_time ]] && echo "the database as of $target_time" || echo "backup $backup_label and the WAL after it") into $scratch_dir"
  t0=$(date +%s%3N)
  if ! out=$(backrest "${"$"}{args[@]}" restore 2>&1); then
    printf '%s\\n' "$out" | tail -n 30 >&2
    fail "pgbackrest restore failed (output above): the backup could not be read back (corrupt or missing object, wrong passphrase, or the bucket is unreachable)"
  fi
  # Debian keeps postgresql.conf and pg_hba.conf outside the data directory: the copy gets its own.
  {
    echo "# leaninfra-drill's scratch cluster: a restored copy of production, deleted when the drill ends."
    echo "port = $scratch_port"
    echo "unix_socket_directories = '$scratch_dir'"
    echo "listen_addresses = 'localhost,$docker_bridge_address'"
    echo "archive_mode = off"
    echo "hot_standby = off"
    echo "shared_buffers = 128MB"
    echo "max_connections = 50"
    echo "shared_preload_libraries = ''"
    echo "cluster_name = 'leaninfra-drill'"
    echo "log_connections = on"
  } >"$scratch_dir/postgresql.conf"
  if [[ -r $production_hba ]]; then cp -- "$production_hba" "$scratch_dir/pg_hba.conf"; else printf 'local all postgres peer\\n' >"$scratch_dir/pg_hba.conf"; fi
  : >"$scratch_dir/pg_ident.conf"
  chown postgres:postgres -- "$scratch_dir/postgresql.conf" "$scratch_dir/pg_hba.conf" "$scratch_dir/pg_ident.conf"
  chmod 0600 -- "$scratch_dir/postgresql.conf" "$scratch_dir/pg_hba.conf" "$scratch_dir/pg_ident.conf"

  say "starting the scratch cluster on port $scratch_port (archiving off); it replays WAL until the end of the archive${"$"}{target_time:+ or $target_time}"
  scratch_started=1
  # On the command line, so nothing restored in postgresql.auto.conf can turn archiving on or take another port.
  local opts="-c port=$scratch_port -c archive_mode=off -c hot_standby=off -c unix_socket_directories=$scratch_dir"
  opts+=" -c listen_addresses=localhost,$docker_bridge_address -c shared_buffers=128MB -c ssl=off -c config_file=$scratch_dir/postgresql.conf"
  if ! out=$(as_postgres "$pg_bin/pg_ctl" start -D "$scratch_dir" -w -t $((restore_timeout_minutes * 60)) -l "$scratch_dir/drill-server.log" -o "$opts" 2>&1); then
    printf '%s\\n' "$out" >&2
    scratch_failed "the restored cluster did not start (log above): the WAL could not be replayed${"$"}{target_time:+ up to $target_time}"
  fi
  # With hot_standby off, pg_ctl may report the server up before recovery has ended: wait for the promotion.
  local deadline=$((SECONDS + restore_timeout_minutes * 60)) state
  while true; do
    state=$(scratch_psql -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null || true)
    if [[ $state == f ]]; then break; fi
    if ! as_postgres "$pg_bin/pg_ctl" status -D "$scratch_dir" >/dev/null 2>&1; then
      scratch_failed "the restored cluster stopped while replaying WAL (log above): the archive is incomplete${"$"}{target_time:+ or ends before $target_time}"
    fi
    if ((SECONDS >= deadline)); then scratch_failed "the restored cluster is still replaying WAL after $restore_timeout_minutes min"; fi
    sleep 0.5
  done
  restore_seconds=$(elapsed "$t0")
  say "restored and started in ${"$"}{restore_seconds}s"
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
  production_rows=$(table_counts as_postgres env PGOPTIONS='-c default_transaction_read_only=on -c statement_timeout=900000' \\
    "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$production_socket_dir" -p "$production_port" -d "$database")
  while IFS= read -r line; do
    if [[ -n $line ]]; then restored[${"$"}{line%|*}]=${"$"}{line##*|}; fi
  done <<<"$restored_rows"
  printf '    %-40s %12s %12s  %s\\n' table production restored check
  while IFS= read -r line; do
    if [[ -z $line ]]; then continue; fi
    name=${"$"}{line%|*}
    prod=${"$"}{line##*|}
    compared=$((compared + 1))
    if [[ -z ${"$"}{restored[$name]+set} ]]; then
      printf '    %-40s %12s %12s  %s\\n' "$name" "$prod" - MISSING
      missing=$((missing + 1))
      continue
    fi
    rest=${"$"}{restored[$name]}
    if [[ $prod == unlogged ]]; then
      printf '    %-40s %12s %12s  %s\\n' "$name" unlogged "$rest" 'present (unlogged: empty after any restore)'
      continue
    fi
    diff=$((rest > prod ? rest - prod : prod - rest))
    if [[ -n $target_time ]]; then
      rule='present (counts of a past point in time are not compared)'
    elif ((prod < exact_below_rows)); then
      rule=exact
      if ((diff != 0)); then rule='DIFFERS (small table: must match exactly)'; bad=$((bad + 1)); fi
    else
      rule="within ${"$"}{row_tolerance_percent}%"
      if ((diff * 100 > prod * row_tolerance_percent)); then rule="DIFFERS by more than ${"$"}{row_tolerance_percent}%"; bad=$((bad + 1)); fi
    fi
    printf '    %-40s %12s %12s  %s\\n' "$name" "$prod" "$rest" "$rule"
  done <<<"$production_rows"
  tables_checked=$compared
  if ((compared == 0)); then fail "production's database $database has no tables: nothing to compare (is the app deployed?)"; fi
  if ((missing > 0)); then fail "$missing of $compared table(s) of $database are missing from the restore"; fi
  if ((bad > 0)); then fail "$bad of $compared table(s) of $database differ from production beyond the tolerance (exact below $exact_below_rows rows, else ${"$"}{row_tolerance_percent}%)"; fi
  say "all $compared table(s) of $database are present$([[ -z $target_time ]] && echo ", row counts within tolerance")"
}

# How old the restored data is: the newest timestamp of freshness_query, else the last restored
# transaction (or the backup's end when newer: a quiet database writes no transactions).
check_freshness() {
  local newest replayed now
  now=$(date +%s)
  if [[ -n $freshness_query ]]; then
    if ! newest=$(scratch_sql "SELECT floor(extract(epoch FROM newest))::bigint FROM ($freshness_query) AS q(newest)" 2>&1); then
      printf '%s\\n' "$newest" >&2
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
  bash -c 'set -eu; source "$1"; printf "%s\\n" "$image" "$release" "$container_port" "$health_path" "$health_timeout_seconds" "$host_alias" "$upstream_file" "$blue_port" "$green_port" "${"$"}{env_files[@]}"' _ "$deploy_conf"
}

check_app() {
  if [[ ! -r $deploy_conf ]]; then
    app_checked=0
    app_summary='skipped (no app role)'
    say "app check SKIPPED: the app role is not installed ($deploy_conf is missing); only the database was checked"
    return 0
  fi
  local conf image release container_port health_path health_timeout host_alias upstream_file blue_port green_port
  local env_files=() port='' slot='' ref='' line db_url='' env_file
  mapfile -t conf < <(read_deploy_conf)
  if ((${"$"}{#conf[@]} < 9)); then fail "could not read $deploy_conf"; fi
  image=${"$"}{conf[0]} release=${"$"}{conf[1]} container_port=${"$"}{conf[2]} health_path=${"$"}{conf[3]} health_timeout=${"$"}{conf[4]}
  host_alias=${"$"}{conf[5]} upstream_file=${"$"}{conf[6]} blue_port=${"$"}{conf[7]} green_port=${"$"}{conf[8]}
  env_files=("${"$"}{conf[@]:9}")
  if ((app_health_timeout_seconds > 0)); then health_timeout=$app_health_timeout_seconds; fi
  if ! docker info >/dev/null 2>&1; then fail "docker is not running (systemctl status docker): the app cannot be started against the restore"; fi

  # The release nginx sends traffic to, as leaninfra-deploy --status reports it; deploy.conf's when none serves.
  if [[ -f $upstream_file ]]; then
    port=$(sed -n 's/^[[:space:]]*server[[:space:]]\\{1,\\}127\\.0\\.0\\.1:\\([0-9]\\{1,\\}\\)[[:space:]]*;.*/\\1/p' "$upstream_file" | head -n 1)
  fi
  if [[ $port == "$blue_port" ]]; then slot=blue; elif [[ $port == "$green_port" ]]; then slot=green; fi
  if [[ -n $slot ]]; then ref=$(docker container inspect --format '{{.Config.Image}}' "app-$slot" 2>/dev/null || true); fi
  if [[ -z $ref ]]; then
    ref=$image:$release
    say "no app container serves now; using the configured release $ref"
  fi
  release=${"$"}{ref##*:}
  if ! docker image inspect "$ref" >/dev/null 2>&1; then fail "the image $ref is not on this host (docker image ls): the drill starts the image that serves, it does not pull"; fi

  work_dir=$(mktemp -d /run/leaninfra-drill.XXXXXX)
  for env_file in "${"$"}{env_files[@]}"; do
    if [[ ! -r $env_file ]]; then fail "the app's env file $env_file is missing"; fi
    while IFS= read -r line || [[ -n $line ]]; do
      if [[ $line == DATABASE_URL=* ]]; then db_url=${"$"}{line#DATABASE_URL=}; fi
    done <"$env_file"
  done
  # The same host, user, password and database, on the scratch port. REDIS_URL is left out: the copy must
  # not take jobs from production's queue or write into its cache.
  if [[ ! $db_url =~ ^(postgres(ql)?://)([^@/?#]*@)?([^/?#]*)(.*)$ ]]; then fail "the app's DATABASE_URL is not a postgresql:// URL"; fi
  local user=${"$"}{BASH_REMATCH[3]%@}
  user=${"$"}{user%%:*}
  say "the container gets DATABASE_URL=${"$"}{BASH_REMATCH[1]}${"$"}{user:+$user:***@}$host_alias:$scratch_port${"$"}{BASH_REMATCH[5]} (production's, on the scratch port); no REDIS_URL"
  {
    for env_file in "${"$"}{env_files[@]}"; do grep -v -E '^(DATABASE_URL|REDIS_URL)=' -- "$env_file" || true; done
    printf 'DATABASE_URL=%s%s%s:%s%s\\n' "${"$"}{BASH_REMATCH[1]}" "${"$"}{BASH_REMATCH[3]}" "$host_alias" "$scratch_port" "${"$"}{BASH_REMATCH[5]}"
    printf 'LEANINFRA_DRILL=1\\n'
    if ((${"$"}{#app_env[@]} > 0)); then printf '%s\\n' "${"$"}{app_env[@]}"; fi
  } >"$work_dir/drill.env"

  say "starting $ref as $container_name on 127.0.0.1:$app_port, its database on $host_alias:$scratch_port (the restore)"
  container_started=1
  docker run --detach --name "$container_name" --init --add-host "$host_alias:host-gateway" --label leaninfra.role=drill \\
    --env-file "$work_dir/drill.env" --env "PORT=$container_port" --env "RELEASE=$release" \\
    --publish "127.0.0.1:$app_port:$container_port" "$ref" >/dev/null

  local url="http://127.0.0.1:$app_port$health_path" code='' state t0 deadline
  t0=$(date +%s%3N)
  deadline=$((SECONDS + health_timeout))
  say "waiting up to ${"$"}{health_timeout}s for $url to answer 200"
  while true; do
    code=$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 2 "$url" || true)
    if [[ $code == 200 ]]; then break; fi
    state=$(docker container inspect --format '{{.State.Status}}' "$container_name" 2>/dev/null || echo missing)
    if [[ $state != running ]] || ((SECONDS >= deadline)); then
      say "last 50 lines of $container_name's log:" >&2
      docker logs --tail 50 "$container_name" 2>&1 | sed 's/^/    /' >&2 || true
      if [[ $state != running ]]; then fail "release $release exited ($state) when started against the restored database (log above)"; fi
      fail "release $release did not answer 200 on $health_path within ${"$"}{health_timeout}s against the restored database (last answer: HTTP ${"$"}{code:-none}; log above)"
    fi
    sleep 0.5
  done
  app_checked=1
  app_summary="release $release healthy"
  say "release $release answers 200 on $health_path against the restored database after $(elapsed "$t0")s"
  local connections
  connections=$(grep -cF "connection received: host=${"$"}{docker_bridge_prefix}" "$scratch_dir/drill-server.log" || true)
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
  if ((scratch_started)) && [[ -f $scratch_dir/postmaster.pid ]]; then
    as_postgres "$pg_bin/pg_ctl" stop -D "$scratch_dir" -m immediate -w >/dev/null 2>&1 || say "could not stop the scratch cluster in $scratch_dir" >&2
  fi
  # Only a directory that passed every check (and was emptied by this run) is ever deleted.
  if ((scratch_owned)); then rm -rf --one-file-system -- "$scratch_dir" "$scratch_tablespaces"; fi
  if [[ -n $work_dir ]]; then rm -rf -- "$work_dir"; fi
}

record() {
  local result=$1 line
  line="$(date -u +%Y-%m-%dT%H:%M:%SZ) result=$result target=${"$"}{target_time:-latest} backup=${"$"}{backup_label:--} duration=$(elapsed "$started_ms")s"
  line+=" restore=${"$"}{restore_seconds:--}s data_age=${"$"}{data_age_seconds:--}s tables=${"$"}{tables_checked:--} app=\\"$app_summary\\""
  if [[ $result != ok ]]; then line+=" step=$step reason=\\"${"$"}{fail_reason//\\"/\\'}\\""; fi
  mkdir -p -- "${"$"}{drill_log%/*}"
  printf '%s\\n' "$line" >>"$drill_log"
  # The metrics speak for drills of the latest backup; a drill of a past point in time is logged only.
  if [[ -z $target_time ]]; then
    if [[ -f $metrics_file ]]; then
      last_success=$(awk '$1 == "leaninfra_drill_last_success_timestamp_seconds" { print $2 }' "$metrics_file")
      last_success=${"$"}{last_success:-0}
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
    say "drill PASSED in $(elapsed "$started_ms")s: backup $backup_label restored, ${"$"}{tables_checked} table(s) checked, app: $app_summary"
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
        target_time=${"$"}{1#*=}
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
  mkdir -p /run/lock
  exec 8>>"$lock_file"
  if ! flock -n 8; then refuse "another drill or restore holds $lock_file"; fi
  if [[ -n $(missing_tools) ]]; then fail "not installed: $(missing_tools)(apply the backups role, which installs them)"; fi
  load_backup_secrets
  check_live
  step=repository
  check_repository
  step=prepare
  clear_leftovers
  check_space
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
`;
}

function resolvedRestore(s: RestoreSettings) {
  return {
    hostName: s.hostName,
    database: s.database,
    productionPort: s.productionPort ?? POSTGRES_DEFAULT_PORT,
    dataDir: s.dataDir ?? POSTGRES_PATHS.dataDirectory,
    recoveryTimeoutMinutes: s.recoveryTimeoutMinutes ?? 120,
    appHealthTimeoutSeconds: s.appHealthTimeoutSeconds ?? 120,
    logFile: s.logFile ?? RESTORE_LOG,
  };
}

/** Every problem with the restore's settings, each naming its field; empty when the script can be rendered. */
export function restoreSettingsProblems(settings: RestoreSettings): string[] {
  const s = resolvedRestore(settings);
  const problems: string[] = [];
  const add = (field: string, message: string) => problems.push(`${field}: ${message}`);
  if (typeof s.hostName !== "string" || !HOST_LABEL.test(s.hostName)) add("hostName", `${JSON.stringify(s.hostName)} is not a host name label (a-z, 0-9, -)`);
  if (typeof s.database !== "string" || !IDENTIFIER.test(s.database)) add("database", `${JSON.stringify(s.database)} is not a PostgreSQL identifier (a-z, 0-9, _)`);
  if (!isPort(s.productionPort)) add("productionPort", `${s.productionPort} must be a port number, 1024..65535`);
  for (const key of ["dataDir", "logFile"] as const) {
    if (!SAFE_PATH.test(s[key]) || s[key].split("/").includes("..") || s[key].split("/").filter(Boolean).length < 2) {
      add(key, `${JSON.stringify(s[key])} must be an absolute path, two levels deep or more, of letters, digits and . _ - /`);
    }
  }
  if (!wholeNumber(s.recoveryTimeoutMinutes, 1, 2880)) add("recoveryTimeoutMinutes", `${s.recoveryTimeoutMinutes} must be 1..2880 minutes`);
  if (!wholeNumber(s.appHealthTimeoutSeconds, 1, 3600)) add("appHealthTimeoutSeconds", `${s.appHealthTimeoutSeconds} must be 1..3600 seconds`);
  return problems;
}

/**
 * `leaninfra-restore`: the emergency restore of production's database to a point in time (or the
 * latest backup), step by step and confirmed; the current data directory is moved aside, never deleted.
 * Throws an Error listing every invalid setting.
 */
export function restoreScript(settings: RestoreSettings): string {
  assertNoProblems("Restore", restoreSettingsProblems(settings));
  const s = resolvedRestore(settings);
  return `#!/usr/bin/env bash
# leaninfra-restore: restores PRODUCTION's database from the backups, to a point in time or to the
# latest state the backups hold. For the real emergency (a bad migration, deleted rows, a lost disk).
# Managed by LeanInfra (role "backups"): change components/backups/drill.ts in the repository, not this file.
#
#   sudo leaninfra-restore --to '2025-11-28 09:00:00+00'   the database as it was at that moment (UTC offset required)
#   sudo leaninfra-restore --latest                         everything the backups and archived WAL hold
#   add --yes to skip the question; without it, type this server's host name (${s.hostName}) to go on.
#
# The steps, each printed before it runs:
#   1. stop the app's containers: nginx answers every request with the maintenance page
#   2. stop PostgreSQL
#   3. move the data directory aside (${s.dataDir}.before-restore-<time>): kept, never deleted
#   4. pgbackrest restore into an empty data directory (--type=time --target-action=promote for --to)
#   5. start PostgreSQL: it replays WAL up to the target and promotes (a new timeline)
#   6. verify: every table of ${s.database} and its rows, the last restored transaction
#   7. start the app's containers again and wait for its health path
#   8. print how to go back to the moved-aside data directory
# Before step 1 it checks, changing nothing: the repository answers and holds a backup from before the
# target, the data volume has room for a second copy, no tablespaces. A failure before step 3 puts
# PostgreSQL and the app back as they were; after it, the script stops and prints how to go back.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 022

readonly tool=restore
readonly host_name=${shq(s.hostName)}
readonly stanza=${shq(BACKUPS.stanza)}
readonly database=${shq(s.database)}
readonly production_port=${s.productionPort}
readonly production_socket_dir=/var/run/postgresql
readonly data_dir=${shq(s.dataDir)}
readonly pg_bin=${shq(POSTGRES_PATHS.bin)}
readonly pg_version=${POSTGRES_VERSION}
readonly pg_cluster=${shq(POSTGRES_CLUSTER)}
readonly pg_unit=${shq(POSTGRES_PATHS.unit)}
readonly pgbackrest_conf=${shq(BACKUPS.pgbackrestConf)}
readonly secrets_file=${shq(BACKUPS.secretsFile)}
readonly deploy_script=${shq(APP_PATHS.deployScript)}
readonly backup_command=${shq(BACKUPS.bin.backup)}
readonly restore_log=${shq(s.logFile)}
readonly lock_file=${shq(DRILL_LOCK_FILE)}
readonly recovery_timeout_minutes=${s.recoveryTimeoutMinutes}
readonly app_health_timeout_seconds=${s.appHealthTimeoutSeconds}

${COMMON}

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
started_ms=$(date +%s%3N)

readonly total_steps=8
step() {
  step_no=$1
  shift
  printf '\\n[restore] step %s/%s: %s\\n' "$step_no" "$total_steps" "$*"
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

log_line() {
  mkdir -p -- "${"$"}{restore_log%/*}"
  printf '%s target=%s %s\\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$target_text" "$*" >>"$restore_log"
}

postgres_running() { as_postgres "$pg_bin/pg_ctl" status -D "$data_dir" >/dev/null 2>&1; }

start_postgres() {
  if [[ -d /run/systemd/system ]]; then systemctl start "$pg_unit"; else pg_ctlcluster "$pg_version" "$pg_cluster" start; fi
}

stop_postgres() {
  if [[ -d /run/systemd/system ]]; then systemctl stop "$pg_unit"; else pg_ctlcluster "$pg_version" "$pg_cluster" stop -m fast; fi
}

psql_db() { as_postgres "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$production_socket_dir" -p "$production_port" -d "$1" "${"$"}{@:2}"; }
sql() { psql_db "$1" -c "$2"; }

start_app() {
  if ((${"$"}{#stopped_containers[@]} == 0)); then return 0; fi
  say "starting ${"$"}{stopped_containers[*]}"
  docker start "${"$"}{stopped_containers[@]}" >/dev/null
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
  if [[ ! -d $data_dir ]]; then die "production's data directory $data_dir does not exist: is the data volume mounted (findmnt ${"$"}{data_dir%%/postgresql*})?"; fi
  if [[ -n $(ls -A -- "$data_dir/pg_tblspc" 2>/dev/null) ]]; then die "production has tablespaces ($data_dir/pg_tblspc); this script restores the data directory only: restore by hand (pgbackrest restore --tablespace-map)"; fi
  if ! info=$(repo_info); then
    printf '%s\\n' "$info" | tr -c '[:print:]\\n' ' ' >&2
    die "pgbackrest info failed (output above): the bucket is unreachable, or its credentials are wrong. Nothing was changed."
  fi
  if problem=$(info_problem "$info"); then die "$problem. Nothing was changed."; fi
  mapfile -t stops < <(backup_stop_times "$info")
  mapfile -t labels < <(backup_labels "$info")
  if ((${"$"}{#stops[@]} == 0)); then die "the repository holds no backup of stanza $stanza. Nothing was changed."; fi
  say "${"$"}{#stops[@]} backup(s) in the repository, from ${"$"}{labels[0]} ($(utc "${"$"}{stops[0]}")) to ${"$"}{labels[-1]} ($(utc "${"$"}{stops[-1]}"))"
  if [[ -n $target_time ]]; then
    if ((target_at > $(date +%s))); then die "the target $target_time is in the future. Nothing was changed."; fi
    if ((stops[0] > target_at)); then die "no backup finished before $target_time (the oldest finished $(utc "${"$"}{stops[0]}")): that point cannot be restored. Nothing was changed."; fi
  fi
  data_kb=$(du -s -k -x -- "$data_dir" | cut -f1)
  avail_kb=$(df -P -k -- "${"$"}{data_dir%/*}" | awk 'NR == 2 { print $4 }')
  if ((avail_kb < data_kb + data_kb / 10 + 262144)); then
    die "the data volume has $((avail_kb / 1024)) MiB free; the restore needs about $((data_kb / 1024)) MiB next to the moved-aside copy. Free space first. Nothing was changed."
  fi
}

confirm() {
  local answer=''
  if ((assume_yes)); then say "confirmed by --yes"; return 0; fi
  printf '\\nType the host name of this server (%s) to restore PRODUCTION, anything else cancels: ' "$host_name"
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
  if ((${"$"}{#stopped_containers[@]} == 0)); then say "no app container runs"; return 0; fi
  say "stopping ${"$"}{stopped_containers[*]} (nginx now serves the maintenance page)"
  docker stop --time 30 "${"$"}{stopped_containers[@]}" >/dev/null
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
    if [[ -n $line ]]; then printf '    %-40s %s\\n' "${"$"}{line%|*}" "${"$"}{line##*|}"; tables=$((tables + 1)); fi
  done <<<"$counts"
  last=$(sql postgres 'SELECT coalesce(floor(extract(epoch FROM pg_last_xact_replay_timestamp()))::bigint, 0)')
  timeline=$(sql postgres 'SELECT timeline_id FROM pg_control_checkpoint()')
  if ((last == 0)); then last_text='none after the backup'; else last_text=$(utc "$last"); fi
  say "$tables table(s) in $database; timeline $timeline; last restored transaction: $last_text"
  if [[ -n $target_time ]] && ((last > target_at)); then die "the last restored transaction ($(utc "$last")) is after the target $target_time"; fi
  if [[ $(sql postgres 'SELECT pg_is_in_recovery()') != f ]]; then die "PostgreSQL is still in recovery"; fi
}

wait_app() {
  if ((${"$"}{#stopped_containers[@]} == 0)); then say "no app container was running before the restore: nothing to start"; return 0; fi
  start_app
  if [[ ! -x $deploy_script ]]; then return 0; fi
  local deadline=$((SECONDS + app_health_timeout_seconds))
  until "$deploy_script" --health >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then die "the app does not answer its health path ${"$"}{app_health_timeout_seconds}s after the restore ($deploy_script --health); the database is restored"; fi
    sleep 1
  done
  say "the app answers its health path: $("$deploy_script" --status)"
}

print_way_back() {
  cat <<BACK

[restore] How to go back to the data directory as it was before this restore:
    sudo docker stop ${"$"}{stopped_containers[*]:-app-blue app-green}      # maintenance page
    sudo systemctl stop $pg_unit
    sudo mv $data_dir $data_dir.restored-$stamp
    sudo mv $aside $data_dir
    sudo systemctl start $pg_unit
    sudo docker start ${"$"}{stopped_containers[*]:-<the app container>}
  Once you are sure you will not need it: sudo rm -rf $aside
BACK
}

on_exit() {
  local rc=$?
  trap - EXIT
  set +e
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
    start_app || say "could not start ${"$"}{stopped_containers[*]}: docker start ${"$"}{stopped_containers[*]}" >&2
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
        to_given=1 target_time=${"$"}{1#*=}
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
  mkdir -p /run/lock
  exec 8>>"$lock_file"
  if ! flock -n 8; then die "a drill or another restore holds $lock_file; wait for it to finish"; fi
  load_backup_secrets
  preflight
  confirm
  trap on_exit EXIT
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
  step 4 "pgbackrest --stanza=$stanza restore ${"$"}{args[*]}"
  backrest "${"$"}{args[@]}" restore 2>&1 | sed 's/^/    /'
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
`;
}
