// Hostile and odd values, tried as a new user would through `npm run plan`: each is refused as a
// config problem (exit 2, the key named, no stack trace, nothing rendered), or read the way Pulumi reads it.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import test from "node:test";
import { stringify } from "yaml";
import { MINIMAL_CONFIG, SSH_KEY } from "../lib/mock-cloud";
import { refusalProblem, runPlan, runPlans } from "../lib/plan-cli";

const STACK = "hostile";

interface Hostile {
  name: string;
  set: Record<string, unknown>;
  key: string;
  says: string;
}

const HOSTILE: Hostile[] = [
  // Characters that are not text break the YAML of the user data, scripts and log lines.
  { name: "a TAB in the SSH key's comment", set: { adminSshPublicKey: `${SSH_KEY}\tx` }, key: "leaninfra:adminSshPublicKey", says: "U+0009" },
  { name: "DEL in the SSH key's comment", set: { adminSshPublicKey: `${SSH_KEY}\u007f` }, key: "leaninfra:adminSshPublicKey", says: "U+007F" },
  { name: "a C1 control (NEL) in the SSH key's comment", set: { adminSshPublicKey: `${SSH_KEY} a\u0085b` }, key: "leaninfra:adminSshPublicKey", says: "U+0085" },
  { name: "U+FFFE in the SSH key's comment", set: { adminSshPublicKey: `${SSH_KEY} \ufffe` }, key: "leaninfra:adminSshPublicKey", says: "U+FFFE" },
  { name: "U+FFFF in the SSH key's comment", set: { adminSshPublicKey: `${SSH_KEY} \uffff` }, key: "leaninfra:adminSshPublicKey", says: "U+FFFF" },
  { name: "a line separator in an app setting", set: { appImage: "ghcr.io/acme/shop", appEnv: ["GREETING=a\u2028b"] }, key: "leaninfra:appEnv[0]", says: "U+2028" },
  { name: "a newline in the drill's query", set: { drillFreshnessQuery: "SELECT max(created_at)\nFROM orders" }, key: "leaninfra:drillFreshnessQuery", says: "U+000A" },
  // Values that would reach a command line as options.
  { name: "an ACME e-mail starting with -", set: { cdnProxy: false, acmeEmail: "--staging@example.com" }, key: "leaninfra:acmeEmail", says: "is not an e-mail address" },
  { name: "a registry user starting with -", set: { appImage: "ghcr.io/acme/shop", appRegistryUser: "-p" }, key: "leaninfra:appRegistryUser", says: 'not starting with "-"' },
  { name: "an image starting with -", set: { appImage: "-v/:/host" }, key: "leaninfra:appImage", says: "is not a container image name" },
  // Networks: coverage, not equality; one spelling.
  { name: "two halves of the IPv4 internet", set: { sshAllowFrom: ["0.0.0.0/1", "128.0.0.0/1"] }, key: "leaninfra:sshAllowFrom", says: "cover the whole IPv4 internet" },
  { name: "the IPv6 internet in pieces", set: { sshAllowFrom: ["203.0.113.7/32", "::/2", "4000::/2", "8000::/1"] }, key: "leaninfra:sshAllowFrom", says: "cover the whole IPv6 internet" },
  { name: "one network twice, spelled two ways", set: { sshAllowFrom: ["2001:db8::/48", "2001:DB8:0:0::/48"] }, key: "leaninfra:sshAllowFrom[1]", says: "repeats entry [0]" },
  // Lists of names and prefixes: a repeat would render twice (two nginx locations, two DNS records).
  { name: "a repeated network beside one that is not a network", set: { sshAllowFrom: ["garbage", "203.0.113.7/32", "203.0.113.7/32"] }, key: "leaninfra:sshAllowFrom[2]", says: "repeats entry [1]" },
  { name: "a static path prefix twice", set: { staticPathPrefixes: ["/assets/", "/assets/"] }, key: "leaninfra:staticPathPrefixes[1]", says: "repeats entry [0]" },
  { name: "an extra host name twice", set: { extraHostnames: ["status", "shop", "status"] }, key: "leaninfra:extraHostnames[2]", says: "repeats entry [0]" },
  { name: "an IPv4 network with a leading zero", set: { sshAllowFrom: ["010.0.0.0/8"] }, key: "leaninfra:sshAllowFrom[0]", says: "leading zero" },
  // Sizes the server does not have.
  { name: "more memory than the server type has", set: { serverType: "cx32", serverMemoryGb: 64 }, key: "leaninfra:serverMemoryGb", says: "more than server type cx32 has (8 GB)" },
  // What the app container may take from the server.
  { name: "an app memory limit the server cannot spare", set: { serverType: "cx22", appImage: "ghcr.io/acme/shop", appMemoryMb: 4096 }, key: "leaninfra:appMemoryMb", says: "more than this server can give the app" },
  { name: "a capability beyond Docker's defaults", set: { appImage: "ghcr.io/acme/shop", appCapabilities: ["SYS_ADMIN"] }, key: "leaninfra:appCapabilities[0]", says: "is not one of Docker's default capabilities" },
  { name: "a digest that is not sha256 hex", set: { appImage: "ghcr.io/acme/shop", appTag: "1.0@sha256:XYZ" }, key: "leaninfra:appTag", says: "a tag pinned to its digest" },
  // Credentials in clear in the stack file.
  { name: "the Hetzner token in clear", set: { "hcloud:token": "hcloud-token-in-clear-0123456789" }, key: "hcloud:token", says: "pulumi config set --secret hcloud:token" },
  { name: "the Cloudflare token in clear", set: { "cloudflare:apiToken": "cf-token-in-clear-0123456789" }, key: "cloudflare:apiToken", says: "pulumi config set --secret cloudflare:apiToken" },
  { name: "the backup account's token in clear", set: { backupApiToken: "backup-token-in-clear-0123" }, key: "leaninfra:backupApiToken", says: "pulumi config set --secret leaninfra:backupApiToken" },
  { name: "the registry password in clear", set: { appImage: "ghcr.io/acme/shop", appRegistryUser: "deploy", appRegistryPassword: "hunter2-in-clear" }, key: "leaninfra:appRegistryPassword", says: "pulumi config set --secret" },
];

