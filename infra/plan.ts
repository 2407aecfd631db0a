// `npm run plan [-- --stack NAME] [-- --json]`: the real program, offline, against Pulumi's mock runtime.
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { parse } from "yaml";
import { ConfigError, PROJECT, StackConfig, neededSecretKeys, validateConfig } from "./config";
import { CostEstimate, estimateMonthlyCost } from "./cost";
import cloudflareIps from "./data/cloudflare-ips.json";
import { RecordedResource, SECRET, UNKNOWN, runWithMocks, settle } from "./mock-run";
import { buildStack, projectConfig } from "./stack";

// Like the Pulumi CLI, the plan works on the project in the current directory.
const ROOT = process.cwd();

export interface StackFile {
  /** Every config key of the stack file, `namespace:key` -> value as Pulumi would pass it (strings). */
  config: Record<string, string>;
  /** Keys whose value is encrypted (`secure:`); offline they are masked. */
  secretKeys: string[];
}

export class PlanInputError extends Error {}

/** Reads Pulumi.<stack>.yaml as the Pulumi CLI would hand it to the program. */
export function readStackFile(stack: string, root = ROOT): StackFile {
  const file = path.join(root, `Pulumi.${stack}.yaml`);
  if (!fs.existsSync(file)) {
    const stacks = fs.readdirSync(root).filter((f) => /^Pulumi\..+\.yaml$/.test(f)).map((f) => f.slice(7, -5));
    throw new PlanInputError(`No stack file ${path.basename(file)} (stacks here: ${stacks.join(", ") || "none"}).`);
  }
  const text = fs.readFileSync(file, "utf8");
  let typed: unknown;
  let literal: unknown;
  try {
    typed = parse(text);
    // Pulumi reads a config scalar as its text: `appTag: 1.10` is release "1.10", not the number 1.1.
    literal = parse(text, { schema: "failsafe" });
  } catch (error) {
    throw new PlanInputError(`${path.basename(file)} is not valid YAML: ${(error as Error).message}`);
  }
  const entries = (literal as { config?: Record<string, unknown> } | null)?.config ?? {};
  const typedEntries = (typed as { config?: Record<string, unknown> } | null)?.config ?? {};
  if (typeof entries !== "object" || Array.isArray(entries)) throw new PlanInputError(`${path.basename(file)}: "config" must be a mapping of keys to values.`);
  // A null scalar (`key:`, `~`, `null`) is an empty value to Pulumi, not the word "null".
  const asPulumi = (value: unknown, typedValue: unknown): unknown =>
    typedValue === null ? "" : Array.isArray(value) ? value.map((v, i) => asPulumi(v, (typedValue as unknown[])[i])) : value;
  const config: Record<string, string> = {};
  const secretKeys: string[] = [];
  for (const [rawKey, literalValue] of Object.entries(entries)) {
    const key = rawKey.includes(":") ? rawKey : `${PROJECT}:${rawKey}`;
    // Pulumi reads `domain` as `<project>:domain`; with both in the file it would take either one.
    if (key in config || secretKeys.includes(key)) {
      throw new PlanInputError(`${path.basename(file)} sets ${key} twice (as ${key} and ${key.slice(PROJECT.length + 1)}): keep one.`);
    }
    const value = asPulumi(literalValue, typedEntries[rawKey]);
    if (value && typeof value === "object" && !Array.isArray(value) && "secure" in value) {
      secretKeys.push(key);
      config[key] = SECRET;
    } else {
      config[key] = typeof value === "string" ? value : JSON.stringify(value);
    }
  }
  return { config, secretKeys };
}

export interface Plan {
  stack: string;
  project: string;
  mode: string;
  config: Record<string, string>;
  resources: RecordedResource[];
  outputs: Record<string, unknown>;
  cost: CostEstimate;
  files: string[];
  notes: string[];
}

