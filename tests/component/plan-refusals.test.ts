// Every refusal of every role reaches the user of `npm run plan` as a config problem: exit 2, the
// "configuration problems" message naming the key, no stack trace, nothing rendered.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import test from "node:test";
import { parse } from "yaml";
import { PLACEHOLDER_HOST_KEY } from "../../components/host/host-key";
import { ROLES } from "../../infra/roles";
import { ed25519Key } from "../lib/ed25519-key";
import { MINIMAL_CONFIG } from "../lib/mock-cloud";
import { refusalProblem, runPlan, runPlans } from "../lib/plan-cli";

interface Refusal {
  /** What is set on top of the minimal stack (keys without the `leaninfra:` prefix). */
  set: Record<string, unknown>;
  /** The key the problem must name. */
  key: string;
  /** Part of the message. */
  says: string;
}

const EMAIL_RECEIVER = { alertReceiver: "email", alertEmailTo: "ops@example.com", alertEmailFrom: "alerts@example.com", alertSmtpHost: "smtp.example.com:587" };

// Each role's refusals: its own keys, and the stack keys it is the one to refuse (domain for nginx...).
const REFUSALS: Record<string, Refusal[]> = {
  base: [
    { set: { adminUser: "postgres" }, key: "adminUser", says: "an account of the system or of a service" },
    { set: { adminSshPublicKey: `ssh-ed25519 ${"A".repeat(100_000)} me@laptop` }, key: "adminSshPublicKey", says: "longer than any OpenSSH public key" },
  ],
  docker: [],
  postgres: [
    { set: { postgresDatabase: "template1" }, key: "postgresDatabase", says: "template1" },
    { set: { postgresUser: "postgres" }, key: "postgresUser", says: "postgres" },
    { set: { postgresDatabase: "Shop-DB" }, key: "postgresDatabase", says: "is not a PostgreSQL identifier" },
    { set: { postgresMaxConnections: 6000 }, key: "postgresMaxConnections", says: "at most 5000" },
  ],
  redis: [
    { set: { redisJob: "pubsub" }, key: "redisJob", says: "none, cache, sessions, queue" },
    { set: { redisJob: "cache", redisMaxMemoryMb: 6000 }, key: "redisMaxMemoryMb", says: "6000" },
    { set: { redisEnabled: true }, key: "redisEnabled", says: "was replaced by leaninfra:redisJob" },
  ],
  proxy: [
    { set: { domain: "1.2.3.4" }, key: "domain", says: "is not a domain name" },
    { set: { cdnProxy: false }, key: "acmeEmail", says: "Let's Encrypt" },
    { set: { cdnProxy: false, acmeEmail: "owner@localhost" }, key: "acmeEmail", says: "is not an e-mail address" },
    { set: { authPaths: ["/"] }, key: "authPaths[0]", says: "would rate-limit the whole site" },
    { set: { authPaths: ["/login", "/login"] }, key: "authPaths[1]", says: "is listed twice" },
    { set: { authPaths: ["/login", "/assets/login"] }, key: "authPaths[1]", says: "overlaps the static path prefix /assets/" },
    { set: { authRateLimitPerMinute: 0 }, key: "authRateLimitPerMinute", says: "at least 1" },
    { set: { clientMaxBodyMb: 4096 }, key: "clientMaxBodyMb", says: "at most 1024" },
    { set: { sloRouteGroups: ["api"] }, key: "sloRouteGroups[0]", says: "is not name=/prefix" },
    { set: { sloRouteGroups: ["other=/x/"] }, key: "sloRouteGroups[0]", says: "is a group nginx sets itself" },
  ],
  app: [
    { set: { appImage: "ghcr.io/acme/shop", appEnv: ["LOG_LEVEL=info", "LOG_LEVEL=debug"] }, key: "appEnv[1]", says: "LOG_LEVEL" },
    { set: { appImage: "ghcr.io/acme/shop", appEnv: ["DATABASE_URL=postgres://x"] }, key: "appEnv[0]", says: "DATABASE_URL" },
    { set: { appImage: "Ghcr.io/Acme/Shop" }, key: "appImage", says: "is not a container image name" },
    { set: { appImage: "ghcr.io/acme/shop", appTag: "1.0 beta" }, key: "appTag", says: "is not an image tag" },
    { set: { appImage: "ghcr.io/acme/shop", appPort: 70000 }, key: "appPort", says: "at most 65535" },
    { set: { appImage: "ghcr.io/acme/shop", appHealthPath: "healthz" }, key: "appHealthPath", says: "is not a path" },
    { set: { appImage: "ghcr.io/acme/shop", appHealthTimeoutSeconds: 1 }, key: "appHealthTimeoutSeconds", says: "at least 5" },
    { set: { appImage: "ghcr.io/acme/shop", appDrainSeconds: 601 }, key: "appDrainSeconds", says: "at most 600" },
    { set: { appImage: "ghcr.io/acme/shop", appKeepImages: 1 }, key: "appKeepImages", says: "at least 2" },
    { set: { appImage: "ghcr.io/acme/shop", appMemoryMb: 32 }, key: "appMemoryMb", says: "at least 64" },
    { set: { appImage: "ghcr.io/acme/shop", appPidsLimit: 8 }, key: "appPidsLimit", says: "at least 16" },
    { set: { appImage: "ghcr.io/acme/shop", appCapabilities: ["NET_ADMIN"] }, key: "appCapabilities[0]", says: "is not one of Docker's default capabilities" },
    { set: { appImage: "ghcr.io/acme/shop", appMigrationCommand: [""] }, key: "appMigrationCommand[0]", says: "at least 1" },
    { set: { appImage: "ghcr.io/acme/shop", appRegistryUser: "me\tyou" }, key: "appRegistryUser", says: "appRegistryUser" },
  ],
  backups: [
    { set: { drillFreshnessQuery: "DELETE FROM orders" }, key: "drillFreshnessQuery", says: "SELECT" },
    { set: { drillRowTolerancePercent: 101 }, key: "drillRowTolerancePercent", says: "at most 100" },
    { set: { drillMaxDataAgeMinutes: 0 }, key: "drillMaxDataAgeMinutes", says: "at least 1" },
    { set: { drillAppEnv: ["LEANINFRA_DRILL=0"] }, key: "drillAppEnv[0]", says: "which the drill sets itself" },
    { set: { drillAppEnv: ["MAIL_DELIVERY=off", "NOTE=tab\there"] }, key: "drillAppEnv[1]", says: "printable text" },
  ],
  logs: [
    { set: { victoriaLogsSha256: "ABC" }, key: "victoriaLogsSha256", says: "64 lowercase hex digits" },
    { set: { victoriaLogsUrl: "http://mirror.example.com/vl" }, key: "victoriaLogsUrl", says: "must be the URL of a directory" },
    { set: { logsRetentionDays: 0 }, key: "logsRetentionDays", says: "1 to 3650" },
    { set: { logsMemoryMb: 64 }, key: "logsMemoryMb", says: "must be 128 to" },
  ],
  monitoring: [
    { set: { prometheusRetentionDays: 7 }, key: "prometheusRetentionDays", says: "at least 31" },
    { set: { prometheusRetentionSizeGb: 100 }, key: "prometheusRetentionSizeGb", says: "at most half the volume" },
    { set: { alertReceiver: "pager" }, key: "alertReceiver", says: "email, telegram, webhook" },
    { set: { ...EMAIL_RECEIVER, alertEmailTo: "not-an-address" }, key: "alertEmailTo", says: "must be the e-mail address alerts go to" },
    { set: { ...EMAIL_RECEIVER, alertEmailFrom: "me" }, key: "alertEmailFrom", says: "must be the sender's e-mail address" },
    { set: { ...EMAIL_RECEIVER, alertSmtpHost: "smtp.example.com" }, key: "alertSmtpHost", says: "host:port" },
    { set: { ...EMAIL_RECEIVER, alertSmtpUser: "me\tyou" }, key: "alertSmtpUser", says: "not printable text" },
    { set: { alertReceiver: "telegram", alertTelegramChatId: "abc" }, key: "alertTelegramChatId", says: "must be the numeric chat id" },
    { set: { sloObjectivePercent: 100 }, key: "sloObjectivePercent", says: "at most 99.99" },
    { set: { sloObjectivePercent: "ninety-nine" }, key: "sloObjectivePercent", says: "ninety-nine" },
    { set: { sloLatencyMs: 300 }, key: "sloLatencyMs", says: "50, 100, 250, 500, 1000, 2500, 5000, 10000" },
    { set: { appErrorLinesPerMinute: 0 }, key: "appErrorLinesPerMinute", says: "is too small (accepted: more than 0)" },
  ],
  grafana: [
    { set: { grafana: "yes" }, key: "grafana", says: "true or false" },
    { set: { grafanaHostname: "Grafana!" }, key: "grafanaHostname", says: "is not a host name label" },
    { set: { grafanaHostname: "www" }, key: "grafanaHostname", says: "is already one of the site's names" },
  ],
};

