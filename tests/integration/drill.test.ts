import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { baseRole } from "../../components/base";
import { renderRoleBundle } from "../../components/host/bundle";
import { LAYOUT } from "../../components/host/layout";
import { POSTGRES_PATHS, PostgresSettings, postgresRole } from "../../components/postgres";
import { BACKUPS } from "../../components/backups/layout";
import { BACKUPS_PATHS, BackupsSettings, renderArchivingConf, renderBackupsSecretsEnv, renderPgbackrestConf } from "../../components/backups/pgbackrest";
import { DRILL_CONTAINER_NAME, DrillSettings, drillScript, restoreScript } from "../../components/backups/drill";
import { DRILL_SERVICE, renderDrillService } from "../../components/backups/units";
import { DebianRoot, RunResult, show } from "../lib/debian-root";
import { S3Server, freePort } from "../lib/s3-server";
import { withBootedRoot } from "../lib/booted-root";
import { appRole } from "../../components/app";
import { RELEASES, ensureTestImages } from "../fixtures/test-app/images";
import { SECRETS, applyRole, makeTestPki, prepareHost, testAppSettings } from "../fixtures/test-app/scenario";
import { sections } from "../lib/sections";


// ---------------------------------------------------------------------------------------------------
// Production as the roles leave it: base and postgres role bundles, then the backups role's own
// pgbackrest.conf, secrets file and archiving conf.d file (its renderers), pgBackRest and jq from Debian,
// against a real S3-compatible server (tests/lib/s3-server.ts: versitygw on loopback, TLS verified).
// ---------------------------------------------------------------------------------------------------
const HOST_NAME = "shop";
const DB = "app";
const CIPHER_PASS = `cipher${randomBytes(16).toString("hex")}`;

function postgresSettings(port: number): PostgresSettings {
  return { memoryMb: 2048, vcpus: 2, postgresMaxConnections: 0, postgresDatabase: DB, postgresUser: "app", password: `App-${randomBytes(12).toString("hex")}`, port };
}

function backupsSettings(s3: S3Server, port: number, cipherPassphrase = CIPHER_PASS): BackupsSettings {
  return {
    s3: { endpoint: s3.endpoint, bucket: s3.bucket, accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey },
    cipherPassphrase,
    backupRetentionDays: 35,
    postgresDatabase: DB,
    vcpus: 2,
    port,
    storageCaPem: s3.caPem,
  };
}

/** Shell helpers every phase starts with: production's psql, pgbackrest with the secrets, a state snapshot. */
const prelude = (port: number) => `set -uo pipefail
cd /
sec() { printf '\\n== %s\\n' "$1"; }
q() { runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -p ${port} -d ${DB} -c "$1"; }
backrest() { runuser -u postgres -- pgbackrest --stanza=${BACKUPS.stanza} "$@"; }
counts() { q "select string_agg(t || '=' || n, ' ' order by t) from (
  select 'plans' t, count(*) n from plans union all select 'users', count(*) from users union all
  select 'orders', count(*) from orders union all select 'billing.Invoices', count(*) from billing.\\"Invoices\\") x"; }
# What must never change when a drill runs: the rows, the server process, its data directory and port.
prod_state() {
  echo "rows: $(counts)"
  echo "server: pid $(head -n 1 ${POSTGRES_PATHS.dataDirectory}/postmaster.pid) started $(q 'select pg_postmaster_start_time()')"
  echo "identity: $(q 'select system_identifier from pg_control_system()') timeline $(q 'select timeline_id from pg_control_checkpoint()')"
  echo "data dir: $(stat -c '%i %U:%G %a' ${POSTGRES_PATHS.dataDirectory}) $(q 'show data_directory')"
  echo "port: $(ss -H -ltn 'sport = :${port}' | wc -l) listening, archive_mode $(q 'show archive_mode')"
}
start_production() { pg_ctlcluster 17 main status >/dev/null 2>&1 || pg_ctlcluster 17 main start; }
stop_production() { pg_ctlcluster 17 main stop -m fast >/dev/null 2>&1 || true; }
trap stop_production EXIT
`;

/** Schema and rows of the test app: small tables (compared exactly), a larger one, an unlogged one, a quoted schema. */
const SEED = `CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO plans VALUES (1, 'free'), (2, 'pro'), (3, 'team');
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO users (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, 50) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id int NOT NULL, total numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO orders (user_id, total) SELECT g % 50 + 1, g FROM generate_series(1, 5000) g;
CREATE UNLOGGED TABLE sessions (id int);
INSERT INTO sessions SELECT generate_series(1, 100);
CREATE SCHEMA billing;
CREATE TABLE billing."Invoices" (id int);
INSERT INTO billing."Invoices" SELECT generate_series(1, 300);`;

