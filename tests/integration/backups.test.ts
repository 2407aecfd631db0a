import test from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { BACKUPS, BACKUPS_PATHS, BackupsSettings, DEFAULT_SCHEDULES, backupsRole } from "../../components/backups";
import { renderRoleBundle } from "../../components/host/bundle";
import { POSTGRES_PATHS, postgresRole } from "../../components/postgres";
import { RunResult, show, withDebianRoot } from "../lib/debian-root";
import { parsePromText } from "../lib/prom-text";
import { S3Server, freePort } from "../lib/s3-server";
import { startScratchCluster } from "../lib/scratch-cluster";
import { sections } from "../lib/sections";


const DB = "shop";
const PASSPHRASE = `Cipher${randomBytes(16).toString("hex")}`;
const CHUNK_MIB = 5;
const SCRATCH_PORT = 25499;
const SCRATCH = `${BACKUPS.scratchDir}-pitr`;

/** The shell helpers every phase starts with. */
const prelude = (port: number) => `set -uo pipefail
cd /
sec() { printf '\\n== %s\\n' "$1"; }
q() { runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -p ${port} -d ${DB} -c "$1"; }
backrest() { runuser -u postgres -- pgbackrest --stanza=${BACKUPS.stanza} "$@"; }
`;

function secretsAbsent(r: RunResult, s3: S3Server) {
  for (const secret of [PASSPHRASE, s3.secretKey]) {
    assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), `a secret was printed:\n${show(r)}`);
  }
}

function metrics(text: string, job: string): { success: number; lastSuccess: number; lastRun: number; duration: number; repoSize?: number; dbSize?: number } {
  const m = parsePromText(text);
  const get = (name: string) => m.get(`leaninfra_backup_${name}{type="${job}"}`);
  return {
    success: get("success")!,
    lastSuccess: get("last_success_timestamp_seconds")!,
    lastRun: get("last_run_timestamp_seconds")!,
    duration: get("duration_seconds")!,
    repoSize: get("repo_size_bytes"),
    dbSize: get("database_size_bytes"),
  };
}

