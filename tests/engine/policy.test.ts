// `pulumi preview --policy-pack policy` through the real CLI: the Node.js language host starts the
// pack (RunPlugin, tests/engine/langhost/runplugin.go) with the stack's settings, the engine sends it
// every resource, and a mandatory violation fails the preview naming the policy and the resource.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, test } from "node:test";
import { ok } from "./engine";
import { EngineWorkspace, PROJECT_FILES, standinSecret } from "./workspace";

const PACK = "leaninfra@v1.0.0";
const workspaces: EngineWorkspace[] = [];
after(() => workspaces.forEach((ws) => ws.dispose()));

/** The prod stack (Pulumi.prod.yaml with stand-in secrets) in a fork that has the pack. */
function prodWorkspace(): EngineWorkspace {
  const ws = new EngineWorkspace({ projectFiles: [...PROJECT_FILES, "policy"] });
  workspaces.push(ws);
  ws.initProdStack();
  return ws;
}

function previewWithPack(ws: EngineWorkspace) {
  return ws.pulumi(["preview", "--policy-pack", "policy"]);
}

/** The "<policy> (<type>: <name>)" lines of the preview's policy report ("- [mandatory]  <policy>  (<type>: <name>)"). */
function violationLines(output: string): string[] {
  return output
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => /^- \[mandatory\]/.test(line))
    .map((line) => line.replace(/^- \[mandatory\]\s+/, "").replace(/\s+/g, " "));
}

test("today's prod stack passes every policy; with its settings changed, protection off in production and the backups in the zone's account fail", () => {
  const ws = prodWorkspace();
  const r = ok(previewWithPack(ws), "pulumi preview --policy-pack policy");
  assert.match(r.output, new RegExp(`Policies:\\s+✅ ${PACK.replace(/[.@]/g, "\\$&")} \\(local: policy\\)`), r.output);
  // The policies saw known values: none was skipped for an unknown input.
  assert.doesNotMatch(r.output, /can't run policy/, r.output);
  assert.match(r.output, /\+ 58 to create/);

  // The stack's settings reach the pack: with sshAllowAnywhere, SSH from anywhere is accepted; with a
  // production stack whose protection the program lets off (allowUnprotectedProduction) and the backups
  // in the zone's account (backupAllowSameAccount) and reached with its token, the pack refuses both.
  for (const [key, value] of [
    ["leaninfra:sshAllowAnywhere", "true"],
    ["leaninfra:deleteProtection", "false"],
    ["leaninfra:allowUnprotectedProduction", "true"],
    ["leaninfra:backupAllowSameAccount", "true"],
    ["leaninfra:backupAccountId", "0123456789abcdef0123456789abcdef"],
  ]) {
    ok(ws.pulumi(["config", "set", key, value]), `config set ${key}`);
  }
  ok(ws.pulumi(["config", "set", "--path", "leaninfra:sshAllowFrom[2]", "0.0.0.0/0"]), "config set sshAllowFrom[2]");
  // The zone's token set to the backup account's: the pack sees the bucket's provider and its token.
  ok(ws.pulumi(["config", "set", "--secret", "cloudflare:apiToken"], { stdin: standinSecret("leaninfra:backupApiToken", "0123456789") }), "config set cloudflare:apiToken");
  const refused = previewWithPack(ws);
  assert.notEqual(refused.code, 0, refused.output);
  assert.match(refused.output, new RegExp(`❌ ${PACK.replace(/[.@]/g, "\\$&")} \\(local: policy\\)`), refused.output);
  const lines = violationLines(refused.output);
  assert.deepEqual(
    lines.map((line) => line.split(" ")[0]).sort(),
    [
      "backup-bucket-in-second-account",
      "backup-bucket-in-second-account",
      "production-delete-protection",
      "production-delete-protection",
      "production-delete-protection",
      "production-delete-protection",
    ],
    refused.output,
  );
  for (const name of ["host-server", "host-data", "host-ipv4", "host-ipv6"]) {
    assert.ok(lines.some((line) => line.startsWith("production-delete-protection") && line.includes(`: ${name})`)), `${name} named:\n${lines.join("\n")}`);
  }
  assert.match(refused.output, /Server host-server is production but has deleteProtection and rebuildProtection off/);
  assert.match(refused.output, /R2 bucket backups-bucket is in account 0123456789abcdef0123456789abcdef, the account that holds the zone \(leaninfra:cloudflareAccountId\)/);
  assert.match(refused.output, /R2 bucket backups-bucket's provider \(backup-account\) uses the zone's token \(cloudflare:apiToken\)/);
  assert.doesNotMatch(refused.output, /ssh-not-from-whole-internet/);
});

/** Replaces `from` (which must be there) with `to` in a file of the workspace's copy of the project. */
function editCopy(ws: EngineWorkspace, file: string, from: RegExp, to: string): void {
  const target = path.join(ws.project, file);
  const source = fs.readFileSync(target, "utf8");
  assert.match(source, from, `${file} still has what the test edits`);
  fs.writeFileSync(target, source.replace(from, to));
}

test("a fork's firewall rule for PostgreSQL and a role without alerts fail the preview", () => {
  const ws = prodWorkspace();
  // A role whose budget names no alert: the edit of a fork that adds a role and leaves its alerts out.
  editCopy(ws, "components/postgres/index.ts", /alerts: \["PostgreSQLDown"[^\]]*\]/, "alerts: []");
  // No config key opens a port: the edit a fork would make, one rule more in firewallRules.
  editCopy(ws, "components/host/firewall.ts", /\{ direction: "in", protocol: "icmp"/, '{ direction: "in", protocol: "tcp", port: "5432", sourceIps: ["203.0.113.7/32"], description: "PostgreSQL" },\n    $&');

  const r = previewWithPack(ws);
  assert.notEqual(r.code, 0, r.output);
  const lines = violationLines(r.output);
  assert.deepEqual(
    lines.map((line) => line.split(" ")[0]).sort(),
    ["databases-not-exposed", "public-ports-only-ssh-web", "roles-declare-budget"],
    r.output,
  );
  assert.equal(lines.filter((line) => line.includes("(hcloud:index:Firewall: host-firewall)")).length, 2, lines.join("\n"));
  assert.ok(lines.includes("roles-declare-budget (command:remote:Command: host-role-postgres)"), lines.join("\n"));
  assert.match(r.output, /host-role-postgres deploys the postgres role, whose budget is incomplete: alerts \(at least one alert name\)/);
  assert.match(r.output, /PostgreSQL \(port 5432\) is exposed: Firewall host-firewall admits tcp 5432 from 203\.0\.113\.7\/32/);
});
