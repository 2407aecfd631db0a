import assert from "node:assert/strict";
import test from "node:test";
import { spawnSync } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { renderRoleBundle } from "../../components/host/bundle";
import { SettingsError, StackFacts, placeholderInputs, placeholderPassword } from "../../components/host/define";
import {
  POSTGRES_PATHS,
  PostgresSettings,
  SERVER_SETTING_NAMES,
  TUNING_SETTING_NAMES,
  postgresMemorySettings,
  postgresPasswordVerifier,
  postgresRole,
  role as postgresDefinition,
  renderPostgresHba,
  renderPostgresPgpass,
  renderPostgresServerConf,
  renderPostgresSystemdDropIn,
  renderPostgresTuningConf,
  scramSha256Verifier,
} from "../../components/postgres";
import prices from "../../infra/data/prices.json";
import { assertShellcheckClean } from "../lib/shellcheck";
import { TEST_FACTS } from "../lib/facts";

const PASSWORD = "k3J9-vQ2:xW7\\pL5$rT8'";
const settings: PostgresSettings = { memoryMb: 8192, vcpus: 4, postgresMaxConnections: 0, postgresDatabase: "app", postgresUser: "app", password: PASSWORD };
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
  assert.throws(() => postgresMemorySettings(2048, 2, -1), /postgresMaxConnections -1 must be 0 \(derive\) or 1\.\.5000/);
  assert.throws(() => postgresMemorySettings(512, 2), SettingsError, "a settings problem, named by its key");
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
      ["local", "postgres", "leaninfra_monitor", "scram-sha-256"],
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
      "/etc/postgresql/17/main/conf.d/10-leaninfra-server.conf 0640 root:postgres",
      "/etc/postgresql/17/main/conf.d/20-leaninfra-tuning.conf 0640 root:postgres",
      "/etc/postgresql/17/main/pg_hba.conf 0640 root:postgres",
      "/etc/leaninfra/secrets/postgres-app.pgpass 0600 root:-",
    ],
  );
  // Debian's postgresql.conf and pg_ident.conf, and the data directory file apply writes, get the same mode.
  assert.match(role.apply!, /^readonly config_mode='0640'$/m);
  assert.match(
    role.apply!,
    /^readonly -a kept_config_files=\('\/etc\/postgresql\/17\/main\/postgresql\.conf' '\/etc\/postgresql\/17\/main\/pg_ident\.conf' '\/etc\/postgresql\/17\/main\/conf\.d\/00-leaninfra-data-directory\.conf'\)$/m,
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
  // The verifier is a rendered setting; the SQL that sets the password sends it on stdin (an unquoted heredoc).
  assert.match(role.apply!, /^readonly verifier='SCRAM-SHA-256\$4096:/m);
  assert.match(role.apply!, /<<SQL\nalter role :"u" password '\$verifier';\nSQL\n/);
  assert.equal(role.apply!.match(/^readonly verifier='([^']*)'$/m)?.[1], postgresPasswordVerifier("app", PASSWORD));
});

test("postgresRole: the move to the data volume refuses a cluster with data and never deletes one", () => {
  const apply = postgresRole(settings).apply!;
  assert.match(apply, /is not the fresh, empty cluster Debian creates/);
  assert.doesNotMatch(apply.replace(/rm -rf -- "\$partial"/, ""), /rm -r|dropdb|drop database/i, "only its own partial copy is ever removed");
});

test("postgresRole lists every problem with its settings at once", () => {
  assert.throws(
    () => postgresRole({ memoryMb: 512, vcpus: 0, postgresMaxConnections: -3, postgresDatabase: "Shop", postgresUser: "postgres", password: "short", port: 80 }),
    (error: Error) => {
      assert.ok(error instanceof SettingsError, `a SettingsError, not ${error.name}`);
      for (const part of [
        "memoryMb 512 must be the server's RAM in MB, at least 1024",
        "vcpus 0",
        "postgresMaxConnections -3",
        'postgresDatabase "Shop" is not a PostgreSQL identifier',
        'postgresUser "postgres" is PostgreSQL\'s own',
        "password must be 16 or more printable ASCII characters without spaces",
        "port 80 must be 1024..65535",
      ]) {
        assert.ok(error.message.includes(part), `missing ${JSON.stringify(part)} in:\n${error.message}`);
      }
      return true;
    },
  );
});