/** The full setup, run once: roles, pgBackRest, data, stanza, a full backup, then more rows archived as WAL. */
function setupScript(port: number): string {
  return `${prelude(port)}
set -e
export DEBIAN_FRONTEND=noninteractive
bash /root/base.sh >/dev/null
bash /root/postgres.sh >/dev/null
apt-get install -y -qq --no-install-recommends pgbackrest jq >/dev/null
install -d -m 0755 /etc/pgbackrest
install -m 0640 -g postgres /root/pgbackrest.conf ${BACKUPS.pgbackrestConf}
install -m 0644 /root/s3-ca.pem ${BACKUPS_PATHS.storageCaFile}
install -m 0600 /root/backups.env ${BACKUPS.secretsFile}
install -m 0644 /root/archiving.conf ${BACKUPS_PATHS.archivingConf}
start_production
pg_ctlcluster 17 main reload
q "$(cat /root/seed.sql)"
backrest stanza-create
backrest check
backrest --type=full backup
# Rows written after the backup reach the repository only as archived WAL.
q "INSERT INTO orders (user_id, total) SELECT g % 50 + 1, g FROM generate_series(1, 100) g"
q "INSERT INTO users (email) VALUES ('after-backup@example.com')"
backrest check
sec state
prod_state
`;
}

/**
 * Run inside a container (python3 is in the test app's image): the drill's settings it sees, its routes,
 * and how a TCP connection to each host:port argument ends: "connected", or the errno (ENETUNREACH: no
 * route at all; a timeout would read "timeout", not assumed to mean anything).
 */
const PROBE = String.raw`import errno, json, os, socket, sys
def connect(target):
    host, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, int(port)))
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
routes = []
with open("/proc/net/route") as f:
    for line in f.readlines()[1:]:
        fields = line.split()
        dest, mask = int(fields[1], 16), int(fields[7], 16)
        routes.append("%s/%d" % (socket.inet_ntoa(dest.to_bytes(4, "little")), bin(mask).count("1")))
print(json.dumps({
    "env": {k: os.environ.get(k) for k in ["LEANINFRA_DRILL", "MAIL_DELIVERY", "GREETING", "APP_MODE", "REDIS_URL"]},
    "database_url_host": os.environ.get("DATABASE_URL", "").rsplit("@", 1)[-1].split("/")[0],
    "routes": " ".join(routes) + " only",
    "connect": {t: connect(t) for t in sys.argv[1:]},
}))
`;

function drillSettings(port: number, over: Partial<DrillSettings> = {}): DrillSettings {
  return { postgresDatabase: DB, productionPort: port, drillFreshnessQuery: "SELECT max(created_at) FROM orders", drillMaxDataAgeMinutes: 30, ...over };
}

function install(root: { hostPath(rootPath: string): string }, file: string, content: string, mode = 0o755): void {
  fs.mkdirSync(path.dirname(root.hostPath(file)), { recursive: true });
  fs.writeFileSync(root.hostPath(file), content, { mode });
  fs.chmodSync(root.hostPath(file), mode);
}

function metrics(text: string): Record<string, number> {
  return Object.fromEntries(text.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => [l.split(" ")[0], Number(l.split(" ")[1])]));
}