test(`hostile values (${HOSTILE.length}) are refused by npm run plan as config problems, values in clear never echoed`, async () => {
  const results = await runPlans(HOSTILE.map((h) => ({ ...MINIMAL_CONFIG, ...h.set })), STACK);
  const failures: string[] = [];
  HOSTILE.forEach((h, i) => {
    const problem = refusalProblem(results[i], STACK, h.key, h.says);
    if (problem) failures.push(`${h.name}: ${problem}`);
    for (const value of Object.values(h.set)) {
      if (typeof value === "string" && /in-clear/.test(value) && results[i].stderr.includes(value)) failures.push(`${h.name}: the secret was printed`);
    }
    fs.rmSync(results[i].dir, { recursive: true, force: true });
  });
  assert.deepEqual(failures, []);
});

test("config scalars are read as their text, as Pulumi reads them: appTag 1.10 deploys release 1.10; networks get one spelling", async () => {
  const stackFile = stringify({ config: Object.fromEntries(Object.entries({ ...MINIMAL_CONFIG, appImage: "ghcr.io/acme/shop" }).map(([k, v]) => [`leaninfra:${k}`, v])) })
    .replace("leaninfra:sshAllowFrom:\n", "leaninfra:sshAllowFrom:\n    - 2001:DB8:0:0::/48\n")
    .concat("  leaninfra:appTag: 1.10\n");
  const run = await runPlan(stackFile, STACK);
  try {
    assert.equal(run.code, 0, run.stderr);
    const app = fs.readFileSync(path.join(run.dir, "out", STACK, "bundles", "app.sh"), "utf8");
    assert.match(app, /^release='1\.10'$/m, "the release is the text 1.10, not the number 1.1");
    const plan = JSON.parse(fs.readFileSync(path.join(run.dir, "out", STACK, "plan.json"), "utf8"));
    const firewall = plan.resources.find((r: { type: string }) => r.type === "hcloud:index/firewall:Firewall");
    const ssh = firewall.inputs.rules.find((r: { port?: string }) => r.port === "22");
    assert.ok(ssh.sourceIps.includes("2001:db8::/48"), `one spelling per network: ${ssh.sourceIps.join(", ")}`);
    assert.ok(!ssh.sourceIps.includes("2001:DB8:0:0::/48"));
  } finally {
    fs.rmSync(run.dir, { recursive: true, force: true });
  }
});