const FILES = path.join(__dirname, "../../components/postgres/files");

test("the postgres role's script files are shellcheck-clean on their own", () => {
  const files = fs.readdirSync(FILES).filter((f) => f.endsWith(".sh"));
  assert.deepEqual(files.sort(), ["apply.sh", "health-check.sh", "validate.sh"]);
  for (const file of files) {
    const result = spawnSync("shellcheck", ["-x", "-s", "bash", path.join("components/postgres/files", file)], { cwd: path.join(__dirname, "../.."), encoding: "utf8" });
    if (result.error) assert.fail(`shellcheck could not run (${result.error.message})`);
    assert.equal(result.status, 0, `shellcheck found problems in ${file}:\n${result.stdout}${result.stderr}`);
  }
});

test("the postgres role's rendered scripts and bundle are shellcheck-clean, with odd characters in the password", () => {
  const role = postgresRole({ ...settings, password: "p4ss:w0rd\\'\"$(x)`y`" });
  for (const name of ["validate", "apply", "healthCheck"] as const) {
    assert.doesNotMatch(role[name]!, /@settings-begin|@settings-end/, `${name}: the settings block is rendered`);
    assertShellcheckClean(`the rendered ${name}`, role[name]!);
  }
  assertShellcheckClean("the postgres bundle", renderRoleBundle(role));
});

