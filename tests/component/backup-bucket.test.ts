import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import test from "node:test";
import * as cloudflare from "@pulumi/cloudflare";
import * as pulumi from "@pulumi/pulumi";
import { BackupBucket, BackupBucketArgs } from "../../components/backup-bucket";
import permissionGroups from "../../infra/data/cloudflare-permission-groups.json";
import { OFFLINE_CALLS, RecordedResource, UNKNOWN, runWithMocks, settle } from "../../infra/mock-run";

const MAIN_ACCOUNT = "11111111111111111111111111111111";
const BACKUP_ACCOUNT = "0123456789abcdef0123456789abcdef";
const TOKEN_VALUE = "mock-token-value-for-tests";
const DAY = 86400;
const PARENT = "leaninfra:backup:BackupBucket::backups";
const BACKUP_PROVIDER = "pulumi:providers:cloudflare::backup-account::";
const GROUPS_TOKEN = "cloudflare:index/getAccountApiTokenPermissionGroupsList:getAccountApiTokenPermissionGroupsList";

const args: BackupBucketArgs = {
  accountId: BACKUP_ACCOUNT,
  bucketName: "leaninfra-prod-backups",
  locationHint: "weur",
  jurisdiction: "default",
  retentionDays: 35,
  lockDays: 14,
  dumpRetentionDays: 365,
};

interface InvokeRequest {
  getTok(): string;
  getProvider(): string;
}
interface SeenInvoke {
  token: string;
  provider: string;
  args?: Record<string, unknown>;
}

function computed(r: RecordedResource): Record<string, unknown> {
  return r.type === "cloudflare:index/accountToken:AccountToken" ? { value: TOKEN_VALUE } : {};
}

/**
 * The program a stack would write: the main account's provider, the backup account's provider, and
 * the BackupBucket given the second. Every invoke is recorded with the provider it was sent to.
 */
async function plan(options: { bucket?: Partial<BackupBucketArgs>; style?: "providers" | "provider"; preview?: boolean } = {}) {
  const invokes: SeenInvoke[] = [];
  const run = await runWithMocks(
    {
      project: "leaninfra",
      stack: "prod",
      preview: options.preview ?? false,
      config: {},
      revealSecrets: true,
      computed,
      calls: {
        [GROUPS_TOKEN]: (callArgs) => {
          invokes.push({ token: GROUPS_TOKEN, provider: "(not visible to the mock's call answer)", args: callArgs });
          return OFFLINE_CALLS[GROUPS_TOKEN](callArgs);
        },
      },
    },
    () => {
      // The mock's call answer sees only the arguments; the provider is read off the invoke request.
      const monitor = pulumi.runtime.getMonitor() as unknown as { invoke(req: InvokeRequest, cb: unknown): unknown };
      const invoke = monitor.invoke.bind(monitor);
      monitor.invoke = (req, cb) => {
        invokes.push({ token: req.getTok(), provider: req.getProvider() });
        return invoke(req, cb);
      };
      const main = new cloudflare.Provider("main-account", { apiToken: "main" });
      new cloudflare.R2Bucket("main-assets", { accountId: MAIN_ACCOUNT, name: "assets" }, { provider: main });
      const backupProvider = new cloudflare.Provider("backup-account", { apiToken: "x" });
      const bucketOpts = options.style === "provider" ? { provider: backupProvider } : { providers: { cloudflare: backupProvider } };
      return new BackupBucket("backups", { ...args, ...options.bucket }, bucketOpts);
    },
  );
  const one = (type: string) => {
    const found = run.resources.filter((r) => r.type === type && r.parent === PARENT);
    assert.equal(found.length, 1, `expected one ${type} in the BackupBucket, found ${found.length}`);
    return found[0];
  };
  return { ...run, one, invokes };
}

const TYPES = {
  bucket: "cloudflare:index/r2Bucket:R2Bucket",
  lifecycle: "cloudflare:index/r2BucketLifecycle:R2BucketLifecycle",
  lock: "cloudflare:index/r2BucketLock:R2BucketLock",
  token: "cloudflare:index/accountToken:AccountToken",
};

