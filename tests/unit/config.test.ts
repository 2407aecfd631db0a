import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import test from "node:test";
import { parse } from "yaml";
import { ConfigError, TEXT_LIST_KEYS, cidrProblem, pulumiConfigDeclarations, validateConfig } from "../../infra/config";
import { PROJECT_FILE, renderProjectFile } from "../../infra/project-file";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn9lq7g1xv3Y2Yl7Zb3eVq9tW4k8dG0ZcU2n6pYb1Xq owner@laptop";
const MAIN_ACCOUNT = "0123456789abcdef0123456789abcdef";
const BACKUP_ACCOUNT = "fedcba9876543210fedcba9876543210";
const valid = {
  domain: "example.com",
  adminSshPublicKey: KEY,
  sshAllowFrom: ["203.0.113.7/32"],
  cloudflareAccountId: MAIN_ACCOUNT,
  backupAccountId: BACKUP_ACCOUNT,
};

function problems(raw: Record<string, unknown>, stack = "prod"): string[] {
  try {
    validateConfig(stack, raw);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    return error.problems;
  }
  assert.fail(`config was accepted: ${JSON.stringify(raw)}`);
}

test("a minimal valid config gets every default", () => {
  const cfg = validateConfig("prod", valid);
  assert.equal(cfg.location, "fsn1");
  assert.equal(cfg.serverType, "cx32");
  assert.equal(cfg.image, "debian-13");
  assert.equal(cfg.environment, "production");
  assert.equal(cfg.isProduction, true);
  assert.equal(cfg.deleteProtection, true);
  assert.equal(cfg.cdnProxy, true);
  assert.equal(cfg.fqdn, "app.example.com");
  assert.ok(Object.isFrozen(cfg));
  assert.throws(() => (cfg.sshAllowFrom as string[]).push("10.0.0.0/8"));
});

test("values arrive as strings from Pulumi and are decoded by their declared type", () => {
  const cfg = validateConfig("prod", {
    ...valid,
    sshAllowFrom: '["203.0.113.0/24","2001:db8::/32"]',
    cdnProxy: "false",
    acmeEmail: "owner@example.com",
    volumeSizeGb: "40",
    hostname: "42",
  });
  assert.deepEqual(cfg.sshAllowFrom, ["203.0.113.0/24", "2001:db8::/32"]);
  assert.equal(cfg.cdnProxy, false);
  assert.equal(cfg.volumeSizeGb, 40);
  assert.equal(cfg.hostname, "42", "string keys stay strings even when they look like numbers");
});