/** Builds the plan: validates config, runs the program under mocks in preview mode, renders files. */
export async function buildPlan(stack: string, options: { root?: string; outDir?: string } = {}): Promise<Plan> {
  const root = options.root ?? ROOT;
  const stackFile = readStackFile(stack, root);
  // Same validation as `pulumi up`; throws ConfigError listing every problem.
  const cfg: StackConfig = validateConfig(stack, projectConfig(stackFile.config), stackFile.secretKeys, { allConfig: stackFile.config });

  const { resources, result } = await runWithMocks(
    { project: PROJECT, stack, preview: true, config: stackFile.config, secretKeys: stackFile.secretKeys },
    () => buildStack(cfg, { offline: true }),
  );

  const outDir = options.outDir ?? path.join(root, "out", stack);
  fs.rmSync(outDir, { recursive: true, force: true });
  const files: string[] = [];
  for (const [relative, content] of Object.entries(result.rendered)) {
    const target = path.join(outDir, relative);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, content, { mode: relative.endsWith(".sh") ? 0o755 : 0o644 });
    files.push(path.relative(root, target));
  }

  const outputs: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(result.outputs)) outputs[key] = await settle(value);

  const notes = [
    `Offline: Pulumi's mock runtime, no cloud account; values computed by the cloud show as "${UNKNOWN}".`,
  ];
  if (cfg.cdnProxy) {
    notes.push(`Cloudflare IP ranges: snapshot recorded ${cloudflareIps.recordedOn} (infra/data/cloudflare-ips.json); \`pulumi up\` reads the live list.`);
  }
  if (!(`${PROJECT}:heartbeatUrl` in stackFile.config)) {
    notes.push(`Not set: ${PROJECT}:heartbeatUrl, the dead man's switch; without it nobody hears when alerting itself stops (pulumi config set --secret ${PROJECT}:heartbeatUrl https://...).`);
  }
  if (stackFile.secretKeys.length) notes.push(`Encrypted values shown as ${SECRET}: ${stackFile.secretKeys.join(", ")}.`);
  for (const needed of ["hcloud:token", "cloudflare:apiToken", `${PROJECT}:backupApiToken`, ...neededSecretKeys(cfg).map((key) => `${PROJECT}:${key}`)]) {
    if (!(needed in stackFile.config)) notes.push(`Not set yet, needed by \`pulumi up\`: ${needed} (pulumi config set --secret ${needed} ...).`);
  }

  const plan: Plan = {
    stack,
    project: PROJECT,
    mode: "offline preview",
    config: stackFile.config,
    resources,
    outputs,
    cost: estimateMonthlyCost(cfg),
    files,
    notes,
  };
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, "plan.json"), JSON.stringify(plan, null, 2) + "\n");
  plan.files.push(path.relative(root, path.join(outDir, "plan.json")));
  return plan;
}

const IMPORTANT_INPUTS: Record<string, string[]> = {
  "hcloud:index/server:Server": ["name", "serverType", "image", "location", "backups", "deleteProtection", "rebuildProtection", "firewallIds", "publicNets", "labels"],
  "hcloud:index/primaryIp:PrimaryIp": ["type", "location", "autoDelete", "deleteProtection"],
  "hcloud:index/firewall:Firewall": ["rules"],
  "hcloud:index/volume:Volume": ["size", "format", "location", "deleteProtection"],
  "hcloud:index/volumeAttachment:VolumeAttachment": ["serverId", "volumeId", "automount"],
  "hcloud:index/sshKey:SshKey": ["publicKey"],
  "hcloud:index/rdns:Rdns": ["ipAddress", "dnsPtr"],
  "command:remote:Command": ["connection", "triggers"],
  "cloudflare:index/dnsRecord:DnsRecord": ["name", "type", "content", "proxied", "ttl"],
  "cloudflare:index/zoneSetting:ZoneSetting": ["settingId", "value"],
  "cloudflare:index/ruleset:Ruleset": ["phase", "rules"],
  "cloudflare:index/originCaCertificate:OriginCaCertificate": ["hostnames", "requestType", "requestedValidity"],
  "cloudflare:index/authenticatedOriginPullsSettings:AuthenticatedOriginPullsSettings": ["enabled"],
  "cloudflare:index/r2Bucket:R2Bucket": ["accountId", "name", "location", "jurisdiction"],
  "cloudflare:index/r2BucketLifecycle:R2BucketLifecycle": ["rules"],
  "cloudflare:index/r2BucketLock:R2BucketLock": ["rules"],
  "cloudflare:index/accountToken:AccountToken": ["accountId", "name", "policies"],
  "tls:index/privateKey:PrivateKey": ["algorithm", "ecdsaCurve"],
};

function short(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 100 ? `${text.slice(0, 97)}...` : text;
}

function formatRules(type: string, rules: unknown): string[] {
  if (!Array.isArray(rules)) return [`rules: ${short(rules)}`];
  if (type !== "hcloud:index/firewall:Firewall") {
    return rules.map((rule: Record<string, unknown>) => {
      const head = rule.action ?? rule.id;
      const body = rule.expression ?? rule.conditions ?? rule.condition ?? "";
      const rest = Object.fromEntries(Object.entries(rule).filter(([k]) => !["action", "id", "expression", "conditions", "condition", "enabled", "description"].includes(k)));
      const expression = typeof body === "string" ? body : JSON.stringify(body);
      return `rule ${String(head)}: ${expression}${Object.keys(rest).length ? `\n      ${JSON.stringify(rest)}` : ""}`;
    });
  }
  return rules.map((rule: Record<string, unknown>) => {
    const sources = Array.isArray(rule.sourceIps) ? rule.sourceIps : [];
    const shown = sources.length > 4 ? `${sources.slice(0, 3).join(", ")} ... (${sources.length} networks)` : sources.join(", ");
    return `rule: ${rule.direction} ${rule.protocol}${rule.port ? `/${rule.port}` : ""} from ${shown}`;
  });
}

