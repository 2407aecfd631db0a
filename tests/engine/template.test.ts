// `pulumi new <this repository>`: the template section of Pulumi.yaml, run by the real CLI from a local
// copy of the project's files, yields a stack the offline plan and the engine preview accept.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { parse } from "yaml";
import { PROJECT, TEXT_LIST_KEYS, otherProjectKeyProblems, pulumiConfigDeclarations, validateConfig } from "../../infra/config";
import { TEMPLATE_KEYS, renderProjectFile } from "../../infra/project-file";
import { show } from "../lib/debian-root";
import { MAIN_ACCOUNT } from "../lib/mock-cloud";
import { EngineWorkspace, PROJECT_FILES, REPO_ROOT, REQUIRED_SECRETS, plainText, standinSecret } from "./workspace";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFtemplateTestKeyForShopOnly0123456789abcdefgh shop@laptop";
// The stand-in Cloudflare knows the zone example.com in MAIN_ACCOUNT: the product lives under it.
const ANSWERS: Record<(typeof TEMPLATE_KEYS)[number], string> = {
  domain: "shop.example.com",
  location: "nbg1",
  serverType: "cx22",
  adminSshPublicKey: KEY,
  sshAllowFrom: "198.51.100.0/24, 2001:db8:5::/48",
  cloudflareAccountId: MAIN_ACCOUNT,
  cloudflareZone: "example.com",
  backupAccountId: "3333333333bbbbbbbbbb444444444444",
};

test("template.config asks the few values a new product needs, with the config block's descriptions and defaults", () => {
  const project = parse(renderProjectFile()) as { config: Record<string, { description: string; default?: unknown }>; template: { config: Record<string, { description: string; default?: string }> } };
  assert.deepEqual(Object.keys(project.template.config), [...TEMPLATE_KEYS]);
  const declared = pulumiConfigDeclarations();
  for (const key of TEMPLATE_KEYS) {
    assert.ok(project.template.config[key].description.startsWith(declared[key].description), `${key}: the question is the key's description`);
  }
  assert.equal(project.template.config.location.default, "fsn1");
  assert.equal(project.template.config.serverType.default, "cx32");
  for (const key of ["domain", "adminSshPublicKey", "sshAllowFrom", "cloudflareAccountId", "backupAccountId", "cloudflareZone"]) {
    assert.equal(project.template.config[key].default, undefined, `${key} has no default to offer`);
  }
});

test("sshAllowFrom takes a template's line of networks as well as a list", () => {
  assert.ok(TEXT_LIST_KEYS.has("sshAllowFrom"));
  const base = { domain: "example.com", adminSshPublicKey: KEY, cloudflareAccountId: "0123456789abcdef0123456789abcdef", backupAccountId: "fedcba9876543210fedcba9876543210" };
  assert.deepEqual(validateConfig("prod", { ...base, sshAllowFrom: "203.0.113.0/24, 2001:DB8::/32,10.0.0.0/8" }).sshAllowFrom, ["203.0.113.0/24", "2001:db8::/32", "10.0.0.0/8"]);
  assert.deepEqual(validateConfig("prod", { ...base, sshAllowFrom: '["203.0.113.0/24"]' }).sshAllowFrom, ["203.0.113.0/24"]);
  assert.throws(() => validateConfig("prod", { ...base, sshAllowFrom: " " }), /leaninfra:sshAllowFrom: \[\] is empty/);
  assert.throws(() => validateConfig("prod", { ...base, sshAllowFrom: "203.0.113.0/24 0.0.0.0/0" }), /leaninfra:sshAllowFrom\[1\]: "0.0.0.0\/0" opens SSH to the whole internet/);
});

test("settings under another project's name are named, not silently ignored", () => {
  assert.equal(PROJECT, "leaninfra", "this repository's project name (Pulumi.yaml)");
  const [line, ...rest] = otherProjectKeyProblems({ "shop:domain": "x", "shop:appImage": "y", "hcloud:token": "z", "leaninfra:domain": "w" });
  assert.deepEqual(rest, []);
  assert.equal(
    line,
    "shop:*: domain, appImage are set under shop:, but this project is named leaninfra (Pulumi.yaml), so they would be ignored " +
      "(accepted: leaninfra:<key>, or the key without a namespace: first `pulumi config rm shop:<key>` for those also set as leaninfra:<key> (domain), " +
      "then sed -i 's/^  shop:/  /' Pulumi.<stack>.yaml)",
  );
  assert.deepEqual(otherProjectKeyProblems({ "leaninfra:domain": "w", "cloudflare:apiToken": "v", "pulumi:tags": "{}" }), []);
});

