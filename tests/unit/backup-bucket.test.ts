import assert from "node:assert/strict";
import test from "node:test";
import {
  BACKUP_LAYOUT,
  BackupBucketSettings,
  LifecycleRule,
  LockRule,
  bucketTokenResources,
  lifecycleRules,
  lockRules,
  r2Endpoint,
  s3CredentialsFromToken,
  settingsProblems,
} from "../../components/backup-bucket/policy";

const ACCOUNT = "0123456789abcdef0123456789abcdef";
const DAY = 86400;
const settings: BackupBucketSettings = {
  accountId: ACCOUNT,
  bucketName: "leaninfra-prod-backups",
  locationHint: "weur",
  jurisdiction: "default",
  retentionDays: 35,
  lockDays: 14,
  dumpRetentionDays: 365,
};

const KEYS = {
  backupInfo: "pgbackrest/backup/main/backup.info",
  backupInfoCopy: "pgbackrest/backup/main/backup.info.copy",
  archiveInfo: "pgbackrest/archive/main/archive.info",
  archiveInfoCopy: "pgbackrest/archive/main/archive.info.copy",
  history: "pgbackrest/backup/main/backup.history/2026/20261128-010203F.manifest.gz",
  wal: "pgbackrest/archive/main/17-1/0000000100000000/000000010000000000000001-abc.gz",
  timelineHistory: "pgbackrest/archive/main/17-1/00000002.history",
  full: "pgbackrest/backup/main/20261128-010203F/backup.manifest",
  diff: "pgbackrest/backup/main/20261128-010203F_20261129-010203D/pg_data/base/1/1259.gz",
  dump: "dumps/2026-11/app.dump",
};
const METADATA = [KEYS.backupInfo, KEYS.backupInfoCopy, KEYS.archiveInfo, KEYS.archiveInfoCopy, KEYS.history];

const expiring = (rules: LifecycleRule[], key: string) =>
  rules.filter((r) => r.deleteObjectsTransition && key.startsWith(r.conditions.prefix)).map((r) => r.deleteObjectsTransition!.condition.maxAge);
const locking = (rules: LockRule[], key: string) => rules.filter((r) => key.startsWith(r.prefix)).map((r) => r.condition.maxAgeSeconds);

test("S3 credentials: the token id is the access key id, the secret is the SHA-256 of the token value", () => {
  // Expected value from: printf %s 'cfat_Xq3vR9mL2pT7wZ4yB8nD1kF6hJ0sGaCe5uV' | sha256sum
  assert.deepEqual(s3CredentialsFromToken("f3b1c2d4e5a6978812ab34cd56ef7890", "cfat_Xq3vR9mL2pT7wZ4yB8nD1kF6hJ0sGaCe5uV"), {
    accessKeyId: "f3b1c2d4e5a6978812ab34cd56ef7890",
    secretAccessKey: "ab5e3d7cf50be300051fabfcff962c03fbcaf9e3b77a298e9ebcb2491d18552d",
  });
  assert.throws(() => s3CredentialsFromToken("id", ""), /no value/);
  assert.throws(() => s3CredentialsFromToken("", "value"), /no id/);
});

test("endpoints differ per jurisdiction", () => {
  assert.equal(r2Endpoint(ACCOUNT, "default"), `https://${ACCOUNT}.r2.cloudflarestorage.com`);
  assert.equal(r2Endpoint(ACCOUNT, "eu"), `https://${ACCOUNT}.eu.r2.cloudflarestorage.com`);
  assert.equal(r2Endpoint(ACCOUNT, "fedramp"), `https://${ACCOUNT}.fedramp.r2.cloudflarestorage.com`);
  assert.throws(() => r2Endpoint("not-an-account", "default"), /not a Cloudflare account id/);
  assert.throws(() => r2Endpoint(ACCOUNT, "us" as never), /not an R2 jurisdiction/);
});

test("the token reaches exactly one bucket, in its jurisdiction", () => {
  assert.deepEqual(JSON.parse(bucketTokenResources(ACCOUNT, "default", "leaninfra-prod-backups")), {
    [`com.cloudflare.edge.r2.bucket.${ACCOUNT}_default_leaninfra-prod-backups`]: "*",
  });
  assert.deepEqual(Object.keys(JSON.parse(bucketTokenResources(ACCOUNT, "eu", "b-eu"))), [`com.cloudflare.edge.r2.bucket.${ACCOUNT}_eu_b-eu`]);
  assert.throws(() => bucketTokenResources(ACCOUNT, "default", "*"), /not an R2 bucket name/);
  assert.throws(() => bucketTokenResources(ACCOUNT, "default", ""), /not an R2 bucket name/);
});