test("the refusal table covers every role of the stack and every key each role owns", () => {
  assert.deepEqual(Object.keys(REFUSALS).sort(), ROLES.map((r) => r.name).sort(), "a role without an entry here: add its refusals");
  for (const role of ROLES) {
    const covered = new Set(REFUSALS[role.name].map((r) => r.key.replace(/\[\d+\]$/, "")));
    for (const key of Object.keys(role.settings.shape)) assert.ok(covered.has(key), `no refusal of ${role.name}'s ${key}`);
  }
});

const cases = Object.entries(REFUSALS).flatMap(([role, refusals]) => refusals.map((refusal) => ({ role, ...refusal })));

test(`every role's refusals (${cases.length}) end npm run plan with exit 2 and the config-problems message, before anything is rendered`, async () => {
  const results = await runPlans(cases.map((c) => ({ ...MINIMAL_CONFIG, ...c.set })), "refusal");
  const failures: string[] = [];
  cases.forEach((c, i) => {
    const problem = refusalProblem(results[i], "refusal", `leaninfra:${c.key}`, c.says);
    if (problem) failures.push(`${c.role}: ${JSON.stringify(c.set).slice(0, 120)}: ${problem}`);
    fs.rmSync(results[i].dir, { recursive: true, force: true });
  });
  assert.deepEqual(failures, []);
});