describe("leaninfra-drill and leaninfra-restore: real PostgreSQL 17, pgBackRest 2.55 and an S3 server, in a Debian 13 root", { timeout: 20 * 60_000 }, () => {
  let s3: S3Server;
  let root: DebianRoot;
  let port: number;
  let stateAfterSetup = "";

  before(async () => {
    const started = Date.now();
    s3 = await S3Server.start();
    root = DebianRoot.create();
    port = await freePort();
    install(root, "/root/base.sh", renderRoleBundle(baseRole({ adminUser: "ops" })), 0o644);
    install(root, "/root/postgres.sh", renderRoleBundle(postgresRole(postgresSettings(port))), 0o644);
    install(root, "/root/pgbackrest.conf", renderPgbackrestConf(backupsSettings(s3, port)), 0o644);
    install(root, "/root/s3-ca.pem", s3.caPem, 0o644);
    install(root, "/root/backups.env", renderBackupsSecretsEnv(backupsSettings(s3, port)), 0o600);
    install(root, "/root/archiving.conf", renderArchivingConf(), 0o644);
    install(root, "/root/seed.sql", SEED, 0o644);
    install(root, BACKUPS.bin.drill, drillScript(drillSettings(port)));
    install(root, BACKUPS.bin.restore, restoreScript({ hostname: HOST_NAME, postgresDatabase: DB, productionPort: port, recoveryTimeoutMinutes: 2 }));
    const setup = root.run(setupScript(port), { timeoutMs: 10 * 60_000 });
    assert.equal(setup.code, 0, show(setup));
    stateAfterSetup = sections(setup.stdout).state;
    console.log(`setup (roles, pgBackRest, data, full backup, WAL archived): ${Date.now() - started} ms\n${stateAfterSetup}`);
  }, { timeout: 12 * 60_000 });

  after(() => {
    root?.dispose();
    s3?.dispose();
  });

  it("restores the latest backup into a scratch cluster, compares it with production, records RTO and RPO, and leaves production alone", () => {
    const started = Date.now();
    const r = root.run(`${prelude(port)}
start_production
sec before
prod_state
sec drill
${BACKUPS.bin.drill} 2>&1; echo "exit=$?"
sec after
prod_state
sec leftovers
ls -A ${LAYOUT.data}; ss -H -ltn 'sport = :${BACKUPS.scratchPort}' | wc -l
sec metrics
cat ${BACKUPS.metrics.drill}; stat -c '%a' ${BACKUPS.metrics.drill}
sec log
cat ${BACKUPS.logs.drill}
sec now
date +%s
`);
    console.log(`drill of the latest backup: ${Date.now() - started} ms`);
    const out = sections(r.stdout);
    assert.equal(r.code, 0, show(r));
    assert.match(out.drill, /exit=0$/, out.drill);
    assert.match(out.drill, /\[drill [\d:]+\] 1 backup\(s\); the newest is \d{8}-\d{6}F/);
    // Every table, the post-backup rows included (replayed from the archived WAL), and the unlogged one present.
    assert.match(out.drill, /^ {4}billing\."Invoices" +300 +300 {2}within 5%$/m);
    assert.match(out.drill, /^ {4}public\.orders +5100 +5100 {2}within 5%$/m);
    assert.match(out.drill, /^ {4}public\.plans +3 +3 {2}exact$/m);
    assert.match(out.drill, /^ {4}public\.users +51 +51 {2}exact$/m);
    assert.match(out.drill, /^ {4}public\.sessions +unlogged +unlogged {2}present \(unlogged: empty after any restore\)$/m);
    assert.match(out.drill, /app check SKIPPED: the app role is not installed \(\/etc\/leaninfra\/app\/deploy\.conf is missing\); only the database was checked/);
    assert.match(out.drill, /drill PASSED in [\d.]+s: backup \d{8}-\d{6}F restored, 5 table\(s\) checked, app: skipped \(no app role\)/);

    // Production: same rows, same server process, same data directory, still on its port with archiving on.
    assert.equal(out.before, stateAfterSetup.replace(/^server: .*$/m, out.before.match(/^server: .*$/m)![0]), "the setup's rows are what the drill saw");
    assert.equal(out.after, out.before, "production is exactly as before the drill");
    assert.match(out.after, new RegExp(`^data dir: \\d+ postgres:postgres 700 ${POSTGRES_PATHS.dataDirectory}$`, "m"));
    assert.match(out.after, /^port: 2 listening, archive_mode on$/m, "127.0.0.1 and ::1");
    assert.equal(out.leftovers, "postgresql\n0", "the scratch directory is gone and nothing listens on the scratch port");

    const m = metrics(out.metrics.split("\n").slice(0, -1).join("\n"));
    const now = Number(out.now);
    assert.equal(out.metrics.split("\n").pop(), "644");
    assert.equal(m.leaninfra_drill_success, 1);
    assert.ok(m.leaninfra_drill_duration_seconds > 0 && m.leaninfra_drill_duration_seconds < 120, `duration ${m.leaninfra_drill_duration_seconds}`);
    assert.ok(m.leaninfra_drill_restore_seconds > 0 && m.leaninfra_drill_restore_seconds <= m.leaninfra_drill_duration_seconds);
    // The newest order was written during setup, shortly before: the RPO is seconds to minutes, not hours.
    assert.ok(m.leaninfra_drill_data_age_seconds >= 0 && m.leaninfra_drill_data_age_seconds < 600, `data age ${m.leaninfra_drill_data_age_seconds}`);
    assert.ok(Math.abs(m.leaninfra_drill_timestamp_seconds - now) < 60);
    assert.equal(m.leaninfra_drill_last_success_timestamp_seconds, m.leaninfra_drill_timestamp_seconds);
    assert.equal(m.leaninfra_drill_app_checked, 0, "the skipped app check shows in the metrics");
    assert.equal(m.leaninfra_drill_tables_checked, 5);
    assert.match(out.log, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ result=ok target=latest backup=\d{8}-\d{6}F duration=[\d.]+s restore=[\d.]+s data_age=\d+s tables=5 app="skipped \(no app role\)"$/);
    console.log(`  metrics: duration ${m.leaninfra_drill_duration_seconds}s, restore ${m.leaninfra_drill_restore_seconds}s, data age ${m.leaninfra_drill_data_age_seconds}s`);
  });

  it("refuses when a live cluster holds the scratch port, fails on a wrong passphrase and on a corrupted backup object, and production keeps serving", () => {
    const started = Date.now();
    // A drill whose idea of production is stale: production really runs on what it takes for the scratch port.
    install(root, "/usr/local/sbin/drill-stale", drillScript(drillSettings(port === 5433 ? 5434 : 5433, { scratchPort: port })));
    // The secrets file overrides pgbackrest.conf for the drill's pgBackRest: a wrong passphrase there.
    install(root, "/root/wrong-pass.env", renderBackupsSecretsEnv(backupsSettings(s3, port, "notthepassphrase0123456789")), 0o600);
    // Overwrite the largest relation file of the backup in the S3 server's storage (encrypted, compressed).
    const backupDir = s3.objectPath(`${BACKUPS.repoPath.slice(1)}/backup/${BACKUPS.stanza}`);
    const label = fs.readdirSync(backupDir).find((d) => /^\d{8}-\d{6}F$/.test(d))!;
    const files = execFileSync("find", [path.join(backupDir, label, "pg_data", "base"), "-type", "f", "-size", "+8k"], { encoding: "utf8" }).trim().split("\n");
    const victim = files.map((f) => ({ f, size: fs.statSync(f).size })).sort((a, b) => b.size - a.size)[0].f;
    const original = fs.readFileSync(victim);

    const r1 = root.run(`${prelude(port)}
start_production
sec before
prod_state
sec stale
/usr/local/sbin/drill-stale 2>&1; echo "exit=$?"
sec passphrase
cp ${BACKUPS.secretsFile} /root/good.env && cp /root/wrong-pass.env ${BACKUPS.secretsFile}
${BACKUPS.bin.drill} 2>&1; echo "exit=$?"
cp /root/good.env ${BACKUPS.secretsFile}
sec metrics-passphrase
cat ${BACKUPS.metrics.drill}
sec after-refusals
prod_state
`);
    assert.equal(r1.code, 0, show(r1));
    fs.writeFileSync(victim, randomBytes(original.length));
    let r2: RunResult;
    try {
      r2 = root.run(`${prelude(port)}
start_production
sec before-corrupt
prod_state
sec corrupt
${BACKUPS.bin.drill} 2>&1; echo "exit=$?"
sec after
prod_state
sec leftovers
ls -A ${LAYOUT.data}; ss -H -ltn 'sport = :${BACKUPS.scratchPort}' | wc -l
sec metrics
cat ${BACKUPS.metrics.drill}
sec log
tail -n 3 ${BACKUPS.logs.drill}
`);
    } finally {
      fs.writeFileSync(victim, original);
    }
    console.log(`stale-config, wrong-passphrase and corrupted-backup drills: ${Date.now() - started} ms`);
    const out = { ...sections(r1.stdout), ...sections(r2.stdout) };
    assert.equal(r2.code, 0, show(r2));
    console.log(`  timings: ${[...`${r1.stdout}${r2.stdout}`.matchAll(/drill FAILED in|\[drill (\d\d:\d\d:\d\d)\] (drill FAILED during step \w+)/g)].map((m) => `${m[1]} ${m[2]}`).join(", ")}`);

    assert.match(out.stale, new RegExp(`REFUSED: cluster 17/main \\(${POSTGRES_PATHS.dataDirectory}, online\\) is configured on the scratch port ${port}`));
    assert.match(out.stale, /exit=2$/);
    assert.match(out.passphrase, /FAILED: the repository's info files do not decrypt: a wrong repository passphrase \(PGBACKREST_REPO1_CIPHER_PASS in \/etc\/leaninfra\/secrets\/backups\.env, repo1-cipher-pass in \/etc\/pgbackrest\/pgbackrest\.conf\) or damaged files \(pgBackRest: .*FormatError/);
    assert.match(out.passphrase, /exit=1$/);
    assert.match(out["metrics-passphrase"], /^leaninfra_drill_success 0$/m);
    assert.ok(metrics(out["metrics-passphrase"]).leaninfra_drill_last_success_timestamp_seconds > 0, "the last success of the previous drill is kept");

    console.log(`  wrong passphrase: ${out.passphrase.split("\n").find((l) => l.includes("FAILED"))?.slice(0, 160)}`);
    console.log(`  corrupted object ${path.relative(s3.storageDir, victim)}: ${out.corrupt.split("\n").find((l) => l.includes("ERROR"))?.trim()}`);
    assert.match(out.corrupt, /FAILED: pgbackrest restore failed \(output above\): the backup could not be read back/);
    assert.match(out.corrupt, /drill FAILED during step restore/);
    assert.match(out.corrupt, /exit=1$/);
    const m = metrics(out.metrics);
    assert.equal(m.leaninfra_drill_success, 0);
    assert.ok(m.leaninfra_drill_last_success_timestamp_seconds > 0 && m.leaninfra_drill_last_success_timestamp_seconds < m.leaninfra_drill_timestamp_seconds);
    assert.equal(m.leaninfra_drill_data_age_seconds, undefined, "no RPO from a failed restore");
    const log = out.log.split("\n");
    assert.match(log[0], /result=failed target=latest backup=- .* step=guard reason="refused: cluster 17\/main/);
    assert.match(log[1], /result=failed target=latest backup=- .* step=repository reason="the repository's info files do not decrypt/);
    assert.match(log[2], /result=failed target=latest backup=\d{8}-\d{6}F .* step=restore reason="pgbackrest restore failed/);

    // Production served throughout and is unchanged; nothing of the drills is left.
    assert.equal(out["after-refusals"], out.before);
    assert.equal(out.after, out["before-corrupt"]);
    assert.equal(out.after.split("\n")[0], out.before.split("\n")[0], "the same rows in every run");
    assert.equal(out.leftovers, "postgresql\n0");
  });

  it("leaninfra-restore refuses without confirmation, then restores production to a point in time, keeping the old data directory aside", () => {
    const started = Date.now();
    const r = root.run(`${prelude(port)}
start_production
# The mistake to undo: every user deleted and orders written after a known-good moment.
target=$(q "select to_char(now() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'")
sleep 1.2
q "DELETE FROM users"
q "INSERT INTO orders (user_id, total) SELECT 1, g FROM generate_series(1, 42) g"
backrest check
sec target
echo "$target"
sec mistake
counts
sec pitr-drill
sum_before=$(md5sum <${BACKUPS.metrics.drill})
${BACKUPS.bin.drill} --target-time "$target" 2>&1; echo "exit=$?"
[ "$(md5sum <${BACKUPS.metrics.drill})" = "$sum_before" ] && echo "metrics unchanged"
tail -n 1 ${BACKUPS.logs.drill}
sec refused-wrong
printf 'prod\\n' | ${BACKUPS.bin.restore} --to "$target" 2>&1; echo "exit=$?"
sec refused-no-answer
${BACKUPS.bin.restore} --to "$target" </dev/null 2>&1; echo "exit=$?"
sec untouched
counts; ls -d ${POSTGRES_PATHS.dataDirectory}*
sec restore
printf '${HOST_NAME}\\n' | ${BACKUPS.bin.restore} --to "$target" 2>&1; echo "exit=$?"
sec restored
counts
q 'select pg_is_in_recovery()'; q 'select timeline_id from pg_control_checkpoint()'
ss -H -ltn 'sport = :${port}' | wc -l
ls -d ${POSTGRES_PATHS.dataDirectory}*
sec aside
aside=$(ls -d ${POSTGRES_PATHS.dataDirectory}.before-restore-*)
cat "$aside/PG_VERSION"; stat -c '%U %a' "$aside"; test -f "$aside/postmaster.pid" && echo "postmaster.pid left" || echo "stopped cleanly"
sec log
cat ${LAYOUT.logs}/restore.log
`, { timeoutMs: 5 * 60_000 });
    console.log(`leaninfra-restore to a point in time: ${Date.now() - started} ms`);
    const out = sections(r.stdout);
    assert.equal(r.code, 0, show(r));
    const target = out.target;
    assert.match(target, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00$/);
    assert.equal(out.mistake, "billing.Invoices=300 orders=5142 plans=3 users=0");

    // A drill of that point in time: the deleted users are there, nothing newer than the target, and the
    // weekly metrics (which speak for the latest backup) stay as they were; the log has the run.
    assert.match(out["pitr-drill"], new RegExp(`restoring the database as of ${target.replace("+", "\\+")} into /srv/data/leaninfra-drill`));
    assert.match(out["pitr-drill"], /^ {4}public\.users +0 +51 {2}present \(counts of a past point in time are not compared\)$/m);
    assert.match(out["pitr-drill"], /^ {4}public\.orders +5142 +5100 {2}present/m);
    assert.match(out["pitr-drill"], /newest restored data: .* \(freshness query\), not after the target/);
    assert.match(out["pitr-drill"], /exit=0\nmetrics unchanged\n.* result=ok target=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00 backup=\d{8}-\d{6}F /);

    for (const key of ["refused-wrong", "refused-no-answer"]) {
      assert.match(out[key], new RegExp(`This restores PRODUCTION's database on ${HOST_NAME} to ${target.replace("+", "\\+")}`), key);
      assert.match(out[key], /^ {2}3\. move \/srv\/data\/postgresql\/17\/main aside to \/srv\/data\/postgresql\/17\/main\.before-restore-\d{8}T\d{6}Z \(kept, never deleted\)$/m, key);
      assert.match(out[key], /Type the host name of this server \(shop\) to restore PRODUCTION, anything else cancels:/, key);
      assert.match(out[key], /CANCELLED: the answer was not shop; nothing was changed/, key);
      assert.match(out[key], /exit=3$/, key);
      assert.doesNotMatch(out[key], /step 1\/8/, key);
    }
    assert.equal(out.untouched, `billing.Invoices=300 orders=5142 plans=3 users=0\n${POSTGRES_PATHS.dataDirectory}`);

    // The steps, each announced before it ran, in order.
    const steps = [...out.restore.matchAll(/^\[restore\] step (\d)\/8: (.*)$/gm)].map((m) => `${m[1]} ${m[2]}`);
    assert.deepEqual(steps.map((s) => s.split(" ")[0]), ["1", "2", "3", "4", "5", "6", "7", "8"], out.restore);
    assert.match(steps[3], new RegExp(`^4 pgbackrest --stanza=main restore --pg1-path=${POSTGRES_PATHS.dataDirectory} --log-level-console=info --type=time --target=${target.replace("+", "\\+")} --target-action=promote$`));
    assert.match(out.restore, /no Docker here: no app container to stop/);
    assert.match(out.restore, /PRODUCTION's database is restored to .* the previous data directory is kept in \/srv\/data\/postgresql\/17\/main\.before-restore-\d{8}T\d{6}Z/);
    assert.match(out.restore, /How to go back to the data directory as it was before this restore:\n.*\n {4}sudo systemctl stop postgresql@17-main\n {4}sudo mv \/srv\/data\/postgresql\/17\/main \/srv\/data\/postgresql\/17\/main\.restored-\d{8}T\d{6}Z\n {4}sudo mv \/srv\/data\/postgresql\/17\/main\.before-restore-\d{8}T\d{6}Z \/srv\/data\/postgresql\/17\/main/);
    assert.match(out.restore, /exit=0$/);

    // The users are back, the 42 later orders are not; promoted on a new timeline, serving on its port.
    const [rows, recovery, timeline, listening, ...dirs] = out.restored.split("\n");
    assert.equal(rows, "billing.Invoices=300 orders=5100 plans=3 users=51");
    assert.equal(recovery, "f");
    assert.equal(timeline, "2");
    assert.equal(listening, "2", "on 127.0.0.1 and ::1");
    assert.equal(dirs.length, 2);
    assert.match(dirs[1], /\.before-restore-\d{8}T\d{6}Z$/);
    assert.equal(out.aside, "17\npostgres 700\nstopped cleanly", "the old data directory is kept whole, from a clean shutdown");
    assert.match(out.log, /result=started\n.*result=ok aside=\/srv\/data\/postgresql\/17\/main\.before-restore-\d{8}T\d{6}Z duration=[\d.]+s$/);
  });
});

describe("leaninfra-drill starts the serving release of the app against the restore (Docker, booted Debian 13 root)", { timeout: 25 * 60_000 }, () => {
  it("the release nginx serves answers 200 against the restored database; an unhealthy start fails the drill; production keeps serving", async () => {
    const registryDir = await ensureTestImages();
    const s3 = await S3Server.start();
    const pki = makeTestPki();
    const started = Date.now();
    const REGISTRY_MOUNT = "/srv/test-registry";
    try {
      await withBootedRoot(
        { docker: true, scratch: ["/var/lib/docker"], binds: [{ host: registryDir, root: REGISTRY_MOUNT, readOnly: true }] },
        async (root) => {
          const port = await freePort();
          // The host as production has it: base, docker and proxy roles, the registry, then PostgreSQL and the app.
          await prepareHost(root, pki, REGISTRY_MOUNT);
          const pg = await applyRole(root, postgresRole({ ...postgresSettings(port), password: SECRETS.dbPassword }));
          assert.equal(pg.code, 0, show(pg));
          const app = await applyRole(root, appRole(testAppSettings({ databaseUrl: `postgresql://app:${SECRETS.dbPassword}@host.docker.internal:${port}/app` })));
          assert.equal(app.code, 0, show(app));
          assert.match(app.stdout, new RegExp(`deployed: release ${RELEASES.a} serves from slot green`));

          const files: [string, string, number][] = [
            ["/root/pgbackrest.conf", renderPgbackrestConf(backupsSettings(s3, port)), 0o644],
            ["/root/s3-ca.pem", s3.caPem, 0o644],
            ["/root/backups.env", renderBackupsSecretsEnv(backupsSettings(s3, port)), 0o600],
            ["/root/archiving.conf", renderArchivingConf(), 0o644],
            ["/root/seed.sql", SEED, 0o644],
            [BACKUPS.bin.drill, drillScript(drillSettings(port)), 0o755],
            [BACKUPS.bin.restore, restoreScript({ hostname: HOST_NAME, postgresDatabase: DB, productionPort: port, recoveryTimeoutMinutes: 2, appHealthTimeoutSeconds: 30 }), 0o755],
            // The drill's own settings over the app's (GREETING is the app's own, MAIL_DELIVERY new); APP_MODE=broken
            // keeps the container unhealthy, and so running, long enough to be probed from inside.
            ["/usr/local/sbin/drill-unhealthy", drillScript(drillSettings(port, { appEnv: ["APP_MODE=broken", "MAIL_DELIVERY=off", "GREETING=drill"], appHealthTimeoutSeconds: 25 })), 0o755],
            [`/etc/systemd/system/${DRILL_SERVICE}`, renderDrillService(), 0o644],
            ["/root/probe.py", PROBE, 0o644],
          ];
          for (const [file, content, mode] of files) install(root, file, content, mode);
          const r = await root.runAsync(`${prelude(port).replace(/^start_production\(\).*$/m, "start_production() { :; }").replace(/^trap stop_production EXIT$/m, "")}
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends pgbackrest jq >/dev/null
install -d -m 0755 /etc/pgbackrest
install -m 0640 -g postgres /root/pgbackrest.conf ${BACKUPS.pgbackrestConf}
install -m 0644 /root/s3-ca.pem ${BACKUPS_PATHS.storageCaFile}
install -m 0600 /root/backups.env ${BACKUPS.secretsFile}
install -m 0644 /root/archiving.conf ${BACKUPS_PATHS.archivingConf}
systemctl reload ${POSTGRES_PATHS.unit}
sleep 1
q "$(cat /root/seed.sql)"
backrest stanza-create >/dev/null
backrest --type=full backup >/dev/null
q "INSERT INTO orders (user_id, total) SELECT 1, g FROM generate_series(1, 10) g"
backrest check >/dev/null
set +e
sec serving
leaninfra-deploy --status
sec before
prod_state
sec drill
# Run by systemd, as its timer does: under the drill service's sandbox.
systemctl daemon-reload
systemctl start ${DRILL_SERVICE}; echo "start=$?"
journalctl -q -o cat -u ${DRILL_SERVICE} | grep -F '[drill '
systemctl show -p Result --value ${DRILL_SERVICE}
sec metrics
cat ${BACKUPS.metrics.drill}
sec isolation
# A listener on the host's own non-loopback address, reachable from production's app container (docker0).
outside=$(ip -4 route get 1.1.1.1 | awk '{ for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1) }')
systemd-run --quiet --unit=outside-listener python3 -m http.server --bind "$outside" 8765
for _ in $(seq 50); do ss -H -ltn "sport = :8765" | grep -q . && break; sleep 0.1; done
echo "outside=$outside"
/usr/local/sbin/drill-unhealthy >/root/unhealthy.out 2>&1 &
drill_pid=$!
for _ in $(seq 600); do
  [ "$(docker container inspect --format '{{.State.Running}}' ${DRILL_CONTAINER_NAME} 2>/dev/null)" = true ] && break
  sleep 0.1
done
echo "drill-container: $(docker exec -i ${DRILL_CONTAINER_NAME} python3 /dev/stdin host.docker.internal:${BACKUPS.scratchPort} 1.1.1.1:443 "$outside:8765" ${LAYOUT.dockerBridge.address}:${port} </root/probe.py)"
echo "drill-confinement: $(docker container inspect --format '{{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.PidsLimit}}' ${DRILL_CONTAINER_NAME})"
echo "drill-networks: $(docker container inspect --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' ${DRILL_CONTAINER_NAME})"
docker network inspect --format 'internal={{.Internal}} subnet={{(index .IPAM.Config 0).Subnet}}' ${BACKUPS.drillNetwork.name}
echo "production-container: $(docker exec -i app-green python3 /dev/stdin "$outside:8765" </root/probe.py)"
wait $drill_pid; echo "unhealthy-exit=$?"
systemctl stop outside-listener
sec unhealthy
cat /root/unhealthy.out
sec metrics-unhealthy
cat ${BACKUPS.metrics.drill}
sec after
prod_state
sec containers
docker ps -a --format '{{.Names}} {{.State}} {{.Label "leaninfra.release"}}' | sort
leaninfra-deploy --health && echo "app healthy"
ls -A ${LAYOUT.data}
sec log
cat ${BACKUPS.logs.drill}
sec restore
${BACKUPS.bin.restore} --latest --yes 2>&1; echo "exit=$?"
sec restored
prod_state
docker ps -a --format '{{.Names}} {{.State}} {{.Label "leaninfra.release"}}' | sort
leaninfra-deploy --health && echo "app healthy"
systemctl is-active ${POSTGRES_PATHS.unit}
ls -d ${POSTGRES_PATHS.dataDirectory}*
`, { timeoutMs: 10 * 60_000 });
          console.log(`booted root with Docker, roles and two drills: ${Date.now() - started} ms`);
          const out = sections(r.stdout);
          assert.equal(r.code, 0, show(r));
          assert.match(out.serving, /^release v1 serves from slot green \(127\.0\.0\.1:8002, container app-green, running: true/);

          // The serving release (v1, found through nginx's upstream and app-green) starts against the restore.
          assert.match(out.drill, /all 5 table\(s\) of app are present, row counts within tolerance/);
          assert.match(out.drill, /the container gets DATABASE_URL=postgresql:\/\/app:\*\*\*@host\.docker\.internal:5499\/app \(production's, on the scratch port\); no REDIS_URL/);
          assert.match(out.drill, /\] LEANINFRA_DRILL=1$/m);
          assert.match(out.drill, /^start=0$/m);
          assert.match(out.drill, /\nsuccess$/, "the drill service's result under its sandbox");
          assert.match(out.drill, /created the internal network leaninfra-drill \(172\.16\.99\.0\/24, no route out\); the host is 172\.16\.99\.1 on it/);
          assert.match(out.drill, /starting 127\.0\.0\.1:5123\/leaninfra-test-app:v1 as leaninfra-drill-app on the internal network leaninfra-drill/);
          assert.match(out.drill, /release v1 answers 200 on \/healthz against the restored database after [\d.]+s/);
          assert.match(out.drill, /drill PASSED in [\d.]+s: .* app: release v1 healthy/);
          // The test app's health path does not touch its database: the drill says so rather than claiming a connection.
          assert.match(out.drill, /note: the container opened no connection to the restored database; the app contract asks its health path to check the database/);
          assert.doesNotMatch(r.stdout + r.stderr, new RegExp(SECRETS.dbPassword), "the database password is never printed");
          const m = metrics(out.metrics);
          assert.equal(m.leaninfra_drill_success, 1);
          assert.equal(m.leaninfra_drill_app_checked, 1);
          assert.ok(m.leaninfra_drill_duration_seconds > m.leaninfra_drill_restore_seconds, "the RTO includes the app's start");
          console.log(`  metrics: duration ${m.leaninfra_drill_duration_seconds}s, restore ${m.leaninfra_drill_restore_seconds}s, data age ${m.leaninfra_drill_data_age_seconds}s`);

          // A release that never answers 200 against the restore fails the drill, with its log lines.
          assert.match(out.unhealthy, /test-app build=a release=v1: healthz: refusing to report healthy/);
          assert.match(out.unhealthy, /FAILED: release v1 did not answer 200 on \/healthz within 25s against the restored database \(last answer: HTTP 503; log above\)/);
          assert.match(out.unhealthy, /LEANINFRA_DRILL=1 and the drill's own APP_MODE MAIL_DELIVERY GREETING$/m);
          assert.match(out.isolation, /unhealthy-exit=1$/m);

          // Inside the drill's container: its settings, the scratch database, and no route to anything else.
          const outside = /^outside=([\d.]+)$/m.exec(out.isolation)![1];
          const probe = JSON.parse(/^drill-container: (.*)$/m.exec(out.isolation)![1]);
          console.log(`  drill container: ${JSON.stringify(probe)}`);
          assert.deepEqual(probe.env, { LEANINFRA_DRILL: "1", MAIL_DELIVERY: "off", GREETING: "drill", APP_MODE: "broken", REDIS_URL: null });
          assert.match(probe.database_url_host, /^host\.docker\.internal:5499$/);
          assert.equal(probe.routes, "172.16.99.0/24 only", "no default route in the container");
          const mib = testAppSettings().appMemoryMb * 1024 * 1024;
          assert.match(out.isolation, new RegExp(`^drill-confinement: \\[ALL\\] \\[no-new-privileges\\] ${mib} ${mib} ${testAppSettings().appPidsLimit}$`, "m"), "the drill's container is confined as the app's own");
          assert.deepEqual(probe.connect, {
            [`host.docker.internal:${BACKUPS.scratchPort}`]: "connected",
            "1.1.1.1:443": "ENETUNREACH",
            [`${outside}:8765`]: "ENETUNREACH",
            [`${LAYOUT.dockerBridge.address}:${port}`]: "ENETUNREACH",
          });
          assert.match(out.isolation, /^drill-networks: leaninfra-drill $/m);
          assert.match(out.isolation, /^internal=true subnet=172\.16\.99\.0\/24$/m);
          // The same listener answers production's app container: the refusal above is the drill's network, not the host.
          assert.equal(JSON.parse(/^production-container: (.*)$/m.exec(out.isolation)![1]).connect[`${outside}:8765`], "connected");
          assert.equal(metrics(out["metrics-unhealthy"]).leaninfra_drill_success, 0);
          assert.match(out.log, /result=ok .* app="release v1 healthy"\n.*result=failed .* step=app reason="release v1 did not answer 200/);

          // Production: the same, still serving through its own container; nothing of the drills is left.
          assert.equal(out.after, out.before);
          assert.equal(out.containers, "app-green running v1\napp healthy\npostgresql");

          // The emergency restore under systemd: the app's container stopped and started again, PostgreSQL
          // through its unit, the latest state back on a new timeline, the old data directory kept.
          assert.match(out.restore, /step 1\/8: stop the app's traffic[^\n]*\n[^\n]*stopping app-green \(nginx now serves the maintenance page\)/);
          assert.match(out.restore, /step 7\/8: start the app again\n[^\n]*starting app-green\n[^\n]*the app answers its health path: release v1 serves from slot green/);
          assert.match(out.restore, /exit=0$/);
          const [rows, , identity, , listening, container, healthy, active, ...dirs] = out.restored.split("\n");
          assert.equal(rows, out.before.split("\n")[0], "the latest state: every row");
          assert.match(identity, /timeline 2$/);
          assert.match(listening, /archive_mode on$/);
          assert.equal(`${container}\n${healthy}\n${active}`, "app-green running v1\napp healthy\nactive");
          assert.equal(dirs.length, 2);
          assert.match(dirs[1], /\.before-restore-\d{8}T\d{6}Z$/);
        },
      );
    } finally {
      s3.dispose();
    }
  });
});
