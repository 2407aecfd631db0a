import * as path from "node:path";
import { z } from "zod";
import type { S3Settings } from "../backup-bucket";
import { defineRole, refuseProblems } from "../host/define";
import { LAYOUT } from "../host/layout";
import { HostRole, RoleFile, systemctlHandler } from "../host/role";
import { ShellValue, renderScript } from "../host/script";
import { POSTGRES_PATHS as P } from "../postgres/config";
import { backupScript } from "./backup-script";
import { DrillSettings, RestoreSettings, drillScript, drillSettingsProblems, restoreScript, restoreSettingsProblems } from "./drill";
import { BACKUPS } from "./layout";
import {
  ARCHIVE_COMMAND,
  ARCHIVE_TIMEOUT_SECONDS,
  BACKUPS_PATHS,
  archivePushQueueMaxMiB,
  BACKUP_JOBS,
  BackupsSettings,
  backupsSettingsProblems,
  parseS3Endpoint,
  renderArchivingConf,
  renderBackupsSecretsEnv,
  renderPgbackrestConf,
  renderS3cmdConfig,
  resolveBackupsSettings,
} from "./pgbackrest";
import { BACKUP_SERVICE, DRILL_SERVICE, WAL_QUEUE_SERVICE, backupTimers, backupUnitFiles } from "./units";

export * from "./pgbackrest";
export * from "./units";
export { BACKUP_METRICS, DUMP_CIPHER_OPTIONS, JOB_TIME_LIMITS, LOCK_WAIT_SECONDS, backupScript, dumpObjectKey } from "./backup-script";
export { BACKUPS } from "./layout";

/** The role's host files and bundle snippets. */
export const BACKUPS_FILES_DIR = path.join(__dirname, "files");

const daemonReload = systemctlHandler("daemon-reload");

/** A bundle snippet from files/NAME: its settings filled in, without the shebang (the bundle runs it as a function). */
function snippet(name: string, settings: Record<string, ShellValue>): string {
  return renderScript(path.join(BACKUPS_FILES_DIR, name), settings).replace(/^#!.*\n/, "");
}

/** leaninfra-wal-queue: the WAL waiting for the bucket, against pgBackRest's cap, as metrics. */
function walQueueScript(volumeSizeGb: number): string {
  return renderScript(path.join(BACKUPS_FILES_DIR, "leaninfra-wal-queue.sh"), {
    data_dir: P.dataDirectory,
    queue_max_bytes: archivePushQueueMaxMiB(volumeSizeGb) * 1024 * 1024,
    archive_push_logs: [...BACKUPS.archivePushLogs],
    metrics_file: BACKUPS.metrics.walArchive,
  });
}

/** The tools that read the new files check them: PostgreSQL, pgBackRest (offline) and systemd. */
function validateScript(): string {
  return snippet("backups-validate.sh", {
    postgres_bin: P.bin,
    postgres_config_dir: P.configDir,
    archive_command: ARCHIVE_COMMAND,
    archiving_conf: BACKUPS_PATHS.archivingConf,
    pgbackrest_conf: BACKUPS.pgbackrestConf,
    stanza: BACKUPS.stanza,
    // By name: systemd finds them in /etc/systemd/system, and the template needs an instance to be checked.
    units: [...BACKUP_JOBS.map((job) => BACKUP_SERVICE.replace("@.", `@${job}.`)), ...backupTimers(BACKUP_JOBS), WAL_QUEUE_SERVICE],
    drill_bin: BACKUPS.bin.drill,
    drill_service: DRILL_SERVICE,
  });
}

/**
 * apply: the stanza in the bucket (created once), then archiving on (a reload, only when PostgreSQL does
 * not use it yet: the stanza must exist before WAL is pushed), pgbackrest check, and the timers enabled.
 * Prints one line per change.
 */
function applyScript(settings: BackupsSettings): string {
  const s = resolveBackupsSettings(settings);
  return snippet("backups-apply.sh", {
    port: s.port,
    pgbackrest_conf: BACKUPS.pgbackrestConf,
    stanza: BACKUPS.stanza,
    ca_file: s.storageCaPem ? BACKUPS_PATHS.storageCaFile : "",
    endpoint_url: parseS3Endpoint(s.s3.endpoint).url,
    repo: `s3://${s.s3.bucket}${BACKUPS.repoPath}`,
    archive_command: ARCHIVE_COMMAND,
    archive_timeout_seconds: ARCHIVE_TIMEOUT_SECONDS,
    archiving_conf: BACKUPS_PATHS.archivingConf,
    postgres_unit: P.unit,
    timers: backupTimers(BACKUP_JOBS),
  });
}

function healthCheckScript(settings: BackupsSettings): string {
  const s = resolveBackupsSettings(settings);
  return snippet("backups-health-check.sh", {
    port: s.port,
    archive_command: ARCHIVE_COMMAND,
    stanza: BACKUPS.stanza,
    timers: backupTimers(BACKUP_JOBS),
  });
}

/**
 * Backups of PostgreSQL 17 to the off-account R2 bucket: pgBackRest (WAL archived continuously, weekly
 * full and daily differential backups, daily check, weekly verify), a monthly encrypted pg_dump, and the
 * timer of the weekly restore drill (leaninfra-drill, see drill.ts). Needs the postgres role first.
 */
export interface BackupsRoleSettings extends BackupsSettings {
  /** The server's host name (leaninfra:hostname, default app), which `leaninfra-restore` asks the owner to type before it touches production. */
  hostname?: string;
  /** leaninfra:drillRowTolerancePercent: how far a table's row count in the drill may differ from production. */
  drillRowTolerancePercent?: number;
  /** leaninfra:drillMaxDataAgeMinutes: how old the newest restored data may be. */
  drillMaxDataAgeMinutes?: number;
  /** leaninfra:drillFreshnessQuery: the newest timestamp in the data; empty or left out: the drill's default. */
  drillFreshnessQuery?: string;
  /** leaninfra:drillAppEnv: KEY=value settings of the drill's app container, over the app's own. */
  drillAppEnv?: string[];
}

/** The config key (or input) a problem starts with. */
const problemKey = (problem: string) => problem.split(" ")[0];

/**
 * Every problem of the role's settings, its drill's and its restore's, key first. A key one of them
 * already reports (the database all three check) is reported once.
 */
export function backupsRoleProblems(settings: BackupsRoleSettings): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const found of [backupsSettingsProblems(settings), drillSettingsProblems(drillSettings(settings)), restoreSettingsProblems(restoreSettings(settings))]) {
    const fresh = found.filter((p) => !seen.has(problemKey(p)));
    problems.push(...fresh);
    for (const p of fresh) seen.add(problemKey(p));
  }
  return problems;
}

