import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import test from "node:test";
import {
  ARCHIVE_COMMAND,
  BACKUPS,
  BACKUPS_FILES_DIR,
  BACKUPS_PATHS,
  BACKUP_JOBS,
  BACKUP_METRICS,
  BackupsSettings,
  DEFAULT_SCHEDULES,
  archivePushQueueMaxMiB,
  backupProcessMax,
  backupScript,
  backupTimers,
  backupsRole,
  backupsSettingsProblems,
  fullRetentionDays,
  parseS3Endpoint,
  renderArchivingConf,
  renderBackupService,
  renderBackupTimer,
  renderBackupsSecretsEnv,
  renderDrillService,
  renderDrillTimer,
  renderPgbackrestConf,
  renderS3cmdConfig,
  renderWalQueueService,
  renderWalQueueTimer,
  role,
} from "../../components/backups";
import { LAYOUT } from "../../components/host/layout";
import { BACKUP_LAYOUT, lifecycleRules, lockRules } from "../../components/backup-bucket/policy";
import { renderRoleBundle } from "../../components/host/bundle";
import { SettingsError, StackFacts } from "../../components/host/define";
import { POSTGRES_PATHS } from "../../components/postgres";
import { assertShellcheckClean } from "../lib/shellcheck";
import { TEST_FACTS } from "../lib/facts";

const SECRET_KEY = "9f".repeat(32);
const PASSPHRASE = "Kq7vN2xL9pR4tW8zB3mC6fH1jD5gS0aE";
const settings: BackupsSettings = {
  s3: {
    endpoint: "https://0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com",
    region: "auto",
    bucket: "leaninfra-prod-backups",
    accessKeyId: "a1b2c3d4e5f60718293a4b5c6d7e8f90",
    secretAccessKey: SECRET_KEY,
  },
  cipherPassphrase: PASSPHRASE,
  backupRetentionDays: 35,
  backupLockDays: 14,
  postgresDatabase: "app",
  vcpus: 4,
};

/** [section, key] -> value of an INI file; throws on a key set twice in one section. */
function ini(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let section = "";
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = header[1];
      continue;
    }
    const kv = /^([a-z0-9_-]+) ?= ?(.*)$/.exec(line);
    assert.ok(kv, `not a key=value line: ${JSON.stringify(line)}`);
    const key = `${section}/${kv[1]}`;
    assert.ok(!out.has(key), `${key} is set twice`);
    out.set(key, kv[2]);
  }
  return out;
}

test("fullRetentionDays: a week of full backups and a week of slack below the bucket's expiry, never below the lock", () => {
  assert.equal(fullRetentionDays(35, 14), 21);
  assert.equal(fullRetentionDays(28, 14), 14);
  assert.equal(fullRetentionDays(21), 7);
  assert.equal(fullRetentionDays(365), 351);
  assert.throws(() => fullRetentionDays(20), /backupRetentionDays 20 leaves pgBackRest 6 days of point-in-time recovery; at least 7 are needed, so the bucket must keep backups 21 days or more \(leaninfra:backupRetentionDays\)/);
  assert.throws(() => fullRetentionDays(14), /leaninfra:backupRetentionDays/);
  assert.throws(() => fullRetentionDays(21, 14), /would expire backups after 7 days .* bucket lock refuses deletes for 14 days: raise leaninfra:backupRetentionDays to at least 28 or lower leaninfra:backupLockDays/);
});

test("the retention pgBackRest is given fits the bucket's real lifecycle and lock rules", () => {
  const bucket = { accountId: "0".repeat(32), bucketName: "b-backups", locationHint: "weur", jurisdiction: "default" as const, retentionDays: 35, lockDays: 14, dumpRetentionDays: 365 };
  const expiry = lifecycleRules(bucket).find((r) => r.conditions.prefix === BACKUP_LAYOUT.backupsPrefix)!.deleteObjectsTransition!.condition.maxAge / 86400;
  const lock = lockRules(bucket).find((r) => r.prefix === BACKUP_LAYOUT.backupsPrefix)!.condition.maxAgeSeconds / 86400;
  const n = fullRetentionDays(expiry, lock);
  assert.ok(n + 7 < expiry, `a full backup kept until ${n + 7} days must be gone before the lifecycle deletes at ${expiry}`);
  assert.ok(n >= lock, "pgBackRest never deletes a locked object");
  const conf = ini(renderPgbackrestConf({ ...settings, backupRetentionDays: expiry, backupLockDays: lock }));
  assert.equal(conf.get("global/repo1-retention-full-type"), "time");
  assert.equal(conf.get("global/repo1-retention-full"), String(n));
  assert.equal(conf.get("global/repo1-path"), BACKUP_LAYOUT.repoPath);
  assert.equal(BACKUPS.stanza, BACKUP_LAYOUT.stanza);
  assert.ok(conf.has(`${BACKUP_LAYOUT.stanza}/pg1-path`));
});

