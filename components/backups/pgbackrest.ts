import { refuseProblems } from "../host/define";
import { LAYOUT } from "../host/layout";
import { SQL_IDENTIFIER } from "../host/names";
import { POSTGRES_DEFAULT_PORT, POSTGRES_PATHS } from "../postgres/config";
import { BACKUPS } from "./layout";

/** The bucket as the BackupBucket component hands it over (its `s3` output). */
export interface BackupsS3Settings {
  /** "https://<account>.r2.cloudflarestorage.com", with or without the scheme; a port only in tests. */
  endpoint: string;
  /** R2 answers to "auto" (the default). */
  region?: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/** systemd OnCalendar expressions of the backup jobs and the restore drill (all UTC on the VM). */
export interface BackupSchedules {
  full: string;
  diff: string;
  check: string;
  verify: string;
  dump: string;
  drill: string;
}

export interface BackupsSettings {
  s3: BackupsS3Settings;
  /** Encrypts the repository (aes-256-cbc) and the monthly dumps: a generated secret, kept in Pulumi state. */
  cipherPassphrase: string;
  /** The bucket's lifecycle expiry of WAL and backups (leaninfra:backupRetentionDays); see fullRetentionDays. */
  backupRetentionDays: number;
  /** The bucket lock (leaninfra:backupLockDays): pgBackRest must never try to delete anything younger. */
  backupLockDays?: number;
  /** The app's database (leaninfra:postgresDatabase): what the monthly dump holds. */
  postgresDatabase: string;
  /** vCPUs of the server type: backup and restore compress with up to half of them. */
  vcpus: number;
  /** PostgreSQL's port (the postgres role's; default 5432). */
  port?: number;
  /**
   * The data volume's size in GB (leaninfra:volumeSizeGb): PostgreSQL's data and WAL live on it, and the
   * WAL waiting for the bucket may take at most a share of it (archivePushQueueMaxMiB). The role always
   * passes it; default 20, the key's own default.
   */
  volumeSizeGb?: number;
  /** Defaults: DEFAULT_SCHEDULES. */
  schedules?: Partial<BackupSchedules>;
  /**
   * Size of every multipart upload part, MiB (default 16). R2 requires every part but the last to have
   * the same size (and at least 5 MiB): pgBackRest and s3cmd both cut uploads into parts of exactly this size.
   */
  uploadChunkMiB?: number;
  /**
   * Tests only: a CA certificate (PEM) to trust for the S3 endpoint instead of the system's CAs, for a
   * server with a throwaway certificate. TLS is verified either way; production leaves this out.
   */
  storageCaPem?: string;
}

export const DEFAULT_SCHEDULES: Readonly<BackupSchedules> = Object.freeze({
  full: "Sun *-*-* 01:30:00",
  // Not on Sunday: the full backup covers that day.
  diff: "Mon..Sat *-*-* 01:30:00",
  check: "*-*-* 13:30:00",
  verify: "Wed *-*-* 03:30:00",
  dump: "*-*-01 04:30:00",
  drill: "Sat *-*-* 05:30:00",
});

export const BACKUP_JOBS = ["full", "diff", "check", "verify", "dump"] as const;
export type BackupJob = (typeof BACKUP_JOBS)[number];

/** Files the backups role adds to BACKUPS' layout. */
export const BACKUPS_PATHS = Object.freeze({
  /** Root-only s3cmd configuration (the bucket's key) for the monthly dump. */
  s3cmdConfig: `${LAYOUT.secrets}/backups-s3cmd.cfg`,
  /** Only with storageCaPem (tests): the CA pgBackRest and s3cmd trust for the endpoint. */
  storageCaFile: "/etc/pgbackrest/s3-ca.pem",
  /** Higher than the postgres role's 10- and 20- files, so its archive_command wins. */
  archivingConf: `${POSTGRES_PATHS.confD}/30-leaninfra-archiving.conf`,
  /** One job at a time: a diff waits for a running full instead of failing on pgBackRest's lock. */
  lockFile: "/run/lock/leaninfra-backup.lock",
  systemdDir: "/etc/systemd/system",
});

export const ARCHIVE_COMMAND = `pgbackrest --stanza=${BACKUPS.stanza} archive-push %p`;
/** Seconds: a quiet database still ships its last writes within about a minute (the RPO). */
export const ARCHIVE_TIMEOUT_SECONDS = 60;
/** Days between full backups with the default schedule. */
export const FULL_INTERVAL_DAYS = 7;
/** Days of slack between pgBackRest letting a backup go and the bucket's lifecycle deleting it. */
export const RETENTION_MARGIN_DAYS = 7;
/** A shorter point-in-time window than this is not worth having. */
export const MIN_FULL_RETENTION_DAYS = 7;

/**
 * What is wrong with the bucket's expiry (and lock) for pgBackRest's retention, key first; undefined when
 * nothing is. See fullRetentionDays.
 */
export function retentionProblem(backupRetentionDays: number, backupLockDays?: number): string | undefined {
  const days = backupRetentionDays - FULL_INTERVAL_DAYS - RETENTION_MARGIN_DAYS;
  if (!Number.isInteger(backupRetentionDays) || days < MIN_FULL_RETENTION_DAYS) {
    return (
      `backupRetentionDays ${backupRetentionDays} leaves pgBackRest ${days} days of point-in-time recovery; at least ` +
      `${MIN_FULL_RETENTION_DAYS} are needed, so the bucket must keep backups ${MIN_FULL_RETENTION_DAYS + FULL_INTERVAL_DAYS + RETENTION_MARGIN_DAYS} days or more ` +
      `(leaninfra:backupRetentionDays)`
    );
  }
  if (backupLockDays !== undefined && days < backupLockDays) {
    return (
      `backupLockDays ${backupLockDays}: pgBackRest would expire backups after ${days} days (backupRetentionDays ${backupRetentionDays} - ${FULL_INTERVAL_DAYS + RETENTION_MARGIN_DAYS}), ` +
      `but the bucket lock refuses deletes for ${backupLockDays} days: raise leaninfra:backupRetentionDays to at least ` +
      `${backupLockDays + FULL_INTERVAL_DAYS + RETENTION_MARGIN_DAYS} or lower leaninfra:backupLockDays`
    );
  }
  return undefined;
}

/**
 * pgBackRest's time-based full retention (repo1-retention-full, days) for a bucket that deletes WAL and
 * backups after `backupRetentionDays`. pgBackRest keeps the newest full backup older than N days (so any point
 * of the last N days can be restored), hence a full backup lives up to N + 7 days with weekly fulls. The
 * lifecycle must not delete objects of a backup pgBackRest still lists, so N = backupRetentionDays - 7 - 7: one
 * week of failed full backups is absorbed before the two disagree (an alert fires long before that).
 * 35 days give 21. pgBackRest deletes only backups older than N days, so N must be at least the lock.
 * Throws SettingsError when the two do not fit.
 */
export function fullRetentionDays(backupRetentionDays: number, backupLockDays?: number): number {
  const problem = retentionProblem(backupRetentionDays, backupLockDays);
  refuseProblems("backups", problem ? [problem] : []);
  return backupRetentionDays - FULL_INTERVAL_DAYS - RETENTION_MARGIN_DAYS;
}

/**
 * The share of the data volume WAL waiting for the bucket may fill. The rest is PostgreSQL's: its data,
 * max_wal_size of recycled WAL, the drill's scratch copy (as large as the database, and the drill keeps 10%
 * of the volume free), and a restore's moved-aside copy. A fifth still holds hours of a busy day's WAL.
 */
export const ARCHIVE_QUEUE_SHARE = 0.2;
/** leaninfra:volumeSizeGb's default (infra/config.ts). */
const DEFAULT_VOLUME_SIZE_GB = 20;

/**
 * pgBackRest's archive-push-queue-max, MiB: when more WAL than this waits for an unreachable bucket,
 * pgBackRest drops it (tells PostgreSQL it was archived) rather than let pg_wal fill the volume and stop
 * PostgreSQL. Point-in-time recovery then has a gap until the next full or differential backup.
 */
export function archivePushQueueMaxMiB(volumeSizeGb: number): number {
  return Math.max(16, Math.floor(volumeSizeGb * 1024 * ARCHIVE_QUEUE_SHARE));
}

/** Backup and restore processes: half the vCPUs, 1 to 4 (the app and PostgreSQL keep the rest). */
export function backupProcessMax(vcpus: number): number {
  return Math.min(4, Math.max(1, Math.floor(vcpus / 2)));
}

export interface S3Endpoint {
  host: string;
  /** Only when the endpoint names one (tests); 443 otherwise. */
  port?: number;
  /** https://host[:port] */
  url: string;
}

const HOST = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

const ENDPOINT = /^(?:https:\/\/)?([^/:]+)(?::(\d{1,5}))?\/?$/;

/** What is wrong with the bucket's endpoint, key first; undefined when it is an https endpoint. */
function endpointProblem(endpoint: string): string | undefined {
  const m = ENDPOINT.exec(endpoint ?? "");
  if (!m || !HOST.test(m[1])) {
    return `s3.endpoint ${JSON.stringify(endpoint)} is not an https endpoint (accepted: https://<account>.r2.cloudflarestorage.com or the bare host name)`;
  }
  const port = m[2] === undefined ? undefined : Number(m[2]);
  if (port !== undefined && (port < 1 || port > 65535)) return `s3.endpoint ${JSON.stringify(endpoint)} has an invalid port (accepted: 1..65535)`;
  return undefined;
}

/**
 * The endpoint's host and port: pgBackRest wants the bare host (repo1-s3-endpoint) and the port apart.
 * Throws SettingsError when it is not an https endpoint.
 */
export function parseS3Endpoint(endpoint: string): S3Endpoint {
  const problem = endpointProblem(endpoint);
  refuseProblems("backups", problem ? [problem] : []);
  const m = ENDPOINT.exec(endpoint)!;
  const port = m[2] === undefined ? undefined : Number(m[2]);
  const host = m[1].toLowerCase();
  return { host, port: port === 443 ? undefined : port, url: `https://${host}${port && port !== 443 ? `:${port}` : ""}` };
}

// Written into pgbackrest.conf, s3cmd's file and an env file read line by line: no space, quote or
// backslash, so no file needs quoting. Generated secrets (letters and digits) always pass.
const SECRET = /^[\x21-\x7e]+$/;
const SECRET_FORBIDDEN = /['"\\`$#;]/;
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const REGION = /^[a-z0-9-]{1,32}$/;

/**
 * Problems with the settings, each starting with its key (the config key, or the input's field such as
 * s3.bucket), then the value and what is accepted; empty when the role can be rendered.
 */
export function backupsSettingsProblems(s: BackupsSettings): string[] {
  const problems: string[] = [];
  const add = (field: string, message: string) => problems.push(`${field} ${message}`);
  const endpoint = endpointProblem(s.s3?.endpoint);
  if (endpoint) problems.push(endpoint);
  if (typeof s.s3?.bucket !== "string" || !BUCKET.test(s.s3.bucket)) add("s3.bucket", `${JSON.stringify(s.s3?.bucket)} is not a bucket name`);
  if (s.s3?.region !== undefined && !REGION.test(s.s3.region)) add("s3.region", `${JSON.stringify(s.s3.region)} is not a region (R2: auto)`);
  const secret = (field: string, value: unknown, min: number) => {
    if (typeof value !== "string" || value.length < min || !SECRET.test(value) || SECRET_FORBIDDEN.test(value)) {
      add(field, `must be ${min} or more printable ASCII characters without spaces, quotes, backslashes, $, #, ; or \``);
    }
  };
  secret("s3.accessKeyId", s.s3?.accessKeyId, 8);
  secret("s3.secretAccessKey", s.s3?.secretAccessKey, 16);
  secret("cipherPassphrase", s.cipherPassphrase, 20);
  if (typeof s.cipherPassphrase === "string" && [s.s3?.accessKeyId, s.s3?.secretAccessKey].includes(s.cipherPassphrase)) {
    add("cipherPassphrase", "must not be one of the S3 credentials");
  }
  if (s.backupLockDays !== undefined && (!Number.isInteger(s.backupLockDays) || s.backupLockDays < 1)) {
    add("backupLockDays", `${s.backupLockDays} must be a whole number of days, at least 1`);
  }
  const retention = retentionProblem(s.backupRetentionDays, s.backupLockDays);
  if (retention) problems.push(retention);
  if (typeof s.postgresDatabase !== "string" || !SQL_IDENTIFIER.test(s.postgresDatabase)) {
    add("postgresDatabase", `${JSON.stringify(s.postgresDatabase)} is not a PostgreSQL identifier (accepted: a-z, 0-9 and _, not starting with a digit, at most 63)`);
  }
  const volume = s.volumeSizeGb ?? DEFAULT_VOLUME_SIZE_GB;
  if (typeof volume !== "number" || !Number.isFinite(volume) || volume <= 0 || volume > 10240) {
    add("volumeSizeGb", `${JSON.stringify(s.volumeSizeGb)} must be the data volume's size in GB (up to 10240)`);
  }
  if (!Number.isInteger(s.vcpus) || s.vcpus < 1) add("vcpus", `${s.vcpus} must be the server's vCPU count, at least 1`);
  const port = s.port ?? POSTGRES_DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 1024 || port > 65535) add("port", `${port} must be 1024..65535`);
  const chunk = s.uploadChunkMiB ?? 16;
  if (!Number.isInteger(chunk) || chunk < 5 || chunk > 1024) add("uploadChunkMiB", `${chunk} must be 5..1024 (R2's parts are at least 5 MiB)`);
  for (const [job, value] of Object.entries(s.schedules ?? {})) {
    if (!(job in DEFAULT_SCHEDULES)) add(`schedules.${job}`, `is not a job (accepted: ${Object.keys(DEFAULT_SCHEDULES).join(", ")})`);
    else if (typeof value !== "string" || !/^[A-Za-z0-9*.,:\/~ -]{1,100}$/.test(value) || value.trim() === "") {
      add(`schedules.${job}`, `${JSON.stringify(value)} is not a systemd OnCalendar expression (e.g. "Sun *-*-* 01:30:00")`);
    }
  }
  if (s.storageCaPem !== undefined && !/^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n?$/.test(s.storageCaPem)) {
    add("storageCaPem", "must be PEM certificates");
  }
  return problems;
}

/** The settings with every default filled in; throws SettingsError listing every problem. */
export function resolveBackupsSettings(settings: BackupsSettings): Required<Omit<BackupsSettings, "backupLockDays" | "storageCaPem">> &
  Pick<BackupsSettings, "backupLockDays" | "storageCaPem"> & { schedules: BackupSchedules } {
  refuseProblems("backups", backupsSettingsProblems(settings));
  return {
    ...settings,
    s3: { ...settings.s3, region: settings.s3.region ?? "auto" },
    port: settings.port ?? POSTGRES_DEFAULT_PORT,
    uploadChunkMiB: settings.uploadChunkMiB ?? 16,
    volumeSizeGb: settings.volumeSizeGb ?? DEFAULT_VOLUME_SIZE_GB,
    schedules: { ...DEFAULT_SCHEDULES, ...settings.schedules },
  };
}

const HEADER = `# Managed by LeanInfra (role "backups"); edit components/backups/ in the repository, not this file.`;

/**
 * /etc/pgbackrest/pgbackrest.conf (0640 root:postgres: it holds the S3 key and the passphrase, and
 * PostgreSQL's archive_command runs pgBackRest as postgres).
 */
export function renderPgbackrestConf(settings: BackupsSettings): string {
  const s = resolveBackupsSettings(settings);
  const endpoint = parseS3Endpoint(s.s3.endpoint);
  const full = fullRetentionDays(s.backupRetentionDays, s.backupLockDays);
  return `${HEADER}
# pgBackRest: base backups and WAL of cluster 17/main, encrypted, in the off-account bucket.
# Secrets live here (root:postgres 0640) and in ${BACKUPS.secretsFile}; pgBackRest never logs them.

[global]
repo1-type=s3
repo1-s3-endpoint=${endpoint.host}
${endpoint.port ? `repo1-storage-port=${endpoint.port}\n` : ""}repo1-s3-region=${s.s3.region}
repo1-s3-bucket=${s.s3.bucket}
repo1-s3-uri-style=path
repo1-s3-key=${s.s3.accessKeyId}
repo1-s3-key-secret=${s.s3.secretAccessKey}
${s.storageCaPem ? `# Tests only: a throwaway server's CA. TLS is verified all the same.\nrepo1-storage-ca-file=${BACKUPS_PATHS.storageCaFile}\n` : ""}repo1-path=${BACKUPS.repoPath}
# R2 requires every part of a multipart upload but the last to have the same size: pgBackRest cuts
# files larger than this into parts of exactly this size (and keeps one such buffer per process).
repo1-storage-upload-chunk-size=${s.uploadChunkMiB}MiB

# Encrypted before it leaves the server: the bucket's owner cannot read the database.
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=${s.cipherPassphrase}

# Keep every point of the last ${full} days restorable. The bucket deletes WAL and backups after
# ${s.backupRetentionDays} days: with weekly full backups pgBackRest lets a backup go by ${full + FULL_INTERVAL_DAYS} days, which
# leaves ${RETENTION_MARGIN_DAYS} days for missed full backups before the two would disagree.${s.backupLockDays ? `\n# It deletes only backups older than ${full} days, never younger than the ${s.backupLockDays}-day bucket lock.` : ""}
repo1-retention-full-type=time
repo1-retention-full=${full}

compress-type=zst
process-max=${backupProcessMax(s.vcpus)}
# A full backup starts with an immediate checkpoint instead of waiting for the next one (minutes).
start-fast=y
# The bucket lock refuses overwrites, and resuming rewrites a failed backup's files: start afresh.
resume=n
log-level-console=warn
log-level-file=info

[global:archive-push]
# archive_command queues the segment and returns once a background process has pushed it, so an
# unreachable bucket fails it after archive-timeout (60 s) instead of after minutes of retries, and a
# shutdown of PostgreSQL is not held up for half an hour.
archive-async=y
spool-path=/var/spool/pgbackrest
# When the bucket stays unreachable, WAL waits in pg_wal on the ${s.volumeSizeGb} GB data volume. Beyond
# ${archivePushQueueMaxMiB(s.volumeSizeGb)} MiB (${Math.round(ARCHIVE_QUEUE_SHARE * 100)}% of it) pgBackRest drops the waiting WAL instead of letting the volume fill
# and PostgreSQL stop: point-in-time recovery then has a gap until the next full or diff backup.
archive-push-queue-max=${archivePushQueueMaxMiB(s.volumeSizeGb)}MiB

[${BACKUPS.stanza}]
pg1-path=${POSTGRES_PATHS.dataDirectory}
pg1-port=${s.port}
pg1-socket-path=/var/run/postgresql
`;
}

/** The conf.d file that turns WAL archiving to the bucket on; numbered above the postgres role's files. */
export function renderArchivingConf(): string {
  return `${HEADER}
# Every WAL segment goes to the bucket through pgBackRest (replacing the postgres role's /bin/true).
archive_command = '${ARCHIVE_COMMAND}'
# A segment is closed and shipped at least once a minute while there are writes: the RPO is about a minute.
archive_timeout = ${ARCHIVE_TIMEOUT_SECONDS}
`;
}

/**
 * The root-only env file of the contract (BACKUPS.secretsFile): what pgBackRest needs beyond
 * pgbackrest.conf's public part, as pgBackRest's own variables, one KEY=value a line, unquoted.
 */
export function renderBackupsSecretsEnv(settings: BackupsSettings): string {
  const s = resolveBackupsSettings(settings);
  return `${HEADER}
# Root-only. pgBackRest reads these variables as its repo1-s3-key, repo1-s3-key-secret and repo1-cipher-pass
# (e.g. for a restore on a new server). Without the passphrase no backup or dump can be read.
PGBACKREST_REPO1_S3_KEY=${s.s3.accessKeyId}
PGBACKREST_REPO1_S3_KEY_SECRET=${s.s3.secretAccessKey}
PGBACKREST_REPO1_CIPHER_PASS=${s.cipherPassphrase}
`;
}

/** s3cmd's configuration for the monthly dump: same bucket, path-style, TLS verified, fixed part size. */
export function renderS3cmdConfig(settings: BackupsSettings): string {
  const s = resolveBackupsSettings(settings);
  const endpoint = parseS3Endpoint(s.s3.endpoint);
  const hostPort = endpoint.port ? `${endpoint.host}:${endpoint.port}` : endpoint.host;
  return `${HEADER}
# Root-only: s3cmd's settings for leaninfra-backup dump (the bucket's key).
[default]
access_key = ${s.s3.accessKeyId}
secret_key = ${s.s3.secretAccessKey}
host_base = ${hostPort}
# No %(bucket)s: path-style requests, like pgBackRest's.
host_bucket = ${hostPort}
bucket_location = ${s.s3.region}
use_https = True
check_ssl_certificate = True
check_ssl_hostname = True
${s.storageCaPem ? `ca_certs_file = ${BACKUPS_PATHS.storageCaFile}\n` : ""}signature_v2 = False
# R2: every part but the last the same size. A dump can be 10,000 parts: ${s.uploadChunkMiB * 10} GB.
multipart_chunk_size_mb = ${s.uploadChunkMiB}
progress_meter = False
`;
}