type LifecycleRule = { id: string; conditions: { prefix: string }; deleteObjectsTransition?: { condition: { type: string; maxAge: number } } };
type LockRule = { id: string; prefix: string; condition: { type: string; maxAgeSeconds: number } };

for (const style of ["providers", "provider"] as const) {
  test(`every resource and the permission-group look-up go through the backup account's provider (opts.${style})`, async () => {
    const { one, resources, invokes } = await plan({ style });
    for (const type of Object.values(TYPES)) {
      const r = one(type);
      assert.ok(r.provider?.includes(BACKUP_PROVIDER), `${type} is created through ${r.provider}`);
      assert.equal(r.inputs.accountId, BACKUP_ACCOUNT, `${type} is in the backup account`);
    }
    const decoy = resources.find((r) => r.name === "main-assets")!;
    assert.match(String(decoy.provider), /pulumi:providers:cloudflare::main-account::/, "the main account's resources keep their own provider");

    const sent = invokes.filter((i) => i.token === GROUPS_TOKEN && !i.args);
    assert.equal(sent.length, 2, "one look-up per permission group");
    for (const i of sent) assert.ok(i.provider.includes(BACKUP_PROVIDER), `the look-up went to ${i.provider}`);
    const asked = invokes.filter((i) => i.args).map((i) => [i.args!.accountId, i.args!.name]);
    assert.deepEqual(asked.sort(), [
      [BACKUP_ACCOUNT, "Workers R2 Storage Bucket Item Read"],
      [BACKUP_ACCOUNT, "Workers R2 Storage Bucket Item Write"],
    ]);
  });
}

test("the bucket is created as configured, child of the component", async () => {
  const { one } = await plan();
  const bucket = one(TYPES.bucket);
  assert.equal(bucket.name, "backups-bucket");
  assert.deepEqual(bucket.inputs, {
    accountId: BACKUP_ACCOUNT,
    name: "leaninfra-prod-backups",
    location: "weur",
    jurisdiction: "default",
    storageClass: "Standard",
  });
});

test("the token may read and write objects of exactly this bucket, nothing else", async () => {
  const { one } = await plan();
  const token = one(TYPES.token);
  assert.equal(token.inputs.name, "leaninfra-prod-backups-server");
  const policies = token.inputs.policies as { effect: string; permissionGroups: { id: string }[]; resources: string }[];
  assert.equal(policies.length, 1);
  assert.equal(policies[0].effect, "allow");
  const idOf = (name: string) => permissionGroups.results.find((g) => g.name === name)!.id;
  assert.deepEqual(
    policies[0].permissionGroups.map((g) => g.id).sort(),
    [idOf("Workers R2 Storage Bucket Item Read"), idOf("Workers R2 Storage Bucket Item Write")].sort(),
  );
  assert.deepEqual(JSON.parse(policies[0].resources), { [`com.cloudflare.edge.r2.bucket.${BACKUP_ACCOUNT}_default_leaninfra-prod-backups`]: "*" });
});

