import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import test from "node:test";
import { PROJECT, validateConfig } from "../../infra/config";
import { runWithMocks, settle } from "../../infra/mock-run";
import { readStackFile } from "../../infra/plan";
import { buildStack, projectConfig } from "../../infra/stack";
import { mockCloudOutputs } from "../lib/mock-cloud";

const REPO = path.resolve(__dirname, "../..");
const PLAN = path.join(REPO, "infra/plan.ts");

/** Runs `npm run plan`'s command in `cwd`, as a user would, with no network needed. */
function runPlan(args: string[], cwd = REPO) {
  const result = spawnSync(process.execPath, ["--require", "ts-node/register/transpile-only", PLAN, ...args], {
    cwd,
    encoding: "utf8",
    env: { ...process.env, TS_NODE_PROJECT: path.join(REPO, "tsconfig.json"), NODE_PATH: path.join(REPO, "node_modules") },
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function project(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-plan-"));
  fs.copyFileSync(path.join(REPO, "Pulumi.yaml"), path.join(dir, "Pulumi.yaml"));
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), content);
  return dir;
}

const PROD = fs.readFileSync(path.join(REPO, "Pulumi.prod.yaml"), "utf8");

test("npm run plan prints the resource tree, outputs and monthly cost, and writes the rendered files", () => {
  const dir = project({ "Pulumi.prod.yaml": PROD });
  const { code, stdout, stderr } = runPlan([], dir);
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^LeanInfra plan for stack "prod" \(offline preview\)/);
  assert.match(stdout, /\+ leaninfra:host:Host {2}host\n {2}\+ command:local:Command {2}host-host-key-check\n {2}\+ command:remote:Command {2}host-role-base/);
  assert.match(stdout, /\n {2}\+ hcloud:index\/sshKey:SshKey {2}host-admin-key\n/);
  assert.match(stdout, /rule: in tcp\/22 from 203\.0\.113\.7\/32, 2001:db8:1234::\/48/);
  assert.match(stdout, /ipv4: \(known after apply\)/);
  assert.match(stdout, /Estimated monthly cost \(prices recorded \d{4}-\d{2}-\d{2}\):/);
  assert.match(stdout, / 6\.80 EUR {2}Hetzner server: cx32/);
  assert.match(stdout, /R2 backup storage: 20 GB/);
  assert.match(stdout, /total: \d+\.\d{2} EUR \+ \d+\.\d{2} USD/);
  for (const file of ["out/prod/cloud-init/user-data.yaml", "out/prod/bundles/base.sh", "out/prod/plan.json"]) {
    assert.ok(fs.existsSync(path.join(dir, file)), `${file} written`);
    assert.ok(stdout.includes(file));
  }
  assert.match(fs.readFileSync(path.join(dir, "out/prod/bundles/base.sh"), "utf8"), /^#!\/usr\/bin\/env bash/);
});

test("npm run plan -- --json lists the Host's resources and a firewall that opens only 22, 80, 443 and ICMP", () => {
  const dir = project({ "Pulumi.prod.yaml": PROD });
  const { code, stdout, stderr } = runPlan(["--json"], dir);
  assert.equal(code, 0, stderr);
  const plan = JSON.parse(stdout);
  const types: string[] = plan.resources.map((r: { type: string }) => r.type);
  for (const type of ["hcloud:index/server:Server", "hcloud:index/firewall:Firewall", "hcloud:index/volume:Volume", "hcloud:index/volumeAttachment:VolumeAttachment", "hcloud:index/sshKey:SshKey"]) {
    assert.equal(types.filter((t) => t === type).length, 1, type);
  }
  assert.equal(types.filter((t) => t === "hcloud:index/primaryIp:PrimaryIp").length, 2);
  const firewall = plan.resources.find((r: { type: string }) => r.type === "hcloud:index/firewall:Firewall");
  const opened = firewall.inputs.rules.map((r: { protocol: string; port?: string; direction: string }) => `${r.direction} ${r.protocol}/${r.port ?? "-"}`).sort();
  assert.deepEqual(opened, ["in icmp/-", "in tcp/22", "in tcp/443", "in tcp/80"]);
  const server = plan.resources.find((r: { type: string }) => r.type === "hcloud:index/server:Server");
  assert.equal(server.inputs.firewallIds[0], "(known after apply)", "ids are unknown before apply, never invented");
  const bucket = plan.resources.find((r: { type: string }) => r.type === "cloudflare:index/r2Bucket:R2Bucket");
  assert.match(bucket.provider, /::pulumi:providers:cloudflare::backup-account::/, "the bucket is planned in the backup account");
  assert.equal(bucket.inputs.accountId, "fedcba9876543210fedcba9876543210");
  const records = plan.resources.filter((r: { type: string }) => r.type === "cloudflare:index/dnsRecord:DnsRecord");
  assert.ok(records.length >= 4 && records.every((r: { inputs: { proxied: boolean; zoneId: string } }) => r.inputs.proxied && r.inputs.zoneId === "(known after apply)"));
  assert.ok(plan.cost.total > 0);
  assert.equal(typeof plan.cost.recordedOn, "string");
});

test("a broken stack file fails naming every bad key, exit code 2, no stack trace", () => {
  const broken = [
    "config:",
    "  leaninfra:domain: Not_A_Domain",
    "  leaninfra:adminSshPublicKey: ssh-rsa short",
    "  leaninfra:sshAllowFrom: [203.0.113.7/32, 10.0.0.0/33]",
    "  leaninfra:location: mars",
    "  leaninfra:volumeSizeGb: 3",
    "  leaninfra:deleteProtection: false",
    "  leaninfra:sshAlowFrom: [203.0.113.7/32]",
    "",
  ].join("\n");
  const dir = project({ "Pulumi.broken.yaml": broken });
  const { code, stdout, stderr } = runPlan(["--stack", "broken"], dir);
  assert.equal(code, 2);
  assert.equal(stdout, "");
  for (const key of ["domain", "adminSshPublicKey", "sshAllowFrom[1]", "location", "volumeSizeGb", "deleteProtection", "sshAlowFrom"]) {
    assert.match(stderr, new RegExp(`leaninfra:${key.replace(/[[\]]/g, "\\$&")}: `), key);
  }
  assert.doesNotMatch(stderr, /\n\s+at /, "no stack trace");
  assert.ok(!fs.existsSync(path.join(dir, "out")), "nothing rendered for an invalid stack");
});

test("encrypted values are masked offline and the plan carries on", () => {
  const withSecret = PROD + "  hcloud:token:\n    secure: v1:c2VjcmV0Ynl0ZXM=\n";
  const dir = project({ "Pulumi.prod.yaml": withSecret });
  const { code, stdout, stderr } = runPlan(["--json"], dir);
  assert.equal(code, 0, stderr);
  const plan = JSON.parse(stdout);
  assert.equal(plan.config["hcloud:token"], "[secret]");
  assert.ok(!stdout.includes("c2VjcmV0Ynl0ZXM="), "ciphertext is not echoed");
  assert.ok(plan.notes.some((n: string) => n.includes("hcloud:token")));
});

test("a missing stack file is a clear error", () => {
  const dir = project({ "Pulumi.prod.yaml": PROD });
  const { code, stderr } = runPlan(["--stack", "staging"], dir);
  assert.equal(code, 2);
  assert.match(stderr, /No stack file Pulumi\.staging\.yaml \(stacks here: prod\)/);
});

/** The lines of a backups bundle that say where the bucket is: pgBackRest's, s3cmd's and the scripts' own. */
function bucketLines(bundle: string): string[] {
  return bundle.split("\n").filter((l) => /cloudflarestorage\.com|^repo1-s3-(endpoint|region|bucket|uri-style)=|^readonly bucket=/.test(l));
}

test("the plan's backups bundle sends pgBackRest to the endpoint and bucket `pulumi up` gives it, for the same stack file", async () => {
  // A bucket in the EU jurisdiction has its own endpoint host, which a plan built without it would miss.
  const dir = project({ "Pulumi.prod.yaml": PROD });
  assert.match(PROD, /^ {2}backupJurisdiction: eu$/m);
  const planned = runPlan([], dir);
  assert.equal(planned.code, 0, planned.stderr);
  const preview = bucketLines(fs.readFileSync(path.join(dir, "out/prod/bundles/backups.sh"), "utf8"));

  // The program as `pulumi up` runs it, on the same stack file: the backups role gets BackupBucket's s3 output.
  const stackFile = readStackFile("prod", dir);
  const cfg = validateConfig("prod", projectConfig(stackFile.config), stackFile.secretKeys, { allConfig: stackFile.config });
  const { resources, result } = await runWithMocks(
    {
      project: PROJECT,
      stack: "prod",
      preview: false,
      // The secrets `pulumi up` needs for this stack file (the plan's notes list them).
      config: { ...stackFile.config, [`${PROJECT}:backupApiToken`]: "backup-token", [`${PROJECT}:alertWebhookUrl`]: "https://ntfy.example.net/alerts" },
      secretKeys: [...stackFile.secretKeys, `${PROJECT}:backupApiToken`, `${PROJECT}:alertWebhookUrl`],
      revealSecrets: true,
      computed: mockCloudOutputs,
    },
    () => buildStack(cfg),
  );
  const command = resources.find((r) => r.type === "command:remote:Command" && r.name === "host-role-backups");
  assert.ok(command, "the backups role runs on pulumi up");
  const deployed = bucketLines(String(command.inputs.stdin));
  const endpoint = String(await settle(result.outputs.backupEndpoint));

  assert.match(endpoint, /^https:\/\/fedcba9876543210fedcba9876543210\.eu\.r2\.cloudflarestorage\.com$/);
  assert.ok(deployed.includes(`repo1-s3-endpoint=${endpoint.replace(/^https:\/\//, "")}`), deployed.join("\n"));
  assert.ok(deployed.length >= 5, `the bundle names its bucket in several places:\n${deployed.join("\n")}`);
  assert.deepEqual(preview, deployed, "out/prod/bundles/backups.sh names the bucket as the bundle pulumi up sends");
});