test("pulumi new copies every text file with ${PROJECT} replaced: only TypeScript uses it, where PROJECT is the project's name", () => {
  const found: string[] = [];
  const walk = (relative: string) => {
    const full = path.join(REPO_ROOT, relative);
    if (fs.statSync(full).isDirectory()) return fs.readdirSync(full).forEach((entry) => walk(path.join(relative, entry)));
    const text = fs.readFileSync(full, "utf8");
    if (text.includes("${DESCRIPTION}")) found.push(`${relative}: \${DESCRIPTION}`);
    for (const match of text.matchAll(/(.{0,1})\$\{PROJECT\}/g)) {
      if (!relative.endsWith(".ts") || !/[`}:\w ]/.test(match[1] || " ")) found.push(`${relative}: ${match[0]}`);
    }
  };
  PROJECT_FILES.forEach(walk);
  assert.deepEqual(found, []);
});

// One pulumi new, one plan (twice when the example still names its keys leaninfra:), one preview.
let ws: EngineWorkspace;
let shop: string;
let newRun: { code: number; output: string; seconds: number };

function runIn(dir: string, file: string, args: string[], env: Record<string, string> = {}, stdin = "") {
  const started = Date.now();
  const r = spawnSync(file, args, { cwd: dir, env: ws.env(env), input: stdin, encoding: "utf8", timeout: 10 * 60_000, maxBuffer: 64 * 1024 * 1024 });
  const stdout = plainText(r.stdout ?? "");
  return { code: r.status ?? -1, stdout, stderr: plainText(r.stderr ?? ""), output: plainText(`${r.stdout}\n${r.stderr}`), seconds: (Date.now() - started) / 1000 };
}

/**
 * The npm setup of this machine's user (its cache, its settings, the CA bundle its registry needs) for
 * the workspace's fresh HOME; the cache has every package after `npm ci`, so npm prefers it to the registry.
 */
function npmSetup(): Record<string, string> {
  const env: Record<string, string> = { npm_config_prefer_offline: "true", npm_config_cache: path.join(os.homedir(), ".npm") };
  const userConfig = path.join(os.homedir(), ".npmrc");
  if (fs.existsSync(userConfig)) env.npm_config_userconfig = userConfig;
  if (process.env.NODE_EXTRA_CA_CERTS) env.NODE_EXTRA_CA_CERTS = process.env.NODE_EXTRA_CA_CERTS;
  return env;
}

before(() => {
  ws = new EngineWorkspace();
  // The template: the project's files as a clone has them (no node_modules, out/ or .git).
  const template = path.join(ws.root, "template");
  for (const file of PROJECT_FILES) fs.cpSync(path.join(REPO_ROOT, file), path.join(template, file), { recursive: true });
  shop = path.join(ws.root, "shop");
  const login = ws.shell('mkdir -p ~/.leaninfra-state && pulumi login "file://$HOME/.leaninfra-state"');
  assert.equal(login.code, 0, login.output);
  const config = Object.entries(ANSWERS).flatMap(([key, value]) => ["--config", `${key}=${value}`]);
  newRun = runIn(ws.root, "pulumi", ["new", template, "--yes", "--stack", "prod", "--name", "shop", "--dir", shop, ...config], npmSetup());
});
after(() => ws?.dispose());

test("pulumi new --name shop --stack prod merges the answers into the example stack file", (t) => {
  assert.equal(newRun.code, 0, newRun.output);
  t.diagnostic(`pulumi new with npm install (prefer-offline): ${newRun.seconds.toFixed(1)} s`);
  assert.match(newRun.output, /Your new project is ready to go!/);
  assert.match(newRun.output, /Next: set the credentials encrypted/, "the template's quickstart");
  const project = parse(fs.readFileSync(path.join(shop, "Pulumi.yaml"), "utf8"));
  assert.equal(project.name, "shop");
  assert.equal(project.template, undefined, "pulumi new drops the template block");
  for (const gone of ["out", ".git"]) assert.ok(!fs.existsSync(path.join(shop, gone)), `${gone} is not copied`);
  const stackText = fs.readFileSync(path.join(shop, "Pulumi.prod.yaml"), "utf8");
  assert.match(stackText, /^# The production stack: the one file a forker edits\./, "the header comment stays");
  const stackConfig = parse(stackText).config as Record<string, unknown>;
  for (const [key, value] of Object.entries(ANSWERS)) assert.equal(stackConfig[`shop:${key}`], value, `shop:${key} holds the answer`);
  assert.ok(Object.keys(stackConfig).some((key) => /(^|:)appImage$/.test(key)), "the example's other settings stay");
});

test("the new stack: npm run plan accepts it with the answered values; the engine preview accepts it", (t) => {
  assert.equal(newRun.code, 0, newRun.output);
  const stackFile = path.join(shop, "Pulumi.prod.yaml");
  let plan = runIn(shop, "npm", ["run", "-s", "plan", "--", "--json"]);
  if (/^  leaninfra:/m.test(fs.readFileSync(stackFile, "utf8"))) {
    // The example names its keys leaninfra:, which a project named shop does not read: the plan says
    // so, and how to fix it; the fix is applied as a user would.
    assert.equal(plan.code, 2, show(plan));
    const answered = Object.keys(ANSWERS);
    assert.ok(
      plan.stderr.includes(
        "are set under leaninfra:, but this project is named shop (Pulumi.yaml), so they would be ignored (accepted: shop:<key>, or the key without a namespace: " +
          `first \`pulumi config rm leaninfra:<key>\` for those also set as shop:<key> (${answered.join(", ")}), then sed -i 's/^  leaninfra:/  /' Pulumi.<stack>.yaml)`,
      ),
      show(plan),
    );
    t.diagnostic("the example stack names its keys leaninfra:; applied the fix the plan names");
    for (const key of answered) assert.equal(runIn(shop, "pulumi", ["config", "rm", `leaninfra:${key}`]).code, 0, key);
    const sed = runIn(shop, "sed", ["-i", "s/^  leaninfra:/  /", "Pulumi.prod.yaml"]);
    assert.equal(sed.code, 0, sed.output);
    plan = runIn(shop, "npm", ["run", "-s", "plan", "--", "--json"]);
  }
  assert.equal(plan.code, 0, show(plan));
  const doc = JSON.parse(plan.stdout) as { project: string; resources: { type: string; inputs: Record<string, unknown> }[] };
  assert.equal(doc.project, "shop");
  const server = doc.resources.find((r) => r.type === "hcloud:index/server:Server");
  assert.equal(server?.inputs.location, "nbg1");
  assert.equal(server?.inputs.serverType, "cx22");
  const records = doc.resources.filter((r) => r.type === "cloudflare:index/dnsRecord:DnsRecord").map((r) => String(r.inputs.name));
  assert.ok(records.includes("shop.example.com") && records.includes("www.shop.example.com"), records.join(", "));
  const firewall = doc.resources.find((r) => r.type === "hcloud:index/firewall:Firewall");
  const ssh = (firewall?.inputs.rules as { port?: string; sourceIps: string[] }[]).find((rule) => rule.port === "22");
  assert.deepEqual(ssh?.sourceIps, ["198.51.100.0/24", "2001:db8:5::/48"]);
  const sshKey = doc.resources.find((r) => r.type === "hcloud:index/sshKey:SshKey");
  assert.equal(sshKey?.inputs.publicKey, KEY);
  const bucket = doc.resources.find((r) => r.type === "cloudflare:index/r2Bucket:R2Bucket");
  assert.equal(bucket?.inputs.accountId, ANSWERS.backupAccountId);

  // The engine: the stand-in plugins, and the secrets README step 5 sets, under the project's name.
  for (const key of REQUIRED_SECRETS) {
    const name = key.replace(/^leaninfra:/, "shop:");
    const set = runIn(shop, "pulumi", ["config", "set", "--secret", name], {}, standinSecret(key, "0123456789"));
    assert.equal(set.code, 0, set.output);
  }
  const preview = runIn(shop, "pulumi", ["preview", "--json"]);
  assert.equal(preview.code, 0, show(preview));
  t.diagnostic(`pulumi preview of the new stack: ${preview.seconds.toFixed(1)} s`);
  const steps = (JSON.parse(preview.stdout) as { steps: { op: string; urn: string; newState?: { type: string; inputs?: Record<string, unknown> } }[] }).steps;
  assert.ok(steps.every((step) => step.urn.startsWith("urn:pulumi:prod::shop::")), "every resource is the shop project's");
  const created = steps.filter((step) => step.op === "create" && step.newState?.type !== "pulumi:pulumi:Stack");
  assert.equal(created.length, doc.resources.length, "the engine creates what the plan lists");
  const engineServer = created.find((step) => step.newState?.type === "hcloud:index/server:Server");
  assert.equal(engineServer?.newState?.inputs?.location, "nbg1");
  assert.equal(engineServer?.newState?.inputs?.serverType, "cx22");
});

test("a required answer left out with --yes: pulumi new says nothing; the preview and the plan name the key", (t) => {
  // Without the example's file (a stack other than prod), nothing fills the key in.
  const answers = Object.entries(ANSWERS).filter(([key]) => key !== "domain");
  const dir = path.join(ws.root, "blog");
  const created = runIn(ws.root, "pulumi", ["new", path.join(ws.root, "template"), "--yes", "--stack", "staging", "--name", "blog", "--dir", dir, ...answers.flatMap(([key, value]) => ["--config", `${key}=${value}`])], npmSetup());
  assert.equal(created.code, 0, show(created));
  const stackConfig = parse(fs.readFileSync(path.join(dir, "Pulumi.staging.yaml"), "utf8")).config as Record<string, unknown>;
  assert.equal(stackConfig["blog:domain"], undefined);
  assert.equal(stackConfig["blog:location"], "nbg1");
  const preview = runIn(dir, "pulumi", ["preview"]);
  assert.notEqual(preview.code, 0, show(preview));
  const missing = /Stack 'staging' is missing configuration values? .*'domain'.*/.exec(preview.output);
  assert.ok(missing, show(preview));
  t.diagnostic(`pulumi preview: ${missing[0]}`);
  const plan = runIn(dir, "npm", ["run", "-s", "plan", "--", "--stack", "staging"]);
  assert.equal(plan.code, 2, show(plan));
  assert.match(plan.stderr, /Stack "staging" has 1 configuration problem; nothing was created:\s+- blog:domain: is required but not set \(The product's apex domain/);
});