const badInputs: Array<{ name: string; raw: Record<string, unknown>; key: string; mentions: string }> = [
  { name: "CIDR with a /33 prefix", raw: { sshAllowFrom: ["203.0.113.7/32", "10.0.0.0/33"] }, key: "leaninfra:sshAllowFrom[1]", mentions: '"10.0.0.0/33" is not a CIDR' },
  { name: "bare address without prefix", raw: { sshAllowFrom: ["203.0.113.7"] }, key: "leaninfra:sshAllowFrom[0]", mentions: "is not a CIDR" },
  { name: "CIDR with host bits", raw: { sshAllowFrom: ["203.0.113.7/24"] }, key: "leaninfra:sshAllowFrom[0]", mentions: "203.0.113.0/24" },
  { name: "IPv6 CIDR with host bits", raw: { sshAllowFrom: ["2001:db8::1/48"] }, key: "leaninfra:sshAllowFrom[0]", mentions: "2001:db8::/48" },
  { name: "SSH open to the world", raw: { sshAllowFrom: ["0.0.0.0/0"] }, key: "leaninfra:sshAllowFrom[0]", mentions: "sshAllowAnywhere" },
  { name: "SSH open to the IPv6 world", raw: { sshAllowFrom: ["203.0.113.7/32", "::/0"] }, key: "leaninfra:sshAllowFrom[1]", mentions: "whole internet" },
  { name: "empty SSH list", raw: { sshAllowFrom: [] }, key: "leaninfra:sshAllowFrom", mentions: "is empty" },
  { name: "SSH list not a list", raw: { sshAllowFrom: 42 }, key: "leaninfra:sshAllowFrom", mentions: "is not a list" },
  { name: "missing domain", raw: { domain: undefined }, key: "leaninfra:domain", mentions: "is required" },
  { name: "domain with upper case", raw: { domain: "Example.COM" }, key: "leaninfra:domain", mentions: '"Example.COM" is not a domain name' },
  { name: "domain without a dot", raw: { domain: "localhost" }, key: "leaninfra:domain", mentions: "is not a domain name" },
  { name: "unknown location", raw: { location: "fra1" }, key: "leaninfra:location", mentions: '"fra1" is not allowed (accepted: fsn1, nbg1, hel1, ash, hil, sin)' },
  { name: "unknown server type", raw: { serverType: "t3.micro" }, key: "leaninfra:serverType", mentions: "is not a Hetzner server type" },
  { name: "EU-only type in Ashburn", raw: { serverType: "cax21", location: "ash" }, key: "leaninfra:serverType", mentions: "not sold in location ash" },
  { name: "other OS image", raw: { image: "ubuntu-24.04" }, key: "leaninfra:image", mentions: "debian-13" },
  { name: "admin user root", raw: { adminUser: "root" }, key: "leaninfra:adminUser", mentions: "root login over SSH is off" },
  { name: "admin user with spaces", raw: { adminUser: "the owner" }, key: "leaninfra:adminUser", mentions: "is not a Linux user name" },
  { name: "private key pasted as public key", raw: { adminSshPublicKey: "-----BEGIN OPENSSH PRIVATE KEY-----" }, key: "leaninfra:adminSshPublicKey", mentions: "is not an OpenSSH public key" },
  { name: "volume too small", raw: { volumeSizeGb: 5 }, key: "leaninfra:volumeSizeGb", mentions: "5 is too small (accepted: at least 10)" },
  { name: "volume not an integer", raw: { volumeSizeGb: 20.5 }, key: "leaninfra:volumeSizeGb", mentions: "is not an integer" },
  { name: "volume given as words", raw: { volumeSizeGb: "forty" }, key: "leaninfra:volumeSizeGb", mentions: '"forty" is not' },
  { name: "swap too large", raw: { swapSizeMb: 100000 }, key: "leaninfra:swapSizeMb", mentions: "is too large (accepted: at most 65536)" },
  { name: "boolean given as yes", raw: { cdnProxy: "yes" }, key: "leaninfra:cdnProxy", mentions: '"yes" is not true or false' },
  { name: "unknown environment", raw: { environment: "prod" }, key: "leaninfra:environment", mentions: "accepted: production, staging, development" },
  { name: "misspelt key", raw: { sshAlowFrom: ["203.0.113.7/32"] }, key: "leaninfra:sshAlowFrom", mentions: "is not a LeanInfra setting" },
  { name: "unprotected production", raw: { deleteProtection: false }, key: "leaninfra:deleteProtection", mentions: "allowUnprotectedProduction" },
  { name: "account id not hex", raw: { cloudflareAccountId: "my-account" }, key: "leaninfra:cloudflareAccountId", mentions: "is not a Cloudflare account id" },
  { name: "missing backup account", raw: { backupAccountId: undefined }, key: "leaninfra:backupAccountId", mentions: "is required" },
  { name: "backups in the zone's own account", raw: { backupAccountId: MAIN_ACCOUNT }, key: "leaninfra:backupAccountId", mentions: "backupAllowSameAccount" },
  { name: "zone neither id nor name", raw: { cloudflareZone: "not a zone" }, key: "leaninfra:cloudflareZone", mentions: "is neither a zone id" },
  { name: "canonical host misspelt", raw: { canonicalHost: "root" }, key: "leaninfra:canonicalHost", mentions: "accepted: apex, www" },
  { name: "extra hostname with a dot", raw: { extraHostnames: ["grafana.example.com"] }, key: "leaninfra:extraHostnames[0]", mentions: "is not a host name label" },
  { name: "extra hostname www", raw: { extraHostnames: ["grafana", "www"] }, key: "leaninfra:extraHostnames[1]", mentions: "already managed" },
  { name: "static host also extra", raw: { staticHostname: "cdn", extraHostnames: ["cdn"] }, key: "leaninfra:staticHostname", mentions: "also listed" },
  { name: "path prefix without slashes", raw: { staticPathPrefixes: ["assets"] }, key: "leaninfra:staticPathPrefixes[0]", mentions: "is not a path prefix" },
  { name: "edge TTL below a minute", raw: { staticEdgeTtlSeconds: 5 }, key: "leaninfra:staticEdgeTtlSeconds", mentions: "at least 60" },
  { name: "origin certificate validity Cloudflare does not offer", raw: { originCertValidityDays: 100 }, key: "leaninfra:originCertValidityDays", mentions: "7, 30, 90, 365, 730, 1095, 5475" },
  { name: "no proxy without an ACME e-mail", raw: { cdnProxy: false }, key: "leaninfra:acmeEmail", mentions: "Let's Encrypt" },
  { name: "ACME e-mail malformed", raw: { cdnProxy: false, acmeEmail: "owner" }, key: "leaninfra:acmeEmail", mentions: "is not an e-mail address" },
  { name: "bucket name with capitals", raw: { backupBucketName: "My_Backups" }, key: "leaninfra:backupBucketName", mentions: "is not an R2 bucket name" },
  { name: "unknown R2 location", raw: { backupLocationHint: "eu-west-1" }, key: "leaninfra:backupLocationHint", mentions: "accepted: weur, eeur, wnam, enam, apac, oc" },
  { name: "unknown jurisdiction", raw: { backupJurisdiction: "ch" }, key: "leaninfra:backupJurisdiction", mentions: "accepted: default, eu, fedramp" },
  { name: "lock as long as retention", raw: { backupLockDays: 35, backupRetentionDays: 35 }, key: "leaninfra:backupLockDays", mentions: "shorter than backupRetentionDays (35)" },
  { name: "lock too close to retention", raw: { backupLockDays: 22, backupRetentionDays: 35 }, key: "leaninfra:backupLockDays", mentions: "at least 14 days shorter" },
  { name: "retention too short", raw: { backupRetentionDays: 7 }, key: "leaninfra:backupRetentionDays", mentions: "at least 21" },
  { name: "auth path covering the whole site", raw: { authPaths: ["/login", "/"] }, key: "leaninfra:authPaths[1]", mentions: "whole site" },
  { name: "auth path without a slash", raw: { authPaths: ["login"] }, key: "leaninfra:authPaths[0]", mentions: "is not a path" },
  { name: "the retired redisEnabled", raw: { redisEnabled: true }, key: "leaninfra:redisEnabled", mentions: "was replaced by leaninfra:redisJob" },
  { name: "the retired drillAppPort", raw: { drillAppPort: 8099 }, key: "leaninfra:drillAppPort", mentions: "is no longer used: the drill reaches its app container on an internal Docker network" },
  { name: "Redis with an unknown job", raw: { redisJob: "pubsub" }, key: "leaninfra:redisJob", mentions: "accepted: none, cache, sessions, queue" },
  { name: "app env overriding DATABASE_URL", raw: { appImage: "ghcr.io/acme/shop", appEnv: ["LOG_LEVEL=info", "DATABASE_URL=postgres://x"] }, key: "leaninfra:appEnv[1]", mentions: "LeanInfra provides itself" },
  { name: "app env without a value", raw: { appEnv: ["LOG_LEVEL"] }, key: "leaninfra:appEnv[0]", mentions: "is not KEY=value" },
  { name: "image with a tag", raw: { appImage: "ghcr.io/acme/shop:1.2" }, key: "leaninfra:appImage", mentions: "without tag" },
  { name: "tag with a slash", raw: { appTag: "feature/x" }, key: "leaninfra:appTag", mentions: "is not an image tag" },
  { name: "health path without slash", raw: { appHealthPath: "healthz" }, key: "leaninfra:appHealthPath", mentions: "is not a path" },
  { name: "postgres superuser as app user", raw: { postgresUser: "postgres" }, key: "leaninfra:postgresUser", mentions: "cannot be postgres" },
  { name: "keeping a single image", raw: { appKeepImages: 1 }, key: "leaninfra:appKeepImages", mentions: "at least 2" },
  { name: "server type without a known memory size", raw: { serverType: "cx23" }, key: "leaninfra:serverMemoryGb", mentions: "does not list" },
  { name: "host name label too long", raw: { hostname: "a".repeat(64) }, key: "leaninfra:hostname", mentions: "is not a host name label" },
];