test("parseS3Endpoint: R2's endpoint with or without https://, a port for tests, nothing else", () => {
  const host = "0123456789abcdef0123456789abcdef.eu.r2.cloudflarestorage.com";
  assert.deepEqual(parseS3Endpoint(`https://${host}`), { host, port: undefined, url: `https://${host}` });
  assert.deepEqual(parseS3Endpoint(host), { host, port: undefined, url: `https://${host}` });
  assert.deepEqual(parseS3Endpoint(`https://${host}/`), { host, port: undefined, url: `https://${host}` });
  assert.deepEqual(parseS3Endpoint(`https://${host}:443`), { host, port: undefined, url: `https://${host}` });
  assert.deepEqual(parseS3Endpoint("https://localhost:9443"), { host: "localhost", port: 9443, url: "https://localhost:9443" });
  for (const bad of [`http://${host}`, `https://${host}/bucket`, "", "https://", "s3://x", "https://a b", "https://x:99999"]) {
    assert.throws(() => parseS3Endpoint(bad), /s3\.endpoint|invalid port/, bad);
  }
});

test("backupsSettingsProblems names every bad field", () => {
  assert.deepEqual(backupsSettingsProblems(settings), []);
  const problems = backupsSettingsProblems({
    s3: { endpoint: "http://x", region: "Auto Region", bucket: "B", accessKeyId: "short", secretAccessKey: "has'quote-but-long-enough" },
    cipherPassphrase: "pass word with spaces",
    backupRetentionDays: 10,
    backupLockDays: 0,
    postgresDatabase: "App-DB",
    vcpus: 0,
    port: 80,
    uploadChunkMiB: 4,
    schedules: { full: "Sun 01:30\nExecStart=/bin/sh", hourly: "x" } as never,
    storageCaPem: "not a certificate",
  });
  const fields = problems.map((p) => p.split(" ")[0]);
  assert.deepEqual(fields, [
    "s3.endpoint",
    "s3.bucket",
    "s3.region",
    "s3.accessKeyId",
    "s3.secretAccessKey",
    "cipherPassphrase",
    "backupLockDays",
    "backupRetentionDays",
    "postgresDatabase",
    "vcpus",
    "port",
    "uploadChunkMiB",
    "schedules.full",
    "schedules.hourly",
    "storageCaPem",
  ]);
  assert.throws(() => backupsRole({ ...settings, cipherPassphrase: "x" }), (error: unknown) => {
    assert.ok(error instanceof SettingsError, `${error}`);
    assert.match(error.message, /backups settings have 1 problem:\n  - cipherPassphrase must be 20 or more/);
    return true;
  });
  for (const c of ["'", '"', "\\", "`", "$", "#", ";", " "]) {
    assert.equal(backupsSettingsProblems({ ...settings, cipherPassphrase: `${PASSPHRASE}${c}x` }).length, 1, `passphrase with ${JSON.stringify(c)}`);
  }
  assert.match(backupsSettingsProblems({ ...settings, cipherPassphrase: SECRET_KEY }).join(), /cipherPassphrase must not be one of the S3 credentials/);
});

