/**
 * `npm run bench:ops`: the memory the observability path costs on the server. In a Debian 13 root
 * booted with systemd, the stack's roles are applied as `pulumi up` would (base, logs, postgres, Redis,
 * proxy, backups, monitoring); then, for a few minutes, requests go through nginx (a share of them 5xx)
 * and the journal gets a steady flow of log lines, while Prometheus scrapes every target and
 * VictoriaLogs ingests the journal. Prints the resident memory (RSS, summed over a program's
 * processes) of every program idle, at its peak under load and at the end, and the totals.
 * Needs root and what the integration tests need.
 *
 *   npm run bench:ops -- [--minutes N] [--rps N] [--log-lines-per-second N] [--json]
 */
import * as https from "node:https";
import { MONITORING_PORTS } from "../components/monitoring";
import { withBootedRoot, BootedRoot, must } from "../tests/lib/booted-root";
import { show } from "../tests/lib/debian-root";
import { REDIS_PORT_LOCK, withLock } from "../tests/lib/host-lock";
import { prepareObservabilityStack, sleep, stackMonitoringRole, startAppStandIn, trustSite } from "../tests/lib/observability-stack";
import { DOMAIN, applyRole } from "../tests/fixtures/test-app/scenario";

/** The programs measured, by executable name (ps's first argument, without its directory). */
const OBSERVABILITY = [
  "prometheus",
  "prometheus-alertmanager",
  "prometheus-node-exporter",
  "prometheus-postgres-exporter",
  "prometheus-nginx-exporter",
  "prometheus-blackbox-exporter",
  "prometheus-pgbackrest-exporter",
  "prometheus-redis-exporter",
  "mtail",
  "victoria-logs-prod",
  "systemd-journal-upload",
];
const SERVICES = ["nginx", "postgres", "redis-server"];

function option(name: string, fallback: number, min: number, max: number): number {
  const i = process.argv.indexOf(name);
  const value = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isFinite(value) || value < min || value > max) throw new Error(`${name} must be a number from ${min} to ${max}`);
  return value;
}

/** RSS in MiB by program, summed over its processes. */
function rssByProgram(root: BootedRoot): Map<string, number> {
  const out = must(root, "ps -e -o rss=,args=");
  const rss = new Map<string, number>();
  for (const line of out.split("\n")) {
    const m = /^\s*(\d+)\s+(\S+)/.exec(line);
    if (!m) continue;
    // postgres and nginx rename their processes ("postgres: checkpointer", "nginx: worker process").
    const program = m[2].replace(/:$/, "").split("/").pop()!;
    rss.set(program, (rss.get(program) ?? 0) + Number(m[1]) / 1024);
  }
  return rss;
}

