/**
 * `node --require ts-node/register/transpile-only bench/backup.ts [--size-mb N] [--json]`: backup and
 * restore measured on a database of about N MB (default 1024), pgBackRest beside pg_dump/pg_restore.
 * In a Debian 13 root (the postgres and backups roles applied as `pulumi up` would) against a real
 * S3 server (versitygw) on loopback: prints the full backup time, the restore time (RTO: download,
 * WAL replay and promotion until the restored database answers), the WAL archive delay (from a
 * segment's switch to its arrival in the bucket; the RPO is at most archive_timeout plus this), and
 * pg_dump/pg_restore of the same data to a local file. The data is pgbench's (tables and indexes of a
 * realistic shape; it compresses well, so the bucket holds far fewer bytes than the database).
 * Loopback has no bandwidth limit: over the internet to R2, transfer time adds to every figure but
 * the local pg_dump. Needs root and what the integration tests need.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { BACKUPS, backupsRole } from "../components/backups";
import { renderRoleBundle } from "../components/host/bundle";
import { POSTGRES_PATHS, postgresRole } from "../components/postgres";
import { RunResult, withDebianRoot } from "../tests/lib/debian-root";
import { S3Server, freePort } from "../tests/lib/s3-server";
import { startScratchCluster } from "../tests/lib/scratch-cluster";
import { sections } from "../tests/lib/sections";

const DB = "bench";
const SCRATCH = `${BACKUPS.scratchDir}-bench`;
const SCRATCH_PORT = 25498;
/** pgbench's scale 1 is about 15 MB of tables and indexes. */
const MB_PER_SCALE = 15;
const WAL_SAMPLES = 5;

const show = (r: RunResult) => `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;

function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function script(port: number, scale: number): string {
  const psql = (db: string, p = port) => `runuser -u postgres -- psql -X -A -t -q -p ${p} -d ${db}`;
  return `set -euo pipefail
cd /
sec() { printf '\\n== %s\\n' "$1"; }
ms() { date +%s%3N; }
bash /root/postgres.sh >/root/postgres.log 2>&1 || { cat /root/postgres.log >&2; exit 1; }
bash /root/backups.sh >/root/backups.log 2>&1 || { cat /root/backups.log >&2; exit 1; }
bin=${POSTGRES_PATHS.bin}

sec generate
t=$(ms)
runuser -u postgres -- $bin/pgbench -i -q -s ${scale} -p ${port} ${DB} >/root/pgbench-init.log 2>&1
${psql(DB)} -c "vacuum analyze" >/dev/null
echo "ms=$(( $(ms) - t ))"
echo "bytes=$(${psql(DB)} -c "select pg_database_size('${DB}')")"

sec backup
t=$(ms)
leaninfra-backup full >/root/full.log 2>&1 || { cat /root/full.log >&2; exit 1; }
echo "ms=$(( $(ms) - t ))"
runuser -u postgres -- pgbackrest --stanza=${BACKUPS.stanza} --output=json info | jq -r '.[0].backup[-1].info | "repo=\\(.repository.delta)\\nsize=\\(.size)"'

sec wal
# Light write load, and the delay from each segment switch until pg_stat_archiver reports it archived.
runuser -u postgres -- $bin/pgbench -p ${port} -c 2 -T 30 -R 200 ${DB} >/root/pgbench-run.log 2>&1 &
load=$!
sleep 2
for _ in $(seq ${WAL_SAMPLES}); do
  sleep 2
  seg=$(${psql(DB)} -c "select pg_walfile_name(pg_switch_wal())")
  t=$(ms)
  until [ "$(${psql(DB)} -c "select coalesce(last_archived_wal, '') >= '$seg' from pg_stat_archiver")" = t ]; do
    if (( $(ms) - t > 120000 )); then echo "timeout=$seg"; break; fi
    sleep 0.05
  done
  echo "ms=$(( $(ms) - t ))"
done
wait "$load" || true

