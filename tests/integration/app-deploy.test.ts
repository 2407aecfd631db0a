import test from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { APP_PATHS, AppSettings, appRole } from "../../components/app";
import { LAYOUT } from "../../components/host/layout";
import { BootedRoot, must, withBootedRoot } from "../lib/booted-root";
import { RunResult, show } from "../lib/debian-root";
import { RELEASES, TEST_IMAGE, TEST_REGISTRY, ensureTestImages } from "../fixtures/test-app/images";
import {
  LoadGenerator,
  LoadReport,
  SECRETS,
  TestPki,
  applyRole,
  healthOkAt,
  makeTestPki,
  prepareHost,
  releaseSequence,
  startRegistry,
  stopRegistry,
  testAppSettings,
} from "../fixtures/test-app/scenario";

const REGISTRY_MOUNT = "/srv/test-registry";
const { a: V1, b: V2, broken: V3 } = RELEASES;

/** Text as a literal in a RegExp. */
const esc = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

function noSecrets(r: RunResult): void {
  for (const secret of [SECRETS.dbPassword, SECRETS.apiToken, TEST_REGISTRY.password]) {
    assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), `a secret was printed:\n${show(r)}`);
  }
}

/** Name and release label of every app container, running or not. */
const appContainers = (root: BootedRoot) =>
  must(root, `docker ps -a --filter label=leaninfra.role=app --format '{{.Names}} {{.Label "leaninfra.release"}} {{.State}}' | sort`).trim();

/** A deploy through the app role's bundle (as `pulumi up` runs it) while the load generator runs. */
async function deployUnderLoad(root: BootedRoot, pki: TestPki, settings: AppSettings): Promise<{ result: RunResult & { ms: number }; load: LoadReport }> {
  const load = new LoadGenerator(pki, { concurrency: 4, maxDurationMs: 3 * 60_000 }).start();
  await load.warmUp();
  const result = await applyRole(root, appRole(settings));
  // Requests a moment after the deploy returned show what serves once it is over.
  await new Promise((r) => setTimeout(r, 500));
  const report = await load.stop();
  const counts = Object.entries(report.byRelease).map(([k, v]) => `${k}: ${v}`).join(", ");
  console.log(`  load during the ${settings.appTag} deploy: ${report.sent} requests, ${report.failed} failed (${counts}); sequence ${releaseSequence(report.samples).join(" -> ")}`);
  return { result, load: report };
}

function assertNoFailures(report: LoadReport, what: string): void {
  assert.ok(report.sent >= 50, `${what}: only ${report.sent} requests were sent`);
  assert.equal(report.failed, 0, `${what}: ${report.failed} of ${report.sent} requests failed, e.g.\n${JSON.stringify(report.failures.slice(0, 5), null, 1)}`);
}

/** A clean switch: the old release answers first, the new one last, and never the old one again shortly after. */
function assertSwitch(report: LoadReport, from: string, to: string, deployEndedMs: number): void {
  const ordered = [...report.samples].sort((x, y) => x.endMs - y.endMs);
  assert.equal(ordered[0].release, from, `the first answers must come from ${from}`);
  assert.equal(ordered[ordered.length - 1].release, to, `the last answers must come from ${to}`);
  const late = report.samples.filter((s) => s.release === from && s.startMs > deployEndedMs);
  assert.equal(late.length, 0, `${late.length} requests sent after the deploy ended were still answered by ${from}`);
}