test("the health check refuses settings overridden outside conf.d for every managed setting but archive_command", () => {
  const check = postgresRole(settings).healthCheck!;
  const names = /^readonly -a managed_settings=\((.*)\)$/m.exec(check)?.[1].split(" ").map((w) => w.replace(/'/g, ""));
  assert.deepEqual(names, [...SERVER_SETTING_NAMES, ...TUNING_SETTING_NAMES].filter((n) => n !== "archive_command"));
  assert.match(check, /^readonly conf_d='\/etc\/postgresql\/17\/main\/conf\.d'$/m);
});

/** The stack-wide facts render gets beside the postgres slice (it reads memoryMb and vcpus). */
const FACTS: StackFacts = { ...TEST_FACTS, stack: "test", staticPathPrefixes: [], volumeSizeGb: 10 };

/** The slice as the config parses it (defaults filled in), with the facts. */
const sliceWithFacts = (raw: Record<string, unknown> = {}) => ({ ...postgresDefinition.settings.parse(raw), ...FACTS });

test("the postgres definition: its keys with defaults and descriptions, its generated password, after base and docker", () => {
  assert.equal(postgresDefinition.name, "postgres");
  assert.deepEqual(postgresDefinition.after, ["base", "docker"]);
  assert.deepEqual(postgresDefinition.settings.parse({}), { postgresDatabase: "app", postgresUser: "app", postgresMaxConnections: 0 });
  assert.deepEqual(postgresDefinition.inputs, { password: { from: "password", resource: "postgres-app-password" } });
  for (const [key, schema] of Object.entries(postgresDefinition.settings.shape)) assert.ok(schema.description, key);
  assert.equal(postgresDefinition.settings.safeParse({ postgresUser: "postgres" }).success, false, "the superuser is refused by the schema already");
  assert.equal(postgresDefinition.settings.safeParse({ postgresDatabase: "Shop" }).success, false);
  assert.equal(postgresDefinition.settings.safeParse({ postgresMaxConnections: 5001 }).success, false);
});

test("the postgres definition offers the app's DATABASE_URL, database, user and port", () => {
  const s = sliceWithFacts({ postgresDatabase: "shop", postgresUser: "shop_app" });
  const inputs = placeholderInputs(postgresDefinition as never, s, new Map(), {}) as { password: string };
  assert.equal(inputs.password, placeholderPassword("postgres-app-password"));
  assert.deepEqual(postgresDefinition.offers!(s, { password: "Secret123" }), {
    databaseUrl: "postgresql://shop_app:Secret123@host.docker.internal:5432/shop",
    postgresDatabase: "shop",
    postgresUser: "shop_app",
    postgresPort: "5432",
  });
  const role = postgresDefinition.render(s, inputs);
  assert.equal(role.description, "PostgreSQL 17 on the data volume, database shop owned by shop_app, loopback and Docker only");
  assert.match(role.files.find((f) => f.path === POSTGRES_PATHS.hba)!.content, /^host +shop +shop_app +127\.0\.0\.1\/32 +scram-sha-256$/m);
  assert.deepEqual(role, postgresRole({ memoryMb: 8192, vcpus: 4, postgresMaxConnections: 0, postgresDatabase: "shop", postgresUser: "shop_app", password: inputs.password }));
});

// Each refusal of render: what the stack's config check reports as leaninfra:<key>.
const REFUSALS: [what: string, raw: Record<string, unknown>, facts: Partial<StackFacts>, password: string, key: string, says: string][] = [
  ["template1 as the database", { postgresDatabase: "template1" }, {}, "", "postgresDatabase", '"template1" is PostgreSQL\'s own (accepted: another identifier, e.g. app)'],
  ["template0 as the database", { postgresDatabase: "template0" }, {}, "", "postgresDatabase", '"template0" is PostgreSQL\'s own'],
  ["postgres as the database", { postgresDatabase: "postgres" }, {}, "", "postgresDatabase", '"postgres" is PostgreSQL\'s own'],
  ["template1 as the user", { postgresUser: "template1" }, {}, "", "postgresUser", '"template1" is PostgreSQL\'s own'],
  ["template0 as the user", { postgresUser: "template0" }, {}, "", "postgresUser", '"template0" is PostgreSQL\'s own'],
  ["less RAM than PostgreSQL needs", {}, { memoryMb: 512 }, "", "memoryMb", "512 must be the server's RAM in MB, at least 1024"],
  ["no vCPU", {}, { vcpus: 0 }, "", "vcpus", "0 must be the server's vCPU count, at least 1"],
  ["a short password", {}, {}, "short", "password", "must be 16 or more printable ASCII characters"],
];

for (const [what, raw, facts, password, key, says] of REFUSALS) {
  test(`the postgres definition's render refuses ${what} with a SettingsError starting with ${key}`, () => {
    const s = { ...sliceWithFacts(raw), ...facts };
    assert.throws(
      () => postgresDefinition.render(s, { password: password || placeholderPassword("postgres-app-password") }),
      (error: Error) => {
        assert.ok(error instanceof SettingsError, `a SettingsError, not ${error.name}: ${error.message}`);
        assert.equal(error.role, "postgres");
        assert.ok(error.problems.length > 0);
        for (const problem of error.problems) assert.ok(problem.startsWith(`${key} `), `starts with ${key}: ${problem}`);
        assert.ok(error.problems.some((p) => p.includes(says)), `says ${JSON.stringify(says)}: ${error.problems.join("; ")}`);
        return true;
      },
    );
  });
}

test("the postgres definition's render refuses a max_connections outside 0..5000 (a value the schema would refuse first)", () => {
  assert.throws(
    () => postgresDefinition.render({ ...sliceWithFacts(), postgresMaxConnections: 6000 }, { password: placeholderPassword("postgres-app-password") }),
    (error: Error) => error instanceof SettingsError && error.problems.length === 1 && error.problems[0].startsWith("postgresMaxConnections 6000 must be 0"),
  );
});