for (const bad of badInputs) {
  test(`refuses ${bad.name}, naming ${bad.key}`, () => {
    const found = problems({ ...valid, ...bad.raw });
    const line = found.find((p) => p.startsWith(`${bad.key}: `));
    assert.ok(line, `no problem names ${bad.key}; got:\n${found.join("\n")}`);
    assert.ok(line.includes(bad.mentions), `"${line}" should mention ${bad.mentions}`);
  });
}

test("every problem is reported at once, cross-field rules included", () => {
  const found = problems({
    ...valid,
    domain: "bad domain",
    sshAllowFrom: ["10.0.0.0/33", "0.0.0.0/0"],
    volumeSizeGb: 1,
    deleteProtection: false,
    serverType: "nonsense",
  });
  const keys = found.map((p) => p.split(": ")[0]).sort();
  assert.deepEqual(keys, [
    "leaninfra:deleteProtection",
    "leaninfra:domain",
    "leaninfra:serverType",
    "leaninfra:sshAllowFrom[0]",
    "leaninfra:sshAllowFrom[1]",
    "leaninfra:volumeSizeGb",
  ]);
});

test("the ConfigError message lists each problem and says nothing was created", () => {
  try {
    validateConfig("prod", { ...valid, location: "mars" });
    assert.fail("accepted");
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    assert.match(error.message, /^Stack "prod" has 1 configuration problem; nothing was created:/);
    assert.match(error.message, /  - leaninfra:location: "mars" is not allowed/);
    assert.match(error.message, /Pulumi\.prod\.yaml/);
  }
});

