// `npm run docs` as a user runs it: the committed example files are what it prints for Pulumi.prod.yaml,
// and every page alert, resource type and role of a stack's plan appears, for prod and for another stack.
import test from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parse, stringify } from "yaml";
import { ROLES } from "../../infra/roles";
import { STACK_MARKERS, anchorOf, parseRunbook } from "../../infra/docs/runbook-source";
import { runPlan } from "../lib/plan-cli";

const REPO = path.resolve(__dirname, "../..");
const DOCS = path.join(REPO, "infra/docs.ts");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `npm run docs -- ARGS` in `cwd` (a project directory), as a child process. */
function runDocs(cwd: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--require", "ts-node/register/transpile-only", DOCS, ...args], {
      cwd,
      env: { ...process.env, TS_NODE_PROJECT: path.join(REPO, "tsconfig.json"), NODE_PATH: path.join(REPO, "node_modules") },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** What `npm run plan` wrote for a stack: its resources' types and the page alerts in the monitoring bundle's rule files. */
function planFacts(dir: string, stack: string): { types: Map<string, number>; pageAlerts: Set<string>; bundles: string[] } {
  const out = path.join(dir, "out", stack);
  const plan = JSON.parse(fs.readFileSync(path.join(out, "plan.json"), "utf8")) as { resources: { type: string }[] };
  const types = new Map<string, number>();
  for (const r of plan.resources) types.set(r.type, (types.get(r.type) ?? 0) + 1);
  const bundles = fs.readdirSync(path.join(out, "bundles")).map((f) => f.replace(/\.sh$/, ""));
  const monitoring = fs.readFileSync(path.join(out, "bundles", "monitoring.sh"), "utf8");
  const pageAlerts = new Set<string>();
  // Each file of a bundle is one quoted heredoc; the rule files are those holding rule groups.
  for (const [, , body] of monitoring.matchAll(/<<'(LEANINFRA_EOF(?:_\d+)?)'\n([\s\S]*?)^\1$/gm)) {
    let doc: unknown;
    try {
      doc = parse(body);
    } catch {
      continue;
    }
    const groups = (doc as { groups?: { rules?: { alert?: string; labels?: { severity?: string } }[] }[] } | null)?.groups;
    for (const rule of Array.isArray(groups) ? groups.flatMap((g) => g.rules ?? []) : []) {
      if (rule.alert && rule.labels?.severity === "page") pageAlerts.add(rule.alert);
    }
  }
  return { types, pageAlerts, bundles };
}

/** The lines of the `## heading` section, up to the next `## ` heading, without trailing blank lines. */
function section(markdown: string, heading: string): string[] {
  const lines = markdown.split("\n");
  const start = lines.indexOf(`## ${heading}`);
  assert.notEqual(start, -1, `no "## ${heading}" section`);
  const end = lines.findIndex((line, i) => i > start && line.startsWith("## "));
  const body = lines.slice(start, end === -1 ? undefined : end);
  while (body.length && body[body.length - 1].trim() === "") body.pop();
  return body;
}

/** A `### Alert` section of the RUNBOOK: its "Means" line and its three numbered checks. */
function alertSection(runbook: string, alert: string): { means: string; checks: string[] } {
  const chunk = runbook.split(/^### /m).find((c) => c.startsWith(`${alert}\n`));
  assert.ok(chunk, `RUNBOOK has no "### ${alert}" section`);
  const means = /^\*\*Means:\*\* (.+)$/m.exec(chunk)?.[1] ?? "";
  const checks = [...chunk.matchAll(/^\d\. (.+)$/gm)].map((m) => m[1]);
  return { means, checks };
}

/**
 * Markdown a reader's renderer shows as meant: code fences closed, every table with its delimiter row and
 * the header's number of cells in each row, no heading twice (each anchor unique).
 */
function markdownProblems(text: string): string[] {
  const problems: string[] = [];
  const lines = text.split("\n");
  const fences = lines.filter((l) => l.startsWith("```")).length;
  if (fences % 2) problems.push(`${fences} code fence lines: one is not closed`);
  const cells = (row: string) => row.replace(/\\\|/g, "").split("|").length - 2;
  let inFence = false;
  const anchors = new Set<string>();
  lines.forEach((line, i) => {
    if (line.startsWith("```")) inFence = !inFence;
    if (inFence) return;
    const heading = /^(#{1,6}) (.+)$/.exec(line);
    if (heading) {
      const anchor = anchorOf(heading[2]);
      if (anchors.has(anchor)) problems.push(`line ${i + 1}: heading anchor #${anchor} twice`);
      anchors.add(anchor);
    }
    if (line.startsWith("|") && (i === 0 || !lines[i - 1].startsWith("|"))) {
      const delimiter = lines[i + 1] ?? "";
      if (!/^\|( ?-{3,}:? \|)+$/.test(delimiter)) problems.push(`line ${i + 2}: table without a delimiter row`);
      for (let j = i + 1; j < lines.length && lines[j].startsWith("|"); j++) {
        if (cells(lines[j]) !== cells(line)) problems.push(`line ${j + 1}: ${cells(lines[j])} cells, the header has ${cells(line)}`);
      }
    }
    if (/\s$/.test(line)) problems.push(`line ${i + 1}: trailing white space`);
  });
  return problems;
}

/** Checks one stack's docs against its plan: page alerts, resource types, roles, one-screen sections, no secrets. */
function checkDocs(stack: string, runbook: string, inventory: string, plan: ReturnType<typeof planFacts>, secretsInStackFile: string[]): void {
  const source = parseRunbook(fs.readFileSync(path.join(REPO, "docs", "runbook.md"), "utf8"));
  assert.ok(plan.pageAlerts.size >= 10, `${stack}: only ${plan.pageAlerts.size} page alerts found in the monitoring bundle`);
  for (const alert of plan.pageAlerts) {
    const inRunbook = alertSection(runbook, alert);
    assert.ok(inRunbook.means.length > 20, `${stack}: RUNBOOK ${alert}: no "Means" text`);
    assert.equal(inRunbook.checks.length, 3, `${stack}: RUNBOOK ${alert}: ${inRunbook.checks.length} checks, not 3`);
    const inSource = source.get(alert);
    assert.ok(inSource, `docs/runbook.md has no section for the page alert ${alert}`);
    assert.ok(inSource.checks.length >= 3, `docs/runbook.md ${alert}: fewer than three things to check`);
  }
  const documented = [...runbook.matchAll(/^### (\S+)$/gm)].map((m) => m[1]);
  assert.deepEqual([...documented].sort(), [...plan.pageAlerts].sort(), `${stack}: RUNBOOK's alert sections are exactly the page alerts`);
  for (const marker of STACK_MARKERS) assert.ok(!runbook.includes(marker), `${stack}: RUNBOOK still holds ${marker}`);

  for (const [type, count] of plan.types) {
    assert.match(inventory, new RegExp(`^\\| \`${type.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}\` \\| ${count} \\| \\S`, "m"), `${stack}: inventory lacks ${type} x${count}`);
  }
  const total = [...plan.types.values()].reduce((a, b) => a + b, 0);
  assert.ok(inventory.includes(`${total} resources in all.`), `${stack}: inventory's resource total is not ${total}`);
  for (const role of ROLES) {
    const on = plan.bundles.includes(role.name) && !new RegExp(`^### ${role.name}: off`, "m").test(inventory);
    assert.match(inventory, new RegExp(`^### ${role.name}: (on|off \\(turned on by \`leaninfra:\\w+\`\\))$`, "m"), `${stack}: inventory has no heading for role ${role.name}`);
    if (!plan.bundles.includes(role.name)) assert.match(inventory, new RegExp(`^### ${role.name}: off`, "m"), `${stack}: role ${role.name} has no bundle but is not off`);
    if (on) assert.ok(role.budget.failurePoints.every((p) => inventory.includes(p)), `${stack}: role ${role.name}'s failure points are not all listed`);
  }

  for (const heading of ["Roll back a deploy", "Restore production to a point in time"]) {
    const lines = section(runbook, heading);
    assert.ok(lines.length <= 25, `${stack}: "${heading}" is ${lines.length} lines, more than one screen (25)`);
    console.log(`# ${stack}: "${heading}" is ${lines.length} lines`);
  }
  for (const [name, text] of [["RUNBOOK", runbook], ["INVENTORY", inventory]]) {
    assert.deepEqual(markdownProblems(text), [], `${stack}: ${name} Markdown`);
    for (const leak of ["placeholder", "set-on-pulumi-up", "alerts.invalid", "[secret]", "(known after apply)", ...secretsInStackFile]) {
      assert.ok(!text.includes(leak), `${stack}: ${name} shows ${JSON.stringify(leak)}`);
    }
  }
}

test("npm run docs: the committed RUNBOOK.md and INVENTORY.md are what it writes for Pulumi.prod.yaml; every page alert, resource type and role is in them", { timeout: 10 * 60_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-docs-"));
  const plan = await runPlan(fs.readFileSync(path.join(REPO, "Pulumi.prod.yaml"), "utf8"), "prod");
  try {
    const run = await runDocs(REPO, ["--out", out]);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(fs.readdirSync(out).sort(), ["INVENTORY.md", "RUNBOOK.md"]);
    for (const name of ["RUNBOOK.md", "INVENTORY.md"]) {
      assert.equal(fs.readFileSync(path.join(REPO, name), "utf8"), fs.readFileSync(path.join(out, name), "utf8"), `${name} is stale: run npm run docs and commit it`);
    }
    assert.equal(plan.code, 0, plan.stderr);
    const runbook = fs.readFileSync(path.join(out, "RUNBOOK.md"), "utf8");
    const inventory = fs.readFileSync(path.join(out, "INVENTORY.md"), "utf8");
    const facts = planFacts(plan.dir, "prod");
    checkDocs("prod", runbook, inventory, facts, []);
    console.log(`# prod: ${facts.pageAlerts.size} page alerts, ${facts.types.size} resource types, ${ROLES.length} roles; RUNBOOK ${runbook.split("\n").length} lines, INVENTORY ${inventory.split("\n").length}`);
    // The prod stack's own values, where a reader looks for them.
    assert.match(runbook, /^ssh app\.example\.com /m);
    assert.match(runbook, /HostName %s\\n  User ops\\n' "\$\(pulumi stack output ipv4 --stack prod\)"/);
    assert.match(runbook, /\| grafana \| `grafana-server` \| `systemctl restart grafana-server` \|/);
    assert.match(runbook, /pulumi config set appTag <previous release> --stack prod/);
    assert.match(inventory, /\| Container registry \| ghcr\.io: the image `ghcr\.io\/example\/shop`/);
    assert.match(inventory, /^### redis: off \(turned on by `leaninfra:redisJob`\)$/m);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
    fs.rmSync(plan.dir, { recursive: true, force: true });
  }
});

test("npm run docs -- --stack NAME: another stack's docs name its domain, admin, Redis job, receiver and registry, not prod's, and no secret", { timeout: 10 * 60_000 }, async () => {
  const prod = parse(fs.readFileSync(path.join(REPO, "Pulumi.prod.yaml"), "utf8")) as { config: Record<string, unknown> };
  const ciphertexts = ["v1:docsTestCipherTextOfTheBotToken0000", "v1:docsTestCipherTextOfTheSentryDsn000", "v1:docsTestCipherTextOfTheHcloudToken0"];
  const config = {
    // The example's keys have no namespace; Pulumi (and the plan) give them the project's.
    ...Object.fromEntries(Object.entries(prod.config).map(([key, value]) => [key.includes(":") ? key : `leaninfra:${key}`, value])),
    "leaninfra:domain": "shop-example.net",
    "leaninfra:cloudflareZone": "shop-example.net",
    "leaninfra:hostname": "web",
    "leaninfra:adminUser": "deploy",
    "leaninfra:serverType": "cx22",
    "leaninfra:location": "nbg1",
    "leaninfra:volumeSizeGb": 30,
    "leaninfra:cloudflareAccountId": "11111111111111111111111111111111",
    "leaninfra:backupAccountId": "22222222222222222222222222222222",
    "leaninfra:redisJob": "sessions",
    "leaninfra:grafana": false,
    "leaninfra:alertReceiver": "telegram",
    "leaninfra:alertTelegramChatId": "-1001234567",
    "leaninfra:appImage": "registry.gitlab.com/acme/storefront",
    "leaninfra:appTag": "2.3.4",
    "leaninfra:alertTelegramBotToken": { secure: ciphertexts[0] },
    "leaninfra:sentryDsn": { secure: ciphertexts[1] },
    "hcloud:token": { secure: ciphertexts[2] },
  };
  const plan = await runPlan(stringify({ config }), "shop");
  try {
    assert.equal(plan.code, 0, plan.stderr);
    fs.mkdirSync(path.join(plan.dir, "docs"));
    fs.copyFileSync(path.join(REPO, "docs", "runbook.md"), path.join(plan.dir, "docs", "runbook.md"));
    const run = await runDocs(plan.dir, ["--stack", "shop"]);
    assert.equal(run.code, 0, run.stderr);
    const runbook = fs.readFileSync(path.join(plan.dir, "RUNBOOK.shop.md"), "utf8");
    const inventory = fs.readFileSync(path.join(plan.dir, "INVENTORY.shop.md"), "utf8");
    const facts = planFacts(plan.dir, "shop");
    checkDocs("shop", runbook, inventory, facts, ciphertexts);

    assert.match(runbook, /^ssh web\.shop-example\.net /m);
    assert.match(runbook, /User deploy\\n/);
    assert.match(runbook, /\| redis \| `redis-server` \| `systemctl restart redis-server` \|/);
    assert.match(runbook, /Grafana is off \(`leaninfra:grafana`\)/);
    assert.match(runbook, /as `telegram` delivers them/);
    assert.match(runbook, /journalctl -t app-2\.3\.4 /);
    assert.match(inventory, /^### redis: on$/m);
    assert.match(inventory, /Redis for one job \(sessions\)/);
    assert.match(inventory, /^### grafana: off \(turned on by `leaninfra:grafana`\)$/m);
    assert.match(inventory, /\| Alert channel \| Telegram: .* chat `-1001234567`/);
    assert.match(inventory, /\| Container registry \| registry\.gitlab\.com: the image `registry\.gitlab\.com\/acme\/storefront`, release `2\.3\.4`/);
    assert.match(inventory, /\| Error tracking \| a Sentry project/);
    assert.match(inventory, /`hcloud:token`: set, encrypted stack config \(Pulumi\.shop\.yaml\)/);
    assert.match(inventory, /cx22 \(2 vCPU, 4 GB RAM/);
    for (const [name, text] of [["RUNBOOK", runbook], ["INVENTORY", inventory]]) {
      for (const prodValue of ["example.com", "`ops`", "ops@", "ghcr.io", "grafana.shop-example.net", "as `webhook`", "0123456789abcdef0123456789abcdef", "cx32"]) {
        assert.ok(!text.includes(prodValue), `shop: ${name} names prod's ${prodValue}`);
      }
    }
    assert.ok(!runbook.includes("grafana-server"), "shop: RUNBOOK lists Grafana's service with grafana off");
  } finally {
    fs.rmSync(plan.dir, { recursive: true, force: true });
  }
});

test("npm run docs: an unknown stack is refused with the stacks there, exit code 2, nothing written", { timeout: 5 * 60_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-docs-"));
  try {
    const run = await runDocs(REPO, ["--stack", "nosuchstack", "--out", out]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /^No stack file Pulumi\.nosuchstack\.yaml \(stacks here: .*prod.*\)\.$/m);
    assert.deepEqual(fs.readdirSync(out), []);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