test("pgbackrest.conf: R2 over https with path-style requests, fixed part size, encrypted, compressed, no resume, stanza main", () => {
  const conf = ini(renderPgbackrestConf(settings));
  const expected: Record<string, string> = {
    "global/repo1-type": "s3",
    "global/repo1-s3-endpoint": "0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com",
    "global/repo1-s3-region": "auto",
    "global/repo1-s3-bucket": "leaninfra-prod-backups",
    "global/repo1-s3-uri-style": "path",
    "global/repo1-s3-key": settings.s3.accessKeyId,
    "global/repo1-s3-key-secret": SECRET_KEY,
    "global/repo1-path": "/pgbackrest",
    "global/repo1-storage-upload-chunk-size": "16MiB",
    "global/repo1-cipher-type": "aes-256-cbc",
    "global/repo1-cipher-pass": PASSPHRASE,
    "global/repo1-retention-full-type": "time",
    "global/repo1-retention-full": "21",
    "global/compress-type": "zst",
    "global/process-max": "2",
    "global/start-fast": "y",
    "global/resume": "n",
    "global/log-level-console": "warn",
    "global/log-level-file": "info",
    "global:archive-push/archive-async": "y",
    "global:archive-push/spool-path": "/var/spool/pgbackrest",
    // A fifth of the default 20 GB volume (settings give no volumeSizeGb).
    "global:archive-push/archive-push-queue-max": "4096MiB",
    "main/pg1-path": POSTGRES_PATHS.dataDirectory,
    "main/pg1-port": "5432",
    "main/pg1-socket-path": "/var/run/postgresql",
  };
  assert.deepEqual(Object.fromEntries(conf), expected);

  const test = ini(renderPgbackrestConf({ ...settings, s3: { ...settings.s3, endpoint: "https://localhost:9443" }, port: 25432, uploadChunkMiB: 5, storageCaPem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" }));
  assert.equal(test.get("global/repo1-s3-endpoint"), "localhost");
  assert.equal(test.get("global/repo1-storage-port"), "9443");
  assert.equal(test.get("global/repo1-storage-ca-file"), BACKUPS_PATHS.storageCaFile);
  assert.equal(test.get("global/repo1-storage-upload-chunk-size"), "5MiB");
  assert.equal(test.get("main/pg1-port"), "25432");
  for (const text of [renderPgbackrestConf(settings), renderS3cmdConfig(settings)]) {
    assert.doesNotMatch(text, /verify-tls|check_ssl_certificate = False/, "TLS is always verified");
  }
});

test("process-max: half the vCPUs, 1 to 4", () => {
  assert.deepEqual([1, 2, 3, 4, 8, 16].map(backupProcessMax), [1, 1, 1, 2, 4, 4]);
});

test("the archiving conf.d file comes after the postgres role's and sets pgBackRest's archive-push with a one-minute timeout", () => {
  const name = BACKUPS_PATHS.archivingConf.slice(POSTGRES_PATHS.confD.length + 1);
  assert.ok(BACKUPS_PATHS.archivingConf.startsWith(`${POSTGRES_PATHS.confD}/`));
  for (const other of [POSTGRES_PATHS.serverConf, POSTGRES_PATHS.tuningConf, POSTGRES_PATHS.dataDirectoryConf]) {
    assert.ok(name > other.slice(POSTGRES_PATHS.confD.length + 1), `${name} sorts after ${other}`);
  }
  const lines = renderArchivingConf().split("\n").filter((l) => l && !l.startsWith("#"));
  assert.deepEqual(lines, ["archive_command = 'pgbackrest --stanza=main archive-push %p'", "archive_timeout = 60"]);
  assert.equal(ARCHIVE_COMMAND, "pgbackrest --stanza=main archive-push %p");
});

test("the secrets env file holds pgBackRest's own variables, unquoted, as the drill reads them", () => {
  const lines = renderBackupsSecretsEnv(settings).split("\n").filter((l) => l && !l.startsWith("#"));
  assert.deepEqual(lines, [
    `PGBACKREST_REPO1_S3_KEY=${settings.s3.accessKeyId}`,
    `PGBACKREST_REPO1_S3_KEY_SECRET=${SECRET_KEY}`,
    `PGBACKREST_REPO1_CIPHER_PASS=${PASSPHRASE}`,
  ]);
  for (const line of lines) assert.match(line, /^(PGBACKREST_[A-Z0-9_]+)=(.*)$/);
});

test("s3cmd's config: the same bucket, path-style, TLS verified, the same fixed part size", () => {
  const conf = ini(renderS3cmdConfig(settings));
  assert.equal(conf.get("default/host_base"), "0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com");
  assert.equal(conf.get("default/host_bucket"), conf.get("default/host_base"), "no %(bucket)s: path-style");
  assert.equal(conf.get("default/bucket_location"), "auto");
  assert.equal(conf.get("default/use_https"), "True");
  assert.equal(conf.get("default/check_ssl_certificate"), "True");
  assert.equal(conf.get("default/multipart_chunk_size_mb"), "16");
  assert.equal(conf.get("default/signature_v2"), "False");
  assert.equal(conf.has("default/ca_certs_file"), false);
  const local = ini(renderS3cmdConfig({ ...settings, s3: { ...settings.s3, endpoint: "localhost:9443" } }));
  assert.equal(local.get("default/host_base"), "localhost:9443");
});

test("units: one template service, a persistent randomized timer per job, and the drill's timer", () => {
  const service = renderBackupService();
  assert.match(service, new RegExp(`^ExecStart=${BACKUPS.bin.backup} %i$`, "m"));
  assert.match(service, /^Type=oneshot$/m);
  for (const job of BACKUP_JOBS) {
    const timer = renderBackupTimer(job, DEFAULT_SCHEDULES);
    assert.match(timer, new RegExp(`^OnCalendar=${DEFAULT_SCHEDULES[job].replace(/[*.]/g, "\\$&")}$`, "m"));
    assert.match(timer, /^Persistent=true$/m);
    assert.match(timer, /^RandomizedDelaySec=\d+(min|h)$/m);
    assert.match(timer, new RegExp(`^Unit=leaninfra-backup@${job}\\.service$`, "m"));
    assert.match(timer, /^WantedBy=timers\.target$/m);
  }
  assert.match(renderDrillService(), new RegExp(`^ExecStart=${BACKUPS.bin.drill}$`, "m"));
  const drill = renderDrillTimer({ ...DEFAULT_SCHEDULES, drill: "Mon *-*-* 02:00:00" });
  assert.match(drill, /^OnCalendar=Mon \*-\*-\* 02:00:00$/m);
  assert.match(drill, /^Unit=leaninfra-drill\.service$/m);
  assert.match(drill, /^Persistent=true$/m);
  assert.deepEqual(backupTimers(BACKUP_JOBS), [
    "leaninfra-backup@full.timer",
    "leaninfra-backup@diff.timer",
    "leaninfra-backup@check.timer",
    "leaninfra-backup@verify.timer",
    "leaninfra-backup@dump.timer",
    "leaninfra-drill.timer",
    "leaninfra-wal-queue.timer",
  ]);
  assert.match(renderWalQueueService(), new RegExp(`^ExecStart=${BACKUPS.bin.walQueue}$`, "m"));
  assert.match(renderWalQueueTimer(), /^OnUnitActiveSec=1min$/m);
});

test("archive-push-queue-max: a fifth of the data volume, in the conf and in the queue metric's script", () => {
  assert.equal(archivePushQueueMaxMiB(10), 2048);
  assert.equal(archivePushQueueMaxMiB(20), 4096);
  assert.equal(archivePushQueueMaxMiB(100), 20480);
  assert.equal(archivePushQueueMaxMiB(0.001), 16, "never below one WAL segment");
  const role = backupsRole({ ...settings, volumeSizeGb: 50 });
  const conf = role.files.find((f) => f.path === BACKUPS.pgbackrestConf)!.content;
  assert.match(conf, /^\[global:archive-push\]\n(?:.*\n)*?archive-async=y\n(?:.*\n)*?archive-push-queue-max=10240MiB$/m);
  assert.match(conf, /50 GB data volume/);
  const queue = role.files.find((f) => f.path === BACKUPS.bin.walQueue)!;
  assert.equal(queue.mode, "0755");
  assert.match(queue.content, new RegExp(`^readonly queue_max_bytes=${10240 * 1024 * 1024}$`, "m"));
  assert.ok(queue.content.split("\n").includes(`readonly -a archive_push_logs=(${BACKUPS.archivePushLogs.map((l) => `'${l}'`).join(" ")})`));
  assertShellcheckClean("leaninfra-wal-queue", queue.content);
  for (const bad of [0, -1, Number.NaN, 20000]) {
    assert.match(backupsSettingsProblems({ ...settings, volumeSizeGb: bad }).join("\n"), /^volumeSizeGb .* must be the data volume's size in GB/m, String(bad));
  }
});

test("every service of the role runs sandboxed; the queue metric's without network and with one capability", () => {
  for (const unit of [renderBackupService(), renderDrillService(), renderWalQueueService()]) {
    for (const line of ["ProtectSystem=(full|strict)", "ProtectHome=yes", "NoNewPrivileges=yes", "ProtectKernelTunables=yes", "RestrictSUIDSGID=yes", "SystemCallArchitectures=native"]) {
      assert.match(unit, new RegExp(`^${line}$`, "m"), `${unit.split("\n")[2]}: ${line}`);
    }
  }
  // pgBackRest's locks in /tmp/pgbackrest are shared with PostgreSQL's archive-push: no private /tmp for the jobs.
  assert.doesNotMatch(renderBackupService(), /PrivateTmp/);
  const queue = renderWalQueueService();
  assert.match(queue, /^PrivateTmp=yes$/m);
  assert.match(queue, /^CapabilityBoundingSet=CAP_DAC_READ_SEARCH$/m);
  assert.match(queue, /^PrivateNetwork=yes$/m);
  assert.match(queue, /^RestrictAddressFamilies=AF_UNIX$/m);
  assert.match(queue, new RegExp(`^ReadWritePaths=${LAYOUT.textfileDir}$`, "m"));
});

test("default schedules: full weekly, diff the other six days, check daily, verify weekly, dump monthly, drill weekly", () => {
  assert.deepEqual({ ...DEFAULT_SCHEDULES }, {
    full: "Sun *-*-* 01:30:00",
    diff: "Mon..Sat *-*-* 01:30:00",
    check: "*-*-* 13:30:00",
    verify: "Wed *-*-* 03:30:00",
    dump: "*-*-01 04:30:00",
    drill: "Sat *-*-* 05:30:00",
  });
  const role = backupsRole({ ...settings, schedules: { dump: "*-*-15 03:00:00" } });
  const dumpTimer = role.files.find((f) => f.path.endsWith("leaninfra-backup@dump.timer"))!;
  assert.match(dumpTimer.content, /^OnCalendar=\*-\*-15 03:00:00$/m);
  const fullTimer = role.files.find((f) => f.path.endsWith("leaninfra-backup@full.timer"))!;
  assert.match(fullTimer.content, /^OnCalendar=Sun \*-\*-\* 01:30:00$/m, "others keep their defaults");
});

test("the role: secrets only in root/postgres-readable files, never in scripts or units; the bundle renders and passes shellcheck", () => {
  const role = backupsRole(settings);
  assert.deepEqual(role.packages, ["pgbackrest", "s3cmd", "openssl", "curl", "jq"]);
  const byPath = new Map(role.files.map((f) => [f.path, f]));
  assert.deepEqual(
    { mode: byPath.get(BACKUPS.pgbackrestConf)!.mode, owner: byPath.get(BACKUPS.pgbackrestConf)!.owner ?? "root", group: byPath.get(BACKUPS.pgbackrestConf)!.group },
    { mode: "0640", owner: "root", group: "postgres" },
  );
  assert.equal(byPath.get(BACKUPS.secretsFile)!.mode, "0600");
  assert.equal(byPath.get(BACKUPS_PATHS.s3cmdConfig)!.mode, "0600");
  assert.equal(byPath.get(BACKUPS.bin.backup)!.mode, "0755");
  assert.equal(byPath.has(BACKUPS_PATHS.storageCaFile), false, "no test CA in production");
  const secretFiles: string[] = [BACKUPS.pgbackrestConf, BACKUPS.secretsFile, BACKUPS_PATHS.s3cmdConfig];
  for (const file of role.files) {
    const holds = file.content.includes(SECRET_KEY) || file.content.includes(PASSPHRASE);
    assert.equal(holds, secretFiles.includes(file.path), `${file.path} ${holds ? "holds" : "lacks"} a secret`);
    if (holds) assert.match(file.mode, /^06[04]0$/);
  }
  for (const script of [role.validate!, role.apply!, role.healthCheck!]) {
    assert.ok(!script.includes(SECRET_KEY) && !script.includes(PASSPHRASE), "no secret in a script the bundle runs");
  }
  const bundle = renderRoleBundle(role);
  const header = bundle.split("\n").filter((l) => l.startsWith("#")).slice(0, 10).join("\n");
  assert.ok(!header.includes(PASSPHRASE));
  assertShellcheckClean("the backups bundle", bundle);
  const withCa = backupsRole({ ...settings, s3: { ...settings.s3, endpoint: "https://localhost:9443" }, storageCaPem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" });
  assert.equal(withCa.files.find((f) => f.path === BACKUPS_PATHS.storageCaFile)?.mode, "0644");
  assertShellcheckClean("the backups bundle with a test CA", renderRoleBundle(withCa));
});

test("leaninfra-backup: its layout from the contract, the metric names it writes, and shellcheck clean", () => {
  const script = backupScript(settings);
  for (const [name, value] of [
    ["stanza", `'${BACKUPS.stanza}'`],
    ["pgbackrest_conf", `'${BACKUPS.pgbackrestConf}'`],
    ["secrets_file", `'${BACKUPS.secretsFile}'`],
    ["backup_metrics", `'${BACKUPS.metrics.backup}'`],
    ["dump_metrics", `'${BACKUPS.metrics.dump}'`],
    ["log_file", `'${BACKUPS.logs.backup}'`],
    ["dumps_prefix", `'${BACKUPS.dumpsPrefix}'`],
    ["bucket", "'leaninfra-prod-backups'"],
    ["database", "'app'"],
    ["pg_port", "5432"],
    ["ca_file", "''"],
    ["endpoint_url", "'https://0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com'"],
  ]) {
    assert.match(script, new RegExp(`^readonly ${name}=${value.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`, "m"), name);
  }
  assert.ok(!script.includes(SECRET_KEY) && !script.includes(PASSPHRASE), "the script reads secrets from files, it holds none");
  // Every exported metric name is one the script writes (prefix + family).
  for (const name of Object.values(BACKUP_METRICS)) {
    const [, prefix, family] = /^(leaninfra_(?:backup|dump))_(.+)$/.exec(name)!;
    assert.ok(script.includes(`[${family}]=`) && script.includes(`prefix=${prefix}`), name);
  }
  assertShellcheckClean("leaninfra-backup", script);
});

const REPO = path.join(__dirname, "..", "..");
// leaninfra-drill.sh, leaninfra-restore.sh and the pgbackrest-lib.sh they include are checked by tests/unit/drill.test.ts.
const DRILL_FILES = ["leaninfra-drill.sh", "leaninfra-restore.sh", "pgbackrest-lib.sh"];

test("the role's script files are shellcheck-clean on their own, the shared library included", () => {
  const files = fs.readdirSync(BACKUPS_FILES_DIR).filter((name) => name.endsWith(".sh") && !DRILL_FILES.includes(name));
  assert.deepEqual(files.sort(), ["backups-apply.sh", "backups-health-check.sh", "backups-validate.sh", "leaninfra-backup.sh", "leaninfra-wal-queue.sh"]);
  for (const name of files) {
    const file = path.relative(REPO, path.join(BACKUPS_FILES_DIR, name));
    const result = spawnSync("shellcheck", ["-x", "-s", "bash", file], { cwd: REPO, encoding: "utf8" });
    assert.ok(!result.error, `shellcheck could not run: ${result.error?.message}`);
    assert.equal(result.status, 0, `shellcheck found problems in ${file}:\n${result.stdout}${result.stderr}`);
  }
});

test("the rendered scripts: the library inlined, the settings filled in, shellcheck-clean", () => {
  const script = backupScript(settings);
  assert.doesNotMatch(script, /@lib|@settings-(begin|end)/);
  assert.match(script, /^take_lock\(\) \{$/m, "the shared library is inlined");
  assert.match(script, /^readonly -a job_time_limits=\('full=12h' 'diff=6h' 'check=30m' 'verify=12h' 'dump=12h'\)$/m);
  assert.match(script, /^readonly -a dump_cipher_options=\('-aes-256-cbc' '-pbkdf2' '-iter' '200000' '-md' 'sha256'\)$/m);
  const backups = backupsRole(settings);
  for (const [name, snippet] of [["validate", backups.validate!], ["apply", backups.apply!], ["healthCheck", backups.healthCheck!]]) {
    assert.doesNotMatch(snippet, /@settings-(begin|end)|^#!/m, name);
    assertShellcheckClean(`the backups role's ${name}`, `#!/usr/bin/env bash\n${snippet}`);
  }
  assert.match(backups.apply!, /^readonly ca_file=''$/m);
  assert.match(backups.apply!, /^readonly repo='s3:\/\/leaninfra-prod-backups\/pgbackrest'$/m);
  const withCa = backupsRole({ ...settings, storageCaPem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" });
  assert.match(withCa.apply!, new RegExp(`^readonly ca_file='${BACKUPS_PATHS.storageCaFile}'$`, "m"));
});

const FACTS: StackFacts = { ...TEST_FACTS, staticHostname: "static", staticPathPrefixes: [], volumeSizeGb: 40 };
const INPUTS = { s3: { ...settings.s3, region: "auto" }, cipherPassphrase: PASSPHRASE, postgresDatabase: "app" };

test("the role definition: its slice's defaults, its inputs, and render gives the role backupsRole gives", () => {
  const slice = role.settings.parse({});
  assert.deepEqual(slice, { drillRowTolerancePercent: 5, drillFreshnessQuery: "", drillMaxDataAgeMinutes: 1560, drillAppEnv: [] });
  assert.deepEqual(role.after, ["postgres"]);
  assert.deepEqual(Object.keys(role.inputs!), ["s3", "cipherPassphrase", "postgresDatabase"]);
  assert.deepEqual(role.inputs!.postgresDatabase, { from: "role", role: "postgres", offer: "postgresDatabase" });
  assert.deepEqual(role.inputs!.cipherPassphrase, { from: "password", resource: "backup-cipher-passphrase" });
  const rendered = role.render({ ...FACTS, ...slice }, INPUTS);
  assert.deepEqual(rendered, backupsRole({ ...settings, hostname: "app", volumeSizeGb: 40, drillAppEnv: [] }));
  const withEnv = role.render({ ...FACTS, ...slice, drillAppEnv: ["MAIL_DELIVERY=off"] }, INPUTS);
  assert.ok(withEnv.files.find((f) => f.path === BACKUPS.bin.drill)!.content.split("\n").includes("readonly -a app_env=('MAIL_DELIVERY=off')"));
  // An empty query is no query: the drill's default.
  const drillFile = (r: typeof rendered) => r.files.find((f) => f.path === BACKUPS.bin.drill)!.content;
  const query = "SELECT max(created_at) FROM orders";
  const withQuery = role.render({ ...FACTS, ...slice, drillFreshnessQuery: query }, INPUTS);
  assert.ok(drillFile(withQuery).includes(query));
  assert.notEqual(drillFile(withQuery), drillFile(rendered));
});

test("the role definition refuses every bad value with a SettingsError whose problems start with the key", () => {
  const slice = role.settings.parse({});
  const cases: [string, Record<string, unknown>, Partial<typeof INPUTS>][] = [
    ["drillFreshnessQuery", { drillFreshnessQuery: "DELETE FROM orders" }, {}],
    ["drillRowTolerancePercent", { drillRowTolerancePercent: 101 }, {}],
    ["drillMaxDataAgeMinutes", { drillMaxDataAgeMinutes: 0 }, {}],
    ["backupRetentionDays", { backupRetentionDays: 20 }, {}],
    ["backupLockDays", { backupLockDays: 30 }, {}],
    ["backupLockDays", { backupLockDays: 0 }, {}],
    ["hostname", { hostname: "App_1" }, {}],
    ["drillAppEnv[0]", { drillAppEnv: ["LEANINFRA_DRILL=0"] }, {}],
    ["drillAppEnv[1]", { drillAppEnv: ["A=1", "B=two\u0007"] }, {}],
    ["vcpus", { vcpus: 0 }, {}],
    ["postgresDatabase", {}, { postgresDatabase: "App-DB" }],
    ["cipherPassphrase", {}, { cipherPassphrase: "short" }],
    ["s3.endpoint", {}, { s3: { ...INPUTS.s3, endpoint: "http://x" } }],
    ["s3.bucket", {}, { s3: { ...INPUTS.s3, bucket: "B" } }],
  ];
  for (const [key, values, inputs] of cases) {
    assert.throws(
      () => role.render({ ...FACTS, ...slice, ...values } as never, { ...INPUTS, ...inputs }),
      (error: unknown) => {
        assert.ok(error instanceof SettingsError, `${key}: ${error}`);
        assert.equal(error.role, "backups");
        assert.ok(error.problems.length >= 1);
        for (const problem of error.problems) assert.ok(problem.startsWith(`${key} `), `${key}: ${problem}`);
        return true;
      },
      key,
    );
  }
});