test("the same-account refusal explains why it matters", () => {
  const line = problems({ ...valid, backupAccountId: MAIN_ACCOUNT }).find((p) => p.startsWith("leaninfra:backupAccountId"))!;
  assert.match(line, /production data and its backups at once/);
});

test("derived names: the bucket defaults to leaninfra-<stack>-backups", () => {
  assert.equal(validateConfig("prod", valid).bucketName, "leaninfra-prod-backups");
  assert.equal(validateConfig("Team_Staging", valid).bucketName, "leaninfra-team-staging-backups");
  assert.equal(validateConfig("prod", { ...valid, backupBucketName: "acme-db-backups" }).bucketName, "acme-db-backups");
});

test("secret project keys are declared, never validated in clear, and not refused as unknown", () => {
  const cfg = validateConfig("prod", { ...valid, backupApiToken: "[secret]" });
  assert.equal((cfg as unknown as Record<string, unknown>).backupApiToken, undefined);
  assert.equal(pulumiConfigDeclarations().backupApiToken.secret, true);
});

test("optional secrets: declared with an empty default and no secret flag (the CLI refuses a plain default for a secret key)", () => {
  const declared = pulumiConfigDeclarations();
  for (const key of ["appSecretEnv", "appRegistryPassword"]) {
    assert.equal(declared[key].default, "");
    assert.equal(declared[key].secret, undefined, `${key}: a secret flag would stop every stack that leaves it unset`);
    assert.match(declared[key].description, new RegExp(`pulumi config set --secret leaninfra:${key}`));
  }
  assert.equal(declared.backupApiToken.default, undefined, "the required secret has no default");
});

test("a secret key set in plain text is refused, without showing its value; encrypted, it is accepted", () => {
  let thrown: unknown;
  try {
    validateConfig("prod", { ...valid, appRegistryPassword: "hunter2-plain", appSecretEnv: "A=b" }, ["leaninfra:backupApiToken"]);
  } catch (error) {
    thrown = error;
  }
  assert.ok(thrown instanceof ConfigError);
  const message = (thrown as Error).message;
  assert.match(message, /leaninfra:appRegistryPassword: is stored in plain text in the stack file \(value not shown; accepted: an encrypted value, set with `pulumi config set --secret leaninfra:appRegistryPassword`\)/);
  assert.match(message, /leaninfra:appSecretEnv: is stored in plain text/);
  assert.ok(!message.includes("hunter2-plain") && !message.includes("A=b"), "the values stay unshown");
  const encrypted = ["leaninfra:appRegistryPassword", "appSecretEnv"];
  assert.equal(validateConfig("prod", { ...valid, appRegistryPassword: "x", appSecretEnv: "A=b" }, encrypted).domain, "example.com");
  assert.equal(validateConfig("prod", { ...valid, appRegistryPassword: "" }, []).domain, "example.com", "the empty default is not a secret");
});

test("a stack name that cannot be a Hetzner label value is refused, with what is accepted", () => {
  for (const good of ["prod", "Team_Staging", "a", "x".repeat(63), "v1.2-eu"]) assert.doesNotThrow(() => validateConfig(good, valid), good);
  for (const bad of ["x".repeat(64), "-prod", "prod_", ".x"]) {
    assert.deepEqual(problems(valid, bad), [
      `stack name: "${bad}" cannot label Hetzner resources (accepted: up to 63 letters, digits, "-", "_" and ".", starting and ending with a letter or digit); create the stack under a shorter name`,
    ]);
  }
});

test("overrides make the refused combinations acceptable", () => {
  assert.equal(validateConfig("prod", { ...valid, deleteProtection: false, allowUnprotectedProduction: true }).deleteProtection, false);
  assert.equal(validateConfig("dev", { ...valid, environment: "development", deleteProtection: false }).deleteProtection, false);
  assert.deepEqual(validateConfig("prod", { ...valid, sshAllowFrom: ["0.0.0.0/0"], sshAllowAnywhere: true }).sshAllowFrom, ["0.0.0.0/0"]);
  assert.equal(validateConfig("prod", { ...valid, backupAccountId: MAIN_ACCOUNT, backupAllowSameAccount: true }).backupAccountId, MAIN_ACCOUNT);
  assert.equal(validateConfig("prod", { ...valid, cdnProxy: false, acmeEmail: "owner@example.com" }).cdnProxy, false);
});