test("the backups role archives WAL to an S3 server, backs up, restores to a point in time, dumps, and reports failures plainly", { timeout: 15 * 60_000 }, async () => {
  const s3 = await S3Server.start({ debugLog: true });
  const port = await freePort();
  const settings: BackupsSettings = {
    s3: { endpoint: s3.endpoint, region: "auto", bucket: s3.bucket, accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey },
    cipherPassphrase: PASSPHRASE,
    backupRetentionDays: 35,
    backupLockDays: 14,
    postgresDatabase: DB,
    vcpus: 2,
    port,
    uploadChunkMiB: CHUNK_MIB,
    storageCaPem: s3.caPem,
  };
  try {
    await withDebianRoot(async (root) => {
      const pgPassword = `Pg${randomBytes(12).toString("hex")}`;
      fs.writeFileSync(root.hostPath("/root/postgres.sh"), renderRoleBundle(postgresRole({ memoryMb: 2048, vcpus: 2, postgresMaxConnections: 0, postgresDatabase: DB, postgresUser: "shop_app", password: pgPassword, port })));
      fs.writeFileSync(root.hostPath("/root/backups.sh"), renderRoleBundle(backupsRole(settings)));
      const wrong = renderRoleBundle(backupsRole({ ...settings, cipherPassphrase: `Wrong${randomBytes(16).toString("hex")}` }));
      fs.writeFileSync(root.hostPath("/root/wrong-pass.sh"), wrong);

      // 1. Everything real on the host's network: both roles applied (the backups role twice), data,
      //    full backup, later writes with a timestamp between, check, diff, verify, dump, PITR restore.
      let started = Date.now();
      const main = root.run(`${prelude(port)}
sec postgres
bash /root/postgres.sh >/root/postgres.log 2>&1; echo "exit=$?"
sec first
bash /root/backups.sh 2>&1; echo "exit=$?"
sec second
bash /root/backups.sh 2>&1; echo "exit=$?"
sec files
stat -c '%n %a %U:%G' ${BACKUPS.pgbackrestConf} ${BACKUPS.secretsFile} ${BACKUPS_PATHS.s3cmdConfig} ${BACKUPS_PATHS.archivingConf} ${BACKUPS.bin.backup}
sec archiving
q "select name || '=' || setting || '|' || sourcefile from pg_settings where name in ('archive_command', 'archive_timeout') order by name"
sec timers
for t in full diff check verify dump; do systemctl is-enabled leaninfra-backup@$t.timer; done; systemctl is-enabled leaninfra-drill.timer
sec units
printf '#!/bin/sh\\nexit 0\\n' >/usr/local/sbin/leaninfra-drill && chmod 755 /usr/local/sbin/leaninfra-drill
systemd-analyze verify leaninfra-backup@full.service leaninfra-backup@dump.service leaninfra-drill.service /etc/systemd/system/leaninfra-backup@*.timer /etc/systemd/system/leaninfra-drill.timer 2>&1; echo "exit=$?"
rm /usr/local/sbin/leaninfra-drill
sec calendars
for spec in ${Object.values(DEFAULT_SCHEDULES).map((c) => `'${c}'`).join(" ")}; do systemd-analyze calendar "$spec" >/dev/null 2>&1 && echo ok || echo "bad: $spec"; done
sec data
q "create table orders (id int primary key, phase text not null)"
q "insert into orders select g, 'before-backup' from generate_series(1, 100) g"
# Incompressible rows, so backup files and the dump are larger than one ${CHUNK_MIB} MiB upload part.
q "create table blobs as select g as id, (select decode(string_agg(md5(g::text || random()::text || i::text), ''), 'hex') from generate_series(1, 64) i) as bytes from generate_series(1, 12000) g"
q "select pg_size_pretty(pg_relation_size('blobs'))"
sec full
leaninfra-backup full; echo "exit=$?"
sec later-writes
q "insert into orders select g, 'after-backup' from generate_series(101, 150) g"
sleep 1
target=$(q "select clock_timestamp()")
sleep 1
q "insert into orders select g, 'too-late' from generate_series(151, 170) g"
echo "$target"
sec check
leaninfra-backup check; echo "exit=$?"
sec diff
leaninfra-backup diff; echo "exit=$?"
sec verify
leaninfra-backup verify; echo "exit=$?"
sec dump
leaninfra-backup dump; echo "exit=$?"
sec info
backrest --output=json info | jq -r '.[0].backup[] | .type' | paste -sd ' '
sec restore
mkdir -p ${SCRATCH} && chown postgres:postgres ${SCRATCH} && chmod 700 ${SCRATCH}
started=$(date +%s%3N)
backrest --pg1-path=${SCRATCH} --type=time "--target=$target" --target-action=promote --log-level-console=warn restore; echo "restore-exit=$?"
${startScratchCluster({ dir: SCRATCH, port: SCRATCH_PORT, sharedBuffers: "32MB", startTimeoutSeconds: 120 })}; echo "start-exit=$?"
for _ in $(seq 600); do
  [ "$(runuser -u postgres -- psql -X -A -t -p ${SCRATCH_PORT} -d ${DB} -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ] && break
  sleep 0.2
done
echo "restored-in-ms=$(( $(date +%s%3N) - started ))"
sec restored
runuser -u postgres -- psql -X -A -t -p ${SCRATCH_PORT} -d ${DB} -c "select phase || '=' || count(*) from orders group by phase order by phase" 2>&1
runuser -u postgres -- psql -X -A -t -p ${SCRATCH_PORT} -d ${DB} -c "select count(*) from blobs" 2>&1
runuser -u postgres -- ${POSTGRES_PATHS.bin}/pg_ctl -D ${SCRATCH} -m fast -w stop >/dev/null
sec dump-restore
key=$(s3cmd -c ${BACKUPS_PATHS.s3cmdConfig} ls s3://${s3.bucket}/${BACKUPS.dumpsPrefix} | awk '{ print $4 }' | tail -n 1)
echo "$key"
pass=$(sed -n 's/^PGBACKREST_REPO1_CIPHER_PASS=//p' ${BACKUPS.secretsFile})
q "create database dump_check" >/dev/null 2>&1 || runuser -u postgres -- psql -X -q -p ${port} -d postgres -c "create database dump_check"
s3cmd -c ${BACKUPS_PATHS.s3cmdConfig} --no-progress get "$key" - 2>/dev/null | PASS=$pass openssl enc -d -aes-256-cbc -pbkdf2 -iter 200000 -md sha256 -pass env:PASS |
  runuser -u postgres -- pg_restore -p ${port} -d dump_check --no-owner; echo "pg_restore-exit=$?"
runuser -u postgres -- psql -X -A -t -p ${port} -d dump_check -c "select phase || '=' || count(*) from orders group by phase order by phase"
sec metrics-backup
cat ${BACKUPS.metrics.backup}
sec metrics-dump
cat ${BACKUPS.metrics.dump}
sec log
cat ${BACKUPS.logs.backup}
stat -c '%a %U:%G' ${BACKUPS.logs.backup}
pg_ctlcluster 17 main stop
`, { timeoutMs: 10 * 60_000 });
      console.log(`roles, backups, restore and dump: ${Date.now() - started} ms, exit ${main.code}`);
      assert.equal(main.code, 0, show(main));
      secretsAbsent(main, s3);
      const out = sections(main.stdout);
      assert.equal(out.postgres, "exit=0", fs.existsSync(root.hostPath("/root/postgres.log")) ? fs.readFileSync(root.hostPath("/root/postgres.log"), "utf8") : "");
      for (const line of [
        "[backups] installed package pgbackrest",
        "[backups] installed package s3cmd",
        `[backups] created file ${BACKUPS.pgbackrestConf} (640 root:postgres)`,
        `[backups] created file ${BACKUPS.secretsFile} (600 root:root)`,
        `[backups] created pgBackRest stanza main in s3://${s3.bucket}/pgbackrest`,
        `[backups] reloaded PostgreSQL: WAL is archived to s3://${s3.bucket}/pgbackrest (archive_timeout 60 s)`,
        "[backups] enabled leaninfra-backup@full.timer",
        "[backups] enabled leaninfra-drill.timer",
      ]) {
        assert.ok(out.first.split("\n").includes(line), `missing ${JSON.stringify(line)}:\n${out.first}`);
      }
      assert.match(out.first, /exit=0$/, out.first);
      assert.equal(out.second, "[backups] no changes\nexit=0", "a second run changes nothing");
      assert.equal(
        out.files,
        [
          `${BACKUPS.pgbackrestConf} 640 root:postgres`,
          `${BACKUPS.secretsFile} 600 root:root`,
          `${BACKUPS_PATHS.s3cmdConfig} 600 root:root`,
          `${BACKUPS_PATHS.archivingConf} 644 root:root`,
          `${BACKUPS.bin.backup} 755 root:root`,
        ].join("\n"),
      );
      assert.equal(
        out.archiving,
        `archive_command=pgbackrest --stanza=main archive-push %p|${BACKUPS_PATHS.archivingConf}\narchive_timeout=60|${BACKUPS_PATHS.archivingConf}`,
      );
      assert.equal(out.timers, Array(6).fill("enabled").join("\n"));
      assert.match(out.units, /exit=0$/, `systemd-analyze verify:\n${out.units}`);
      assert.equal(out.calendars, Array(6).fill("ok").join("\n"), "systemd parses every default OnCalendar expression");

      assert.match(out.full, /^leaninfra-backup full: ok in \d+ s: backup \d{8}-\d{6}F \(full\), \d+ bytes added to s3:\/\/leaninfra-backups\/pgbackrest, database \d+ bytes\nexit=0$/, out.full);
      assert.match(out.check, /^leaninfra-backup check: ok in \d+ s: WAL archiving to s3:\/\/leaninfra-backups\/pgbackrest works\nexit=0$/, out.check);
      assert.match(out.diff, /backup \d{8}-\d{6}F_\d{8}-\d{6}D \(diff\)[^\n]*\nexit=0$/, out.diff);
      assert.match(out.verify, /: ok in \d+ s: every backup and WAL file in s3:\/\/leaninfra-backups\/pgbackrest reads back with its checksum\nexit=0$/, `${out.verify}\n${main.stderr}`);
      assert.match(out.dump, /^leaninfra-backup dump: ok in \d+ s: s3:\/\/leaninfra-backups\/dumps\/shop-\d{8}T\d{6}Z\.pgdump\.enc \(\d+ bytes: pg_dump -Fc, encrypted\)\nexit=0$/, out.dump);
      assert.equal(out.info, "full diff");

      // Point in time: the rows committed before the target, none after it.
      assert.match(out.restore, /restore-exit=0\nstart-exit=0\nrestored-in-ms=\d+/, out.restore);
      console.log(`point-in-time restore and promotion: ${/restored-in-ms=(\d+)/.exec(out.restore)?.[1]} ms`);
      assert.equal(out.restored, "after-backup=50\nbefore-backup=100\n12000", `the restored cluster:\n${out.restored}`);
      // The dump restores too, with everything up to the moment it was taken.
      assert.match(out["dump-restore"], /^s3:\/\/leaninfra-backups\/dumps\/shop-\d{8}T\d{6}Z\.pgdump\.enc\npg_restore-exit=0\nafter-backup=50\nbefore-backup=100\ntoo-late=20$/, out["dump-restore"]);

      // Metrics: node_exporter's format, one sample per job, success.
      const now = Date.now() / 1000;
      for (const job of ["full", "diff", "check", "verify"]) {
        const m = metrics(out["metrics-backup"], job);
        assert.equal(m.success, 1, `${job} success`);
        assert.ok(Math.abs(m.lastSuccess - now) < 600 && m.lastSuccess === m.lastRun, `${job} last success ${m.lastSuccess}`);
        assert.ok(m.duration >= 0 && m.duration < 300, `${job} duration ${m.duration}`);
      }
      const full = metrics(out["metrics-backup"], "full");
      assert.ok(full.repoSize! > 12e6 && full.dbSize! > full.repoSize!, `full sizes: repo ${full.repoSize}, database ${full.dbSize}`);
      assert.ok(metrics(out["metrics-backup"], "diff").repoSize! < full.repoSize!, "a diff adds less than the full");
      const dump = parsePromText(out["metrics-dump"]);
      assert.equal(dump.get(`leaninfra_dump_success{database="${DB}"}`), 1);
      assert.ok(dump.get(`leaninfra_dump_size_bytes{database="${DB}"}`)! > 12e6);
      const log = out.log.split("\n");
      assert.equal(log.length, 6, out.log);
      assert.match(log[0], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ full ok \d+s backup /);
      assert.equal(log[5], "640 root:adm");

      // R2's multipart rule: every part but the last the same size. Both clients used multipart here.
      const uploads = s3.partSizes();
      const multipart = [...uploads.entries()].filter(([, parts]) => parts.length > 1);
      assert.ok(multipart.some(([key]) => key.startsWith("pgbackrest/backup/")), `a pgBackRest multipart upload: ${[...uploads.keys()].join(", ")}`);
      assert.ok(multipart.some(([key]) => key.startsWith(BACKUPS.dumpsPrefix)), `a dump multipart upload: ${[...uploads.keys()].join(", ")}`);
      for (const [key, parts] of multipart) {
        const last = parts[parts.length - 1];
        assert.ok(parts.slice(0, -1).every((size) => size === CHUNK_MIB * 1024 * 1024) && last <= CHUNK_MIB * 1024 * 1024, `${key}: parts ${parts.join(", ")}`);
      }

      // 2. The bucket unreachable: a fast, plain failure and the failure metric; the last success stays.
      await s3.stop();
      started = Date.now();
      const down = root.run(`${prelude(port)}
sec full
leaninfra-backup full; echo "exit=$?"
sec metrics
cat ${BACKUPS.metrics.backup}
sec log
tail -n 1 ${BACKUPS.logs.backup}
`);
      console.log(`backup with the S3 server stopped: ${Date.now() - started} ms`);
      await s3.restart();
      assert.equal(down.code, 0, show(down));
      const d = sections(down.stdout);
      assert.equal(d.full, "exit=1");
      assert.match(down.stderr, /leaninfra-backup full: FAILED after \d+ s: the bucket's endpoint https:\/\/localhost:\d+ does not answer \(curl: \(7\) Failed to connect to localhost port \d+[^)]*\): check the server's network and R2's status; nothing was backed up/, down.stderr);
      const failed = metrics(d.metrics, "full");
      assert.equal(failed.success, 0);
      assert.equal(failed.lastSuccess, full.lastSuccess, "the last success is kept");
      assert.equal(failed.repoSize, full.repoSize, "the last backup's size is kept");
      assert.ok(failed.lastRun > full.lastRun);
      assert.equal(metrics(d.metrics, "diff").success, 1, "other jobs' samples are untouched");
      assert.match(d.log, /Z full FAILED \d+s: the bucket's endpoint/);

      // 3. A wrong passphrase: the role stops with the reason, and so does a backup. Then the right role
      //    again, and a damaged file in the bucket: verify fails (pgBackRest's own verify exits 0 there).
      const label = /backup (\d{8}-\d{6}F) /.exec(out.full)![1];
      const base = `pgbackrest/backup/main/${label}/pg_data/base`;
      const damaged = fs
        .readdirSync(s3.objectPath(base), { recursive: true, encoding: "utf8" })
        .map((f) => `${base}/${f}`)
        .find((key) => fs.statSync(s3.objectPath(key)).isFile() && fs.statSync(s3.objectPath(key)).size > 8192)!;
      const bytes = fs.readFileSync(s3.objectPath(damaged));
      bytes[Math.floor(bytes.length / 2)] ^= 0xff;
      fs.writeFileSync(s3.objectPath(damaged), bytes);
      started = Date.now();
      const broken = root.run(`${prelude(port)}
pg_ctlcluster 17 main start >/dev/null
sec wrong-role
bash /root/wrong-pass.sh 2>&1; echo "exit=$?"
sec wrong-backup
leaninfra-backup full 2>&1; echo "exit=$?"
sec metrics
cat ${BACKUPS.metrics.backup}
sec right-role
bash /root/backups.sh 2>&1; echo "exit=$?"
sec damaged
leaninfra-backup verify 2>&1; echo "exit=$?"
sec verify-metric
grep '^leaninfra_backup_success{type="verify"}' ${BACKUPS.metrics.backup}
pg_ctlcluster 17 main stop
`);
      console.log(`wrong passphrase, the role again, verify of a damaged file: ${Date.now() - started} ms`);
      assert.equal(broken.code, 0, show(broken));
      secretsAbsent(broken, s3);
      const b = sections(broken.stdout);
      assert.match(b["wrong-role"], /s3:\/\/leaninfra-backups\/pgbackrest does not decrypt with this passphrase: it was created with another repo1-cipher-pass/, b["wrong-role"]);
      assert.match(b["wrong-role"], /\[backups\] FAILED during apply/);
      assert.match(b["wrong-role"], /exit=1$/);
      assert.match(
        b["wrong-backup"],
        /^leaninfra-backup full: FAILED after \d+ s: the repository s3:\/\/leaninfra-backups\/pgbackrest does not decrypt with this passphrase: repo1-cipher-pass in \/etc\/pgbackrest\/pgbackrest\.conf is not the passphrase the repository was created with \(ERROR: \[029\]: unable to load info file/m,
        b["wrong-backup"],
      );
      assert.match(b["wrong-backup"], /exit=1$/);
      assert.equal(metrics(b.metrics, "full").success, 0);
      assert.match(b["right-role"], new RegExp(`^\\[backups\\] updated file ${BACKUPS.pgbackrestConf.replace(/\./g, "\\.")} `, "m"), b["right-role"]);
      assert.match(b["right-role"], /exit=0$/, b["right-role"]);
      assert.match(
        b.damaged,
        new RegExp(`leaninfra-backup verify: FAILED after \\d+ s: pgBackRest verify found damaged or missing files in s3://leaninfra-backups/pgbackrest: [^\\n]*${label}[^\\n]*checksum invalid: 1`),
        b.damaged,
      );
      assert.match(b.damaged, /exit=1$/);
      assert.equal(b["verify-metric"], 'leaninfra_backup_success{type="verify"} 0');
    });
  } finally {
    s3.dispose();
  }
});