function drillSettings(settings: BackupsRoleSettings): DrillSettings {
  return {
    postgresDatabase: settings.postgresDatabase,
    productionPort: settings.port,
    drillRowTolerancePercent: settings.drillRowTolerancePercent,
    drillMaxDataAgeMinutes: settings.drillMaxDataAgeMinutes,
    appEnv: settings.drillAppEnv ?? [],
    ...(settings.drillFreshnessQuery ? { drillFreshnessQuery: settings.drillFreshnessQuery } : {}),
  };
}

function restoreSettings(settings: BackupsRoleSettings): RestoreSettings {
  return { hostname: settings.hostname ?? "app", postgresDatabase: settings.postgresDatabase, productionPort: settings.port };
}

/** The backups role's host data; throws SettingsError naming every invalid setting, key first. */
export function backupsRole(settings: BackupsRoleSettings): HostRole {
  refuseProblems("backups", backupsRoleProblems(settings));
  const s = resolveBackupsSettings(settings);
  const files: RoleFile[] = [
    { path: BACKUPS.pgbackrestConf, mode: "0640", group: "postgres", content: renderPgbackrestConf(s) },
    { path: BACKUPS.secretsFile, mode: "0600", content: renderBackupsSecretsEnv(s) },
    { path: BACKUPS_PATHS.s3cmdConfig, mode: "0600", content: renderS3cmdConfig(s) },
    ...(s.storageCaPem ? [{ path: BACKUPS_PATHS.storageCaFile, mode: "0644", content: s.storageCaPem }] : []),
    // No reload here: apply reloads once the stanza exists, so no WAL is pushed to a missing stanza.
    { path: BACKUPS_PATHS.archivingConf, mode: "0644", content: renderArchivingConf() },
    { path: BACKUPS.bin.backup, mode: "0755", content: backupScript(s) },
    { path: BACKUPS.bin.drill, mode: "0755", content: drillScript(drillSettings(settings)) },
    { path: BACKUPS.bin.restore, mode: "0755", content: restoreScript(restoreSettings(settings)) },
    { path: BACKUPS.bin.walQueue, mode: "0755", content: walQueueScript(s.volumeSizeGb) },
    ...backupUnitFiles(s.schedules, BACKUP_JOBS).map((unit) => ({ ...unit, mode: "0644", onChange: daemonReload })),
  ];
  return {
    name: "backups",
    description: `pgBackRest to s3://${s.s3.bucket}${BACKUPS.repoPath} (WAL continuously, at most ${archivePushQueueMaxMiB(s.volumeSizeGb)} MiB waiting; full weekly, diff daily), monthly dumps, restore drill timer`,
    // curl: the fast reachability probe; jq: pgBackRest's JSON; openssl: the dump's encryption; s3cmd: the dump's upload.
    packages: ["pgbackrest", "s3cmd", "openssl", "curl", "jq"],
    directories: [
      { path: "/etc/pgbackrest", mode: "0755" },
      { path: LAYOUT.secrets, mode: "0700" },
      { path: LAYOUT.logs, mode: "0750", group: "adm" },
      { path: LAYOUT.textfileDir, mode: "0755" },
    ],
    files,
    validate: validateScript(),
    apply: applyScript(s),
    healthCheck: healthCheckScript(s),
  };
}

