// Every refusal of every role reaches the user of `npm run plan` as a config problem: exit 2, the
// "configuration problems" message naming the key, no stack trace, nothing rendered.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import test from "node:test";
import { ROLES } from "../../infra/roles";
import { MINIMAL_CONFIG } from "../lib/mock-cloud";
import { refusalProblem, runPlans } from "../lib/plan-cli";

interface Refusal {
  /** What is set on top of the minimal stack (keys without the `leaninfra:` prefix). */
  set: Record<string, unknown>;
  /** The key the problem must name. */
  key: string;
  /** Part of the message. */
  says: string;
}

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