test("the layout is pgBackRest's for repo1-path=/pgbackrest and stanza main", () => {
  assert.equal(BACKUP_LAYOUT.repoPath, "/pgbackrest");
  assert.equal(BACKUP_LAYOUT.stanza, "main");
  assert.deepEqual(BACKUP_LAYOUT.dataPrefixes, ["pgbackrest/archive/main/1", "pgbackrest/backup/main/2"]);
  assert.equal(BACKUP_LAYOUT.dumpsPrefix, "dumps/");
  for (const version of [10, 13, 17, 19]) {
    assert.ok(BACKUP_LAYOUT.dataPrefixes.some((p) => `pgbackrest/archive/main/${version}-1/x`.startsWith(p)), `PostgreSQL ${version}`);
  }
});

test("lifecycle: WAL and backups expire after retentionDays, dumps after dumpRetentionDays, stale uploads after a day", () => {
  const rules = lifecycleRules(settings);
  for (const r of rules) assert.equal(r.enabled, true);
  assert.deepEqual(expiring(rules, KEYS.wal), [35 * DAY]);
  assert.deepEqual(expiring(rules, KEYS.timelineHistory), [35 * DAY]);
  assert.deepEqual(expiring(rules, KEYS.full), [35 * DAY]);
  assert.deepEqual(expiring(rules, KEYS.diff), [35 * DAY]);
  assert.deepEqual(expiring(rules, KEYS.dump), [365 * DAY]);
  for (const r of rules.filter((r) => r.deleteObjectsTransition)) assert.equal(r.deleteObjectsTransition!.condition.type, "Age");
  const abort = rules.filter((r) => r.abortMultipartUploadsTransition);
  assert.deepEqual(
    abort.map((r) => [r.conditions.prefix, r.abortMultipartUploadsTransition!.condition]),
    [["", { type: "Age", maxAge: DAY }]],
  );
  assert.equal(abort[0].deleteObjectsTransition, undefined, "the whole-bucket rule deletes no finished object");
  assert.equal(new Set(rules.map((r) => r.id)).size, rules.length, "rule ids are unique");
});

test("lock: WAL, backups and dumps are locked for lockDays, shorter than their expiry", () => {
  const lifecycle = lifecycleRules(settings);
  const rules = lockRules(settings);
  for (const r of rules) {
    assert.equal(r.enabled, true);
    assert.equal(r.condition.type, "Age");
  }
  for (const key of [KEYS.wal, KEYS.full, KEYS.diff, KEYS.dump]) {
    assert.deepEqual(locking(rules, key), [14 * DAY], key);
    assert.ok(locking(rules, key)[0] < Math.min(...expiring(lifecycle, key)), `${key}: lock shorter than expiry`);
  }
  assert.ok(!rules.some((r) => r.prefix === ""), "no lock on the whole bucket");
});

test("pgBackRest's metadata files are neither expired nor locked", () => {
  const lifecycle = lifecycleRules(settings);
  const locks = lockRules(settings);
  for (const key of [...METADATA, ...BACKUP_LAYOUT.metadataKeys]) {
    assert.deepEqual(expiring(lifecycle, key), [], `${key} never expires`);
    assert.deepEqual(locking(locks, key), [], `${key} can be rewritten`);
  }
});

test("impossible settings are refused with the reason and the config key", () => {
  assert.deepEqual(settingsProblems(settings), []);
  assert.throws(() => lockRules({ ...settings, lockDays: 35 }), /lockDays \(35\) must be shorter than retentionDays \(35\).*leaninfra:backupLockDays/);
  assert.throws(() => lifecycleRules({ ...settings, lockDays: 40 }), /must be shorter than retentionDays/);
  assert.throws(() => lockRules({ ...settings, retentionDays: 400, lockDays: 365 }), /must be shorter than dumpRetentionDays \(365\)/);
  assert.throws(() => lifecycleRules({ ...settings, retentionDays: 0 }), /retentionDays 0 is not a whole number of days/);
  assert.throws(() => lifecycleRules({ ...settings, lockDays: 1.5 }), /lockDays 1.5 is not a whole number/);
  assert.throws(() => lockRules({ ...settings, accountId: "ABC" }), /accountId "ABC" is not 32 hexadecimal characters/);
  assert.throws(() => lockRules({ ...settings, locationHint: "mars" }), /locationHint "mars" is not one of weur/);
  assert.throws(() => lockRules({ ...settings, jurisdiction: "us" as never }), /jurisdiction "us" is not one of/);
  assert.throws(() => lockRules({ ...settings, bucketName: "Bad_Name" }), /bucketName "Bad_Name" is not an R2 bucket name/);
});