/** What the backups role takes beyond config: the bucket, the repository's passphrase, the app's database. */
export type BackupsInputs = {
  s3: S3Settings;
  cipherPassphrase: string;
  postgresDatabase: string;
};

export const role = defineRole({
  name: "backups",
  after: ["postgres"],
  budget: {
    monthlyCost: {
      amount: 0,
      currency: "USD",
      what: "Cloudflare R2 in the backup account: 0.015 USD per GB-month beyond the first 10 GB, no egress fee; the plan prices backupEstimatedGb. On the server: pgBackRest and the weekly drill's scratch cluster.",
    },
    secrets: [
      { name: "backup-cipher-passphrase", livesIn: "Pulumi state (RandomPassword; stack output backupPassphrase); on the server in pgBackRest's root-only config. Keep a copy outside the stack: without it the backups cannot be read" },
      { name: "R2 bucket token", livesIn: "Pulumi state (the backup account's AccountToken backups-token); on the server in pgBackRest's root-only config" },
      { name: "backupApiToken", livesIn: "encrypted stack config: creates the bucket and its token; never on the server" },
    ],
    alerts: [
      "BackupTooOld",
      "BackupNeverRan",
      "WalArchivingFailing",
      "WalArchiveQueueFilling",
      "WalArchiveDropped",
      "RestoreDrillTooOld",
      "RestoreDrillFailed",
      "RestoreDrillNeverRan",
      "BackupVerifyFailed",
      "DumpFailed",
      "PgBackRestRepositoryError",
    ],
    failurePoints: [
      "R2 unreachable or its token revoked: WAL queues on the server, then is dropped past its cap (WalArchiveDropped): point-in-time recovery has a gap.",
      "The cipher passphrase lost: every backup is unreadable.",
      "The restore drill failing: the backups are not proven and do not count.",
    ],
  },
  settings: z.object({
    drillRowTolerancePercent: z
      .number()
      .int()
      .min(0)
      .max(100)
      .default(5)
      .describe("How far a table's row count in the restore drill may differ from production, in percent (small tables must match)."),
    drillFreshnessQuery: z
      .string()
      .default("")
      .describe("SQL returning the newest timestamp in the data, e.g. SELECT max(created_at) FROM orders; the drill checks the restored copy is recent."),
    drillMaxDataAgeMinutes: z
      .number()
      .int()
      .min(1)
      .max(525600)
      .default(1560)
      .describe("How old the newest restored data may be, in minutes, before the drill fails (default 26 hours)."),
    // Checked by the role (drillSettingsProblems): each entry's key, printable text, no key the drill sets itself.
    drillAppEnv: z
      .array(z.string())
      .default([])
      .describe(
        "Environment of the restore drill's app container only, as KEY=value, over the app's own (e.g. MAIL_DELIVERY=off). The drill also sets LEANINFRA_DRILL=1 and runs it without a route out.",
      ),
  }),
  inputs: {
    s3: { from: "stack", description: "The off-account R2 bucket's endpoint, name and object-level token (the BackupBucket's s3 output)." },
    cipherPassphrase: { from: "password", resource: "backup-cipher-passphrase" },
    postgresDatabase: { from: "role", role: "postgres", offer: "postgresDatabase" },
  },
  render: (s, inputs: BackupsInputs) =>
    backupsRole({
      s3: inputs.s3,
      cipherPassphrase: inputs.cipherPassphrase,
      postgresDatabase: inputs.postgresDatabase,
      backupRetentionDays: s.backupRetentionDays,
      backupLockDays: s.backupLockDays,
      vcpus: s.vcpus,
      volumeSizeGb: s.volumeSizeGb,
      hostname: s.hostname,
      drillAppEnv: s.drillAppEnv,
      drillRowTolerancePercent: s.drillRowTolerancePercent,
      drillMaxDataAgeMinutes: s.drillMaxDataAgeMinutes,
      // Empty: no query, the drill's default (the last restored transaction's time).
      ...(s.drillFreshnessQuery ? { drillFreshnessQuery: s.drillFreshnessQuery } : {}),
    }),
});
