import * as path from "node:path";
import { APP_PATHS } from "../app/render";
import { refuseProblems } from "../host/define";
import { LAYOUT } from "../host/layout";
import { HOSTNAME_LABEL, RESERVED_APP_ENV, SQL_IDENTIFIER } from "../host/names";
import { renderScript } from "../host/script";
import { POSTGRES_CLUSTER, POSTGRES_DEFAULT_PORT, POSTGRES_PATHS, POSTGRES_VERSION } from "../postgres/config";
import { BACKUPS, PGBACKREST_SCRIPT_SETTINGS } from "./layout";
import { BACKUPS_PATHS, BACKUP_JOBS } from "./pgbackrest";
import { restorePausedTimers } from "./units";

/** The drill's and the restore's scripts, beside this module. */
export const DRILL_SCRIPT_FILE = path.join(__dirname, "files", "leaninfra-drill.sh");
export const RESTORE_SCRIPT_FILE = path.join(__dirname, "files", "leaninfra-restore.sh");

/**
 * What `leaninfra-drill` needs to know. Only `postgresDatabase` is required; everything else defaults to
 * the layout the roles share (BACKUPS, POSTGRES_PATHS, APP_PATHS).
 */
export interface DrillSettings {
  /** The app's database (leaninfra:postgresDatabase): every table of it is checked. */
  postgresDatabase: string;
  /** Production's PostgreSQL port (the postgres role's port; default 5432). */
  productionPort?: number;
  /** Production's data directory (default POSTGRES_PATHS.dataDirectory). */
  productionDataDir?: string;
  /** Where the scratch cluster is restored (default BACKUPS.scratchDir); removed after every drill. */
  scratchDir?: string;
  /** The scratch cluster's port (default BACKUPS.scratchPort). */
  scratchPort?: number;
  /** leaninfra:drillRowTolerancePercent: tables with at least exactBelowRows rows in production may differ by this many percent (default 5). */
  drillRowTolerancePercent?: number;
  /** Tables with fewer rows than this in production must match exactly (default 100). */
  exactBelowRows?: number;
  /**
   * leaninfra:drillFreshnessQuery: a query, run in the restored database, returning one timestamp: the
   * newest data, e.g. "SELECT max(created_at) FROM orders". Without it the data's age is the last
   * restored transaction's commit time (or the backup's end when newer).
   */
  drillFreshnessQuery?: string;
  /** leaninfra:drillMaxDataAgeMinutes: the restored data may be at most this old (RPO), minutes (default 1560 = 26 h: a daily backup plus slack). */
  drillMaxDataAgeMinutes?: number;
  /** How long the app's container may take to answer 200 on its health path; 0 (default) = the app role's healthTimeoutSeconds. */
  appHealthTimeoutSeconds?: number;
  /** How long restoring and replaying WAL may take before the drill gives up, minutes (default 120). */
  restoreTimeoutMinutes?: number;
  /**
   * leaninfra:drillAppEnv: KEY=value settings for the drill's app container only, over the app's own
   * (e.g. "MAIL_DELIVERY=off"); the drill itself sets LEANINFRA_DRILL=1 and the scratch DATABASE_URL.
   */
  appEnv?: string[];
  /** Default BACKUPS.metrics.drill; the tests point it into a temp directory. */
  metricsFile?: string;
  /** Default BACKUPS.logs.drill. */
  logFile?: string;
}

/** What `leaninfra-restore` needs to know. */
export interface RestoreSettings {
  /** The server's host name (leaninfra:hostname): typed at the prompt to confirm a restore of production. */
  hostname: string;
  /** The app's database (leaninfra:postgresDatabase), verified after the restore. */
  postgresDatabase: string;
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
  drillRowTolerancePercent: 5,
  exactBelowRows: 100,
  drillMaxDataAgeMinutes: 26 * 60,
  restoreTimeoutMinutes: 120,
  appHealthTimeoutSeconds: 0,
});

export const DRILL_CONTAINER_NAME = "leaninfra-drill-app";
/** Read by leaninfra-drill and leaninfra-restore so they never run at the same time. */
export const DRILL_LOCK_FILE = "/run/lock/leaninfra-drill.lock";
/** The app role's deploy takes it (components/app/files/leaninfra-deploy.sh); leaninfra-restore holds it too. */
export const DEPLOY_LOCK_FILE = "/run/lock/leaninfra-deploy.lock";
export const RESTORE_LOG = `${LAYOUT.logs}/restore.log`;
/** Settings the drill gives the app container itself; appEnv may not redefine them. */
const DRILL_RESERVED_ENV: readonly string[] = [...RESERVED_APP_ENV, "LEANINFRA_DRILL"];

