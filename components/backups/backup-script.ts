import * as path from "node:path";
import { renderScript } from "../host/script";
import { BACKUPS, PGBACKREST_SCRIPT_SETTINGS } from "./layout";
import { BACKUPS_PATHS, BackupsSettings, parseS3Endpoint, resolveBackupsSettings } from "./pgbackrest";

const BACKUP_SCRIPT_FILE = path.join(__dirname, "files", "leaninfra-backup.sh");

/**
 * The node_exporter metrics `leaninfra-backup` writes. Backup jobs share BACKUPS.metrics.backup with a
 * `type` label (full, diff, check, verify); the dump has its own file and names, labelled `database`.
 * Each file is rewritten atomically (temp file + rename); a job replaces only its own samples.
 */
export const BACKUP_METRICS = Object.freeze({
  /** 1 when the job's last run succeeded, 0 when it failed. */
  success: "leaninfra_backup_success",
  lastRun: "leaninfra_backup_last_run_timestamp_seconds",
  /** Unix time of the last successful run; 0 = never. Alert on its age (e.g. full older than 8 days). */
  lastSuccess: "leaninfra_backup_last_success_timestamp_seconds",
  duration: "leaninfra_backup_duration_seconds",
  /** full/diff: what the last successful backup of that type added to the bucket (compressed, encrypted). */
  repoSize: "leaninfra_backup_repo_size_bytes",
  /** full/diff: the size of the database that backup covers. */
  databaseSize: "leaninfra_backup_database_size_bytes",
  dumpSuccess: "leaninfra_dump_success",
  dumpLastRun: "leaninfra_dump_last_run_timestamp_seconds",
  dumpLastSuccess: "leaninfra_dump_last_success_timestamp_seconds",
  dumpDuration: "leaninfra_dump_duration_seconds",
  /** Bytes of the last dump in the bucket (encrypted). */
  dumpSize: "leaninfra_dump_size_bytes",
});

/** How long each job may run before leaninfra-backup stops it and reports a failure. */
export const JOB_TIME_LIMITS = Object.freeze({ full: "12h", diff: "6h", check: "30m", verify: "12h", dump: "12h" });

/** How long a job waits for another one to finish (jobs run one at a time). */
export const LOCK_WAIT_SECONDS = 6 * 3600;

/** The object key of a dump taken at `stamp` (YYYYMMDDTHHMMSSZ): dated, so the bucket lock never sees an overwrite. */
export function dumpObjectKey(prefix: string, database: string, stamp: string): string {
  return `${prefix}${database}-${stamp}.pgdump.enc`;
}

/** openssl enc options of the dumps; decrypt with `openssl enc -d` and the same options. */
export const DUMP_CIPHER_OPTIONS = "-aes-256-cbc -pbkdf2 -iter 200000 -md sha256";

/**
 * `leaninfra-backup full|diff|check|verify|dump` (BACKUPS.bin.backup): one job, its node_exporter metrics
 * written atomically, one line in BACKUPS.logs.backup, and exit 1 with the reason when it fails.
 * The script is files/leaninfra-backup.sh; this fills in its settings.
 */
export function backupScript(settings: BackupsSettings): string {
  const s = resolveBackupsSettings(settings);
  return renderScript(BACKUP_SCRIPT_FILE, {
    ...PGBACKREST_SCRIPT_SETTINGS,
    s3cmd_conf: BACKUPS_PATHS.s3cmdConfig,
    ca_file: s.storageCaPem ? BACKUPS_PATHS.storageCaFile : "",
    endpoint_url: parseS3Endpoint(s.s3.endpoint).url,
    bucket: s.s3.bucket,
    repo_path: BACKUPS.repoPath,
    dumps_prefix: BACKUPS.dumpsPrefix,
    database: s.postgresDatabase,
    pg_port: s.port,
    backup_metrics: BACKUPS.metrics.backup,
    dump_metrics: BACKUPS.metrics.dump,
    log_file: BACKUPS.logs.backup,
    lock_file: BACKUPS_PATHS.lockFile,
    lock_wait_seconds: LOCK_WAIT_SECONDS,
    bucket_lock_days: s.backupLockDays ?? 0,
    job_time_limits: Object.entries(JOB_TIME_LIMITS).map(([job, limit]) => `${job}=${limit}`),
    dump_cipher_options: DUMP_CIPHER_OPTIONS.split(" "),
  });
}
