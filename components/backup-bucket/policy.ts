import { createHash } from "node:crypto";

export const LOCATION_HINTS = ["weur", "eeur", "wnam", "enam", "apac", "oc"] as const;
export const JURISDICTIONS = ["default", "eu", "fedramp"] as const;
export type Jurisdiction = (typeof JURISDICTIONS)[number];

/** The plain settings of the backup bucket (config keys leaninfra:backup*). */
export interface BackupBucketSettings {
  /** The SECOND Cloudflare account, the one holding the backups (32 hex characters). */
  accountId: string;
  bucketName: string;
  locationHint: string;
  jurisdiction: Jurisdiction;
  /** Physical backups and WAL expire after this many days. */
  retentionDays: number;
  /** Objects under the data prefixes and dumps/ cannot be deleted or overwritten before this age. */
  lockDays: number;
  /** Monthly pg_dump files expire after this many days. */
  dumpRetentionDays: number;
}

const DAY_SECONDS = 86400;
const REPO_PATH = "/pgbackrest";
const STANZA = "main";
const REPO_KEY = REPO_PATH.slice(1);

/**
 * Where pgBackRest (repo1-path=/pgbackrest, stanza main) and the monthly dumps put their objects.
 *
 * Only the data prefixes expire and are locked. pgBackRest's metadata (archive.info, backup.info and
 * their .copy, rewritten after every backup, and backup.history/) stays outside both, or the next
 * backup could neither rewrite it nor find it.
 * - WAL lives in `archive/main/<pg major>-<n>/`: the prefix `.../1` covers PostgreSQL 10 to 19 and
 *   never archive.info. PostgreSQL 20 would need `.../2` added here.
 * - backups live in `backup/main/<label>/`, and a label starts with the year (20261128-010203F), so
 *   the prefix `.../2` covers every backup until the year 3000 and never backup.info.
 */
export const BACKUP_LAYOUT = Object.freeze({
  repoPath: REPO_PATH,
  stanza: STANZA,
  walPrefix: `${REPO_KEY}/archive/${STANZA}/1`,
  backupsPrefix: `${REPO_KEY}/backup/${STANZA}/2`,
  dataPrefixes: Object.freeze([`${REPO_KEY}/archive/${STANZA}/1`, `${REPO_KEY}/backup/${STANZA}/2`]) as readonly string[],
  metadataKeys: Object.freeze([
    `${REPO_KEY}/archive/${STANZA}/archive.info`,
    `${REPO_KEY}/archive/${STANZA}/archive.info.copy`,
    `${REPO_KEY}/backup/${STANZA}/backup.info`,
    `${REPO_KEY}/backup/${STANZA}/backup.info.copy`,
  ]) as readonly string[],
  dumpsPrefix: "dumps/",
});

/** One rule of cloudflare.R2BucketLifecycle, in the provider's shape. */
export interface LifecycleRule {
  id: string;
  enabled: boolean;
  conditions: { prefix: string };
  deleteObjectsTransition?: { condition: { type: "Age"; maxAge: number } };
  abortMultipartUploadsTransition?: { condition: { type: "Age"; maxAge: number } };
}

/** One rule of cloudflare.R2BucketLock, in the provider's shape. */
export interface LockRule {
  id: string;
  enabled: boolean;
  prefix: string;
  condition: { type: "Age"; maxAgeSeconds: number };
}

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

const ACCOUNT_ID = /^[0-9a-f]{32}$/;
const BUCKET_NAME = /^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/;

function checkJurisdiction(jurisdiction: string): asserts jurisdiction is Jurisdiction {
  if (!(JURISDICTIONS as readonly string[]).includes(jurisdiction)) {
    throw new Error(`BackupBucket: jurisdiction ${JSON.stringify(jurisdiction)} is not an R2 jurisdiction (accepted: ${JURISDICTIONS.join(", ")}; config key leaninfra:backupJurisdiction)`);
  }
}

function checkAccountId(accountId: string): void {
  if (!ACCOUNT_ID.test(accountId)) {
    throw new Error(`BackupBucket: account id ${JSON.stringify(accountId)} is not a Cloudflare account id (accepted: 32 hexadecimal characters; config key leaninfra:backupAccountId)`);
  }
}

function checkBucketName(bucketName: string): void {
  if (!BUCKET_NAME.test(bucketName)) {
    throw new Error(`BackupBucket: bucket name ${JSON.stringify(bucketName)} is not an R2 bucket name (accepted: 3-63 characters of a-z, 0-9 and '-', not starting or ending with '-'; config key leaninfra:backupBucketName)`);
  }
}

/**
 * Every reason the settings cannot make a working bucket. Config validation refuses these already;
 * this second guard keeps a caller that skips it from locking what the lifecycle must delete.
 */