// Paths go into single quotes, PostgreSQL's -c options and a socket path (at most 107 bytes): keep them plain.
const SAFE_PATH = /^\/[A-Za-z0-9._\/-]{1,90}$/;
// Printable text only: no control characters (C0, DEL, C1) nor the non-characters U+FFFE/U+FFFF.
const ENV_ENTRY = /^[A-Za-z_][A-Za-z0-9_]*=[^\x00-\x1f\x7f-\x9f\ufffe\uffff]*$/;

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
    postgresDatabase: s.postgresDatabase,
    productionPort: s.productionPort ?? POSTGRES_DEFAULT_PORT,
    productionDataDir: s.productionDataDir ?? POSTGRES_PATHS.dataDirectory,
    scratchDir: s.scratchDir ?? BACKUPS.scratchDir,
    scratchPort: s.scratchPort ?? BACKUPS.scratchPort,
    drillRowTolerancePercent: s.drillRowTolerancePercent ?? DRILL_DEFAULTS.drillRowTolerancePercent,
    exactBelowRows: s.exactBelowRows ?? DRILL_DEFAULTS.exactBelowRows,
    drillFreshnessQuery: (s.drillFreshnessQuery ?? "").trim().replace(/;\s*$/, ""),
    drillMaxDataAgeMinutes: s.drillMaxDataAgeMinutes ?? DRILL_DEFAULTS.drillMaxDataAgeMinutes,
    appHealthTimeoutSeconds: s.appHealthTimeoutSeconds ?? DRILL_DEFAULTS.appHealthTimeoutSeconds,
    restoreTimeoutMinutes: s.restoreTimeoutMinutes ?? DRILL_DEFAULTS.restoreTimeoutMinutes,
    appEnv: s.appEnv ?? [],
    metricsFile: s.metricsFile ?? BACKUPS.metrics.drill,
    logFile: s.logFile ?? BACKUPS.logs.drill,
  };
}

