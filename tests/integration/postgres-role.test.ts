import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { baseRole } from "../../components/base";
import { renderRoleBundle } from "../../components/host/bundle";
import {
  POSTGRES_PATHS,
  PostgresSettings,
  SERVER_SETTING_NAMES,
  TUNING_SETTING_NAMES,
  postgresMemorySettings,
  postgresPasswordVerifier,
  postgresRole,
} from "../../components/postgres";
import { RunResult, show, withDebianRoot } from "../lib/debian-root";
import { sections } from "../lib/sections";


/** A TCP port nobody listens on here: the roots share the host's network while packages install. */
function freePort(): number {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 10000);
    const busy = spawnSync("ss", ["-H", "-l", "-t", "-n", `sport = :${port}`], { encoding: "utf8" });
    if (busy.status === 0 && busy.stdout.trim() === "") return port;
  }
}

// ':' and '\' need escaping in pgpass, the quotes and '$' in shell and SQL: all must arrive intact.
const PASSWORD = `Pw:${randomBytes(12).toString("hex")}\\'"$x`;

function settings(over: Partial<PostgresSettings> = {}): PostgresSettings {
  return { memoryMb: 2048, vcpus: 2, postgresMaxConnections: 0, postgresDatabase: "shop", postgresUser: "shop_app", password: PASSWORD, port: freePort(), ...over };
}


/** Shell helpers every phase script starts with. */
const prelude = (port: number) => `set -u
cd /
sec() { printf '\\n== %s\\n' "$1"; }
pw=$(cat /root/app.pw)
q() { runuser -u postgres -- psql -X -A -t -q -p ${port} -d postgres -c "$1"; }
`;

const noSecret = (r: RunResult) =>
  assert.ok(!r.stdout.includes(PASSWORD) && !r.stderr.includes(PASSWORD), `the password was printed:\n${show(r)}`);

