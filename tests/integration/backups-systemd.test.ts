import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { baseRole } from "../../components/base";
import { BACKUPS, BACKUPS_PATHS, BackupsRoleSettings, archivePushQueueMaxMiB, backupsRole } from "../../components/backups";
import { DEPLOY_LOCK_FILE, RESTORE_LOG } from "../../components/backups/drill";
import { POSTGRES_PATHS, postgresRole } from "../../components/postgres";
import { BootedRoot, withBootedRoot } from "../lib/booted-root";
import { show } from "../lib/debian-root";
import { parsePromText } from "../lib/prom-text";
import { S3Server, freePort } from "../lib/s3-server";
import { sections } from "../lib/sections";
import { applyRole } from "../fixtures/test-app/scenario";

/**
 * The backups role as systemd runs it, in a booted Debian 13 root: its services under their sandbox
 * (systemd-analyze verify and security, then each service run by systemctl), leaninfra-restore against
 * held locks and with the timers it pauses, and an unreachable bucket filling the WAL queue to
 * archive-push-queue-max, where pgBackRest drops WAL and PostgreSQL keeps running.
 */
const DB = "shop";
// A volume of 0.3125 GB: a 64 MiB cap, four WAL segments, so the test fills it in seconds.
const VOLUME_GB = 0.3125;
const CAP_BYTES = archivePushQueueMaxMiB(VOLUME_GB) * 1024 * 1024;
const SERVICES = ["leaninfra-backup@full.service", "leaninfra-drill.service", "leaninfra-wal-queue.service"];
const PAUSED = ["leaninfra-backup@full.timer", "leaninfra-drill.timer"];

const prelude = (port: number) => `set -uo pipefail
cd /
sec() { printf '\\n== %s\\n' "$1"; }
q() { runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -p ${port} -d ${DB} -c "$1"; }
`;

