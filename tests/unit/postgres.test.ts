import assert from "node:assert/strict";
import test from "node:test";
import { createHash, createHmac } from "node:crypto";
import { renderRoleBundle } from "../../components/host/bundle";
import {
  POSTGRES_PATHS,
  PostgresSettings,
  postgresMemorySettings,
  postgresPasswordVerifier,
  postgresRole,
  renderPostgresHba,
  renderPostgresPgpass,
  renderPostgresServerConf,
  renderPostgresSystemdDropIn,
  renderPostgresTuningConf,
  scramSha256Verifier,
} from "../../components/postgres";
import prices from "../../infra/data/prices.json";

const PASSWORD = "k3J9-vQ2:xW7\\pL5$rT8'";
const settings: PostgresSettings = { memoryMb: 8192, vcpus: 4, maxConnections: 0, database: "app", user: "app", password: PASSWORD };
/** Non-comment, non-empty lines. */
const lines = (text: string) => text.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"));

test("postgresMemorySettings at 2, 4, 8, 16 and 32 GB: a quarter for shared_buffers, three quarters as cache, launch-day connections", () => {
  const table = [2, 4, 8, 16, 32].map((gb) => {
    const m = postgresMemorySettings(gb * 1024, gb);
    return [gb, m.sharedBuffersMb, m.effectiveCacheSizeMb, m.maxConnections, m.workMemMb, m.maintenanceWorkMemMb];
  });
  assert.deepEqual(table, [
    // GB, shared_buffers, effective_cache_size, max_connections, work_mem, maintenance_work_mem (MB)
    [2, 512, 1536, 100, 5, 64],
    [4, 1024, 3072, 100, 10, 128],
    [8, 2048, 6144, 200, 10, 256],
    [16, 4096, 12288, 400, 10, 512],
    [32, 8192, 24576, 400, 20, 1024],
  ]);
});

test("postgresMemorySettings: parallel workers follow the vCPUs, at most half (and 4) for one query", () => {
  const pick = (vcpus: number) => {
    const m = postgresMemorySettings(8192, vcpus);
    return [m.maxWorkerProcesses, m.maxParallelWorkers, m.maxParallelWorkersPerGather, m.maxParallelMaintenanceWorkers];
  };
  assert.deepEqual(pick(1), [8, 1, 1, 1]);
  assert.deepEqual(pick(2), [8, 2, 1, 1]);
  assert.deepEqual(pick(4), [8, 4, 2, 2]);
  assert.deepEqual(pick(16), [16, 16, 4, 4]);
});

test("postgresMemorySettings: a given max_connections is kept and work_mem shrinks or grows to the same budget", () => {
  assert.equal(postgresMemorySettings(8192, 4, 50).maxConnections, 50);
  assert.equal(postgresMemorySettings(8192, 4, 50).workMemMb, 40);
  assert.equal(postgresMemorySettings(2048, 2, 1000).workMemMb, 2, "never below 2 MB");
  assert.equal(postgresMemorySettings(32768, 16, 10).workMemMb, 256, "never above 256 MB");
});

test("postgresMemorySettings: every Hetzner server type in the price table keeps shared_buffers plus all work_mem within half its RAM", () => {
  for (const [name, type] of Object.entries(prices.serverTypes)) {
    const memoryMb = type.memoryGb * 1024;
    const m = postgresMemorySettings(memoryMb, type.vcpu);
    assert.equal(m.sharedBuffersMb, memoryMb / 4, name);
    assert.ok(m.sharedBuffersMb + m.maxConnections * m.workMemMb <= memoryMb / 2, `${name}: ${JSON.stringify(m)}`);
    assert.ok(m.maxConnections >= 100, `${name} keeps launch-day headroom`);
  }
});

test("postgresMemorySettings refuses what is not a server's RAM or a connection count", () => {
  assert.throws(() => postgresMemorySettings(512, 2), /memoryMb 512 must be a whole number of MB, at least 1024/);
  assert.throws(() => postgresMemorySettings(2048.5, 2), /memoryMb/);
  assert.throws(() => postgresMemorySettings(2048, 0), /vcpus 0/);
  assert.throws(() => postgresMemorySettings(2048, 2, -1), /maxConnections -1 must be 0 \(derive\) or 1\.\.5000/);
});

