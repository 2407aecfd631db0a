import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import test from "node:test";
import { renderRoleBundle, roleProblems } from "../../components/host/bundle";
import { SettingsError } from "../../components/host/define";
import {
  APP_ERROR_LINES_QUERY,
  LOGS_PATHS as L,
  LogsSettings,
  VICTORIALOGS_RELEASE_URL,
  VICTORIALOGS_VERSION,
  logsRole,
  logsSettingsProblems,
  renderJournalUploadDropIn,
  renderLogErrorsService,
  renderLogErrorsTimer,
  renderVictoriaLogsUnit,
  role,
  victoriaLogsArch,
  victoriaLogsDiskLimitMb,
  victoriaLogsFiles,
} from "../../components/logs";
import { TEST_FACTS } from "../lib/facts";
import { assertShellcheckClean } from "../lib/shellcheck";

const REPO = path.resolve(__dirname, "../..");
const SHA = "3f".repeat(32);

const settings = (over: Partial<LogsSettings> = {}): LogsSettings => ({
  victoriaLogsSha256: "",
  victoriaLogsUrl: "",
  logsRetentionDays: 30,
  logsMemoryMb: 256,
  serverType: "cx22",
  memoryMb: 4096,
  volumeSizeGb: 20,
  ...over,
});
const file = (s: LogsSettings, p: string) => {
  const found = logsRole(s).files.find((f) => f.path === p);
  assert.ok(found, `the role has ${p}`);
  return found;
};
/** The value a rendered script's settings block gives a name. */
const setting = (script: string, name: string) => new RegExp(`^readonly (?:-a )?${name}=(.*)$`, "m").exec(script)?.[1];
/** [section] key=value lines of a unit file, in order. */
const unitLines = (text: string) => text.split("\n").filter((l) => l && !l.startsWith("#"));

test("the release archive follows the server type's architecture: Hetzner's cax types are arm64, the others amd64", () => {
  assert.deepEqual(["cx22", "cpx31", "ccx13", "cax11", "cax41"].map(victoriaLogsArch), ["amd64", "amd64", "amd64", "arm64", "arm64"]);
  assert.deepEqual(victoriaLogsFiles("arm64"), {
    archive: `victoria-logs-linux-arm64-${VICTORIALOGS_VERSION}.tar.gz`,
    checksums: `victoria-logs-linux-arm64-${VICTORIALOGS_VERSION}_checksums.txt`,
  });
  const installer = (s: LogsSettings) => file(s, L.installer).content;
  assert.equal(setting(installer(settings()), "arch"), "'amd64'");
  assert.equal(setting(installer(settings({ serverType: "cax21" })), "arch"), "'arm64'");
  assert.equal(setting(installer(settings()), "version"), `'${VICTORIALOGS_VERSION}'`);
  assert.equal(VICTORIALOGS_RELEASE_URL, `https://github.com/VictoriaMetrics/VictoriaLogs/releases/download/${VICTORIALOGS_VERSION}`);
});

test("the installer: the vendor's release URL unless a mirror is set, the pin when set, the checksums file otherwise", () => {
  const plain = file(settings(), L.installer).content;
  assert.equal(setting(plain, "base_url"), `'${VICTORIALOGS_RELEASE_URL}'`);
  assert.equal(setting(plain, "pinned_sha256"), "''");
  const mirrored = file(settings({ victoriaLogsUrl: "https://mirror.example.com/vl/v1.52.1", victoriaLogsSha256: SHA }), L.installer).content;
  assert.equal(setting(mirrored, "base_url"), "'https://mirror.example.com/vl/v1.52.1'");
  assert.equal(setting(mirrored, "pinned_sha256"), `'${SHA}'`);
  // The library is inlined: the installed script needs nothing else.
  assert.ok(!mirrored.includes("# @lib") && mirrored.includes("write_textfile()"));
  for (const phrase of ["(leaninfra:victoriaLogsSha256): refused", "as the release's $checksums says: refused", "pulumi config set victoriaLogsSha256 $(<\"$recorded\")"]) {
    assert.ok(plain.includes(phrase), phrase);
  }
  // A changed pin or mirror changes the installer, whose handler installs and restarts; so does the unit.
  assert.equal(file(settings(), L.installer).onChange, file(settings(), L.unitFile).onChange);
  assert.match(file(settings(), L.installer).onChange ?? "", new RegExp(`^${L.installer} activate\\n${L.installer} pin-note\\n`));
});

