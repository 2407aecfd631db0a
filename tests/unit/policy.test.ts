// The policy pack's validators (policy/policies.ts), each called as the engine calls it: with a
// compliant resource (no violation) and a violating one (a violation naming the resource and the
// config key to change).
import assert from "node:assert/strict";
import test from "node:test";
import type { PolicyProviderResource } from "@pulumi/policy";
import type { AnyRoleDefinition } from "../../components/host/define";
import { firewallRules } from "../../components/host/firewall";
import { ROLES } from "../../infra/roles";
import {
  FIREWALL,
  LOAD_BALANCER_SERVICE,
  PRIMARY_IP,
  R2_BUCKET,
  REMOTE_COMMAND,
  RULESET,
  ResourceArgs,
  SERVER,
  StackSettings,
  VOLUME,
  Validator,
  backupBucketInSecondAccount,
  budgetProblems,
  databasesNotExposed,
  policies,
  productionProtected,
  publicPortsOnly,
  redisOnlyWithJob,
  rolesHaveBudgets,
  sshNotFromEverywhere,
  stackSettings,
} from "../../policy/policies";

const ZONE_ACCOUNT = "0123456789abcdef0123456789abcdef";
const BACKUP_ACCOUNT = "fedcba9876543210fedcba9876543210";

const SETTINGS: StackSettings = {
  environment: "production",
  sshAllowAnywhere: false,
  cloudflareAccountId: ZONE_ACCOUNT,
  backupAllowSameAccount: false,
  redisJob: "none",
  zoneApiToken: "zone-token",
};

function resource(type: string, name: string, props: Record<string, unknown>, provider?: PolicyProviderResource): ResourceArgs {
  const short = type.split(":").pop();
  return { type, name, urn: `urn:pulumi:prod::leaninfra::${short}::${name}`, props, provider };
}

/** The messages a validator reports for one resource. */
function violations(validator: Validator, args: ResourceArgs): string[] {
  const found: string[] = [];
  validator(args, (message, urn) => {
    assert.equal(urn, args.urn, "a violation names the resource's URN");
    found.push(message);
  });
  return found;
}

/** The firewall the program declares for a stack (components/host/firewall.ts), as the analyzer sees it. */
function firewall(sshAllowFrom: string[], extra: Record<string, unknown>[] = []): ResourceArgs {
  const rules = firewallRules({ sshAllowFrom, cdnProxy: true, cdnRanges: { ipv4Cidrs: ["173.245.48.0/20"], ipv6Cidrs: ["2400:cb00::/32"] } });
  return resource(FIREWALL, "host-firewall", { labels: {}, rules: [...rules, ...extra] });
}

const OWN_NETWORKS = ["203.0.113.7/32", "2001:db8:1234::/48"];

test("stackSettings reads PULUMI_CONFIG, and without it the program's defaults, which are the strict ones", () => {
  const config = {
    "leaninfra:environment": "staging",
    "leaninfra:sshAllowAnywhere": "true",
    "leaninfra:cloudflareAccountId": ZONE_ACCOUNT,
    "leaninfra:redisJob": "cache",
    "cloudflare:apiToken": "t",
  };
  assert.deepEqual(stackSettings({ PULUMI_CONFIG: JSON.stringify(config) }), {
    environment: "staging",
    sshAllowAnywhere: true,
    cloudflareAccountId: ZONE_ACCOUNT,
    backupAllowSameAccount: false,
    redisJob: "cache",
    zoneApiToken: "t",
  });
  assert.deepEqual(stackSettings({}), {
    environment: "production",
    sshAllowAnywhere: false,
    cloudflareAccountId: undefined,
    backupAllowSameAccount: false,
    redisJob: "none",
    zoneApiToken: undefined,
  });
  assert.throws(() => stackSettings({ PULUMI_CONFIG: "{" }), /PULUMI_CONFIG is not JSON/);
});