export function settingsProblems(s: BackupBucketSettings): string[] {
  const problems: string[] = [];
  if (!ACCOUNT_ID.test(s.accountId)) problems.push(`accountId ${JSON.stringify(s.accountId)} is not 32 hexadecimal characters (leaninfra:backupAccountId)`);
  if (!BUCKET_NAME.test(s.bucketName)) problems.push(`bucketName ${JSON.stringify(s.bucketName)} is not an R2 bucket name (leaninfra:backupBucketName)`);
  if (!(LOCATION_HINTS as readonly string[]).includes(s.locationHint)) {
    problems.push(`locationHint ${JSON.stringify(s.locationHint)} is not one of ${LOCATION_HINTS.join(", ")} (leaninfra:backupLocationHint)`);
  }
  if (!(JURISDICTIONS as readonly string[]).includes(s.jurisdiction)) {
    problems.push(`jurisdiction ${JSON.stringify(s.jurisdiction)} is not one of ${JURISDICTIONS.join(", ")} (leaninfra:backupJurisdiction)`);
  }
  const days: [keyof BackupBucketSettings, string][] = [
    ["retentionDays", "backupRetentionDays"],
    ["lockDays", "backupLockDays"],
    ["dumpRetentionDays", "backupDumpRetentionDays"],
  ];
  for (const [field, key] of days) {
    const value = s[field];
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
      problems.push(`${field} ${JSON.stringify(value)} is not a whole number of days of at least 1 (leaninfra:${key})`);
    }
  }
  if (problems.length === 0) {
    if (s.lockDays >= s.retentionDays) {
      problems.push(`lockDays (${s.lockDays}) must be shorter than retentionDays (${s.retentionDays}): the lifecycle cannot delete what is still locked (leaninfra:backupLockDays)`);
    }
    if (s.lockDays >= s.dumpRetentionDays) {
      problems.push(`lockDays (${s.lockDays}) must be shorter than dumpRetentionDays (${s.dumpRetentionDays}) (leaninfra:backupLockDays)`);
    }
  }
  return problems;
}

export function assertValidSettings(s: BackupBucketSettings): void {
  const problems = settingsProblems(s);
  if (problems.length > 0) {
    throw new Error(`BackupBucket: impossible settings for bucket ${JSON.stringify(s.bucketName)}:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/**
 * R2's S3 credentials of an account API token: the access key id is the token's id, the secret
 * access key the hex SHA-256 of the token's value (Cloudflare R2 docs, "Authentication").
 */
export function s3CredentialsFromToken(tokenId: string, tokenValue: string): S3Credentials {
  if (!tokenId) throw new Error("BackupBucket: the bucket token has no id, so it has no S3 access key id");
  if (!tokenValue) throw new Error("BackupBucket: the bucket token has no value (Cloudflare returns it only when the token is created)");
  return { accessKeyId: tokenId, secretAccessKey: createHash("sha256").update(tokenValue, "utf8").digest("hex") };
}

/** The S3 endpoint of an account's R2 buckets; a bucket in a jurisdiction is reachable only on its own. */
export function r2Endpoint(accountId: string, jurisdiction: Jurisdiction): string {
  checkAccountId(accountId);
  checkJurisdiction(jurisdiction);
  const infix = jurisdiction === "default" ? "" : `.${jurisdiction}`;
  return `https://${accountId}${infix}.r2.cloudflarestorage.com`;
}

/** The `resources` JSON of a token policy that reaches exactly one bucket and nothing else. */
export function bucketTokenResources(accountId: string, jurisdiction: Jurisdiction, bucketName: string): string {
  checkAccountId(accountId);
  checkJurisdiction(jurisdiction);
  checkBucketName(bucketName);
  return JSON.stringify({ [`com.cloudflare.edge.r2.bucket.${accountId}_${jurisdiction}_${bucketName}`]: "*" });
}

/** WAL and physical backups expire after retentionDays, dumps after dumpRetentionDays; stale uploads after a day. */
export function lifecycleRules(s: BackupBucketSettings): LifecycleRule[] {
  assertValidSettings(s);
  const expire = (id: string, prefix: string, days: number): LifecycleRule => ({
    id,
    enabled: true,
    conditions: { prefix },
    deleteObjectsTransition: { condition: { type: "Age", maxAge: days * DAY_SECONDS } },
  });
  return [
    expire("expire-wal", BACKUP_LAYOUT.walPrefix, s.retentionDays),
    expire("expire-backups", BACKUP_LAYOUT.backupsPrefix, s.retentionDays),
    expire("expire-dumps", BACKUP_LAYOUT.dumpsPrefix, s.dumpRetentionDays),
    {
      id: "abort-incomplete-uploads",
      enabled: true,
      conditions: { prefix: "" },
      abortMultipartUploadsTransition: { condition: { type: "Age", maxAge: DAY_SECONDS } },
    },
  ];
}

/** Nobody, not even the server's own token, deletes or overwrites WAL, backups or dumps younger than lockDays. */
export function lockRules(s: BackupBucketSettings): LockRule[] {
  assertValidSettings(s);
  const lock = (id: string, prefix: string): LockRule => ({
    id,
    enabled: true,
    prefix,
    condition: { type: "Age", maxAgeSeconds: s.lockDays * DAY_SECONDS },
  });
  return [
    lock("lock-wal", BACKUP_LAYOUT.walPrefix),
    lock("lock-backups", BACKUP_LAYOUT.backupsPrefix),
    lock("lock-dumps", BACKUP_LAYOUT.dumpsPrefix),
  ];
}