test("the postgres role puts Debian's cluster on the data volume, creates the app's database and login, and a second run changes nothing", { timeout: 20 * 60_000 }, async () => {
  const s = settings();
  const port = s.port!;
  const memory = postgresMemorySettings(s.memoryMb, s.vcpus);
  await withDebianRoot((root) => {
    fs.writeFileSync(root.hostPath("/root/base.sh"), renderRoleBundle(baseRole({ adminUser: "ops" })));
    fs.writeFileSync(root.hostPath("/root/postgres.sh"), renderRoleBundle(postgresRole(s)));
    fs.writeFileSync(root.hostPath("/root/app.pw"), PASSWORD, { mode: 0o600 });

    // First run on the host's network (apt needs it), on a free port; the cluster is stopped after.
    let started = Date.now();
    const first = root.run(`bash /root/base.sh >/dev/null && bash /root/postgres.sh; rc=$?
pg_ctlcluster 17 main stop >/dev/null 2>&1 || true
exit $rc`);
    console.log(`base + postgres bundles, first run: ${Date.now() - started} ms, exit ${first.code}`);
    assert.equal(first.code, 0, show(first));
    noSecret(first);
    for (const line of [
      "[postgres] installed package postgresql-17",
      `[postgres] created file ${POSTGRES_PATHS.serverConf} (640 root:postgres)`,
      `[postgres] created file ${POSTGRES_PATHS.tuningConf} (640 root:postgres)`,
      // Debian makes postgresql.conf world-readable; the role narrows it.
      `[postgres] made ${POSTGRES_PATHS.postgresqlConf} readable only by its owner and group postgres (mode 640)`,
      `[postgres] updated file ${POSTGRES_PATHS.hba} (640 root:postgres; previous version in /var/lib/leaninfra/backups/postgres${POSTGRES_PATHS.hba})`,
      "[postgres] created role shop_app",
      "[postgres] created database shop owned by shop_app",
      "[postgres] created extension pg_stat_statements in database shop",
      "[postgres] set the password of role shop_app (logging in with it did not work)",
    ]) {
      assert.ok(first.stdout.split("\n").includes(line), `missing line ${JSON.stringify(line)}:\n${show(first)}`);
    }
    assert.match(
      first.stdout,
      /^\[postgres\] moved the fresh cluster 17\/main from \/var\/lib\/postgresql\/17\/main to \/srv\/data\/postgresql\/17\/main \(the original is kept as \/var\/lib\/postgresql\/17\/main\.unused-\d{8}T\d{6}Z\)$/m,
    );
    assert.match(first.stdout, /^\[postgres\] \d+ change\(s\)$/m);

    // Everything else on a private network: loopback is the root's own, and the Docker bridge is missing.
    started = Date.now();
    const checks = root.run(
      `${prelude(port)}
pg_ctlcluster 17 main start >/dev/null
sec second-run
bash /root/postgres.sh 2>&1; echo "exit=$?"
sec app-login
PGPASSWORD=$pw psql -X -A -t -q "host=127.0.0.1 port=${port} dbname=shop user=shop_app" \\
  -c "select current_user || ' ' || pg_get_userbyid(datdba) || ' ' || pg_encoding_to_char(encoding) from pg_database where datname = current_database()" 2>&1
sec app-login-ipv6
PGPASSWORD=$pw psql -X -A -t "host=::1 port=${port} dbname=shop user=shop_app" -c "select 'ok'" 2>&1
sec wrong-password
PGPASSWORD="wrong-$pw" psql -X -A -t "host=127.0.0.1 port=${port} dbname=shop user=shop_app" -c "select 1" 2>&1
sec superuser-tcp
PGPASSWORD=$pw psql -X -A -t "host=127.0.0.1 port=${port} dbname=postgres user=postgres" -c "select 1" 2>&1
sec app-socket
PGPASSWORD=$pw psql -X -A -t "host=/var/run/postgresql port=${port} dbname=shop user=shop_app" -c "select 1" 2>&1
sec app-other-database
PGPASSWORD=$pw psql -X -A -t "host=127.0.0.1 port=${port} dbname=postgres user=shop_app" -c "select 1" 2>&1
sec pg-stat-statements
PGPASSWORD=$pw psql -X -A -t -q "host=127.0.0.1 port=${port} dbname=shop user=shop_app" \\
  -c "create table t(id int)" -c "select count(*) > 0 from pg_stat_statements where query like 'create table t%'" 2>&1
sec settings
q "select name || '=' || setting || coalesce(unit, '') || '|' || context || '|' || coalesce(sourcefile, source) from pg_settings
  where name in (${[...SERVER_SETTING_NAMES, ...TUNING_SETTING_NAMES].map((n) => `'${n}'`).join(", ")}) order by name"
sec show
for name in data_directory archive_mode archive_command wal_level shared_buffers effective_cache_size work_mem maintenance_work_mem max_connections password_encryption shared_preload_libraries; do
  echo "$name=$(q "show $name")"
done
sec verifier
q "select rolpassword from pg_authid where rolname = 'shop_app'"
sec files
stat -c '%n %a %U:%G' /etc/leaninfra/secrets/postgres-shop_app.pgpass ${POSTGRES_PATHS.dataDirectory} ${POSTGRES_PATHS.dataDirectoryConf}
ls /var/lib/postgresql/17
sec config-files
find ${POSTGRES_PATHS.configDir} -type f -printf '%P %m %u:%g\n' | sort
sec other-user-psql
runuser -u nobody -- psql -X -A -t -c 'select 1' 2>&1
sec other-user-psql-host
runuser -u nobody -- psql -X -A -t -h /var/run/postgresql -p ${port} -d shop -c 'select 1' 2>&1
sec listening
ss -H -l -t -n "sport = :${port}" | awk '{ print $4 }' | sort
pg_ctlcluster 17 main stop >/dev/null
`,
      { nspawnArgs: ["--private-network"] },
    );
    console.log(`second run and checks: ${Date.now() - started} ms`);
    assert.equal(checks.code, 0, show(checks));
    noSecret(checks);
    const out = sections(checks.stdout);
    assert.equal(out["second-run"], "[postgres] no changes\nexit=0", show(checks));
    assert.equal(out["app-login"], "shop_app shop_app UTF8", "the app role logs in over TCP and owns its database");
    assert.equal(out["app-login-ipv6"], "ok");
    assert.match(out["wrong-password"], /password authentication failed for user "shop_app"/);
    assert.match(out["superuser-tcp"], /no pg_hba\.conf entry for host "127\.0\.0\.1", user "postgres", database "postgres"/);
    assert.match(out["app-socket"], /no pg_hba\.conf entry for host "\[local\]", user "shop_app", database "shop"/);
    assert.match(out["app-other-database"], /no pg_hba\.conf entry for host "127\.0\.0\.1", user "shop_app", database "postgres"/);
    assert.equal(out["pg-stat-statements"], "t");
    assert.equal(out.verifier, postgresPasswordVerifier("shop_app", PASSWORD), "pg_authid holds the verifier the role sent");
    assert.match(out.files, /^\/etc\/leaninfra\/secrets\/postgres-shop_app\.pgpass 600 root:root$/m);
    assert.match(out.files, /^\/srv\/data\/postgresql\/17\/main 700 postgres:postgres$/m);
    assert.match(out.files, /^main\.unused-\d{8}T\d{6}Z$/m, "Debian's fresh cluster is kept, renamed");
    assert.equal(out.listening, `127.0.0.1:${port}\n[::1]:${port}`, "loopback only here: the Docker bridge does not exist on this network");
    // A user outside group postgres cannot read the config: Debian's psql wrapper then cannot pick the cluster
    // (the README says so); with a host it does not try, and the server answers (here: no entry for nobody).
    assert.equal(out["other-user-psql"], "Error: Invalid data directory for cluster 17 main");
    assert.match(out["other-user-psql-host"], /no pg_hba\.conf entry for host "\[local\]", user "nobody", database "shop"/);
    // The config files PostgreSQL reads: group postgres, nobody else; Debian's keep their owner postgres.
    // Debian's start.conf, pg_ctl.conf and environment (no settings of the server's) stay as Debian makes them.
    assert.equal(
      out["config-files"],
      [
        "conf.d/00-leaninfra-data-directory.conf 640 root:postgres",
        "conf.d/10-leaninfra-server.conf 640 root:postgres",
        "conf.d/20-leaninfra-tuning.conf 640 root:postgres",
        "environment 644 postgres:postgres",
        "pg_ctl.conf 644 postgres:postgres",
        "pg_hba.conf 640 root:postgres",
        "pg_ident.conf 640 postgres:postgres",
        "postgresql.conf 640 postgres:postgres",
        "start.conf 644 postgres:postgres",
      ].join("\n"),
    );

    const shown = Object.fromEntries(out.show.split("\n").map((l) => l.split(/=(.*)/s).slice(0, 2)));
    const mb = (n: number) => (n % 1024 === 0 ? `${n / 1024}GB` : `${n}MB`);
    assert.deepEqual(shown, {
      data_directory: POSTGRES_PATHS.dataDirectory,
      archive_mode: "on",
      archive_command: "/bin/true",
      wal_level: "replica",
      shared_buffers: mb(memory.sharedBuffersMb),
      effective_cache_size: mb(memory.effectiveCacheSizeMb),
      work_mem: mb(memory.workMemMb),
      maintenance_work_mem: mb(memory.maintenanceWorkMemMb),
      max_connections: String(memory.maxConnections),
      password_encryption: "scram-sha-256",
      shared_preload_libraries: "pg_stat_statements",
    });

    // Each setting comes from the file whose handler matches what PostgreSQL needs to apply it.
    const rows = new Map(out.settings.split("\n").map((l) => [l.split("=")[0], l]));
    for (const name of SERVER_SETTING_NAMES) {
      assert.match(rows.get(name) ?? "", new RegExp(`\\|postmaster\\|${POSTGRES_PATHS.serverConf}$`), `${name} is restart-only`);
    }
    for (const name of TUNING_SETTING_NAMES) {
      assert.match(rows.get(name) ?? "", new RegExp(`\\|(sighup|user|superuser)\\|${POSTGRES_PATHS.tuningConf}$`), `${name} is reloadable`);
    }
    assert.match(
      fs.readFileSync(root.hostPath(POSTGRES_PATHS.dataDirectoryConf), "utf8"),
      new RegExp(`^data_directory = '${POSTGRES_PATHS.dataDirectory}'$`, "m"),
    );
    assert.match(rows.get("listen_addresses") ?? "", new RegExp(`^listen_addresses=localhost,172\\.17\\.0\\.1\\|`));

    // A reloadable change reloads, a restart-only change restarts, an invalid file is put back.
    const moreCpus = postgresRole({ ...s, vcpus: 4 });
    const moreMemory = postgresRole({ ...s, vcpus: 4, memoryMb: 4096 });
    const broken = postgresRole({ ...s, vcpus: 4, memoryMb: 4096 });
    const tuning = broken.files.find((f) => f.path === POSTGRES_PATHS.tuningConf)!;
    tuning.content += "work_mem = 12xx\n";
    fs.writeFileSync(root.hostPath("/root/more-cpus.sh"), renderRoleBundle(moreCpus));
    fs.writeFileSync(root.hostPath("/root/more-memory.sh"), renderRoleBundle(moreMemory));
    fs.writeFileSync(root.hostPath("/root/broken.sh"), renderRoleBundle(broken));
    started = Date.now();
    const changes = root.run(
      `${prelude(port)}
pg_ctlcluster 17 main start >/dev/null
times() { q "select pg_postmaster_start_time() || ' ' || pg_conf_load_time()"; }
before=$(times)
# A server from before the role narrowed the modes: Debian's and apply's files world-readable.
chmod 0644 ${POSTGRES_PATHS.postgresqlConf} ${POSTGRES_PATHS.ident} ${POSTGRES_PATHS.dataDirectoryConf}
sec more-cpus
bash /root/more-cpus.sh 2>&1; echo "exit=$?"
sec more-cpus-times
echo "$before"; times; q "show max_parallel_workers"
sec more-cpus-modes
stat -c '%a' ${POSTGRES_PATHS.postgresqlConf} ${POSTGRES_PATHS.ident} ${POSTGRES_PATHS.dataDirectoryConf} ${POSTGRES_PATHS.tuningConf}
before=$(times)
sec more-memory
bash /root/more-memory.sh 2>&1; echo "exit=$?"
sec more-memory-times
echo "$before"; times; q "show shared_buffers"
sec broken
bash /root/broken.sh 2>&1; echo "exit=$?"
sec broken-after
grep -c 12xx ${POSTGRES_PATHS.tuningConf}; q "show work_mem"
pg_ctlcluster 17 main stop >/dev/null
`,
      { nspawnArgs: ["--private-network"] },
    );
    console.log(`reload, restart and rollback runs: ${Date.now() - started} ms`);
    assert.equal(changes.code, 0, show(changes));
    const ch = sections(changes.stdout);
    assert.match(ch["more-cpus"], /^\[postgres\] updated file \/etc\/postgresql\/17\/main\/conf\.d\/20-leaninfra-tuning\.conf /m);
    assert.doesNotMatch(ch["more-cpus"], /10-leaninfra-server\.conf/, ch["more-cpus"]);
    assert.match(ch["more-cpus"], /exit=0$/);
    for (const file of [POSTGRES_PATHS.postgresqlConf, POSTGRES_PATHS.ident, POSTGRES_PATHS.dataDirectoryConf]) {
      assert.ok(
        ch["more-cpus"].split("\n").includes(`[postgres] made ${file} readable only by its owner and group postgres (mode 640)`),
        `${file} narrowed again:\n${ch["more-cpus"]}`,
      );
    }
    assert.equal(ch["more-cpus-modes"], "640\n640\n640\n640");
    const [cpusBefore, cpusAfter, workers] = ch["more-cpus-times"].split("\n");
    assert.equal(cpusAfter.split(" ").slice(0, 2).join(" "), cpusBefore.split(" ").slice(0, 2).join(" "), "a reload keeps the postmaster");
    assert.notEqual(cpusAfter, cpusBefore, "the configuration was reloaded");
    assert.equal(workers, "4");
    assert.match(ch["more-memory"], /^\[postgres\] updated file \/etc\/postgresql\/17\/main\/conf\.d\/10-leaninfra-server\.conf /m);
    assert.match(ch["more-memory"], /exit=0$/);
    const [memBefore, memAfter, sharedBuffers] = ch["more-memory-times"].split("\n");
    assert.notEqual(memAfter.split(" ").slice(0, 2).join(" "), memBefore.split(" ").slice(0, 2).join(" "), "a restart-only change restarts");
    assert.equal(sharedBuffers, "1GB");
    assert.match(ch.broken, /invalid value for parameter "work_mem": "12xx"/);
    assert.match(ch.broken, /^\[postgres\] restored \/etc\/postgresql\/17\/main\/conf\.d\/20-leaninfra-tuning\.conf to its previous version$/m);
    assert.match(ch.broken, /^\[postgres\] FAILED during validate: validation failed/m);
    assert.match(ch.broken, /exit=1$/);
    assert.equal(ch["broken-after"], `0\n${postgresMemorySettings(4096, 4).workMemMb}MB`);
  });
});