async function main(): Promise<void> {
  const minutes = option("--minutes", 3, 1, 60);
  const rps = option("--rps", 20, 1, 500);
  const logRate = option("--log-lines-per-second", 50, 0, 5000);
  const asJson = process.argv.includes("--json");

  const stack = await prepareObservabilityStack();
  try {
    const report = await withLock(REDIS_PORT_LOCK, 40 * 60_000, () =>
      withBootedRoot({}, async (root) => {
        const app = await startAppStandIn();
        try {
          trustSite(root, stack.pki);
          for (const role of [...stack.roles, stackMonitoringRole(stack)]) {
            const r = await applyRole(root, role);
            if (r.code !== 0) throw new Error(`${role.name} failed:\n${show(r)}`);
          }
          // A minute to settle: every target scraped a few times, the journal's backlog ingested.
          await sleep(60_000);
          const idle = rssByProgram(root);

          const agent = new https.Agent({ ca: stack.pki.siteCaPem, cert: stack.pki.clientPem, key: stack.pki.clientKeyPem, keepAlive: true, maxSockets: 8, servername: DOMAIN });
          let sent = 0;
          let failed = 0;
          const peak = new Map<string, number>();
          const end = Date.now() + minutes * 60_000;
          const request = (path: string) =>
            new Promise<void>((resolve) => {
              const req = https.request({ host: "127.0.0.1", port: 443, path, headers: { host: DOMAIN }, agent, servername: DOMAIN }, (res) => {
                res.resume();
                res.on("end", resolve);
              });
              req.on("error", () => (failed++, resolve()));
              req.end();
            });
          // Log lines as an app would write them, one systemd-cat per second with logRate lines.
          // Log lines as an app writes them: a batch of logRate lines a second through systemd-cat (its own
          // journal tag, app-bench); the script prints how many batches it wrote.
          const logs = logRate
            ? root.runAsync(
                `end=$(( $(date +%s) + ${minutes * 60} )); b=0; while [ "$(date +%s)" -lt "$end" ]; do b=$((b+1)); ` +
                  `for i in $(seq ${logRate}); do echo "INFO request_id=bench-$b-$i GET /api/items/$i 200 in 12ms"; done | systemd-cat -t app-bench; sleep 1; done; echo "batches=$b"`,
                { timeoutMs: (minutes + 2) * 60_000 },
              )
            : undefined;
          const load = (async () => {
            while (Date.now() < end) {
              const tick = Date.now();
              const batch: Promise<void>[] = [];
              for (let i = 0; i < rps; i++) {
                sent++;
                batch.push(request(sent % 20 === 0 ? `/boom/${sent}` : `/api/items/${sent}`));
              }
              await Promise.all(batch);
              await sleep(Math.max(0, 1000 - (Date.now() - tick)));
            }
          })();
          while (Date.now() < end) {
            for (const [program, mb] of rssByProgram(root)) peak.set(program, Math.max(peak.get(program) ?? 0, mb));
            await sleep(15_000);
          }
          await load;
          const logRun = await logs;
          const written = Number(/batches=(\d+)/.exec(logRun?.stdout ?? "")?.[1] ?? "0") * logRate;
          agent.destroy();
          const last = rssByProgram(root);
          for (const [program, mb] of last) peak.set(program, Math.max(peak.get(program) ?? 0, mb));
          // The journal's last lines reach VictoriaLogs within seconds (journal-upload follows the journal).
          await sleep(5_000);
          const ingested = await (await fetch(`http://127.0.0.1:${MONITORING_PORTS.victorialogs}/select/logsql/query?query=${encodeURIComponent('_time:1h SYSLOG_IDENTIFIER:="app-bench" | stats count() lines')}`)).text();
          const series = await (await fetch(`http://127.0.0.1:${MONITORING_PORTS.prometheus}/api/v1/query?query=prometheus_tsdb_head_series`)).json();
          const lines = (JSON.parse(ingested.trim() || "{}") as { lines?: string }).lines ?? "no answer";
          return { idle, peak, last, sent, failed, written, ingested: lines, series: (series as { data: { result: { value: [number, string] }[] } }).data.result[0]?.value[1] };
        } finally {
          app.closeAllConnections();
          app.close();
        }
      }),
    );

    const row = (program: string) => ({
      program,
      idleMb: Math.round(report.idle.get(program) ?? 0),
      peakMb: Math.round(report.peak.get(program) ?? 0),
      endMb: Math.round(report.last.get(program) ?? 0),
    });
    const observability = OBSERVABILITY.map(row);
    const services = SERVICES.map(row);
    const total = (rows: ReturnType<typeof row>[], key: "idleMb" | "peakMb" | "endMb") => rows.reduce((sum, r) => sum + r[key], 0);
    const summary = {
      minutes,
      requestsSent: report.sent,
      requestsFailed: report.failed,
      logLinesPerSecond: logRate,
      logLinesWritten: report.written,
      logLinesIngested: report.ingested,
      prometheusHeadSeries: report.series,
      observability,
      observabilityTotalMb: { idle: total(observability, "idleMb"), peak: total(observability, "peakMb"), end: total(observability, "endMb") },
      services,
    };
    if (asJson) {
      console.log(JSON.stringify(summary, null, 2));
      return;
    }
    console.log(`bench:ops: ${minutes} min, ${report.sent} requests through nginx (1 in 20 a 500, ${report.failed} failed to connect), log lines in batches of ${logRate} a second`);
    console.log(`VictoriaLogs holds ${report.ingested} of the ${report.written} app lines written; Prometheus head series: ${report.series}\n`);
    console.log("RSS in MiB (summed over each program's processes)   idle   peak    end");
    for (const r of [...observability, { program: "= observability total", idleMb: summary.observabilityTotalMb.idle, peakMb: summary.observabilityTotalMb.peak, endMb: summary.observabilityTotalMb.end }, ...services]) {
      console.log(`  ${r.program.padEnd(48)} ${String(r.idleMb).padStart(6)} ${String(r.peakMb).padStart(6)} ${String(r.endMb).padStart(6)}`);
    }
    console.log("(the peak of the total is at most the sum of the peaks; services are shown for scale, not counted)");
  } finally {
    await stack.dispose();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
