/**
 * `npm run bench:deploy`: one zero-downtime deploy measured end to end. In a booted Debian 13 root
 * (base, proxy and app roles applied as `pulumi up` would), release v2 replaces v1 while a bounded
 * load generator sends requests through nginx on 127.0.0.1:443. Prints the requests sent, how many
 * failed, and the switch time: from leaninfra-deploy's "health ok" line to the first answer from v2.
 * Needs root and what the integration tests need (systemd-container, debootstrap, shellcheck, openssl).
 *
 *   npm run bench:deploy -- [--concurrency N] [--drain SECONDS] [--json]
 */
import { appRole } from "../components/app";
import { LAYOUT } from "../components/host/layout";
import { withBootedRoot } from "../tests/lib/booted-root";
import { RELEASES, ensureTestImages } from "../tests/fixtures/test-app/images";
import { LoadGenerator, applyRole, healthOkAt, makeTestPki, prepareHost, releaseSequence, testAppSettings } from "../tests/fixtures/test-app/scenario";
import { show } from "../tests/lib/debian-root";

const REGISTRY_MOUNT = "/srv/test-registry";

function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const concurrency = Number(option("--concurrency") ?? 4);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new Error("--concurrency must be a whole number from 1 to 64");
  const drainSeconds = Number(option("--drain") ?? 2);
  if (!Number.isInteger(drainSeconds) || drainSeconds < 0 || drainSeconds > 600) throw new Error("--drain must be a whole number of seconds from 0 to 600");
  const asJson = process.argv.includes("--json");

  const registryDir = await ensureTestImages();
  const pki = makeTestPki();
  const result = await withBootedRoot(
    { docker: true, scratch: ["/var/lib/docker"], binds: [{ host: registryDir, root: REGISTRY_MOUNT, readOnly: true }] },
    async (root) => {
      await prepareHost(root, pki, REGISTRY_MOUNT);
      const v1 = testAppSettings({ appDrainSeconds: drainSeconds });
      const first = await applyRole(root, appRole(v1));
      if (first.code !== 0) throw new Error(`deploying v1 failed:\n${show(first)}`);

      const load = new LoadGenerator(pki, { concurrency, maxDurationMs: 3 * 60_000 }).start();
      await load.warmUp();
      const deploy = await applyRole(root, appRole({ ...v1, appTag: RELEASES.b }));
      await new Promise((r) => setTimeout(r, 500));
      const report = await load.stop();
      if (deploy.code !== 0) throw new Error(`deploying v2 failed:\n${show(deploy)}`);

      const healthy = healthOkAt(deploy.stderr);
      const v2 = report.samples.filter((s) => s.release === RELEASES.b);
      const v1Answers = report.samples.filter((s) => s.release === RELEASES.a);
      const firstV2 = v2.length ? Math.min(...v2.map((s) => s.endMs)) : undefined;
      const lastV1 = v1Answers.length ? Math.max(...v1Answers.map((s) => s.endMs)) : undefined;
      const latencies = report.samples.map((s) => s.endMs - s.startMs).sort((a, b) => a - b);
      const duration = /release=v2 slot=\S+ result=ok duration=(\S+)s/.exec(root.run(`tail -n 1 ${LAYOUT.app.deployLog}`).stdout)?.[1];
      return {
        concurrency,
        drainSeconds,
        requestsSent: report.sent,
        requestsFailed: report.failed,
        answersByRelease: report.byRelease,
        releaseSequence: releaseSequence(report.samples),
        switchMs: healthy !== undefined && firstV2 !== undefined ? firstV2 - healthy : null,
        overlapMs: firstV2 !== undefined && lastV1 !== undefined ? Math.max(0, lastV1 - firstV2) : null,
        deploySeconds: duration ? Number(duration) : null,
        bundleMs: deploy.ms,
        latencyMs: { p50: latencies[Math.floor(latencies.length * 0.5)], p99: latencies[Math.floor(latencies.length * 0.99)], max: latencies[latencies.length - 1] },
        failures: report.failures.slice(0, 5),
      };
    },
  );

  if (asJson) {
    console.log(JSON.stringify(result, null, 2));
  } else {
    console.log(`\nDeploy of ${RELEASES.b} over ${RELEASES.a} under load (${result.concurrency} concurrent clients, a new TLS connection per request, drain ${result.drainSeconds} s):`);
    console.log(`  requests sent     ${result.requestsSent}`);
    console.log(`  requests failed   ${result.requestsFailed}`);
    console.log(`  answers           ${Object.entries(result.answersByRelease).map(([k, v]) => `${k}: ${v}`).join(", ")} (in order: ${result.releaseSequence.join(" -> ")})`);
    console.log(`  switch time       ${result.switchMs ?? "n/a"} ms (from "health ok" to the first answer from ${RELEASES.b})`);
    console.log(`  old answers after ${result.overlapMs ?? "n/a"} ms (last ${RELEASES.a} answer after the first ${RELEASES.b} one: nginx's old workers finishing)`);
    console.log(`  deploy            ${result.deploySeconds ?? "n/a"} s (deploy.log; includes the drain), bundle ${result.bundleMs} ms`);
    console.log(`  latency           p50 ${result.latencyMs.p50} ms, p99 ${result.latencyMs.p99} ms, max ${result.latencyMs.max} ms`);
    for (const f of result.failures) console.log(`  failure: ${JSON.stringify(f)}`);
  }
  if (result.requestsFailed > 0) process.exitCode = 1;
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