test("public-ports-only-ssh-web: the program's firewall passes; 5432, a range, a port-less TCP rule and GRE fail", () => {
  assert.deepEqual(violations(publicPortsOnly, firewall(OWN_NETWORKS)), []);
  // Not a firewall: not this policy's business.
  assert.deepEqual(violations(publicPortsOnly, resource(SERVER, "host-server", { rules: [{ protocol: "tcp", port: "5432" }] })), []);
  const bad = [
    { direction: "in", protocol: "tcp", port: "5432", sourceIps: ["0.0.0.0/0"] },
    { direction: "in", protocol: "tcp", port: "80-443", sourceIps: ["0.0.0.0/0"] },
    { direction: "in", protocol: "udp", sourceIps: ["198.51.100.0/24"] },
    { direction: "in", protocol: "gre", sourceIps: ["0.0.0.0/0"] },
    // Outbound rules open nothing to the internet.
    { direction: "out", protocol: "tcp", port: "5432", destinationIps: ["0.0.0.0/0"] },
  ];
  const found = violations(publicPortsOnly, firewall(OWN_NETWORKS, bad));
  assert.equal(found.length, 4, found.join("\n"));
  assert.match(found[0], /^Firewall host-firewall admits tcp 5432 from 0\.0\.0\.0\/0; the internet may reach only TCP\/UDP 22, 80, 443 and ICMP\./);
  assert.match(found[0], /components\/host\/firewall\.ts/);
  assert.match(found[1], /admits tcp 80-443/);
  assert.match(found[2], /admits udp \(all ports\)/);
  assert.match(found[3], /admits gre/);
});

test("ssh-not-from-whole-internet: own networks pass; 0.0.0.0/0 or ::/0 fail unless sshAllowAnywhere", () => {
  const check = sshNotFromEverywhere(SETTINGS);
  assert.deepEqual(violations(check, firewall(OWN_NETWORKS)), []);
  for (const everyone of ["0.0.0.0/0", "::/0"]) {
    const found = violations(check, firewall([...OWN_NETWORKS, everyone]));
    assert.equal(found.length, 1, found.join("\n"));
    assert.match(found[0], new RegExp(`Firewall host-firewall admits SSH \\(port 22\\) from ${everyone.replace(/[./]/g, "\\$&")}, the whole internet`));
    assert.match(found[0], /leaninfra:sshAllowFrom.*leaninfra:sshAllowAnywhere true/);
  }
  // A rule for every TCP port from everywhere opens SSH too.
  assert.equal(violations(check, firewall(OWN_NETWORKS, [{ direction: "in", protocol: "tcp", sourceIps: ["0.0.0.0/0"] }])).length, 1);
  assert.deepEqual(violations(sshNotFromEverywhere({ ...SETTINGS, sshAllowAnywhere: true }), firewall(["0.0.0.0/0", "::/0"])), []);
});