test("lifecycle expires data and dumps at their ages; the lock is shorter and leaves the metadata alone", async () => {
  const { one } = await plan();
  const lifecycle = one(TYPES.lifecycle);
  const lock = one(TYPES.lock);
  for (const r of [lifecycle, lock]) {
    assert.equal(r.inputs.bucketName, "leaninfra-prod-backups");
    assert.equal(r.inputs.jurisdiction, "default");
  }
  const rules = lifecycle.inputs.rules as LifecycleRule[];
  const expiry: Record<string, number> = Object.fromEntries(
    rules.filter((r) => r.deleteObjectsTransition).map((r) => [r.conditions.prefix, r.deleteObjectsTransition!.condition.maxAge]),
  );
  assert.deepEqual({ ...expiry }, { "pgbackrest/archive/main/1": 35 * DAY, "pgbackrest/backup/main/2": 35 * DAY, "dumps/": 365 * DAY });
  assert.ok(rules.some((r) => r.conditions.prefix === "" && !r.deleteObjectsTransition), "aborts stale uploads bucket-wide");

  const locks = lock.inputs.rules as LockRule[];
  assert.deepEqual(locks.map((r) => [r.prefix, r.condition.type, r.condition.maxAgeSeconds]).sort(), [
    ["dumps/", "Age", 14 * DAY],
    ["pgbackrest/archive/main/1", "Age", 14 * DAY],
    ["pgbackrest/backup/main/2", "Age", 14 * DAY],
  ]);
  for (const r of locks) assert.ok(r.condition.maxAgeSeconds < expiry[r.prefix], `${r.prefix}: locked shorter than kept`);
  for (const key of ["pgbackrest/backup/main/backup.info", "pgbackrest/archive/main/archive.info.copy"]) {
    assert.ok(!locks.some((r) => key.startsWith(r.prefix)) && !Object.keys(expiry).some((p) => key.startsWith(p)), key);
  }
});

test("the S3 credentials are secret and derived from the token's id and value", async () => {
  const { one, result } = await plan();
  const token = one(TYPES.token);
  const expectedSecret = createHash("sha256").update(TOKEN_VALUE).digest("hex");
  assert.equal(await pulumi.isSecret(result.accessKeyId), true);
  assert.equal(await pulumi.isSecret(result.secretAccessKey), true);
  assert.equal(await pulumi.isSecret(result.s3), true);
  assert.equal(await settle(result.accessKeyId), token.id);
  assert.equal(await settle(result.secretAccessKey), expectedSecret);
  assert.deepEqual(await settle(result.s3), {
    endpoint: `https://${BACKUP_ACCOUNT}.r2.cloudflarestorage.com`,
    region: "auto",
    bucket: "leaninfra-prod-backups",
    accessKeyId: token.id,
    secretAccessKey: expectedSecret,
  });
  assert.equal(await settle(result.bucketName), "leaninfra-prod-backups");
  assert.equal(await settle(result.region), "auto");
});

test("an EU bucket uses the EU endpoint and the EU token resource", async () => {
  const { one, result } = await plan({ bucket: { jurisdiction: "eu" } });
  assert.equal(await settle(result.endpoint), `https://${BACKUP_ACCOUNT}.eu.r2.cloudflarestorage.com`);
  const policies = one(TYPES.token).inputs.policies as { resources: string }[];
  assert.deepEqual(Object.keys(JSON.parse(policies[0].resources)), [`com.cloudflare.edge.r2.bucket.${BACKUP_ACCOUNT}_eu_leaninfra-prod-backups`]);
  assert.equal(one(TYPES.lock).inputs.jurisdiction, "eu");
});

test("in a preview the credentials are unknown, never invented", async () => {
  const { result } = await plan({ preview: true });
  assert.equal(await settle(result.secretAccessKey), UNKNOWN);
  assert.equal(await settle(result.endpoint), `https://${BACKUP_ACCOUNT}.r2.cloudflarestorage.com`);
});

test("impossible settings and a missing backup provider are refused before anything reaches the account", async () => {
  const refused = async (program: () => unknown) => {
    const run = runWithMocks({ project: "leaninfra", stack: "prod", preview: false, config: {} }, program);
    return run.then(
      () => assert.fail("expected an error"),
      (err: Error) => err.message,
    );
  };
  const lockTooLong = await refused(() => {
    const p = new cloudflare.Provider("backup-account", { apiToken: "x" });
    return new BackupBucket("backups", { ...args, lockDays: 35 }, { providers: { cloudflare: p } });
  });
  assert.match(lockTooLong, /lockDays \(35\) must be shorter than retentionDays \(35\)/);
  const noProvider = await refused(() => new BackupBucket("backups", args));
  assert.match(noProvider, /no cloudflare provider was given; pass the backup account's provider/);
});
