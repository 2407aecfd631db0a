// The observability path's stack as the integration test and `npm run bench:ops` run it in a booted
// Debian 13 root: the roles (base, logs, postgres, Redis, proxy, backups, monitoring) with their test
// stand-ins on the host (an S3 server, VictoriaLogs' release served on loopback, a webhook recording
// Alertmanager's posts, the app on the blue slot's port).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import { AddressInfo } from "node:net";
import { baseRole } from "../../components/base";
import { BackupsRoleSettings, backupsRole } from "../../components/backups";
import { LAYOUT } from "../../components/host/layout";
import { HostRole } from "../../components/host/role";
import { logsRole } from "../../components/logs";
import { MonitoringSettings, monitoringRole } from "../../components/monitoring";
import { postgresRole } from "../../components/postgres";
import { proxyRole } from "../../components/proxy";
import { redisRole, role as redisDefinition } from "../../components/redis";
import { DOMAIN, TestPki, makeTestPki, testProxySettings } from "../fixtures/test-app/scenario";
import { BootedRoot, must } from "./booted-root";
import { TEST_MONITORING_SETTINGS } from "./facts";
import { S3Server, freePort } from "./s3-server";
import { buildReleaseDir, serveRelease } from "./victorialogs";

export interface Notification {
  path: string;
  receivedAt: number;
  body: { receiver: string; status: string; alerts: { status: string; labels: Record<string, string>; annotations: Record<string, string> }[] };
}

/** An HTTP server recording every POST (Alertmanager's webhook JSON), by path. */
export async function startHookServer(): Promise<{ port: number; received: Notification[]; close(): void }> {
  const received: Notification[] = [];
  const server = http.createServer((req, res) => {
    let data = "";
    req.on("data", (chunk) => (data += chunk));
    req.on("end", () => {
      try {
        received.push({ path: req.url ?? "", receivedAt: Date.now(), body: JSON.parse(data) });
      } catch {
        received.push({ path: req.url ?? "", receivedAt: Date.now(), body: { receiver: "", status: `unparsable: ${data.slice(0, 200)}`, alerts: [] } });
      }
      res.writeHead(200).end("ok");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    received,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** The app stand-in on the blue slot port nginx's first upstream names: /boom answers 500, the rest 200. */
export async function startAppStandIn(): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith("/boom")) res.writeHead(500, { "content-type": "text/plain" }).end("boom\n");
    else res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(LAYOUT.app.slotPorts.blue, "127.0.0.1", resolve);
  });
  return server;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls until check returns a value, or fails with the message and the last state after timeoutMs. */
export async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined> | T | undefined, state: () => string = () => ""): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`${what}: not within ${Math.round(timeoutMs / 1000)} s. ${state()}`);
    await sleep(3000);
  }
}

export interface ObservabilityStack {
  s3: S3Server;
  hooks: Awaited<ReturnType<typeof startHookServer>>;
  pki: TestPki;
  /** The roles before monitoring, in the stack's order. */
  roles: HostRole[];
  monitoring: MonitoringSettings;
  /** Stops the host-side stand-ins and removes their files. */
  dispose(): Promise<void>;
}

/** The stack's settings and the host-side stand-ins it needs (started here). */
export async function prepareObservabilityStack(): Promise<ObservabilityStack> {
  const s3 = await S3Server.start();
  // VictoriaLogs' release as the logs role downloads it, served on loopback (built from its Go module).
  const release = buildReleaseDir();
  const releaseServer = await serveRelease(release.dir);
  const hooks = await startHookServer();
  const pki = makeTestPki();
  const port = await freePort();
  const pgPassword = `Pg${randomBytes(12).toString("hex")}`;
  const redis = { redisJob: "cache" as const, memoryMb: 2048, redisMaxMemoryMb: 0, password: `Rd${randomBytes(12).toString("hex")}`, adminPassword: `Ad${randomBytes(12).toString("hex")}` };
  // The URL the redis role offers the app (and the monitoring role): the app user's password.
  const redisUrl = redisDefinition.offers!(redis as never, { password: redis.password, adminPassword: redis.adminPassword }).redisUrl;
  const backups: BackupsRoleSettings = {
    s3: { endpoint: s3.endpoint, bucket: s3.bucket, accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey },
    cipherPassphrase: `Cipher${randomBytes(16).toString("hex")}`,
    backupRetentionDays: 35,
    postgresDatabase: "shop",
    vcpus: 2,
    port,
    volumeSizeGb: 2,
    storageCaPem: s3.caPem,
    hostname: "app",
  };
  // The example stack's monitoring settings, with this root's domain, volume, ports, passwords and local hooks.
  const monitoring: MonitoringSettings = {
    ...TEST_MONITORING_SETTINGS,
    fqdn: `app.${DOMAIN}`,
    domain: DOMAIN,
    volumeSizeGb: 2,
    alertWebhookUrl: `http://127.0.0.1:${hooks.port}/alerts`,
    heartbeatUrl: `http://127.0.0.1:${hooks.port}/heartbeat`,
    postgresPassword: `Mon${randomBytes(12).toString("hex")}`,
    postgresPort: port,
    redisUrl,
  };
  const roles: HostRole[] = [
    baseRole({ adminUser: "ops" }),
    logsRole({ victoriaLogsSha256: release.archiveSha256, victoriaLogsUrl: releaseServer.url, logsRetentionDays: 30, logsMemoryMb: 256, serverType: "cx22", memoryMb: 4096, volumeSizeGb: 20 }),
    postgresRole({ memoryMb: 2048, vcpus: 2, postgresMaxConnections: 0, postgresDatabase: "shop", postgresUser: "shop_app", password: pgPassword, port }),
    redisRole(redis),
    proxyRole(testProxySettings(pki)),
    backupsRole(backups),
  ];
  return {
    s3,
    hooks,
    pki,
    roles,
    monitoring,
    async dispose() {
      hooks.close();
      s3.dispose();
      await releaseServer.close();
      release.remove();
    },
  };
}

/** The root as a host behind a resolver and a public CA: the site's names resolve here, its CA is trusted. */
export function trustSite(root: BootedRoot, pki: TestPki): void {
  must(root, `printf '127.0.0.1 ${DOMAIN} www.${DOMAIN}\\n' >>/etc/hosts`);
  fs.writeFileSync(root.hostPath("/usr/local/share/ca-certificates/leaninfra-test-site-ca.crt"), pki.siteCaPem);
  must(root, "update-ca-certificates >/dev/null");
}

/** The monitoring role of the stack. */
export function stackMonitoringRole(stack: ObservabilityStack): HostRole {
  return monitoringRole(stack.monitoring);
}