/** Every problem with the drill's settings, each starting with its key; empty when the script can be rendered. */
export function drillSettingsProblems(settings: DrillSettings): string[] {
  const s = resolvedDrill(settings);
  const problems: string[] = [];
  const add = (key: string, message: string) => problems.push(`${key} ${message}`);
  if (typeof s.postgresDatabase !== "string" || !SQL_IDENTIFIER.test(s.postgresDatabase)) add("postgresDatabase", `${JSON.stringify(s.postgresDatabase)} is not a PostgreSQL identifier (a-z, 0-9, _)`);
  for (const key of ["productionPort", "scratchPort"] as const) {
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
  if (!wholeNumber(s.drillRowTolerancePercent, 0, 100)) add("drillRowTolerancePercent", `${s.drillRowTolerancePercent} must be a whole number of percent, 0..100`);
  if (!wholeNumber(s.exactBelowRows, 0, 1_000_000_000)) add("exactBelowRows", `${s.exactBelowRows} must be a whole number of rows, 0 or more`);
  if (!wholeNumber(s.drillMaxDataAgeMinutes, 1, 525_600)) add("drillMaxDataAgeMinutes", `${s.drillMaxDataAgeMinutes} must be a whole number of minutes, 1..525600`);
  if (!wholeNumber(s.appHealthTimeoutSeconds, 0, 3600)) add("appHealthTimeoutSeconds", `${s.appHealthTimeoutSeconds} must be 0 (the app role's) or 1..3600 seconds`);
  if (!wholeNumber(s.restoreTimeoutMinutes, 1, 2880)) add("restoreTimeoutMinutes", `${s.restoreTimeoutMinutes} must be 1..2880 minutes`);
  const query = s.drillFreshnessQuery;
  if (query !== "") {
    const shown = JSON.stringify(query);
    if (!/^(select|with)\b/i.test(query)) add("drillFreshnessQuery", `${shown} must be one SELECT (or WITH ... SELECT) returning one timestamp, e.g. SELECT max(created_at) FROM orders`);
    else if (query.includes(";")) add("drillFreshnessQuery", `${shown} must be a single statement (no ';' inside)`);
    // eslint-disable-next-line no-control-regex
    else if (/[\x00\\]/.test(query)) add("drillFreshnessQuery", `${shown} may not contain NUL or backslashes`);
  }
  if (!Array.isArray(s.appEnv)) add("drillAppEnv", 'must be a list of "KEY=value" strings ([] for none)');
  else {
    const seen = new Map<string, number>();
    s.appEnv.forEach((entry, i) => {
      const where = `drillAppEnv[${i}]`;
      const key = typeof entry === "string" ? entry.split("=")[0] : "";
      if (typeof entry !== "string" || !ENV_ENTRY.test(entry)) {
        add(where, `${JSON.stringify(entry)} is not KEY=value on one line of printable text (accepted: KEY of letters, digits and _, not starting with a digit, e.g. MAIL_DELIVERY=off)`);
      } else if (DRILL_RESERVED_ENV.includes(key)) {
        add(where, `sets ${key}, which the drill sets itself (${DRILL_RESERVED_ENV.join(", ")}; accepted: any other KEY=value)`);
      } else if (seen.has(key)) {
        add(where, `sets ${key}, which drillAppEnv[${seen.get(key)}] already sets (accepted: each KEY once)`);
      }
      if (key) seen.set(key, seen.get(key) ?? i);
    });
  }
  return problems;
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
 * The drill's metrics file (node_exporter textfile format). files/leaninfra-drill.sh writes the same lines
 * from bash; this renderer is its specification and what the tests and alert rules are written against.
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

/**
 * `leaninfra-drill` (files/leaninfra-drill.sh): restores the latest backup (or a point in time) into a
 * scratch cluster, checks it against production, starts the serving release of the app against it, and
 * removes everything again. Throws SettingsError listing every invalid setting.
 */
export function drillScript(settings: DrillSettings): string {
  refuseProblems("backups", drillSettingsProblems(settings));
  const s = resolvedDrill(settings);
  return renderScript(DRILL_SCRIPT_FILE, {
    ...PGBACKREST_SCRIPT_SETTINGS,
    database: s.postgresDatabase,
    production_port: s.productionPort,
    production_data_dir: s.productionDataDir,
    scratch_dir: s.scratchDir,
    scratch_port: s.scratchPort,
    scratch_tablespaces: `${s.scratchDir}-tablespaces`,
    pg_bin: POSTGRES_PATHS.bin,
    production_hba: POSTGRES_PATHS.hba,
    deploy_conf: APP_PATHS.deployConf,
    metrics_file: s.metricsFile,
    drill_log: s.logFile,
    lock_file: DRILL_LOCK_FILE,
    container_name: DRILL_CONTAINER_NAME,
    docker_bridge_subnet: LAYOUT.dockerBridge.subnet,
    drill_network: BACKUPS.drillNetwork.name,
    drill_bridge: BACKUPS.drillNetwork.bridge,
    drill_subnet: BACKUPS.drillNetwork.subnet,
    drill_gateway: BACKUPS.drillNetwork.gateway,
    row_tolerance_percent: s.drillRowTolerancePercent,
    exact_below_rows: s.exactBelowRows,
    max_data_age_minutes: s.drillMaxDataAgeMinutes,
    freshness_query: s.drillFreshnessQuery,
    app_health_timeout_seconds: s.appHealthTimeoutSeconds,
    restore_timeout_minutes: s.restoreTimeoutMinutes,
    app_env: s.appEnv,
  });
}

function resolvedRestore(s: RestoreSettings) {
  return {
    hostname: s.hostname,
    postgresDatabase: s.postgresDatabase,
    productionPort: s.productionPort ?? POSTGRES_DEFAULT_PORT,
    dataDir: s.dataDir ?? POSTGRES_PATHS.dataDirectory,
    recoveryTimeoutMinutes: s.recoveryTimeoutMinutes ?? 120,
    appHealthTimeoutSeconds: s.appHealthTimeoutSeconds ?? 120,
    logFile: s.logFile ?? RESTORE_LOG,
  };
}

/** Every problem with the restore's settings, each starting with its key; empty when the script can be rendered. */
export function restoreSettingsProblems(settings: RestoreSettings): string[] {
  const s = resolvedRestore(settings);
  const problems: string[] = [];
  const add = (key: string, message: string) => problems.push(`${key} ${message}`);
  if (typeof s.hostname !== "string" || !HOSTNAME_LABEL.test(s.hostname)) add("hostname", `${JSON.stringify(s.hostname)} is not a host name label (a-z, 0-9, -)`);
  if (typeof s.postgresDatabase !== "string" || !SQL_IDENTIFIER.test(s.postgresDatabase)) add("postgresDatabase", `${JSON.stringify(s.postgresDatabase)} is not a PostgreSQL identifier (a-z, 0-9, _)`);
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
 * `leaninfra-restore` (files/leaninfra-restore.sh): the emergency restore of production's database to a
 * point in time (or the latest backup), step by step and confirmed; the current data directory is moved
 * aside, never deleted. Throws SettingsError listing every invalid setting.
 */
export function restoreScript(settings: RestoreSettings): string {
  refuseProblems("backups", restoreSettingsProblems(settings));
  const s = resolvedRestore(settings);
  return renderScript(RESTORE_SCRIPT_FILE, {
    host_name: s.hostname,
    ...PGBACKREST_SCRIPT_SETTINGS,
    database: s.postgresDatabase,
    production_port: s.productionPort,
    data_dir: s.dataDir,
    pg_bin: POSTGRES_PATHS.bin,
    pg_version: POSTGRES_VERSION,
    pg_cluster: POSTGRES_CLUSTER,
    pg_unit: POSTGRES_PATHS.unit,
    deploy_script: APP_PATHS.deployScript,
    backup_command: BACKUPS.bin.backup,
    restore_log: s.logFile,
    lock_file: DRILL_LOCK_FILE,
    deploy_lock_file: DEPLOY_LOCK_FILE,
    backup_lock_file: BACKUPS_PATHS.lockFile,
    paused_timers: restorePausedTimers(BACKUP_JOBS),
    recovery_timeout_minutes: s.recoveryTimeoutMinutes,
    app_health_timeout_seconds: s.appHealthTimeoutSeconds,
  });
}