sec restore
# The latest state from the bucket (backup plus all archived WAL) into a scratch cluster, started
# on another port: the clock stops when the promoted database answers a query.
mkdir -p ${SCRATCH} && chown postgres:postgres ${SCRATCH} && chmod 700 ${SCRATCH}
${psql(DB)} -c "select pg_walfile_name(pg_switch_wal())" >/dev/null
leaninfra-backup check >/dev/null
want=$(${psql(DB)} -c "select count(*) from pgbench_history")
t=$(ms)
runuser -u postgres -- pgbackrest --stanza=${BACKUPS.stanza} --pg1-path=${SCRATCH} --type=immediate --target-action=promote --log-level-console=warn restore
echo "download-ms=$(( $(ms) - t ))"
${startScratchCluster({ dir: SCRATCH, port: SCRATCH_PORT, sharedBuffers: "256MB", startTimeoutSeconds: 3600 })}
until [ "$(${psql(DB, SCRATCH_PORT)} -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.05; done
echo "ms=$(( $(ms) - t ))"
runuser -u postgres -- $bin/pg_ctl -D ${SCRATCH} -m fast -w stop >/dev/null
rm -rf ${SCRATCH}

sec pitr
# The same, replaying every archived WAL segment up to the end (what leaninfra-restore does for "now").
mkdir -p ${SCRATCH} && chown postgres:postgres ${SCRATCH} && chmod 700 ${SCRATCH}
t=$(ms)
runuser -u postgres -- pgbackrest --stanza=${BACKUPS.stanza} --pg1-path=${SCRATCH} --log-level-console=warn restore
${startScratchCluster({ dir: SCRATCH, port: SCRATCH_PORT, sharedBuffers: "256MB", startTimeoutSeconds: 3600 })}
until [ "$(${psql(DB, SCRATCH_PORT)} -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.05; done
echo "ms=$(( $(ms) - t ))"
echo "history=$(${psql(DB, SCRATCH_PORT)} -c "select count(*) from pgbench_history")"
echo "history-now=$want"
runuser -u postgres -- $bin/pg_ctl -D ${SCRATCH} -m fast -w stop >/dev/null
rm -rf ${SCRATCH}

sec pg_dump
t=$(ms)
runuser -u postgres -- $bin/pg_dump -p ${port} -Fc --compress=zstd -f /tmp/bench.dump ${DB}
echo "ms=$(( $(ms) - t ))"
echo "bytes=$(stat -c %s /tmp/bench.dump)"

sec pg_restore
${psql("postgres")} -c "create database restored"
t=$(ms)
runuser -u postgres -- $bin/pg_restore -p ${port} -j 2 -d restored /tmp/bench.dump
echo "ms=$(( $(ms) - t ))"
echo "bytes=$(${psql("postgres")} -c "select pg_database_size('restored')")"

sec dump
t=$(ms)
leaninfra-backup dump >/root/dump.log 2>&1 || { cat /root/dump.log >&2; exit 1; }
echo "ms=$(( $(ms) - t ))"
grep -o '([0-9]* bytes' /root/dump.log | tr -dc 0-9; echo

pg_ctlcluster 17 main stop
`;
}

const kv = (text: string) => Object.fromEntries(text.split("\n").filter((l) => l.includes("=")).map((l) => l.split(/=(.*)/s).slice(0, 2)));
const seconds = (ms: number | string) => (Number(ms) / 1000).toFixed(1);
const mb = (bytes: number | string) => (Number(bytes) / 1024 / 1024).toFixed(0);

async function main(): Promise<void> {
  const sizeMb = Number(option("--size-mb") ?? 1024);
  if (!Number.isInteger(sizeMb) || sizeMb < 20 || sizeMb > 200_000) throw new Error("--size-mb must be a whole number of MB from 20 to 200000");
  const asJson = process.argv.includes("--json");
  const scale = Math.max(1, Math.round(sizeMb / MB_PER_SCALE));

  const s3 = await S3Server.start();
  try {
    const port = await freePort();
    const result = await withDebianRoot((root) => {
      const password = `Bench${randomBytes(12).toString("hex")}`;
      fs.writeFileSync(root.hostPath("/root/postgres.sh"), renderRoleBundle(postgresRole({ memoryMb: 4096, vcpus: 2, postgresMaxConnections: 0, postgresDatabase: DB, postgresUser: "bench_app", password, port })));
      fs.writeFileSync(
        root.hostPath("/root/backups.sh"),
        renderRoleBundle(
          backupsRole({
            s3: { endpoint: s3.endpoint, bucket: s3.bucket, accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey },
            cipherPassphrase: `Bench${randomBytes(16).toString("hex")}`,
            backupRetentionDays: 35,
            postgresDatabase: DB,
            vcpus: 2,
            port,
            storageCaPem: s3.caPem,
          }),
        ),
      );
      const started = Date.now();
      const run = root.run(script(port, scale), { timeoutMs: 3 * 3600_000 });
      if (run.code !== 0) throw new Error(`the benchmark failed:\n${show(run)}`);
      const out = sections(run.stdout);
      const generate = kv(out.generate);
      const backup = kv(out.backup);
      const wal = out.wal.split("\n").filter((l) => l.startsWith("ms=")).map((l) => Number(l.slice(3)));
      const restore = kv(out.restore);
      const pitr = kv(out.pitr);
      const dump = kv(out.pg_dump);
      const pgRestore = kv(out.pg_restore);
      const streamed = out.dump.split("\n");
      return {
        sizeMbRequested: sizeMb,
        pgbenchScale: scale,
        databaseBytes: Number(generate.bytes),
        generateMs: Number(generate.ms),
        pgbackrest: {
          fullBackupMs: Number(backup.ms),
          bucketBytes: Number(backup.repo),
          restoreBackupMs: Number(restore.ms),
          restoreBackupDownloadMs: Number(restore["download-ms"]),
          restoreLatestMs: Number(pitr.ms),
          restoredRowsMatch: pitr.history === pitr["history-now"],
        },
        walArchiveDelayMs: { samples: wal, median: [...wal].sort((a, b) => a - b)[Math.floor(wal.length / 2)], max: Math.max(...wal) },
        pgDump: { dumpMs: Number(dump.ms), fileBytes: Number(dump.bytes), restoreMs: Number(pgRestore.ms), restoredBytes: Number(pgRestore.bytes) },
        dumpToBucket: { ms: Number(streamed[0].slice(3)), bytes: Number(streamed[1]) },
        totalMs: Date.now() - started,
      };
    });
    if (asJson) {
      console.log(JSON.stringify(result, null, 2));
      return;
    }
    const p = result.pgbackrest;
    const d = result.pgDump;
    console.log(`\nBackup and restore of a ${mb(result.databaseBytes)} MB database (pgbench scale ${result.pgbenchScale}), S3 server on loopback:`);
    console.log(`                        pgBackRest (to the bucket)              pg_dump -Fc (local file)`);
    console.log(`  backup                ${seconds(p.fullBackupMs).padStart(6)} s  (${mb(p.bucketBytes)} MB in the bucket)`.padEnd(62) + `${seconds(d.dumpMs).padStart(6)} s  (${mb(d.fileBytes)} MB file)`);
    console.log(`  restore (RTO)         ${seconds(p.restoreBackupMs).padStart(6)} s  (download ${seconds(p.restoreBackupDownloadMs)} s)`.padEnd(62) + `${seconds(d.restoreMs).padStart(6)} s  (pg_restore -j 2)`);
    console.log(`  restore + all WAL     ${seconds(p.restoreLatestMs).padStart(6)} s  (rows ${p.restoredRowsMatch ? "match" : "DIFFER from"} production)`.padEnd(62) + `n/a: a dump has no WAL`);
    console.log(`  WAL archive delay     median ${result.walArchiveDelayMs.median} ms, max ${result.walArchiveDelayMs.max} ms (${result.walArchiveDelayMs.samples.length} segment switches under load)`);
    console.log(`                        RPO: at most archive_timeout (60 s) + this; a dump's RPO is its age (up to a month)`);
    console.log(`  dump to the bucket    ${seconds(result.dumpToBucket.ms)} s (leaninfra-backup dump: pg_dump | openssl | s3cmd, ${mb(result.dumpToBucket.bytes)} MB)`);
    console.log(`  data generation ${seconds(result.generateMs)} s, whole run ${seconds(result.totalMs)} s`);
  } finally {
    s3.dispose();
  }
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