describe("the backups role under systemd: sandboxed services, restore locks and timers, the WAL queue cap", { timeout: 30 * 60_000 }, () => {
  let s3: S3Server;
  let port: number;
  let settings: BackupsRoleSettings;

  before(async () => {
    s3 = await S3Server.start();
    port = await freePort();
    settings = {
      s3: { endpoint: s3.endpoint, bucket: s3.bucket, accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey },
      cipherPassphrase: `Cipher${randomBytes(16).toString("hex")}`,
      backupRetentionDays: 35,
      postgresDatabase: DB,
      vcpus: 2,
      port,
      volumeSizeGb: VOLUME_GB,
      storageCaPem: s3.caPem,
      hostname: "shop",
    };
  });
  after(() => s3?.dispose());

  it("runs every service sandboxed, keeps restores from racing backups and deploys, and caps the WAL queue", async () => {
    await withBootedRoot({}, async (root: BootedRoot) => {
      const run = async (script: string, timeoutMs = 10 * 60_000) => {
        const r = await root.runAsync(`${prelude(port)}${script}`, { timeoutMs });
        assert.equal(r.code, 0, show(r));
        return sections(r.stdout);
      };
      assert.equal((await applyRole(root, baseRole({ adminUser: "ops" }))).code, 0);
      const pg = await applyRole(root, postgresRole({ memoryMb: 2048, vcpus: 2, postgresMaxConnections: 0, postgresDatabase: DB, postgresUser: "shop_app", password: `Pg${randomBytes(12).toString("hex")}`, port }));
      assert.equal(pg.code, 0, show(pg));
      const backups = await applyRole(root, backupsRole(settings));
      assert.equal(backups.code, 0, show(backups));
      assert.match(backups.stdout, /enabled leaninfra-wal-queue\.timer/);

      // 1. The sandbox: systemd reads every unit, and rates each service's exposure.
      const sandbox = await run(`
sec verify
systemd-analyze verify ${SERVICES.join(" ")} 2>&1; echo "exit=$?"
${SERVICES.map((u) => `sec security-${u}\nsystemd-analyze security --no-pager ${u} 2>&1 | tail -n 1`).join("\n")}
sec properties
systemctl show -p ProtectSystem -p ProtectHome -p PrivateTmp -p NoNewPrivileges leaninfra-backup@full.service | paste -sd ' '
systemctl show -p CapabilityBoundingSet -p PrivateNetwork leaninfra-wal-queue.service | paste -sd ' '
`);
      assert.equal(sandbox.verify, "exit=0");
      const exposure: Record<string, number> = {};
      for (const unit of SERVICES) {
        const m = /Overall exposure level for \S+: (\d+\.\d) (\w+)/.exec(sandbox[`security-${unit}`]);
        assert.ok(m, sandbox[`security-${unit}`]);
        exposure[unit] = Number(m[1]);
      }
      console.log(`  systemd-analyze security: ${Object.entries(exposure).map(([u, e]) => `${u} ${e}`).join(", ")}`);
      // Root jobs that switch users keep their capabilities (MEDIUM); the queue metric has one capability and no network.
      assert.ok(exposure["leaninfra-backup@full.service"] < 7, `backup ${exposure["leaninfra-backup@full.service"]}`);
      assert.ok(exposure["leaninfra-drill.service"] < 7, `drill ${exposure["leaninfra-drill.service"]}`);
      assert.ok(exposure["leaninfra-wal-queue.service"] < 4, `wal queue ${exposure["leaninfra-wal-queue.service"]}`);
      const props = (line: string) => line.split(" ").sort().join(" ");
      assert.equal(props(sandbox.properties.split("\n")[0]), "NoNewPrivileges=yes PrivateTmp=no ProtectHome=yes ProtectSystem=full");
      assert.equal(props(sandbox.properties.split("\n")[1]), "CapabilityBoundingSet=cap_dac_read_search PrivateNetwork=yes");

      // 2. Each service does its job under that sandbox, started by systemd as its timer would.
      const jobs = await run(`
q "create table orders (id int primary key, created_at timestamptz not null default now())"
q "insert into orders (id) select generate_series(1, 500)"
for unit in leaninfra-backup@full.service leaninfra-backup@check.service leaninfra-drill.service leaninfra-wal-queue.service; do
  sec "$unit"
  systemctl start "$unit"; echo "exit=$?"
  systemctl show -p Result --value "$unit"
done
sec backup-metrics
cat ${BACKUPS.metrics.backup}
sec drill-journal
journalctl -q -o cat -u leaninfra-drill.service | grep -E 'drill PASSED|FAILED' || true
sec queue-metrics
cat ${BACKUPS.metrics.walArchive}
`);
      for (const unit of ["leaninfra-backup@full.service", "leaninfra-backup@check.service", "leaninfra-drill.service", "leaninfra-wal-queue.service"]) {
        assert.equal(jobs[unit], "exit=0\nsuccess", `${unit}:\n${jobs[unit]}`);
      }
      const backupMetrics = parsePromText(jobs["backup-metrics"]);
      assert.equal(backupMetrics.get('leaninfra_backup_success{type="full"}'), 1);
      assert.equal(backupMetrics.get('leaninfra_backup_success{type="check"}'), 1);
      assert.match(jobs["drill-journal"], /drill PASSED in [\d.]+s: backup \d{8}-\d{6}F restored, 1 table\(s\) checked, app: skipped \(no app role\)/);
      const idle = parsePromText(jobs["queue-metrics"]);
      assert.equal(idle.get("leaninfra_wal_archive_queue_max_bytes"), CAP_BYTES);
      assert.equal(idle.get("leaninfra_wal_archive_last_drop_timestamp_seconds"), 0);
      assert.ok(idle.get("leaninfra_wal_archive_queue_bytes")! < CAP_BYTES);

      // 3. leaninfra-restore refuses while a backup job or a deploy holds its lock, and changes nothing.
      const held = await run(`
for lock in ${BACKUPS_PATHS.lockFile} ${DEPLOY_LOCK_FILE}; do
  sec "held-\${lock##*/}"
  systemd-run --quiet --unit=hold-lock flock "$lock" sleep 300
  for _ in $(seq 50); do flock -n "$lock" true || break; sleep 0.1; done
  ${BACKUPS.bin.restore} --latest --yes 2>&1; echo "exit=$?"
  systemctl is-active ${PAUSED.join(" ")} | paste -sd ' '
  ls -d ${POSTGRES_PATHS.dataDirectory}*
  systemctl stop hold-lock
done
`);
      for (const [lock, holder] of [[BACKUPS_PATHS.lockFile, "a backup job"], [DEPLOY_LOCK_FILE, "a deploy of the app"]]) {
        const out = held[`held-${lock.split("/").pop()}`];
        assert.match(out, new RegExp(`FAILED: ${holder}.* holds ${lock}; wait until it ends \\(or stop it\\), then run leaninfra-restore again\\. Nothing was changed\\.`), out);
        assert.match(out, /exit=1\nactive active\n/);
        assert.ok(out.endsWith(POSTGRES_PATHS.dataDirectory), out);
        assert.doesNotMatch(out, /step 1\/8/);
      }

      // 4. A restore that succeeds: the timers are stopped while it runs and active again after it.
      const watch = (name: string) => `
${BACKUPS.bin.restore} --latest --yes >/root/${name}.out 2>&1 &
pid=$!
seen=''
while kill -0 $pid 2>/dev/null; do
  if grep -q 'step [45]/8' /root/${name}.out; then
    [ -z "$seen" ] && seen="during: $(systemctl is-active ${PAUSED.join(" ")} | paste -sd ' ')"
    ${name === "interrupted" ? 'kill -TERM $pid; break' : ":"}
  fi
  sleep 0.1
done
wait $pid; echo "exit=$?"
echo "$seen"
echo "after: $(systemctl is-active ${PAUSED.join(" ")} | paste -sd ' ')"
sec ${name}-output
cat /root/${name}.out
`;
      const ok = await run(`sec restored\n${watch("restored")}\nq "select count(*) from orders"`);
      assert.match(ok.restored, /^exit=0\nduring: inactive inactive\nafter: active active$/, `${ok.restored}\n${ok["restored-output"]}`);
      assert.match(ok["restored-output"], /stopped leaninfra-backup@full\.timer leaninfra-backup@diff\.timer .*leaninfra-drill\.timer until the restore ends/);
      assert.match(ok["restored-output"], /started leaninfra-backup@full\.timer .*leaninfra-drill\.timer again/);
      assert.match(ok["restored-output"], /\n500$/, "every row back");

      // 5. An interrupted restore (SIGTERM while it restores): the timers are active again all the same.
      const stopped = await run(`sec interrupted\n${watch("interrupted")}\nsec state\ntail -n 1 ${RESTORE_LOG}`);
      assert.match(stopped.interrupted, /^exit=130\nduring: inactive inactive\nafter: active active$/, `${stopped.interrupted}\n${stopped["interrupted-output"]}`);
      assert.match(stopped["interrupted-output"], /the restore FAILED in step [45] \(exit 130\)/);
      assert.match(stopped.state, /result=failed step=[45]$/);
      // Production back as the printed way back says, so the next phase has its database.
      await run(`
aside=$(ls -d ${POSTGRES_PATHS.dataDirectory}.before-restore-* | tail -n 1)
systemctl stop ${POSTGRES_PATHS.unit}
rm -rf ${POSTGRES_PATHS.dataDirectory}
mv "$aside" ${POSTGRES_PATHS.dataDirectory}
systemctl start ${POSTGRES_PATHS.unit}
q "select count(*) from orders"
`);

      // 6. The bucket unreachable: WAL waits up to the cap, then pgBackRest drops it; PostgreSQL keeps running.
      //    pgBackRest retries an unreachable endpoint for io-timeout and archive_command waits archive-timeout
      //    (60 s each): 5 s here, so the queue fills in seconds rather than many minutes.
      await run(`sed -i 's/^start-fast=y$/start-fast=y\\nio-timeout=5/; s/^archive-async=y$/archive-async=y\\narchive-timeout=5/' ${BACKUPS.pgbackrestConf}
grep -E '^(io|archive)-timeout=5$' ${BACKUPS.pgbackrestConf} | wc -l | grep -qx 2`);
      await s3.stop();
      try {
        const outage = await run(`
sec outage
max=0
bytes=0
for i in $(seq 1 240); do
  # New WAL segments until the queue is two past the cap: enough for pgBackRest to drop, no more.
  if ((bytes < ${CAP_BYTES} + 2 * 16777216)); then
    q "insert into orders (id) select g from generate_series($((i * 10000)), $((i * 10000 + 2000))) g" >/dev/null
    runuser -u postgres -- psql -X -A -t -q -p ${port} -d postgres -c "select pg_switch_wal()" >/dev/null
  fi
  # The test starts it far more often than its timer would: past systemd's start rate limit.
  systemctl reset-failed leaninfra-wal-queue.service 2>/dev/null
  systemctl start leaninfra-wal-queue.service
  bytes=$(awk '$1 == "leaninfra_wal_archive_queue_bytes" { print $2 }' ${BACKUPS.metrics.walArchive})
  if ((bytes > max)); then max=$bytes; fi
  if grep -qa 'dropped WAL file' /var/log/pgbackrest/main-archive-push*.log 2>/dev/null; then break; fi
  sleep 2
done
echo "max=$max"
sleep 5
systemctl reset-failed leaninfra-wal-queue.service 2>/dev/null
systemctl start leaninfra-wal-queue.service
sec metrics
cat ${BACKUPS.metrics.walArchive}
sec postgres
systemctl is-active ${POSTGRES_PATHS.unit}
q "select count(*) > 0 from orders"
runuser -u postgres -- psql -X -A -t -q -p ${port} -d postgres -c "select failed_count > 0, archived_count > 0 from pg_stat_archiver"
sec warning
grep -ah 'dropped WAL file' /var/log/pgbackrest/main-archive-push*.log | tail -n 1
`, 12 * 60_000);
        const maxSeen = Number(/^max=(\d+)$/m.exec(outage.outage)![1]);
        const m = parsePromText(outage.metrics);
        console.log(`  outage: queue peaked at ${maxSeen} bytes (cap ${CAP_BYTES}); after the drop ${m.get("leaninfra_wal_archive_queue_bytes")} bytes; ${outage.warning}`);
        assert.match(outage.warning, /WARN: dropped WAL file '[0-9A-F]{24}' because archive queue exceeded 64MB/);
        assert.ok(maxSeen >= CAP_BYTES, `the queue grew to the cap: ${maxSeen} of ${CAP_BYTES}`);
        assert.ok(m.get("leaninfra_wal_archive_queue_bytes")! < CAP_BYTES, "the dropped WAL left the queue");
        const dropAt = m.get("leaninfra_wal_archive_last_drop_timestamp_seconds")!;
        assert.ok(dropAt > Date.now() / 1000 - 900 && dropAt <= Date.now() / 1000 + 5, `last drop ${dropAt}`);
        assert.equal(outage.postgres, "active\nt\nt|t", "PostgreSQL runs, writes, and reports the archive failures");
      } finally {
        await s3.restart();
      }
    });
  });
});