test("the server conf holds the restart-only settings: listen on loopback and the Docker bridge, memory, preload, WAL", () => {
  const m = postgresMemorySettings(8192, 4);
  assert.deepEqual(lines(renderPostgresServerConf(m, 5432)), [
    "listen_addresses = 'localhost,172.17.0.1'",
    "port = 5432",
    "max_connections = 200",
    "shared_buffers = 2048MB",
    "shared_preload_libraries = 'pg_stat_statements'",
    "max_worker_processes = 8",
    "wal_level = replica",
    "archive_mode = on",
  ]);
});

test("the tuning conf holds the reloadable settings, with /bin/true as the archive_command placeholder and why", () => {
  const text = renderPostgresTuningConf(postgresMemorySettings(8192, 4));
  assert.deepEqual(lines(text), [
    "effective_cache_size = 6144MB",
    "work_mem = 10MB",
    "maintenance_work_mem = 256MB",
    "max_parallel_workers = 4",
    "max_parallel_workers_per_gather = 2",
    "max_parallel_maintenance_workers = 2",
    "random_page_cost = 1.1",
    "effective_io_concurrency = 200",
    "password_encryption = 'scram-sha-256'",
    "archive_command = '/bin/true'",
  ]);
  assert.match(text, /backups role/);
  assert.match(text, /pg_wal grows until the disk is full/);
});

test("pg_hba.conf: peer for the superuser on the socket, SCRAM for the app role from loopback and Docker, nothing else", () => {
  const text = renderPostgresHba("shop", "shop_app");
  assert.deepEqual(
    lines(text).map((l) => l.split(/\s+/)),
    [
      ["local", "all", "postgres", "peer"],
      ["host", "shop", "shop_app", "127.0.0.1/32", "scram-sha-256"],
      ["host", "shop", "shop_app", "::1/128", "scram-sha-256"],
      ["host", "shop", "shop_app", "172.17.0.0/16", "scram-sha-256"],
    ],
  );
  assert.doesNotMatch(text, /\b(trust|md5|password|ident)\s*$/m);
  assert.doesNotMatch(text, /0\.0\.0\.0\/0|::\/0|\breplication\b/);
});

test("pgpass escapes ':' and '\\\\' so the password arrives whole", () => {
  assert.equal(renderPostgresPgpass("app", "app", "a:b\\c'd"), "*:*:app:app:a\\:b\\\\c'd\n");
});

