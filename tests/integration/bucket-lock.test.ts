import test from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { BACKUP_LAYOUT, lockRules } from "../../components/backup-bucket/policy";
import { BACKUPS, BackupsSettings, backupsRole } from "../../components/backups";
import { renderRoleBundle } from "../../components/host/bundle";
import { postgresRole } from "../../components/postgres";
import { show, withDebianRoot } from "../lib/debian-root";
import { R2LockProxy } from "../lib/r2-lock-proxy";
import { S3Server, freePort } from "../lib/s3-server";
import { sections } from "../lib/sections";

const DB = "shop";
const LOCK_DAYS = 14;
const RETENTION_DAYS = 35;

const prelude = (port: number) => `set -uo pipefail
cd /
sec() { printf '\\n== %s\\n' "$1"; }
q() { runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -p ${port} -d ${DB} -c "$1"; }
`;
// Each run is a new container: PostgreSQL is started again where the last one left it.
const started = (port: number) => `${prelude(port)}pg_ctlcluster 17 main start >/dev/null
`;

test("under R2's bucket lock (emulated in front of a real S3 server) backups, WAL, expiry and dumps never overwrite or delete a locked object", { timeout: 15 * 60_000 }, async () => {
  const s3 = await S3Server.start();
  const rules = lockRules({
    accountId: "0".repeat(32),
    bucketName: s3.bucket,
    locationHint: "weur",
    jurisdiction: "default",
    retentionDays: RETENTION_DAYS,
    lockDays: LOCK_DAYS,
    dumpRetentionDays: 400,
  });
  const proxy = await R2LockProxy.start(s3, rules, await freePort());
  const port = await freePort();
  const settings: BackupsSettings = {
    s3: { endpoint: proxy.endpoint, region: "auto", bucket: s3.bucket, accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey },
    cipherPassphrase: `Cipher${randomBytes(16).toString("hex")}`,
    backupRetentionDays: RETENTION_DAYS,
    backupLockDays: LOCK_DAYS,
    postgresDatabase: DB,
    vcpus: 2,
    port,
    uploadChunkMiB: 5,
    storageCaPem: s3.caPem,
  };
  try {
    await withDebianRoot(async (root) => {
      fs.writeFileSync(root.hostPath("/root/postgres.sh"), renderRoleBundle(postgresRole({ memoryMb: 2048, vcpus: 2, postgresMaxConnections: 0, postgresDatabase: DB, postgresUser: "shop_app", password: `Pg${randomBytes(12).toString("hex")}`, port })));
      fs.writeFileSync(root.hostPath("/root/backups.sh"), renderRoleBundle(backupsRole(settings)));

      // 1. Every job of a normal week, twice where a job rewrites something, through the lock.
      const week = root.run(`${prelude(port)}
sec roles
bash /root/postgres.sh >/root/postgres.log 2>&1 && bash /root/backups.sh >/root/backups.log 2>&1; echo "exit=$?"
q "create table orders (id int primary key, note text)"
q "insert into orders select g, md5(g::text) from generate_series(1, 50000) g"
sec full
leaninfra-backup full 2>&1; echo "exit=$?"
q "insert into orders select g, 'later' from generate_series(50001, 60000) g"
sec diff
leaninfra-backup diff 2>&1; echo "exit=$?"
sec diff2
leaninfra-backup diff 2>&1; echo "exit=$?"
sec check
leaninfra-backup check 2>&1; echo "exit=$?"
sec verify
leaninfra-backup verify 2>&1; echo "exit=$?"
sec dump
leaninfra-backup dump 2>&1; echo "exit=$?"
sleep 1
sec dump2
leaninfra-backup dump 2>&1; echo "exit=$?"
sec expire
runuser -u postgres -- pgbackrest --stanza=${BACKUPS.stanza} expire 2>&1; echo "exit=$?"
sec role-again
bash /root/backups.sh 2>&1 | tail -n 1; echo "exit=$?"
`, { timeoutMs: 10 * 60_000 });
      assert.equal(week.code, 0, show(week));
      const w = sections(week.stdout);
      assert.equal(w.roles, "exit=0", fs.readFileSync(root.hostPath("/root/backups.log"), "utf8"));
      for (const job of ["full", "diff", "diff2", "check", "verify", "dump", "dump2"]) {
        assert.match(w[job], /: ok in \d+ s: [^\n]*\nexit=0$/, `${job}:\n${w[job]}`);
      }
      assert.equal(w.expire, "exit=0", w.expire);
      assert.equal(w["role-again"], "[backups] no changes\nexit=0");
      const events = proxy.events();
      assert.deepEqual(events.filter((e) => e.refusedBy), [], "nothing in a normal week touches a locked object");
      // The lock was in play: every locked prefix received new objects through the proxy.
      for (const rule of rules) {
        const written = events.filter((e) => e.status === 200 && e.keys.some((k) => k.startsWith(rule.prefix)));
        assert.ok(written.length > 0, `no object was written under ${rule.prefix}`);
      }
      const writes = new Map<string, number>();
      for (const e of events) {
        if (e.status === 200 && ["put", "complete", "copy"].includes(e.op)) for (const k of e.keys) writes.set(k, (writes.get(k) ?? 0) + 1);
      }
      const rewritten = [...writes].filter(([k, n]) => n > 1 && rules.some((r) => k.startsWith(r.prefix)));
      assert.deepEqual(rewritten, [], "no locked key is ever written twice");
      console.log(`a week of jobs under the lock: ${writes.size} objects written, ${[...writes.keys()].filter((k) => rules.some((r) => k.startsWith(r.prefix))).length} of them locked, 0 refused`);

      // 2. A backup that stops half-way (here: the bucket refuses its 4th file) leaves locked files behind.
      proxy.failWritesAfter(BACKUP_LAYOUT.backupsPrefix, 3);
      const half = root.run(`${started(port)}
sec full
leaninfra-backup full 2>/dev/null; echo "exit=$?"
`);
      proxy.failWritesAfter(BACKUP_LAYOUT.backupsPrefix, null);
      assert.equal(sections(half.stdout).full, "exit=1", show(half));
      const partial = proxy.events().find((e) => e.injected)!.keys[0].split("/")[3];
      assert.match(partial, /^\d{8}-\d{6}F$/);

      // The next backup stops at once with the date the lock lets go, without asking the bucket to
      // delete; WAL archiving and the earlier backups are untouched.
      const before = proxy.events().length;
      const blocked = root.run(`${started(port)}
sec diff
leaninfra-backup diff 2>&1; echo "exit=$?"
sec check
leaninfra-backup check 2>&1; echo "exit=$?"
sec metrics
grep '^leaninfra_backup_success{type="diff"}' ${BACKUPS.metrics.backup}
sec info
runuser -u postgres -- pgbackrest --stanza=${BACKUPS.stanza} --output=json info | jq -r '.[0].backup | length'
`);
      assert.equal(blocked.code, 0, show(blocked));
      const b = sections(blocked.stdout);
      const unlock = new Date(Date.now() + LOCK_DAYS * 86400_000).toISOString().slice(0, 10);
      assert.match(
        b.diff,
        new RegExp(`^leaninfra-backup diff: FAILED after \\d+ s: backup ${partial} stopped half-way at [^;]+; pgBackRest must delete its files before any new backup, and the ${LOCK_DAYS}-day bucket lock keeps them until ${unlock} \\d\\d:\\d\\d UTC, when backups resume by themselves\\. WAL archiving goes on, so every point since backup \\d{8}-\\d{6}F_\\d{8}-\\d{6}D stays restorable`),
        b.diff,
      );
      assert.match(b.diff, /exit=1$/);
      assert.match(b.check, /: ok in \d+ s: WAL archiving to [^\n]* works\nexit=0$/, b.check);
      assert.equal(b.metrics, 'leaninfra_backup_success{type="diff"} 0');
      assert.equal(b.info, "3", "the full and both diffs are still listed");
      assert.deepEqual(proxy.events().slice(before).filter((e) => e.op.startsWith("delete")), [], "no delete was even tried");

      // PostgreSQL down is named as such, not as an unreachable bucket (pgBackRest's errors mention both).
      const down = root.run(`${prelude(port)}
leaninfra-backup check 2>&1 | tail -n 1
`);
      assert.match(down.stdout, new RegExp(`^leaninfra-backup check: FAILED after \\d+ s: pgBackRest cannot connect to PostgreSQL on port ${port}: is it running\\?`, "m"), show(down));

      // 3. Once the lock lets go (the stopped backup's files aged past it), the next backup removes them and succeeds.
      const partialDir = s3.objectPath(`${BACKUP_LAYOUT.backupsPrefix.slice(0, -1)}${partial}`);
      const old = new Date(Date.now() - (LOCK_DAYS + 1) * 86400_000);
      for (const f of fs.readdirSync(partialDir, { recursive: true, encoding: "utf8" })) fs.utimesSync(`${partialDir}/${f}`, old, old);
      const resumed = root.run(`${started(port)}
sec diff
leaninfra-backup diff 2>&1; echo "exit=$?"
`);
      assert.match(sections(resumed.stdout).diff, /^leaninfra-backup diff: ok in \d+ s: backup \d{8}-\d{6}F_\d{8}-\d{6}D \(diff\)[^\n]*\nexit=0$/, show(resumed));
      assert.ok(!fs.existsSync(partialDir) || fs.readdirSync(partialDir, { recursive: true }).length === 0, "the stopped backup's files are gone");
      assert.deepEqual(proxy.events().filter((e) => e.refusedBy), [], "the lock never had to refuse anything");
    });
  } finally {
    proxy.stop();
    s3.dispose();
  }
});