test("app role: zero-downtime deploy, rollback and a broken release, through nginx in a booted Debian 13 root", { timeout: 25 * 60_000 }, async () => {
  const registryDir = await ensureTestImages();
  const pki = makeTestPki();
  const timings: string[] = [];

  await withBootedRoot(
    { docker: true, scratch: ["/var/lib/docker"], binds: [{ host: registryDir, root: REGISTRY_MOUNT, readOnly: true }] },
    async (root) => {
      const { docker, dockerAgain } = await prepareHost(root, pki, REGISTRY_MOUNT);
      const v1 = testAppSettings();

      // 0. The docker role (applied before PostgreSQL in the stack): installed, configured, then nothing to do.
      assert.match(docker.stdout, /^\[docker\] installed package docker\.io$/m);
      assert.match(docker.stdout, /^\[docker\] created file \/etc\/docker\/daemon\.json \(644 root:root\)$/m);
      assert.equal(dockerAgain.code, 0, show(dockerAgain));
      assert.equal(dockerAgain.stdout, "[docker] no changes\n", show(dockerAgain));

      // 1. First run: v1 pulled from the registry (with login), migrated, serving.
      const first = await applyRole(root, appRole(v1));
      assert.equal(first.code, 0, show(first));
      timings.push(`first app bundle (v1 pull + deploy): ${first.ms} ms`);
      assert.match(first.stdout, /^\[app\] created file \/etc\/leaninfra\/secrets\/app-secrets\.env \(600 root:root\)$/m);
      assert.match(first.stdout, new RegExp(`^\\[app\\] deployed: release ${V1} serves from slot green \\(127\\.0\\.0\\.1:8002, container app-green, running: true, settings: current, image ${esc(TEST_IMAGE)}@sha256:[0-9a-f]{64}\\)$`, "m"));
      assert.match(first.stderr, new RegExp(`logging in to ${TEST_REGISTRY.address} as ${TEST_REGISTRY.user}`));
      assert.match(first.stderr, new RegExp(`pulling ${TEST_IMAGE}:${V1}`));
      // The app's own output goes to the journal, never into the deploy's (Pulumi's) output.
      assert.match(first.stderr, /running the migration in .* \(its output: journalctl -t app-migrate-v1\)/);
      assert.doesNotMatch(first.stderr, /migration started/, "the migration's output is not in the deploy output");
      assert.match(must(root, "journalctl --no-pager -o cat -t app-migrate-v1"), /test-app build=a release=v1: migration started; host\.docker\.internal is 172\.17\.0\.1; DATABASE_URL set: True/);
      assert.match(first.stderr, /health ok: release v1 answers 200/);
      const v1Digest = new RegExp(`release v1 is image (${esc(TEST_IMAGE)}@sha256:[0-9a-f]{64})`).exec(first.stderr)?.[1] ?? "";
      assert.ok(v1Digest, `the deploy names the digest it runs:\n${first.stderr}`);
      noSecrets(first);

      const second = await applyRole(root, appRole(v1));
      assert.equal(second.code, 0, show(second));
      assert.equal(second.stdout, "[app] no changes\n", show(second));

      // Docker runs with the role's daemon.json; the container as the deploy promised.
      assert.equal(must(root, "docker info --format '{{.LoggingDriver}} {{.LiveRestoreEnabled}}'").trim(), "journald true");
      assert.equal(must(root, "docker network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}} {{(index .IPAM.Config 0).Subnet}}'").trim(), `${LAYOUT.dockerBridge.address} ${LAYOUT.dockerBridge.subnet}`);
      assert.equal(
        must(root, `docker inspect app-green --format '{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config "tag"}} {{(index (index .HostConfig.PortBindings "8000/tcp") 0).HostIp}}:{{(index (index .HostConfig.PortBindings "8000/tcp") 0).HostPort}} {{.HostConfig.Init}}'`).trim(),
        `unless-stopped journald app-${V1} 127.0.0.1:8002 true`,
      );
      assert.equal(must(root, `stat -c '%a %U' ${APP_PATHS.envFile} ${APP_PATHS.secretEnvFile} ${APP_PATHS.registryPasswordFile}`), "600 root\n600 root\n600 root\n");
      // Confined: no capability, no privilege gain, bounded memory (no swap beyond it) and processes; seen from inside
      // too, through cgroup v2 (Debian 13) or v1 (where the test machine's kernel has only that).
      const mib256 = 256 * 1024 * 1024;
      assert.equal(
        must(root, `docker inspect app-green --format '{{.HostConfig.CapDrop}} {{.HostConfig.CapAdd}} {{.HostConfig.SecurityOpt}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.PidsLimit}} {{index .Config.Labels "leaninfra.digest"}}'`).trim(),
        `[ALL] [] [no-new-privileges] ${mib256} ${mib256} 128 ${v1Digest}`,
      );
      const inside = must(root, `docker exec app-green sh -c 'grep -E "^(CapEff|CapBnd|NoNewPrivs):" /proc/self/status; cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max'`);
      assert.match(inside, /^CapEff:\s+0{16}$/m, inside);
      assert.match(inside, /^CapBnd:\s+0{16}$/m, inside);
      assert.match(inside, /^NoNewPrivs:\s+1$/m, inside);
      assert.match(inside, new RegExp(`^${mib256}\n128$`, "m"), inside);
      assert.match(must(root, `${APP_PATHS.deployScript} --status`), new RegExp(`settings: current, image ${esc(v1Digest)}\\)$`, "m"));
      const info = JSON.parse(must(root, "curl -fsS http://127.0.0.1:8002/info"));
      assert.equal(info.release, V1);
      assert.equal(info.port, "8000");
      assert.equal(info.greeting, "hello from LeanInfra");
      assert.equal(info.host_alias, LAYOUT.dockerBridge.address, "host.docker.internal is the pinned bridge address");
      assert.equal(info.database_host, "host.docker.internal:5432/app");
      for (const name of ["API_TOKEN", "DATABASE_URL", "REDIS_URL", "RELEASE", "PORT", "LOG_LEVEL", "GREETING"]) assert.ok(info.env_names.includes(name), `${name} missing in ${info.env_names}`);
      assert.match(must(root, `journalctl --no-pager -o cat SYSLOG_IDENTIFIER=app-${V1}`), /test-app build=a release=v1: listening on port 8000/, "the journal's tag carries the release");
      // The release is a field of every journal line of the app's containers (Docker's journald labels option).
      assert.match(must(root, `journalctl --no-pager -o cat LEANINFRA_RELEASE=${V1}`), /test-app build=a release=v1: listening on port 8000/, "the field LEANINFRA_RELEASE carries the release");
      assert.match(must(root, `journalctl --no-pager -o cat LEANINFRA_RELEASE=${V1} SYSLOG_IDENTIFIER=app-migrate-${V1}`), /migration started/, "the migration's lines carry it too");
      assert.ok(!info.env_names.some((n: string) => n.startsWith("SENTRY_")), `without sentryDsn nothing is set: ${info.env_names}`);
      assert.equal(fs.readFileSync(root.hostPath(LAYOUT.nginx.upstream), "utf8"), "server 127.0.0.1:8002;\n");
      assert.equal(fs.readFileSync(root.hostPath(LAYOUT.nginx.release), "utf8"), `set $leaninfra_release "${V1}";\n`);

      // 2. v2 over v1, under load, now with sentryDsn: its container gets SENTRY_DSN, SENTRY_RELEASE and SENTRY_ENVIRONMENT.
      const sentryDsn = "https://5e7c0ffee1d0never9print@sentry.example.com/42";
      const b = await deployUnderLoad(root, pki, { ...v1, appTag: V2, sentryDsn, stack: "test" });
      assert.equal(b.result.code, 0, show(b.result));
      assert.match(b.result.stdout, /^\[app\] deployed: release v2 serves from slot blue /m);
      assertNoFailures(b.load, "v2 over v1");
      const bEnded = Date.now() - 500;
      assertSwitch(b.load, V1, V2, bEnded);
      const healthy = healthOkAt(b.result.stderr);
      assert.ok(healthy, `no "health ok" line in the deploy output:\n${b.result.stderr}`);
      const firstV2 = Math.min(...b.load.samples.filter((s) => s.release === V2).map((s) => s.endMs));
      const lastV1 = Math.max(...b.load.samples.filter((s) => s.release === V1).map((s) => s.endMs));
      timings.push(`v2 over v1: bundle ${b.result.ms} ms, ${b.load.sent} requests, ${b.load.failed} failed, switch ${firstV2 - healthy!} ms after health ok, last v1 answer ${lastV1 - firstV2} ms after the first v2 answer`);
      assert.equal(appContainers(root), `app-blue ${V2} running`, "the old slot is stopped and removed after the drain");
      const sentryEnv = must(root, `docker inspect app-blue --format '{{range .Config.Env}}{{println .}}{{end}}' | grep '^SENTRY_' | sort`);
      assert.equal(sentryEnv, `SENTRY_DSN=${sentryDsn}\nSENTRY_ENVIRONMENT=test\nSENTRY_RELEASE=${V2}\n`);
      assert.equal(must(root, `stat -c '%a %U' ${APP_PATHS.sentryEnvFile}`), "600 root\n");
      assert.ok(!b.result.stdout.includes("5e7c0ffee") && !b.result.stderr.includes("5e7c0ffee"), "the DSN is never printed");
      assert.match(must(root, `journalctl --no-pager -o cat LEANINFRA_RELEASE=${V2}`), /test-app build=b release=v2: listening on port 8000/);
      const accessLog = fs.readFileSync(root.hostPath("/var/log/nginx/access.log"), "utf8");
      assert.match(accessLog, /"release":"v1"/, "nginx logs the release with every request");
      assert.match(accessLog, /"release":"v2"/);
      noSecrets(b.result);

      // 3. Roll back to v1 with the registry down: the kept image needs none.
      await stopRegistry(root);
      const back = await deployUnderLoad(root, pki, v1);
      assert.equal(back.result.code, 0, show(back.result));
      assert.match(back.result.stderr, new RegExp(`image ${TEST_IMAGE}:${V1} is already on this host: no pull, no registry needed`));
      assert.match(back.result.stdout, /^\[app\] deployed: release v1 serves from slot green /m);
      assertNoFailures(back.load, "rollback to v1");
      assertSwitch(back.load, V2, V1, Date.now() - 500);
      timings.push(`rollback to v1 (registry down): bundle ${back.result.ms} ms, ${back.load.sent} requests, ${back.load.failed} failed`);
      assert.equal(must(root, `docker inspect app-green --format '{{range .Config.Env}}{{println .}}{{end}}' | grep -c '^SENTRY_' || true`).trim(), "0", "sentryDsn removed: nothing set");

      // 4. A broken release: never healthy; v1 keeps serving, the bundle fails with its log lines.
      await startRegistry(root, REGISTRY_MOUNT);
      const upstreamBefore = fs.readFileSync(root.hostPath(LAYOUT.nginx.upstream), "utf8");
      const c = await deployUnderLoad(root, pki, { ...v1, appTag: V3 });
      assert.notEqual(c.result.code, 0, show(c.result));
      assert.match(c.result.stderr, /release v3-broken did not become healthy: no 200 from http:\/\/127\.0\.0\.1:8001\/healthz within 10s \(last answer: HTTP 503\)/);
      assert.match(c.result.stderr, /its log stays in the journal on this server: journalctl -t app-v3-broken -n 50/);
      assert.doesNotMatch(c.result.stderr, /test-app build=c/, "the broken release's own log lines stay out of the deploy output");
      const brokenLog = must(root, "journalctl --no-pager -o cat -t app-v3-broken");
      assert.match(brokenLog, /test-app build=c release=v3-broken: listening on port 8000 \(mode broken\)/, "the broken release's log is in the journal");
      assert.match(brokenLog, /healthz: refusing to report healthy, this build is broken on purpose/);
      assert.match(c.result.stderr, /release v3-broken never became healthy; v1 from slot green keeps serving, nginx was not touched/);
      assert.match(c.result.stderr, /^\[app\] FAILED during apply: apply failed \(exit 1, output above\)$/m);
      assertNoFailures(c.load, "broken v3");
      assert.deepEqual(Object.keys(c.load.byRelease), [V1], "only v1 may answer while v3 fails");
      assert.equal(fs.readFileSync(root.hostPath(LAYOUT.nginx.upstream), "utf8"), upstreamBefore, "nginx untouched");
      assert.equal(appContainers(root), `app-green ${V1} running`, "the broken container is removed");
      assert.match(fs.readFileSync(root.hostPath(APP_PATHS.metricsFile), "utf8"), /^leaninfra_app_deploy_success 0$/m);
      assert.match(fs.readFileSync(root.hostPath(APP_PATHS.metricsFile), "utf8"), /^leaninfra_app_release_info\{release="v1",slot="green"\} 1$/m);
      timings.push(`broken v3: bundle failed after ${c.result.ms} ms, ${c.load.sent} requests, ${c.load.failed} failed`);

      // 5. A failing migration stops the deploy before anything starts.
      const migrationFails = await applyRole(root, appRole({ ...v1, appTag: V2, appMigrationCommand: ["python3", "/app/app.py", "migrate", "--fail"] }));
      assert.notEqual(migrationFails.code, 0, show(migrationFails));
      assert.doesNotMatch(migrationFails.stderr, /migration failed on purpose/);
      assert.match(migrationFails.stderr, /the migration of release v2 failed \(exit \d+; its output: journalctl -t app-migrate-v2\); v1 from slot green keeps serving/);
      assert.match(must(root, "journalctl --no-pager -o cat -t app-migrate-v2"), /migration failed on purpose/);
      assert.equal(appContainers(root), `app-green ${V1} running`);

      // 6. v2 again: serves, and image pruning keeps 1 + serving + previous, so v3-broken goes.
      const again = await applyRole(root, appRole({ ...v1, appTag: V2 }));
      assert.equal(again.code, 0, show(again));
      assert.match(again.stderr, /removing image 127\.0\.0\.1:5123\/leaninfra-test-app:v3-broken \(keeping the last 1 releases, the serving one and the previous one\)/);
      assert.equal(must(root, `docker image ls --format '{{.Tag}}' ${TEST_IMAGE} | sort`), `${V1}\n${V2}\n`);
      const third = await applyRole(root, appRole({ ...v1, appTag: V2 }));
      assert.equal(third.stdout, "[app] no changes\n", show(third));
      const health = root.run(`${APP_PATHS.deployScript} --health && ${APP_PATHS.deployScript} --check`);
      assert.equal(health.code, 0, show(health));

      // 7. A release pinned to its digest: what runs is those bytes, whatever the tag points at later; a digest
      // the registry does not have fails at the pull with v2 still serving.
      const pinned = `${V1}@${v1Digest.split("@")[1]}`;
      const unknownDigest = await applyRole(root, appRole({ ...v1, appTag: `${V1}@sha256:${"0".repeat(64)}` }));
      assert.notEqual(unknownDigest.code, 0, show(unknownDigest));
      assert.match(unknownDigest.stderr, new RegExp(`could not pull ${esc(TEST_IMAGE)}@sha256:0{64}`));
      assert.equal(appContainers(root), `app-blue ${V2} running`);
      const pin = await applyRole(root, appRole({ ...v1, appTag: pinned }));
      assert.equal(pin.code, 0, show(pin));
      assert.match(pin.stdout, new RegExp(`^\\[app\\] deployed: release ${esc(pinned)} serves from slot green .*image ${esc(v1Digest)}\\)$`, "m"));
      assert.equal(must(root, `docker inspect app-green --format '{{.Config.Image}}'`).trim(), v1Digest);
      assert.equal((await applyRole(root, appRole({ ...v1, appTag: pinned }))).stdout, "[app] no changes\n");

      // 8. A deploy killed between nginx's two include files (here: while nginx -t runs) puts both back.
      const heldFlag = "/var/lib/leaninfra-test-hold-nginx"; // on the overlay, so the test sees it (/run is the root's tmpfs)
      fs.writeFileSync(root.hostPath("/usr/local/sbin/nginx"), `#!/bin/sh\nif [ -e ${heldFlag} ]; then touch ${heldFlag}.held; sleep 300; fi\nexec /usr/sbin/nginx "$@"\n`, { mode: 0o755 });
      must(root, `touch ${heldFlag}`);
      const filesBefore = [LAYOUT.nginx.upstream, LAYOUT.nginx.release].map((f) => fs.readFileSync(root.hostPath(f), "utf8"));
      must(root, `systemd-run --quiet --unit=leaninfra-test-deploy --service-type=exec ${APP_PATHS.deployScript} ${V2}`);
      for (let i = 0; i < 1200 && !fs.existsSync(root.hostPath(`${heldFlag}.held`)); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(fs.existsSync(root.hostPath(`${heldFlag}.held`)), "the deploy never reached nginx -t");
      assert.equal(fs.readFileSync(root.hostPath(LAYOUT.nginx.upstream), "utf8"), `server 127.0.0.1:${LAYOUT.app.slotPorts.blue};\n`, "held after the switch was written");
      must(root, `rm -f ${heldFlag}; systemctl kill leaninfra-test-deploy; for i in $(seq 100); do systemctl is-active --quiet leaninfra-test-deploy || break; sleep 0.1; done`);
      const killed = must(root, "journalctl --no-pager -o cat -u leaninfra-test-deploy");
      assert.match(killed, /deploy of release v2 failed during step 'switch' \(exit 143\)/, killed);
      assert.match(killed, /putting nginx's include files back as they were before the switch/, killed);
      assert.deepEqual([LAYOUT.nginx.upstream, LAYOUT.nginx.release].map((f) => fs.readFileSync(root.hostPath(f), "utf8")), filesBefore, "both include files are back");
      assert.deepEqual(fs.readdirSync(root.hostPath(path.dirname(LAYOUT.nginx.upstream))).filter((f) => f.includes(".previous.")), [], "no copies left");
      assert.equal(appContainers(root), `app-green ${pinned} running`, "the new container is removed, the serving one stays");
      must(root, `rm -f /usr/local/sbin/nginx ${heldFlag}.held`);
      const afterKill = root.run(`${APP_PATHS.deployScript} --health && ${APP_PATHS.deployScript} --check && nginx -t`);
      assert.equal(afterKill.code, 0, show(afterKill));

      // The deploy trail: one line per attempt, and the metrics node_exporter reads.
      const log = fs.readFileSync(root.hostPath(LAYOUT.app.deployLog), "utf8").trimEnd().split("\n");
      const ran = `${esc(TEST_IMAGE)}@sha256:[0-9a-f]{64}`;
      const expected: [string, string, string, string, string, string][] = [
        [V1, "green", "ok", "-", esc(v1Digest), ""],
        [V2, "blue", "ok", V1, ran, ""],
        [V1, "green", "ok", V2, esc(v1Digest), ""],
        [V3, "blue", "failed", V1, ran, " step=health"],
        [V2, "blue", "failed", V1, ran, " step=migrate"],
        [V2, "blue", "ok", V1, ran, ""],
        [`${V1}@sha256:0{64}`, "green", "failed", V2, "-", " step=pull"],
        [esc(pinned), "green", "ok", V2, esc(v1Digest), ""],
        [V2, "blue", "failed", esc(pinned), ran, " step=switch"],
      ];
      assert.equal(log.length, expected.length, log.join("\n"));
      expected.forEach(([release, slot, result, previous, digest, step], i) => {
        const re = new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ release=${release} slot=${slot} result=${result} duration=\\d+\\.\\d{3}s previous=${previous} image=${esc(TEST_IMAGE)} ran=${digest}${step}$`);
        assert.match(log[i], re);
      });
      assert.equal(must(root, `stat -c '%a %U:%G' ${LAYOUT.app.deployLog}`), "640 root:adm\n");
      const metrics = fs.readFileSync(root.hostPath(APP_PATHS.metricsFile), "utf8");
      assert.match(metrics, new RegExp(`^leaninfra_app_release_info\\{release="${esc(pinned)}",slot="green"\\} 1$`, "m"));
      assert.match(metrics, /^leaninfra_app_deploy_success 0$/m, "the last attempt (killed) failed");
      assert.match(metrics, /^leaninfra_app_deploy_duration_seconds \d+\.\d{3}$/m);
      const stamp = Number(/^leaninfra_app_deploy_timestamp_seconds (\d+)$/m.exec(metrics)?.[1]);
      assert.ok(Math.abs(stamp - Date.now() / 1000) < 120, `deploy timestamp ${stamp} is not recent`);
      assert.deepEqual(fs.readdirSync(root.hostPath(LAYOUT.textfileDir)).filter((f) => f.includes("leaninfra_app")), ["leaninfra_app.prom"], "no temp files left");
      for (const line of log) console.log(`  deploy.log: ${line}`);
    },
  );
  for (const t of timings) console.log(`  ${t}`);
});