test("scramSha256Verifier matches RFC 7677's SCRAM-SHA-256 example exchange", () => {
  const verifier = scramSha256Verifier("pencil", Buffer.from("W22ZaJ0SNY7soEsUEjb6gQ==", "base64"));
  const match = /^SCRAM-SHA-256\$4096:W22ZaJ0SNY7soEsUEjb6gQ==\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(verifier);
  assert.ok(match, verifier);
  const storedKey = Buffer.from(match[1], "base64");
  const serverKey = Buffer.from(match[2], "base64");
  const nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
  const authMessage = `n=user,r=rOprNGfwEbeRWgbNEkqO,r=${nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=${nonce}`;
  const serverSignature = createHmac("sha256", serverKey).update(authMessage).digest("base64");
  assert.equal(serverSignature, "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
  const clientSignature = createHmac("sha256", storedKey).update(authMessage).digest();
  const proof = Buffer.from("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "base64");
  const clientKey = Buffer.from(proof.map((b, i) => b ^ clientSignature[i]));
  assert.deepEqual(createHash("sha256").update(clientKey).digest(), storedKey);
});

test("postgresPasswordVerifier is the same on every render (the bundle's hash is the trigger) and differs per role and password", () => {
  assert.equal(postgresPasswordVerifier("app", PASSWORD), postgresPasswordVerifier("app", PASSWORD));
  assert.notEqual(postgresPasswordVerifier("app", PASSWORD), postgresPasswordVerifier("app2", PASSWORD));
  assert.notEqual(postgresPasswordVerifier("app", PASSWORD), postgresPasswordVerifier("app", `${PASSWORD}x`));
  assert.throws(() => scramSha256Verifier("pässword-long-enough", Buffer.alloc(16)), /printable ASCII/);
});

test("postgresRole: files, owners, and a handler that matches what each file needs", () => {
  const role = postgresRole(settings);
  assert.equal(role.name, "postgres");
  assert.deepEqual(role.packages, ["postgresql-17", "iproute2"]);
  const file = (path: string) => role.files.find((f) => f.path === path)!;
  assert.deepEqual(
    role.files.map((f) => `${f.path} ${f.mode} ${f.owner ?? "root"}:${f.group ?? "-"}`),
    [
      "/etc/systemd/system/postgresql@17-main.service.d/leaninfra.conf 0644 root:-",
      "/etc/postgresql/17/main/conf.d/10-leaninfra-server.conf 0644 root:-",
      "/etc/postgresql/17/main/conf.d/20-leaninfra-tuning.conf 0644 root:-",
      "/etc/postgresql/17/main/pg_hba.conf 0640 root:postgres",
      "/etc/leaninfra/secrets/postgres-app.pgpass 0600 root:-",
    ],
  );
  assert.match(file(POSTGRES_PATHS.serverConf).onChange!, /systemctl restart postgresql@17-main/);
  assert.match(file(POSTGRES_PATHS.serverConf).onChange!, /pg_ctlcluster 17 main restart/);
  for (const path of [POSTGRES_PATHS.tuningConf, POSTGRES_PATHS.hba]) {
    assert.match(file(path).onChange!, /systemctl try-reload-or-restart postgresql@17-main/, path);
    assert.match(file(path).onChange!, /pg_ctlcluster 17 main reload/, path);
    assert.doesNotMatch(file(path).onChange!, /systemctl restart|main restart/, path);
  }
  for (const f of role.files) {
    if (f.onChange) assert.match(f.onChange, /\[ -d \/run\/systemd\/system \]/, `${f.path}: handlers work without systemd`);
  }
  assert.match(renderPostgresSystemdDropIn(), /^After=docker\.service$/m);
  assert.match(renderPostgresSystemdDropIn(), /^RequiresMountsFor=\/srv\/data\/postgresql$/m);
  assert.equal(POSTGRES_PATHS.dataDirectory, "/srv/data/postgresql/17/main");
});

test("postgresRole: the password is only in the root-only pgpass file; the database gets its SCRAM verifier", () => {
  const role = postgresRole(settings);
  const bundle = renderRoleBundle(role);
  assert.equal(bundle.split(PASSWORD.replace(/[\\:]/g, (c) => `\\${c}`)).length - 1, 1, "once: in the pgpass heredoc");
  assert.ok(!bundle.includes(PASSWORD), "the raw password (unescaped) appears nowhere");
  for (const script of [role.apply!, role.validate!, role.healthCheck!]) assert.ok(!script.includes("k3J9-vQ2"));
  assert.ok(role.apply!.includes(postgresPasswordVerifier("app", PASSWORD)));
  assert.match(role.apply!, /alter role :"u" password 'SCRAM-SHA-256\$4096:/);
});

test("postgresRole: the move to the data volume refuses a cluster with data and never deletes one", () => {
  const apply = postgresRole(settings).apply!;
  assert.match(apply, /is not the fresh, empty cluster Debian creates/);
  assert.doesNotMatch(apply.replace(/rm -rf -- "\$partial"/, ""), /rm -r|dropdb|drop database/i, "only its own partial copy is ever removed");
});

test("postgresRole lists every problem with its settings at once", () => {
  assert.throws(
    () => postgresRole({ memoryMb: 512, vcpus: 0, maxConnections: -3, database: "Shop", user: "postgres", password: "short", port: 80 }),
    (error: Error) => {
      for (const part of [
        "memoryMb 512 must be the server's RAM in MB, at least 1024",
        "vcpus 0",
        "maxConnections -3",
        'database "Shop" is not a PostgreSQL identifier',
        'user "postgres" is PostgreSQL\'s own',
        "password must be 16 or more printable ASCII characters without spaces",
        "port 80 must be 1024..65535",
      ]) {
        assert.ok(error.message.includes(part), `missing ${JSON.stringify(part)} in:\n${error.message}`);
      }
      return true;
    },
  );
});