test("the postgres role refuses to move a cluster that holds data, and adopts a cluster already on the data volume", { timeout: 20 * 60_000 }, async () => {
  const s = settings();
  const port = s.port!;
  await withDebianRoot((root) => {
    fs.writeFileSync(root.hostPath("/root/postgres.sh"), renderRoleBundle(postgresRole(s)));
    fs.writeFileSync(root.hostPath("/root/app.pw"), PASSWORD, { mode: 0o600 });

    let started = Date.now();
    const refused = root.run(`${prelude(port)}
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends postgresql-17 >/dev/null 2>&1
sed -i 's/^port = 5432/port = ${port}/' /etc/postgresql/17/main/postgresql.conf
pg_ctlcluster 17 main start
q "create database orders"
runuser -u postgres -- psql -X -q -p ${port} -d orders -c "create table o(id int)" -c "insert into o values (42)"
sec refused
bash /root/postgres.sh 2>&1; echo "exit=$?"
sec after
runuser -u postgres -- psql -X -A -t -p ${port} -d orders -c "select id from o"
q "show data_directory"
ls -A /srv/data/postgresql/17 | wc -l
pg_ctlcluster 17 main stop >/dev/null
`);
    console.log(`refusal run: ${Date.now() - started} ms`);
    assert.equal(refused.code, 0, show(refused));
    const r = sections(refused.stdout);
    assert.match(r.refused, /PostgreSQL cluster 17\/main at \/var\/lib\/postgresql\/17\/main is not the fresh, empty cluster Debian creates: it holds databases orders/);
    assert.match(r.refused, /never moves or deletes data by itself/);
    assert.match(r.refused, /^\[postgres\] FAILED during apply: apply failed/m);
    assert.match(r.refused, /exit=1$/);
    assert.equal(r.after, `42\n/var/lib/postgresql/17/main\n0`, "the data stays where it was, nothing on the volume");

    // A rebuilt server: its own fresh cluster from the package, and the old server's cluster on the volume.
    started = Date.now();
    const adopted = root.run(
      `${prelude(port)}
pg_ctlcluster 17 main start
q "drop database orders"
pg_ctlcluster 17 main stop
pg_createcluster 17 old -d ${POSTGRES_PATHS.dataDirectory} -p 5499 >/dev/null
pg_ctlcluster 17 old start
runuser -u postgres -- psql -X -q -p 5499 -d postgres -c "create database legacy"
pg_ctlcluster 17 old stop
rm -rf /etc/postgresql/17/old
pg_ctlcluster 17 main start
sec adopt
bash /root/postgres.sh 2>&1; echo "exit=$?"
sec after
q "show data_directory"
q "select string_agg(datname, ',' order by datname) from pg_database"
ls /var/lib/postgresql/17 | sed 's/[0-9]\\{8\\}T[0-9]\\{6\\}Z/STAMP/'
sec again
bash /root/postgres.sh 2>&1; echo "exit=$?"
pg_ctlcluster 17 main stop >/dev/null
`,
      { nspawnArgs: ["--private-network"] },
    );
    console.log(`adoption runs: ${Date.now() - started} ms`);
    assert.equal(adopted.code, 0, show(adopted));
    const a = sections(adopted.stdout);
    assert.match(
      a.adopt,
      /^\[postgres\] using the existing cluster on the data volume at \/srv\/data\/postgresql\/17\/main \(the fresh cluster Debian created is kept as \/var\/lib\/postgresql\/17\/main\.unused-\d{8}T\d{6}Z\)$/m,
      a.adopt,
    );
    assert.match(a.adopt, /exit=0$/);
    assert.equal(a.after, `${POSTGRES_PATHS.dataDirectory}\nlegacy,postgres,shop,template0,template1\nmain.unused-STAMP`);
    assert.equal(a.again, "[postgres] no changes\nexit=0");
  });
});