test("VictoriaLogs' unit: loopback only, data on the volume, retention, the memory cap with the caches under it, a sandbox", () => {
  const unit = renderVictoriaLogsUnit({ logsRetentionDays: 45, logsMemoryMb: 512, diskLimitMb: 4096 });
  const lines = unitLines(unit);
  const exec = lines.find((l) => l.startsWith("ExecStart="))?.split(" ") ?? [];
  assert.deepEqual(exec, [
    `ExecStart=${L.binary}`,
    "-httpListenAddr=127.0.0.1:9428",
    "-storageDataPath=/srv/data/victoria-logs",
    "-retentionPeriod=45d",
    "-retention.maxDiskSpaceUsageBytes=4096MiB",
    "-memory.allowedBytes=256MiB",
    "-journald.streamFields=_SYSTEMD_UNIT,SYSLOG_IDENTIFIER",
  ]);
  for (const line of [
    "User=victorialogs",
    "MemoryMax=512M",
    "Environment=GOMEMLIMIT=435MiB",
    "RequiresMountsFor=/srv/data/victoria-logs",
    "ReadWritePaths=/srv/data/victoria-logs",
    "ProtectSystem=strict",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "IPAddressDeny=any",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=mincore",
    "WantedBy=multi-user.target",
  ]) {
    assert.ok(lines.includes(line), line);
  }
  assert.equal(file(settings(), L.unitFile).content, renderVictoriaLogsUnit({ logsRetentionDays: 30, logsMemoryMb: 256, diskLimitMb: 2048 }));
  // A tenth of the volume, at least 512 MB: PostgreSQL shares it.
  assert.deepEqual([10, 20, 100].map(victoriaLogsDiskLimitMb), [1024, 2048, 10240]);
  assert.equal(victoriaLogsDiskLimitMb(2), 512);
});

test("the journal upload: Debian's unit with --url on the command line, never URL= in journal-upload.conf, after VictoriaLogs", () => {
  const dropIn = renderJournalUploadDropIn();
  const lines = unitLines(dropIn);
  const execs = lines.filter((l) => l.startsWith("ExecStart="));
  assert.deepEqual(execs, ["ExecStart=", "ExecStart=/usr/lib/systemd/systemd-journal-upload --save-state --url=http://127.0.0.1:9428/insert/journald"]);
  for (const line of [`After=${L.unit}`, `Wants=${L.unit}`, "StartLimitIntervalSec=0", "Restart=always"]) assert.ok(lines.includes(line), line);
  const r = logsRole(settings());
  assert.ok(!r.files.some((f) => f.path.startsWith("/etc/systemd/journal-upload.conf")), "no journal-upload.conf: its URL= conflicts with --url");
  assert.equal(file(settings(), L.uploadDropIn).path, "/etc/systemd/system/systemd-journal-upload.service.d/leaninfra.conf");
  assert.ok(r.packages.includes("systemd-journal-remote"));
});

test("the error-lines metric: its query, every minute, the metric names and the atomic write into the textfile directory", () => {
  assert.equal(
    APP_ERROR_LINES_QUERY,
    '_time:5m {SYSLOG_IDENTIFIER=~"app-.+"} -{SYSLOG_IDENTIFIER=~"app-migrate-.+"} (i(error) or i(fatal) or i(critical) or i(panic)) | stats count() lines',
  );
  const script = file(settings(), L.errorsBin).content;
  assert.equal(setting(script, "query"), `'${APP_ERROR_LINES_QUERY}'`);
  assert.equal(setting(script, "url"), "'http://127.0.0.1:9428/select/logsql/stats_query'");
  assert.equal(setting(script, "metrics_file"), "'/var/lib/prometheus/node-exporter/leaninfra-log-errors.prom'");
  assert.ok(script.includes("metric leaninfra_app_error_lines ") && script.includes("metric leaninfra_app_error_lines_query_success "));
  assert.match(script, /\| write_textfile "\$metrics_file"/);
  const timer = unitLines(renderLogErrorsTimer());
  for (const line of ["OnUnitActiveSec=1min", `Unit=${L.errorsService}`, "WantedBy=timers.target"]) assert.ok(timer.includes(line), line);
  const service = unitLines(renderLogErrorsService());
  for (const line of [`ExecStart=${L.errorsBin}`, "Type=oneshot", "ReadWritePaths=/var/lib/prometheus/node-exporter", "ProtectSystem=strict", "CapabilityBoundingSet="]) {
    assert.ok(service.includes(line), line);
  }
});