/** The human-readable plan: resource tree, outputs, monthly cost, written files. */
export function formatPlan(plan: Plan): string {
  const lines: string[] = [`LeanInfra plan for stack "${plan.stack}" (${plan.mode})`, ""];
  const byParent = new Map<string | undefined, RecordedResource[]>();
  for (const r of plan.resources) byParent.set(r.parent, [...(byParent.get(r.parent) ?? []), r]);
  // Registration order depends on timing; a sorted tree reads the same in every merge request.
  // Role commands keep the order the Host applies them in.
  const position = new Map(plan.resources.map((r, i) => [r, i]));
  const orderWithinType = (a: RecordedResource, b: RecordedResource) =>
    a.type === "command:remote:Command" ? position.get(a)! - position.get(b)! : a.name.localeCompare(b.name);
  for (const children of byParent.values()) children.sort((a, b) => a.type.localeCompare(b.type) || orderWithinType(a, b));
  const walk = (parent: string | undefined, depth: number) => {
    for (const r of byParent.get(parent) ?? []) {
      const indent = "  ".repeat(depth);
      lines.push(`${indent}+ ${r.type}  ${r.name}`);
      const keys = IMPORTANT_INPUTS[r.type] ?? [];
      for (const key of keys) {
        if (!(key in r.inputs)) continue;
        if (key === "rules") lines.push(...formatRules(r.type, r.inputs.rules).map((l) => `${indent}    ${l}`));
        else lines.push(`${indent}    ${key}: ${short(r.inputs[key])}`);
      }
      const provider = r.provider?.split("::")[3];
      if (provider && !provider.startsWith("default")) lines.push(`${indent}    provider: ${provider}`);
      if (r.type === "command:remote:Command") lines.push(`${indent}    stdin: ${r.inputs.stdin === SECRET ? SECRET : "role bundle (see out/)"}`);
      walk(`${r.type}::${r.name}`, depth + 1);
    }
  };
  walk(undefined, 0);
  lines.push("", `${plan.resources.length} resources to create.`, "", "Outputs:");
  for (const [key, value] of Object.entries(plan.outputs)) lines.push(`  ${key}: ${short(value)}`);
  lines.push("", `Estimated monthly cost (prices recorded ${plan.cost.recordedOn}):`);
  for (const line of plan.cost.lines) {
    const amount = line.monthly === null ? "   n/a" : line.monthly.toFixed(2).padStart(6);
    lines.push(`  ${amount} ${line.currency}  ${line.item}: ${line.detail}`);
  }
  const totals = Object.entries(plan.cost.totals).map(([currency, sum]) => `${sum.toFixed(2)} ${currency}`).join(" + ");
  lines.push(`  total: ${totals}${plan.cost.unpriced.length ? ` (without: ${plan.cost.unpriced.join(", ")})` : ""}`);
  for (const note of plan.cost.notes) lines.push(`  ${note}`);
  lines.push(`  Source: ${plan.cost.source}`);
  lines.push("", "Rendered files:", ...plan.files.map((f) => `  ${f}`), "", "Notes:", ...plan.notes.map((n) => `  - ${n}`));
  return lines.join("\n") + "\n";
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { stack: { type: "string", default: "prod" }, json: { type: "boolean", default: false }, help: { type: "boolean", default: false } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write("usage: npm run plan [-- --stack NAME] [--json]\n");
    return 0;
  }
  const plan = await buildPlan(values.stack);
  process.stdout.write(values.json ? JSON.stringify(plan, null, 2) + "\n" : formatPlan(plan));
  return 0;
}

/**
 * Runs an npm script's main and exits with its code. Problems a user can fix (config, the stack file,
 * an unknown option) are printed as they are, exit 2, without a stack trace; anything else exits 1.
 */
export function runCli(name: string, main: () => Promise<number>): void {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      if (error instanceof ConfigError || error instanceof PlanInputError || (error as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
        process.stderr.write(`${(error as Error).message}\n`);
        process.exit(2);
      }
      process.stderr.write(`${name} failed: ${(error as Error).stack ?? String(error)}\n`);
      process.exit(1);
    },
  );
}

if (require.main === module) runCli("plan", main);