test("cidrProblem accepts networks and refuses everything else", () => {
  for (const good of ["0.0.0.0/0", "203.0.113.7/32", "10.0.0.0/8", "2001:db8::/32", "::/0"]) assert.equal(cidrProblem(good), undefined, good);
  for (const bad of ["", "10.0.0.0", "10.0.0.0/", "256.0.0.0/8", "10.0.0.0/-1", "2001:db8::/129", "fe80::1%eth0/64", "10.0.0.1/8"]) {
    assert.notEqual(cidrProblem(bad), undefined, bad);
  }
});

test("Pulumi.yaml declares every key with the schema's type, default and description", () => {
  const text = fs.readFileSync(PROJECT_FILE, "utf8");
  assert.equal(text, renderProjectFile(), "Pulumi.yaml differs from infra/config.ts: run npm run project-file");
  const project = parse(text);
  assert.equal(project.name, "leaninfra");
  assert.equal(project.runtime.name, "nodejs");
  const declared = pulumiConfigDeclarations();
  assert.deepEqual(Object.keys(project.config).sort(), Object.keys(declared).sort());
  for (const [key, declaration] of Object.entries(declared)) {
    assert.deepEqual(project.config[key], declaration, `Pulumi.yaml config.${key} differs from infra/config.ts`);
    if (TEXT_LIST_KEYS.has(key)) assert.equal(project.config[key].type, undefined, `${key} takes a list or text`);
    else assert.ok(["string", "integer", "boolean", "array"].includes(String(project.config[key].type)));
    assert.ok(project.config[key].description.length > 20, `${key} needs a real description`);
    if (!declaration.secret && declaration.default === undefined) assert.ok(["domain", "adminSshPublicKey", "sshAllowFrom", "cloudflareAccountId", "backupAccountId"].includes(key), `${key} has no default`);
  }
});

test("the example prod stack is valid and protected", () => {
  const stackFile = parse(fs.readFileSync(path.join(__dirname, "../../Pulumi.prod.yaml"), "utf8"));
  const raw = Object.fromEntries(Object.entries(stackFile.config as Record<string, unknown>).map(([k, v]) => [k.replace(/^leaninfra:/, ""), v]));
  const cfg = validateConfig("prod", raw);
  assert.equal(cfg.isProduction, true);
  assert.equal(cfg.deleteProtection, true);
  assert.ok(cfg.sshAllowFrom.every((n) => !n.endsWith("/0")));
});

test("secret values get the app role's own checks before anything is registered, named by config key, never quoted", () => {
  const app = { ...valid, appImage: "ghcr.io/acme/shop", appTag: "1.0.0", appEnv: ["LOG_LEVEL=info"] };
  const secretProblems = (raw: Record<string, unknown>, secretValues: Record<string, string>) => {
    try {
      validateConfig("prod", raw, [], { secretValues });
      return [];
    } catch (error) {
      assert.ok(error instanceof ConfigError, String(error));
      return error.problems;
    }
  };
  assert.deepEqual(secretProblems(app, { appSecretEnv: "SESSION_SECRET=x\n# note\nA=1" }), []);
  const found = secretProblems(app, { appSecretEnv: "pasted-secret\nLOG_LEVEL=debug\nDATABASE_URL=postgres://x" });
  assert.equal(found.length, 3, found.join("\n"));
  assert.ok(found[0].startsWith("leaninfra:appSecretEnv: line 1"), found[0]);
  assert.ok(found[1].startsWith("leaninfra:appSecretEnv: line 2") && found[1].includes("LOG_LEVEL"), found[1]);
  assert.ok(found[2].startsWith("leaninfra:appSecretEnv: line 3") && found[2].includes("DATABASE_URL"), found[2]);
  assert.ok(found.every((p) => !p.includes("pasted-secret") && !p.includes("debug")));
  const withUser = { ...valid, appImage: "ghcr.io/acme/shop", appRegistryUser: "deploy" };
  const missing = secretProblems(withUser, { appRegistryPassword: "" });
  assert.equal(missing.length, 1, missing.join("\n"));
  assert.ok(missing[0].startsWith("leaninfra:appRegistry"), missing[0]);
  assert.deepEqual(secretProblems(withUser, { appRegistryPassword: "token" }), []);
});