test("logsRole: valid host data, the validate step checks the flags and the units, the bundle passes shellcheck", () => {
  const r = logsRole(settings());
  assert.deepEqual(roleProblems(r), []);
  assert.equal(r.name, "logs");
  assert.deepEqual(r.packages, ["systemd-journal-remote", "curl", "jq", "ca-certificates"]);
  assert.deepEqual(
    r.files.map((f) => [f.path, f.mode]),
    [
      [L.installer, "0755"],
      [L.unitFile, "0644"],
      [L.uploadDropIn, "0644"],
      [L.errorsBin, "0755"],
      [L.errorsServiceFile, "0644"],
      [L.errorsTimerFile, "0644"],
    ],
  );
  assert.equal(setting(r.validate ?? "", "units"), `('${L.unit}' '${L.uploadUnit}' '${L.errorsService}' '${L.errorsTimer}')`);
  assert.match(setting(r.validate ?? "", "args") ?? "", /^\('-httpListenAddr=127\.0\.0\.1:9428' .*'-memory\.allowedBytes=128MiB' /);
  assertShellcheckClean("the logs bundle", renderRoleBundle(r));
  assertShellcheckClean("the logs bundle (arm64, pinned, mirrored)", renderRoleBundle(logsRole(settings({ serverType: "cax21", victoriaLogsSha256: SHA, victoriaLogsUrl: "http://127.0.0.1:8080/vl" }))));
});

test("the logs role's script files are shellcheck-clean on their own (shellcheck -x from the repository root)", () => {
  const dir = path.join(REPO, "components/logs/files");
  const scripts = fs.readdirSync(dir).filter((f) => f.endsWith(".sh"));
  assert.ok(scripts.length >= 5, scripts.join(" "));
  for (const script of scripts) {
    const result = spawnSync("shellcheck", ["-x", "-s", "bash", path.relative(REPO, path.join(dir, script))], { cwd: REPO, encoding: "utf8" });
    assert.ok(!result.error, `shellcheck could not run: ${result.error?.message}`);
    assert.equal(result.status, 0, `${script}:\n${result.stdout}${result.stderr}`);
  }
});

test("bad settings are refused with the key, what was given and what is allowed", () => {
  const cases: [Partial<LogsSettings>, string, RegExp][] = [
    [{ victoriaLogsSha256: SHA.toUpperCase() }, "victoriaLogsSha256", /64 lowercase hex digits/],
    [{ victoriaLogsSha256: SHA.slice(1) }, "victoriaLogsSha256", /must be the release archive's SHA-256/],
    [{ victoriaLogsSha256: `sha256:${SHA}` }, "victoriaLogsSha256", /or empty to check the archive against the release's own checksums file/],
    [{ victoriaLogsUrl: "ftp://mirror.example.com/vl" }, "victoriaLogsUrl", /must be the URL of a directory/],
    [{ victoriaLogsUrl: "http://mirror.example.com/vl" }, "victoriaLogsUrl", /http:\/\/127\.0\.0\.1:port\/path for a mirror on the server/],
    [{ victoriaLogsUrl: "https://mirror.example.com/vl/" }, "victoriaLogsUrl", /without a trailing "\/"/],
    [{ victoriaLogsUrl: "https://mirror.example.com/a b" }, "victoriaLogsUrl", /or empty for https:\/\/github\.com/],
    [{ logsRetentionDays: 0 }, "logsRetentionDays", /^logsRetentionDays 0 must be a whole number of days, 1 to 3650$/],
    [{ logsRetentionDays: 4000 }, "logsRetentionDays", /4000 must be/],
    [{ logsRetentionDays: 1.5 }, "logsRetentionDays", /1\.5 must be a whole number/],
    [{ logsMemoryMb: 64 }, "logsMemoryMb", /^logsMemoryMb 64 must be 128 to 1024 MB: .*server's 4096 MB/],
    [{ logsMemoryMb: 2048 }, "logsMemoryMb", /2048 must be 128 to 1024 MB/],
  ];
  for (const [over, key, message] of cases) {
    const problems = logsSettingsProblems(settings(over));
    assert.equal(problems.length, 1, `${JSON.stringify(over)}: ${problems.join("; ")}`);
    assert.ok(problems[0].startsWith(`${key} `), problems[0]);
    assert.match(problems[0], message);
    assert.throws(
      () => logsRole(settings(over)),
      (e: unknown) => e instanceof SettingsError && e.role === "logs" && e.problems[0] === problems[0],
    );
  }
  // Every problem at once.
  assert.equal(logsSettingsProblems(settings({ victoriaLogsSha256: "x", victoriaLogsUrl: "x", logsRetentionDays: 0, logsMemoryMb: 1 })).length, 4);
  for (const good of ["", "https://mirror.example.com", "https://mirror.example.com:8443/vl/v1.52.1", "http://127.0.0.1:8080/release", "http://localhost/vl"]) {
    assert.deepEqual(logsSettingsProblems(settings({ victoriaLogsUrl: good })), [], good);
  }
});

test("the logs definition: its keys with defaults and descriptions, always on, rendered from its slice and the stack's facts", () => {
  assert.equal(role.name, "logs");
  assert.deepEqual(role.after, ["base"]);
  assert.deepEqual(role.settings.parse({}), { victoriaLogsSha256: "", victoriaLogsUrl: "", logsRetentionDays: 30, logsMemoryMb: 256 });
  assert.equal(role.enabled, undefined);
  const slice = role.settings.parse({ logsRetentionDays: 14, victoriaLogsSha256: SHA });
  const rendered = role.render({ ...TEST_FACTS, ...slice, serverType: "cax31" }, {});
  assert.equal(setting(rendered.files.find((f) => f.path === L.installer)?.content ?? "", "arch"), "'arm64'");
  assert.match(rendered.files.find((f) => f.path === L.unitFile)?.content ?? "", / -retentionPeriod=14d /);
  assert.throws(() => role.render({ ...TEST_FACTS, ...role.settings.parse({ logsMemoryMb: 4096 }) }, {}), /logsMemoryMb 4096 must be 128 to 2048 MB/);
});
