import test from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  DEPLOY_LOCK_FILE,
  DRILL_LOCK_FILE,
  DRILL_SCRIPT_FILE,
  DrillSettings,
  RESTORE_SCRIPT_FILE,
  RestoreSettings,
  drillMetrics,
  drillScript,
  drillSettingsProblems,
  restoreScript,
  restoreSettingsProblems,
} from "../../components/backups/drill";
import { BACKUPS } from "../../components/backups/layout";
import { BACKUPS_PATHS } from "../../components/backups/pgbackrest";
import { SettingsError } from "../../components/host/define";
import { POSTGRES_PATHS } from "../../components/postgres/config";
import { assertShellcheckClean } from "../lib/shellcheck";

const base: DrillSettings = { postgresDatabase: "app" };
const restoreBase: RestoreSettings = { hostname: "shop", postgresDatabase: "app" };
const REPO_ROOT = path.join(__dirname, "..", "..");

test("drill and restore scripts render deterministically from the shared layout", () => {
  const drill = drillScript(base);
  assert.equal(drillScript({ ...base }), drill);
  assert.equal(restoreScript({ ...restoreBase }), restoreScript(restoreBase));
  assert.match(drill, /^#!\/usr\/bin\/env bash\n# leaninfra-drill: /);
  assert.match(drill, /^set -Eeuo pipefail$/m);
  // The drill's files (the scratch cluster's config, the app's env file) are its owner's only.
  assert.deepEqual(drill.match(/^umask \d+$/gm)?.pop(), "umask 077");
  for (const script of [drill, restoreScript(restoreBase)]) {
    assert.doesNotMatch(script, /@lib|@settings-|leaninfra-lib\.sh/, "the shared library and the settings are in the script itself");
  }
  for (const line of [
    `readonly scratch_dir='${BACKUPS.scratchDir}'`,
    `readonly scratch_port=${BACKUPS.scratchPort}`,
    `readonly drill_network='${BACKUPS.drillNetwork.name}'`,
    `readonly drill_subnet='${BACKUPS.drillNetwork.subnet}'`,
    `readonly drill_gateway='${BACKUPS.drillNetwork.gateway}'`,
    `readonly production_data_dir='${POSTGRES_PATHS.dataDirectory}'`,
    "readonly production_port=5432",
    `readonly pg_bin='${POSTGRES_PATHS.bin}'`,
    `readonly metrics_file='${BACKUPS.metrics.drill}'`,
    `readonly drill_log='${BACKUPS.logs.drill}'`,
    `readonly stanza='${BACKUPS.stanza}'`,
    "readonly row_tolerance_percent=5",
  ]) {
    assert.ok(drill.split("\n").includes(line), `missing: ${line}`);
  }
  // The restore goes into the scratch directory with archiving off, and the server starts with it off too.
  assert.match(drill, /--pg1-path="\$scratch_dir" --archive-mode=off --tablespace-map-all="\$scratch_tablespaces"/);
  assert.match(drill, /-c port=\$scratch_port -c archive_mode=off/);
  assert.match(drill, /default_transaction_read_only=on/, "production is only read, in read-only transactions");
  assert.doesNotMatch(drill, /pg_ctlcluster|systemctl (stop|start|restart)/, "the drill never stops or starts production");
});

test("the script files pass shellcheck -x on their own, with the shared library", () => {
  for (const file of [DRILL_SCRIPT_FILE, RESTORE_SCRIPT_FILE]) {
    execFileSync("shellcheck", ["-x", "-s", "bash", path.relative(REPO_ROOT, file)], { cwd: REPO_ROOT, encoding: "utf8" });
  }
});

test("both scripts pass shellcheck, also with every optional setting", () => {
  assertShellcheckClean("leaninfra-drill (defaults)", drillScript(base));
  assertShellcheckClean(
    "leaninfra-drill (all settings)",
    drillScript({
      ...base,
      productionPort: 5433,
      drillFreshnessQuery: "SELECT max(created_at) FROM orders WHERE status <> 'draft';",
      appEnv: ["MAIL_DELIVERY=off", "NOTE=it's a drill"],
      drillRowTolerancePercent: 2,
      exactBelowRows: 10,
      drillMaxDataAgeMinutes: 90,
      appHealthTimeoutSeconds: 30,
    }),
  );
  assertShellcheckClean("leaninfra-restore", restoreScript(restoreBase));
});

test("settings that would let the drill reach production are refused when rendering", () => {
  const problems = (s: Partial<DrillSettings>) => drillSettingsProblems({ ...base, ...s }).join("\n");
  assert.match(problems({ scratchPort: 5432 }), /^scratchPort 5432 is production's PostgreSQL port/m);
  assert.match(problems({ productionPort: BACKUPS.scratchPort }), /^scratchPort 5499 is production's PostgreSQL port/m);
  assert.match(problems({ scratchDir: POSTGRES_PATHS.dataDirectory }), /^scratchDir .* overlaps production's data directory/m);
  assert.match(problems({ scratchDir: "/srv/data" }), /overlaps production's data directory/);
  assert.match(problems({ scratchDir: `${POSTGRES_PATHS.dataDirectory}/drill` }), /overlaps production's data directory/);
  assert.match(problems({ scratchDir: "/drill" }), /too close to \//);
  assert.match(problems({ scratchDir: "/srv/data/drill dir" }), /^scratchDir .* must be an absolute path/m);
  assert.match(problems({ drillFreshnessQuery: "DELETE FROM orders" }), /^drillFreshnessQuery "DELETE FROM orders" must be one SELECT/m);
  assert.match(problems({ drillFreshnessQuery: "SELECT 1; DROP TABLE orders" }), /^drillFreshnessQuery .* must be a single statement/m);
  assert.match(problems({ appEnv: ["DATABASE_URL=postgres://x"] }), /^drillAppEnv\[0\] sets DATABASE_URL, which the drill sets itself/m);
  for (const name of ["RELEASE", "PORT", "REDIS_URL", "LEANINFRA_DRILL"]) assert.match(problems({ appEnv: [`${name}=1`] }), new RegExp(`^drillAppEnv\\[0\\] sets ${name}, which the drill sets itself`, "m"));
  assert.match(problems({ appEnv: ["NOPE"] }), /^drillAppEnv\[0\] "NOPE" is not KEY=value on one line of printable text/m);
  assert.match(problems({ drillRowTolerancePercent: 150 }), /^drillRowTolerancePercent 150 /m);
  assert.match(problems({ drillMaxDataAgeMinutes: 0 }), /^drillMaxDataAgeMinutes 0 /m);
  assert.match(problems({ postgresDatabase: "App-DB" }), /^postgresDatabase "App-DB" is not a PostgreSQL identifier/m);
  assert.deepEqual(drillSettingsProblems(base), []);
  assert.throws(() => drillScript({ ...base, scratchPort: 5432 }), (e: unknown) => e instanceof SettingsError && /^backups settings have 1 problem:\n {2}- scratchPort 5432 /.test(e.message));
  assert.match(restoreSettingsProblems({ ...restoreBase, hostname: "Shop_1" }).join("\n"), /^hostname "Shop_1" is not a host name label/m);
  assert.match(restoreSettingsProblems({ ...restoreBase, dataDir: "/data" }).join("\n"), /^dataDir "\/data" /m);
  assert.deepEqual(restoreSettingsProblems(restoreBase), []);
});

test("every refusal is a SettingsError whose problems start with the key they are about", () => {
  const drillCases: [string, Partial<DrillSettings>][] = [
    ["postgresDatabase", { postgresDatabase: "App-DB" }],
    ["productionPort", { productionPort: 80 }],
    ["scratchPort", { scratchPort: 5432 }],
    ["productionDataDir", { productionDataDir: "relative/dir" }],
    ["scratchDir", { scratchDir: "/drill" }],
    ["metricsFile", { metricsFile: "/var/lib/../x.prom" }],
    ["logFile", { logFile: "/var/log/drill log" }],
    ["drillRowTolerancePercent", { drillRowTolerancePercent: 1.5 }],
    ["exactBelowRows", { exactBelowRows: -1 }],
    ["drillMaxDataAgeMinutes", { drillMaxDataAgeMinutes: 600_000 }],
    ["appHealthTimeoutSeconds", { appHealthTimeoutSeconds: 4000 }],
    ["restoreTimeoutMinutes", { restoreTimeoutMinutes: 0 }],
    ["drillFreshnessQuery", { drillFreshnessQuery: "UPDATE orders SET total = 0" }],
    ["drillFreshnessQuery", { drillFreshnessQuery: "SELECT '\\x'" }],
    ["drillAppEnv", { appEnv: ["PORT=1"] }],
    ["drillAppEnv", { appEnv: ["LEANINFRA_DRILL=0"] }],
    ["drillAppEnv", { appEnv: ["MAIL=off\tnow"] }],
    ["drillAppEnv", { appEnv: ["MAIL=off\u0085"] }],
    ["drillAppEnv", { appEnv: ["MAIL=\uffff"] }],
    ["drillAppEnv", { appEnv: ["MAIL=off", "MAIL=on"] }],
    ["drillAppEnv", { appEnv: ["1MAIL=off"] }],
  ];
  for (const [key, over] of drillCases) {
    assert.throws(
      () => drillScript({ ...base, ...over }),
      (e: unknown) => e instanceof SettingsError && e.problems.length > 0 && e.problems.every((p) => p.startsWith(`${key} `) || p.startsWith(`${key}[`)),
      `${key}: ${JSON.stringify(over)}`,
    );
  }
  const restoreCases: [keyof RestoreSettings, Partial<RestoreSettings>][] = [
    ["hostname", { hostname: "Shop_1" }],
    ["postgresDatabase", { postgresDatabase: "1db" }],
    ["productionPort", { productionPort: 22 }],
    ["dataDir", { dataDir: "/data" }],
    ["logFile", { logFile: "restore.log" }],
    ["recoveryTimeoutMinutes", { recoveryTimeoutMinutes: 0 }],
    ["appHealthTimeoutSeconds", { appHealthTimeoutSeconds: 0 }],
  ];
  for (const [key, over] of restoreCases) {
    assert.throws(
      () => restoreScript({ ...restoreBase, ...over }),
      (e: unknown) => e instanceof SettingsError && e.problems.length > 0 && e.problems.every((p) => p.startsWith(`${key} `)),
      `${key}: ${JSON.stringify(over)}`,
    );
  }
});

test("drillMetrics renders node_exporter gauges and leaves out what was not measured", () => {
  const ok = drillMetrics({ success: true, endedAt: 1764320000, lastSuccessAt: 1764320000, durationSeconds: 73.25, restoreSeconds: 40.5, dataAgeSeconds: 61, appChecked: false, tablesChecked: 4 });
  assert.equal(
    ok,
    `# HELP leaninfra_drill_success 1 when the last restore drill passed, 0 when it failed.
# TYPE leaninfra_drill_success gauge
leaninfra_drill_success 1
# HELP leaninfra_drill_timestamp_seconds When the last restore drill ended (Unix time).
# TYPE leaninfra_drill_timestamp_seconds gauge
leaninfra_drill_timestamp_seconds 1764320000
# HELP leaninfra_drill_last_success_timestamp_seconds When a restore drill last passed (Unix time, 0 = never).
# TYPE leaninfra_drill_last_success_timestamp_seconds gauge
leaninfra_drill_last_success_timestamp_seconds 1764320000
# HELP leaninfra_drill_duration_seconds How long the last drill took from restore to a healthy app (RTO).
# TYPE leaninfra_drill_duration_seconds gauge
leaninfra_drill_duration_seconds 73.25
# HELP leaninfra_drill_restore_seconds How long restoring and replaying WAL took in the last drill.
# TYPE leaninfra_drill_restore_seconds gauge
leaninfra_drill_restore_seconds 40.5
# HELP leaninfra_drill_data_age_seconds How old the newest restored data was when the last drill restored it (RPO).
# TYPE leaninfra_drill_data_age_seconds gauge
leaninfra_drill_data_age_seconds 61
# HELP leaninfra_drill_app_checked 1 when the last drill started the app against the restored database, 0 when there was no app to start.
# TYPE leaninfra_drill_app_checked gauge
leaninfra_drill_app_checked 0
# HELP leaninfra_drill_tables_checked Tables of the app's database the last drill compared with production.
# TYPE leaninfra_drill_tables_checked gauge
leaninfra_drill_tables_checked 4
`,
  );
  const failed = drillMetrics({ success: false, endedAt: 5, lastSuccessAt: 0, durationSeconds: 1 });
  assert.match(failed, /^leaninfra_drill_success 0$/m);
  assert.doesNotMatch(failed, /data_age|app_checked|tables_checked|restore_seconds/);
});

/** Runs a rendered script with bash (as root, like the timer) in a temp directory; metrics and log go there too. */
function runScript(script: string, args: string[], input = ""): { code: number | null; stdout: string; stderr: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-drill-unit-"));
  try {
    const file = path.join(dir, "script.sh");
    fs.writeFileSync(file, script, { mode: 0o700 });
    const r = spawnSync("bash", [file, ...args], { input, encoding: "utf8", timeout: 30_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Replaces one `readonly name=value` line of a rendered script, as a hand edit or a wrong layout would. */
function withLine(script: string, name: string, value: string): string {
  const pattern = new RegExp(`^readonly ${name}=.*$`, "m");
  assert.match(script, pattern);
  return script.replace(pattern, `readonly ${name}=${value}`);
}

test("the drill refuses, when RUN, a scratch directory or port that is production's, records the failure and touches nothing", () => {
  assert.equal(process.getuid?.(), 0, "these checks run the script as root, as its timer does; run the tests as root");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-drill-guard-"));
  try {
    const production = path.join(dir, "postgresql", "17", "main");
    fs.mkdirSync(production, { recursive: true });
    fs.writeFileSync(path.join(production, "PG_VERSION"), "17\n");
    const metrics = path.join(dir, "textfile", "leaninfra_drill.prom");
    const log = path.join(dir, "log", "drill.log");
    const script = drillScript({ postgresDatabase: "app", productionDataDir: production, scratchDir: path.join(dir, "scratch"), metricsFile: metrics, logFile: log });

    const cases: [string, string, RegExp][] = [
      ["scratch dir = production's", withLine(script, "scratch_dir", `'${production}'`), /REFUSED: the scratch directory .* is production's data directory/],
      ["scratch dir = production's, spelled differently", withLine(script, "scratch_dir", `'${dir}/postgresql/17/../17/main/'`), /REFUSED: the scratch directory .* is production's data directory/],
      ["scratch dir inside production's", withLine(script, "scratch_dir", `'${production}/drill'`), /REFUSED: the scratch directory .* lies inside production's data directory/],
      ["production inside the scratch dir", withLine(script, "scratch_dir", `'${dir}/postgresql'`), /REFUSED: production's data directory .* lies inside the scratch directory/],
      ["scratch port = production's", withLine(script, "scratch_port", "5432"), /REFUSED: the scratch port 5432 is production's PostgreSQL port/],
    ];
    for (const [what, edited, message] of cases) {
      fs.rmSync(metrics, { force: true });
      const r = runScript(edited, []);
      assert.equal(r.code, 2, `${what}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stderr, message, what);
      assert.match(r.stderr, /drill FAILED during step guard: refused: /, what);
      // Production's directory is exactly as it was, and nothing was created next to it.
      assert.deepEqual(fs.readdirSync(production), ["PG_VERSION"], what);
      assert.deepEqual(fs.readdirSync(dir).sort(), ["log", "postgresql", "textfile"], what);
      const prom = fs.readFileSync(metrics, "utf8");
      assert.match(prom, /^leaninfra_drill_success 0$/m, what);
      assert.match(prom, /^leaninfra_drill_last_success_timestamp_seconds 0$/m, what);
      assert.doesNotMatch(prom, /data_age/, what);
      // The bash writer and drillMetrics agree on names, help texts and order.
      const shape = (text: string) => text.split("\n").filter((l) => l.startsWith("#"));
      assert.deepEqual(shape(prom), shape(drillMetrics({ success: false, endedAt: 0, lastSuccessAt: 0, durationSeconds: 0 })), what);
    }
    const lines = fs.readFileSync(log, "utf8").trim().split("\n");
    assert.equal(lines.length, cases.length);
    assert.match(lines[0], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ result=failed target=latest backup=- duration=[\d.]+s restore=-s data_age=-s tables=- app="not reached" step=guard reason="refused: the scratch directory .* is production's data directory .*"$/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("the drill and the restore reject wrong usage before doing anything", () => {
  const drill = drillScript(base);
  const restore = restoreScript(restoreBase);
  let r = runScript(drill, ["--target-time", "yesterday"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--target-time 'yesterday' is not 'YYYY-MM-DD HH:MM:SS\+00'/);
  r = runScript(drill, ["--target-time", "2025-11-28 09:00:00"]);
  assert.equal(r.code, 2, "a time without its UTC offset is ambiguous");
  r = runScript(drill, ["--now"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^usage: leaninfra-drill \[--target-time/m);
  for (const args of [[], ["--latest", "--to", "2025-11-28 09:00:00+00"], ["--yes"], ["--to"]]) {
    r = runScript(restore, args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /^usage: leaninfra-restore --to 'YYYY-MM-DD HH:MM:SS\+00' \[--yes\]$/m);
  }
  r = runScript(restore, ["--to", "2025-13-45 99:00:00+00"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--to '2025-13-45 99:00:00\+00' is not 'YYYY-MM-DD HH:MM:SS\+00'/);
});

test("the drill's app container: LEANINFRA_DRILL=1 and drillAppEnv over the app's settings, on the internal network only", () => {
  const drill = drillScript({ ...base, appEnv: ["MAIL_DELIVERY=off", "PAYMENTS=sandbox"] });
  assert.ok(drill.split("\n").includes("readonly -a app_env=('MAIL_DELIVERY=off' 'PAYMENTS=sandbox')"), "the overrides reach the script");
  assert.match(drill, /docker network create --internal --driver bridge --subnet "\$drill_subnet" --gateway "\$drill_gateway"/);
  assert.match(drill, /docker run --detach --name "\$container_name" --init "\$\{confinement\[@\]\}" --network "\$drill_network" --add-host "\$host_alias:\$drill_gateway"/);
  assert.match(drill, /confinement=\(--cap-drop ALL --security-opt no-new-privileges --memory "\$\{memory_mb\}m" --memory-swap "\$\{memory_mb\}m" --pids-limit "\$pids_limit"\)/, "confined as leaninfra-deploy confines the app");
  assert.doesNotMatch(drill, /--publish|host-gateway/, "no published port and no route to docker0's gateway");
  assert.match(drill, /printf 'LEANINFRA_DRILL=1\\n'/);
  // The scratch cluster never listens on docker0: loopback, and the drill network's gateway once it exists.
  assert.doesNotMatch(drill, /172\.17\.0\.1/);
  assert.match(drill, /if \(\(network_created\)\); then echo "localhost,\$drill_gateway"; else echo localhost; fi/);
});

test("leaninfra-restore holds the drill, deploy and backup locks and pauses the backup and drill timers", () => {
  const restore = restoreScript(restoreBase);
  const lines = restore.split("\n");
  for (const line of [
    `readonly lock_file='${DRILL_LOCK_FILE}'`,
    `readonly deploy_lock_file='${DEPLOY_LOCK_FILE}'`,
    `readonly backup_lock_file='${BACKUPS_PATHS.lockFile}'`,
    "readonly -a paused_timers=('leaninfra-backup@full.timer' 'leaninfra-backup@diff.timer' 'leaninfra-backup@check.timer' 'leaninfra-backup@verify.timer' 'leaninfra-backup@dump.timer' 'leaninfra-drill.timer')",
  ]) {
    assert.ok(lines.includes(line), `missing: ${line}`);
  }
  // The deploy lock is the one the app role's deploy script really takes.
  const deploy = fs.readFileSync(path.join(REPO_ROOT, "components", "app", "files", "leaninfra-deploy.sh"), "utf8");
  assert.ok(deploy.includes(`exec 8>>${DEPLOY_LOCK_FILE}`), `leaninfra-deploy takes ${DEPLOY_LOCK_FILE}`);
  // The backup jobs' lock is the one leaninfra-backup takes (its lock_file setting).
  assert.match(restore, /take_other_lock "\$backup_lock_file"/);
  assert.match(restore, /trap on_exit EXIT\n.*\n {2}trap 'exit 130' INT TERM HUP\n {2}pause_timers\n/);
  assert.match(restore, /on_exit\(\) \{\n.*\n.*\n.*\n {2}resume_timers\n/);
});