test("databases-not-exposed: nothing reaches 5432 or 6379 (firewall rule or range, load balancer, Cloudflare origin rule)", () => {
  assert.deepEqual(violations(databasesNotExposed, firewall(OWN_NETWORKS)), []);
  const postgres = violations(databasesNotExposed, firewall(OWN_NETWORKS, [{ direction: "in", protocol: "tcp", port: "5432", sourceIps: ["203.0.113.7/32"] }]));
  assert.equal(postgres.length, 1);
  assert.match(postgres[0], /^PostgreSQL \(port 5432\) is exposed: Firewall host-firewall admits tcp 5432 from 203\.0\.113\.7\/32\./);
  const range = violations(databasesNotExposed, firewall(OWN_NETWORKS, [{ direction: "in", protocol: "tcp", port: "5000-7000", sourceIps: ["0.0.0.0/0"] }]));
  assert.deepEqual(range.map((m) => m.split(" ")[0]), ["PostgreSQL", "Redis"]);

  assert.deepEqual(violations(databasesNotExposed, resource(LOAD_BALANCER_SERVICE, "web", { listenPort: 443, destinationPort: 8080 })), []);
  assert.match(violations(databasesNotExposed, resource(LOAD_BALANCER_SERVICE, "cache", { listenPort: 6379, destinationPort: 6379 }))[0], /^Redis \(port 6379\) is exposed: LoadBalancerService cache forwards port 6379 to 6379/);

  const originRule = (port: number) => resource(RULESET, "edge-origin", { phase: "http_request_origin", rules: [{ action: "route", actionParameters: { origin: { port } } }] });
  assert.deepEqual(violations(databasesNotExposed, originRule(8443)), []);
  assert.match(violations(databasesNotExposed, originRule(5432))[0], /^PostgreSQL \(port 5432\) is exposed: Ruleset edge-origin sends requests to the origin's port 5432/);
});

test("backup-bucket-in-second-account: the backup account through its own provider passes; the zone's account or token fails", () => {
  const check = backupBucketInSecondAccount(SETTINGS);
  const provider = (name: string, apiToken: string): PolicyProviderResource => ({
    type: "pulumi:providers:cloudflare",
    name,
    urn: `urn:pulumi:prod::leaninfra::pulumi:providers:cloudflare::${name}`,
    props: { apiToken },
  });
  const bucket = (accountId: string, p: PolicyProviderResource) => resource(R2_BUCKET, "backups-bucket", { accountId, name: "leaninfra-prod-backups" }, p);
  assert.deepEqual(violations(check, bucket(BACKUP_ACCOUNT, provider("backup-account", "backup-token"))), []);

  const sameAccount = violations(check, bucket(ZONE_ACCOUNT, provider("backup-account", "backup-token")));
  assert.equal(sameAccount.length, 1);
  assert.match(sameAccount[0], /^R2 bucket backups-bucket is in account 0123456789abcdef0123456789abcdef, the account that holds the zone \(leaninfra:cloudflareAccountId\)\. .*leaninfra:backupAccountId.*leaninfra:backupApiToken/);
  assert.match(violations(check, bucket(BACKUP_ACCOUNT, provider("default_6_0_0", "zone-token")))[0], /created by the default Cloudflare provider \(default_6_0_0\), with the zone's token/);
  assert.match(violations(check, bucket(BACKUP_ACCOUNT, provider("backup-account", "zone-token")))[0], /provider \(backup-account\) uses the zone's token \(cloudflare:apiToken\)/);

  // backupAllowSameAccount is honoured off production only.
  assert.deepEqual(violations(backupBucketInSecondAccount({ ...SETTINGS, environment: "staging", backupAllowSameAccount: true }), bucket(ZONE_ACCOUNT, provider("backup-account", "b"))), []);
  assert.equal(violations(backupBucketInSecondAccount({ ...SETTINGS, backupAllowSameAccount: true }), bucket(ZONE_ACCOUNT, provider("backup-account", "b"))).length, 1);
});

test("redis-only-with-named-job: the redis role's command passes with a job and fails without one", () => {
  const command = resource(REMOTE_COMMAND, "host-role-redis", { create: "leaninfra-role redis" });
  assert.deepEqual(violations(redisOnlyWithJob({ ...SETTINGS, redisJob: "cache" }), command), []);
  for (const redisJob of ["none", "everything"]) {
    const found = violations(redisOnlyWithJob({ ...SETTINGS, redisJob }), command);
    assert.equal(found.length, 1);
    assert.match(found[0], new RegExp(`^host-role-redis installs Redis, but leaninfra:redisJob is "${redisJob}"\\. Redis runs here only with one named job: cache, sessions or queue`));
  }
  // Other roles' commands are not Redis.
  assert.deepEqual(violations(redisOnlyWithJob(SETTINGS), resource(REMOTE_COMMAND, "host-role-postgres", {})), []);
});

test("production-delete-protection: protected production resources pass; any protection off in production fails", () => {
  const check = productionProtected(SETTINGS);
  const labels = { environment: "production" };
  assert.deepEqual(violations(check, resource(SERVER, "host-server", { deleteProtection: true, rebuildProtection: true, labels })), []);
  assert.deepEqual(violations(check, resource(VOLUME, "host-data", { deleteProtection: true, labels })), []);
  assert.deepEqual(violations(check, resource(PRIMARY_IP, "host-ipv4", { deleteProtection: true, labels })), []);

  const server = violations(check, resource(SERVER, "host-server", { deleteProtection: true, rebuildProtection: false, labels }));
  assert.equal(server.length, 1);
  assert.match(server[0], /^Server host-server is production but has rebuildProtection off: .*Set leaninfra:deleteProtection true/);
  assert.match(violations(check, resource(VOLUME, "host-data", { deleteProtection: false, labels }))[0], /^Volume host-data is production but has deleteProtection off/);
  assert.match(violations(check, resource(PRIMARY_IP, "host-ipv6", { deleteProtection: false, labels }))[0], /^PrimaryIp host-ipv6 is production/);

  // Off production, protection is the owner's choice; the label alone makes a resource production.
  const staging = productionProtected({ ...SETTINGS, environment: "staging" });
  assert.deepEqual(violations(staging, resource(VOLUME, "host-data", { deleteProtection: false, labels: { environment: "staging" } })), []);
  assert.equal(violations(staging, resource(VOLUME, "host-data", { deleteProtection: false, labels })).length, 1);
});

test("roles-declare-budget: every role of infra/roles.ts passes; a role without a budget or with an incomplete one fails", () => {
  for (const role of ROLES) assert.deepEqual(budgetProblems(role), [], role.name);
  const command = (role: string) => resource(REMOTE_COMMAND, `host-role-${role}`, {});
  assert.deepEqual(violations(rolesHaveBudgets(ROLES), command("postgres")), []);

  const postgres = ROLES.find((r) => r.name === "postgres") as AnyRoleDefinition;
  const without = { ...postgres, budget: undefined } as unknown as AnyRoleDefinition;
  const found = violations(rolesHaveBudgets([without]), command("postgres"));
  assert.equal(found.length, 1);
  assert.match(found[0], /^host-role-postgres deploys the postgres role, whose budget is incomplete: no budget\. .*components\/postgres\/index\.ts/);

  const incomplete = {
    ...postgres,
    budget: { monthlyCost: { amount: -1, currency: "GBP", what: "" }, alerts: [], failurePoints: [""] },
  } as unknown as AnyRoleDefinition;
  assert.deepEqual(budgetProblems(incomplete), [
    "monthlyCost.amount (a number, 0 or more)",
    "monthlyCost.currency (EUR or USD)",
    "monthlyCost.what",
    "secrets (a list of { name, livesIn })",
    "alerts (at least one alert name)",
    "failurePoints (at least one line)",
  ]);
  // An empty secrets list is a declaration ("holds none"); a missing one is not.
  assert.deepEqual(budgetProblems({ ...postgres, budget: { ...postgres.budget, secrets: [] } } as AnyRoleDefinition), []);
  assert.match(violations(rolesHaveBudgets(ROLES), command("mystery"))[0], /no role named mystery in infra\/roles\.ts/);
  // Commands that are not roles' are not counted.
  assert.deepEqual(violations(rolesHaveBudgets([without]), resource(REMOTE_COMMAND, "host-host-key-check", {})), []);
});

test("the pack's policies: seven, all mandatory, named, described", () => {
  const all = policies(SETTINGS, ROLES);
  assert.deepEqual(
    all.map((p) => p.name),
    [
      "public-ports-only-ssh-web",
      "ssh-not-from-whole-internet",
      "databases-not-exposed",
      "backup-bucket-in-second-account",
      "redis-only-with-named-job",
      "production-delete-protection",
      "roles-declare-budget",
    ],
  );
  for (const p of all) {
    assert.equal(p.enforcementLevel, "mandatory", p.name);
    assert.ok(p.description.length > 20, p.name);
  }
});