// The pin of an existing server's host key (leaninfra:sshHostKey): what an owner may paste by mistake.
const PINNED = ed25519Key("a server created before pinning").publicKeyOpenssh.trim();
const HOST_KEY_REFUSALS: Refusal[] = [
  { set: { sshHostKey: "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 root@app" }, key: "sshHostKey", says: "is a ssh-rsa key" },
  { set: { sshHostKey: "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=" }, key: "sshHostKey", says: "the server presents its ssh-ed25519 key only" },
  { set: { sshHostKey: "SHA256:sooAv8LPUCo7GncTIhL48gzjnouhexO5oyqim6AK3P8" }, key: "sshHostKey", says: "is not an OpenSSH host public key" },
  { set: { sshHostKey: `[198.51.100.10]:22 ${PINNED}` }, key: "sshHostKey", says: "is not an OpenSSH host public key" },
  { set: { sshHostKey: PINNED.slice(0, -10) }, key: "sshHostKey", says: "ssh-ed25519" },
  { set: { sshHostKey: "ssh-ed25519" }, key: "sshHostKey", says: "has no base64 key after ssh-ed25519" },
];

test(`a bad leaninfra:sshHostKey (${HOST_KEY_REFUSALS.length} kinds) ends npm run plan with exit 2 naming the key, before anything is rendered`, async () => {
  const results = await runPlans(HOST_KEY_REFUSALS.map((c) => ({ ...MINIMAL_CONFIG, ...c.set })), "refusal");
  const failures: string[] = [];
  HOST_KEY_REFUSALS.forEach((c, i) => {
    const problem = refusalProblem(results[i], "refusal", `leaninfra:${c.key}`, c.says);
    if (problem) failures.push(`${JSON.stringify(c.set).slice(0, 120)}: ${problem}`);
    fs.rmSync(results[i].dir, { recursive: true, force: true });
  });
  assert.deepEqual(failures, []);
});

test("a valid leaninfra:sshHostKey (with its comment) plans; out/ has the user data with a placeholder host key, never a private key", async () => {
  const run = await runPlan({ ...MINIMAL_CONFIG, sshHostKey: `${PINNED} root@app` }, "pinned");
  try {
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /\+ command:local:Command {2}host-host-key-check/);
    assert.match(run.stdout, /\+ tls:index\/privateKey:PrivateKey {2}host-ssh-host-key\n\s+algorithm: ED25519/);
    const userData = fs.readFileSync(path.join(run.dir, "out/pinned/cloud-init/user-data.yaml"), "utf8");
    assert.deepEqual(parse(userData).ssh_keys, { ed25519_private: PLACEHOLDER_HOST_KEY.privateKeyOpenssh, ed25519_public: PLACEHOLDER_HOST_KEY.publicKeyOpenssh });
    const planJson = fs.readFileSync(path.join(run.dir, "out/pinned/plan.json"), "utf8");
    const server = (JSON.parse(planJson).resources as { type: string; inputs: Record<string, unknown> }[]).find((r) => r.type === "hcloud:index/server:Server")!;
    assert.equal(server.inputs.userData, "[secret]", "plan.json shows the server's user data as a secret");
    // Every OpenSSH private key's base64 starts with "openssh-key-v1" encoded.
    for (const file of [userData, planJson, run.stdout]) assert.ok(!file.includes("b3BlbnNzaC1rZXktdjE"), "no private key is written or printed");
  } finally {
    fs.rmSync(run.dir, { recursive: true, force: true });
  }
});
