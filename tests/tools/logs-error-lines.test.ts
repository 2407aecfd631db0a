// The app error-lines metric against a real VictoriaLogs (the same version, built from its Go module),
// fed through its journald endpoint as systemd-journal-upload feeds it: which lines count, and what the
// metrics file says when VictoriaLogs does not answer. The booted-root test (tests/integration/
// logs-systemd.test.ts) runs the same script under systemd with the real journal.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import test from "node:test";
import { LOGS_PATHS, logsRole } from "../../components/logs";
import { startVictoriaLogs } from "../lib/victorialogs";

/** The role's leaninfra-log-errors with its URL and metrics file pointed at this test's. */
function errorLinesScript(url: string, metricsFile: string): string {
  const role = logsRole({ victoriaLogsSha256: "", victoriaLogsUrl: "", logsRetentionDays: 30, logsMemoryMb: 256, serverType: "cx22", memoryMb: 4096, volumeSizeGb: 20 });
  const script = role.files.find((f) => f.path === LOGS_PATHS.errorsBin)?.content ?? "";
  const swapped = script
    .replace(/^readonly url='[^']*'$/m, `readonly url='${url}/select/logsql/stats_query'`)
    .replace(/^readonly metrics_file='[^']*'$/m, `readonly metrics_file='${metricsFile}'`);
  assert.notEqual(swapped, script);
  return swapped;
}

function run(script: string): { code: number | null; stderr: string } {
  const result = spawnSync("bash", ["-c", script], { encoding: "utf8" });
  return { code: result.status, stderr: result.stderr };
}

function metrics(file: string): Map<string, string> {
  return new Map(
    fs
      .readFileSync(file, "utf8")
      .split("\n")
      .filter((l) => l && !l.startsWith("#"))
      .map((l) => l.split(" ") as [string, string]),
  );
}

test("leaninfra-log-errors counts the app's error lines of the last 5 minutes and nothing else", { timeout: 120_000 }, async () => {
  const vl = await startVictoriaLogs();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-log-errors-"));
  const metricsFile = path.join(dir, "leaninfra-log-errors.prom");
  try {
    const nowUs = Date.now() * 1000;
    const entry = (tag: string, priority: number, message: string, agoSeconds = 10) => ({
      __REALTIME_TIMESTAMP: String(nowUs - agoSeconds * 1_000_000),
      _SYSTEMD_UNIT: "docker.service",
      SYSLOG_IDENTIFIER: tag,
      CONTAINER_TAG: tag,
      PRIORITY: String(priority),
      MESSAGE: message,
    });
    // Docker's journald driver: stdout lines priority 6, stderr lines 3.
    await vl.uploadJournal([
      entry("app-1.8.5", 6, "ERROR request_id=r1 payment failed"),
      entry("app-1.8.5", 3, '{"level":"error","request_id":"r2","msg":"boom"}'),
      entry("app-1.8.5", 3, "[2026-12-01 10:00:00 +0000] [7] [CRITICAL] WORKER TIMEOUT (pid:8)"),
      entry("app-1.8.5", 6, "level=fatal msg=\"cannot open the database\""),
      entry("app-1.8.5", 3, "panic: runtime error: index out of range"),
      // Not counted: stderr without an error word, a path with "errors", a migration, another program, too old.
      entry("app-1.8.5", 3, "[INFO] Booting worker with pid: 8"),
      entry("app-1.8.5", 6, "GET /errors 200"),
      entry("app-1.8.5", 6, "terrorist-free zone, mirrored"),
      entry("app-migrate-1.8.5", 3, "ERROR relation already exists"),
      entry("myapp-1", 3, "ERROR not ours"),
      entry("sshd", 3, "error: kex_exchange_identification"),
      entry("app-1.8.5", 3, "ERROR an hour ago", 3600),
    ]);
    const script = errorLinesScript(vl.url, metricsFile);
    // VictoriaLogs makes ingested lines searchable within a few seconds.
    let seen = "";
    for (let i = 0; i < 30 && seen !== "5"; i++) {
      const r = run(script);
      assert.equal(r.code, 0, r.stderr);
      seen = metrics(metricsFile).get("leaninfra_app_error_lines") ?? "";
      if (seen !== "5") await new Promise((res) => setTimeout(res, 500));
    }
    assert.equal(seen, "5", "ERROR, level error (JSON), CRITICAL, level=fatal and panic: 5 lines");
    assert.equal(metrics(metricsFile).get("leaninfra_app_error_lines_query_success"), "1");
    assert.equal(fs.statSync(metricsFile).mode & 0o777, 0o644);
    assert.deepEqual(fs.readdirSync(dir), ["leaninfra-log-errors.prom"], "no temp file left beside it");
    assert.match(fs.readFileSync(metricsFile, "utf8"), /^# TYPE leaninfra_app_error_lines gauge$/m);

    // VictoriaLogs down: success 0, no count (a 0 would read as "no errors"), and the service fails.
    await vl.stop();
    const down = run(script);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /VictoriaLogs did not answer the error-lines query/);
    assert.deepEqual([...metrics(metricsFile)], [["leaninfra_app_error_lines_query_success", "0"]]);
  } finally {
    await vl.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
