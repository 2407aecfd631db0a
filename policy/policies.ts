// The stack's guardrails as policies: what `pulumi preview --policy-pack policy` refuses. Each
// validator reads a resource as the engine shows it to the analyzer (type, name, inputs, provider)
// and the stack's settings (StackSettings), so the unit tests call it with plain objects.
import type { ReportViolation, ResourceValidationArgs, ResourceValidationPolicy } from "@pulumi/policy";
import { isRedisJob, REDIS_JOB_LIST } from "../components/redis/config";
import type { AnyRoleDefinition } from "../components/host/define";
// The config namespace: the project's name in Pulumi.yaml (leaninfra, or what `pulumi new --name` chose).
import { PROJECT, configSchema } from "../infra/config";


/** The keys of the stack's config the policies read, with the program's defaults (infra/config.ts). */
export interface StackSettings {
  /** leaninfra:environment (default production). */
  environment: string;
  /** leaninfra:sshAllowAnywhere (default false). */
  sshAllowAnywhere: boolean;
  /** leaninfra:cloudflareAccountId: the zone's account. */
  cloudflareAccountId?: string;
  /** leaninfra:backupAllowSameAccount (default false). */
  backupAllowSameAccount: boolean;
  /** leaninfra:redisJob (default none). */
  redisJob: string;
  /** cloudflare:apiToken: the zone account's token, to tell the backup account's provider from it. */
  zoneApiToken?: string;
}

/**
 * The stack's settings from PULUMI_CONFIG, the stack configuration the Node.js language host hands a
 * policy pack (the engine sends it to the analyzer before the first resource). Without it (an older
 * host, `pulumi policy publish`), the defaults apply, which are the strict ones.
 */
export function stackSettings(env: NodeJS.ProcessEnv = process.env): StackSettings {
  let config: Record<string, string> = {};
  if (env.PULUMI_CONFIG) {
    try {
      config = JSON.parse(env.PULUMI_CONFIG) as Record<string, string>;
    } catch {
      throw new Error(`PULUMI_CONFIG is not JSON: ${env.PULUMI_CONFIG.slice(0, 80)}`);
    }
  }
  const get = (key: string): string | undefined => config[key.includes(":") ? key : `${PROJECT}:${key}`];
  // An unset key takes the program's own default, read from its schema.
  const programDefault = (key: string): string => String((configSchema.shape as Record<string, { parse(v: unknown): unknown }>)[key].parse(undefined));
  return {
    environment: get("environment") ?? programDefault("environment"),
    sshAllowAnywhere: get("sshAllowAnywhere") === "true",
    cloudflareAccountId: get("cloudflareAccountId") || undefined,
    backupAllowSameAccount: get("backupAllowSameAccount") === "true",
    redisJob: get("redisJob") ?? programDefault("redisJob"),
    zoneApiToken: get("cloudflare:apiToken") || undefined,
  };
}

/** The part of ResourceValidationArgs the validators read; the engine's args are one. */
export type ResourceArgs = Pick<ResourceValidationArgs, "type" | "name" | "urn" | "props"> & Partial<Pick<ResourceValidationArgs, "provider">>;
export type Validator = (args: ResourceArgs, reportViolation: ReportViolation) => void;

export const FIREWALL = "hcloud:index/firewall:Firewall";
export const LOAD_BALANCER_SERVICE = "hcloud:index/loadBalancerService:LoadBalancerService";
export const SERVER = "hcloud:index/server:Server";
export const VOLUME = "hcloud:index/volume:Volume";
export const PRIMARY_IP = "hcloud:index/primaryIp:PrimaryIp";
export const R2_BUCKET = "cloudflare:index/r2Bucket:R2Bucket";
export const RULESET = "cloudflare:index/ruleset:Ruleset";
export const REMOTE_COMMAND = "command:remote:Command";

/** The ports the internet may reach: SSH, HTTP, HTTPS. */
export const PUBLIC_PORTS = [22, 80, 443] as const;
export const DATABASE_PORTS: Readonly<Record<number, string>> = { 5432: "PostgreSQL", 6379: "Redis" };
const WHOLE_INTERNET = ["0.0.0.0/0", "::/0"];

interface FirewallRule {
  direction?: string;
  protocol?: string;
  port?: string;
  sourceIps?: string[];
}

function inboundRules(props: Record<string, unknown>): FirewallRule[] {
  const rules = (props.rules ?? []) as FirewallRule[];
  return rules.filter((rule) => (rule.direction ?? "in") === "in");
}

/**
 * The ports a rule's `port` admits: "22", "8000-8100", "any"; a TCP or UDP rule without a port
 * admits them all (Hetzner's API). Ports in [first, last].
 */
export function portRange(rule: FirewallRule): [number, number] | undefined {
  if (rule.protocol !== "tcp" && rule.protocol !== "udp") return undefined;
  const port = (rule.port ?? "").trim();
  if (port === "" || port === "any") return [1, 65535];
  const match = /^(\d+)(?:-(\d+))?$/.exec(port);
  if (!match) return [1, 65535];
  return [Number(match[1]), Number(match[2] ?? match[1])];
}

function admits(range: [number, number] | undefined, port: number): boolean {
  return !!range && range[0] <= port && port <= range[1];
}

function describeRule(rule: FirewallRule): string {
  return `${rule.protocol ?? "?"} ${rule.port ?? "(all ports)"} from ${(rule.sourceIps ?? []).join(", ") || "(no sources)"}`;
}

/** Whether a network is the whole IPv4 or IPv6 internet (a prefix length of 0). */
export function isWholeInternet(network: string): boolean {
  return WHOLE_INTERNET.includes(network) || /\/0$/.test(network.trim());
}

/** No inbound firewall rule but TCP/UDP 22, 80 and 443, and ICMP (ping, path MTU discovery). */
export const publicPortsOnly: Validator = (args, reportViolation) => {
  if (args.type !== FIREWALL) return;
  for (const rule of inboundRules(args.props)) {
    if (rule.protocol === "icmp") continue;
    const range = portRange(rule);
    const allowed = range && range[0] === range[1] && (PUBLIC_PORTS as readonly number[]).includes(range[0]);
    if (!allowed) {
      reportViolation(
        `Firewall ${args.name} admits ${describeRule(rule)}; the internet may reach only TCP/UDP ${PUBLIC_PORTS.join(", ")} and ICMP. ` +
          "Remove the rule from components/host/firewall.ts (firewallRules); reach other services through SSH (ssh -L), " +
          `and serve web traffic through nginx on 443 (${PROJECT}:cdnProxy).`,
        args.urn,
      );
    }
  }
};

/** SSH (22) not from 0.0.0.0/0 or ::/0, unless the stack sets sshAllowAnywhere. */
export function sshNotFromEverywhere(settings: StackSettings): Validator {
  return (args, reportViolation) => {
    if (args.type !== FIREWALL || settings.sshAllowAnywhere) return;
    for (const rule of inboundRules(args.props)) {
      const everyone = (rule.sourceIps ?? []).filter(isWholeInternet);
      if (admits(portRange(rule), 22) && everyone.length > 0) {
        reportViolation(
          `Firewall ${args.name} admits SSH (port 22) from ${everyone.join(" and ")}, the whole internet. ` +
            `List your own networks in ${PROJECT}:sshAllowFrom, or set ${PROJECT}:sshAllowAnywhere true to accept SSH open to everyone.`,
          args.urn,
        );
      }
    }
  };
}

/**
 * PostgreSQL (5432) and Redis (6379) never reachable from outside the server: no firewall rule, no
 * Hetzner load balancer service, no Cloudflare origin rule that sends requests to those ports.
 */
export const databasesNotExposed: Validator = (args, reportViolation) => {
  const report = (port: number, how: string) =>
    reportViolation(
      `${DATABASE_PORTS[port]} (port ${port}) is exposed: ${args.type.split(":").pop()} ${args.name} ${how}. ` +
        `${DATABASE_PORTS[port]} listens only on the server's loopback and Docker bridge for the app; reach it over SSH ` +
        "(ssh -L) and remove what exposes it (components/host/firewall.ts for firewall rules).",
      args.urn,
    );
  const ports = Object.keys(DATABASE_PORTS).map(Number);
  if (args.type === FIREWALL) {
    for (const rule of inboundRules(args.props)) {
      for (const port of ports) if (admits(portRange(rule), port)) report(port, `admits ${describeRule(rule)}`);
    }
  } else if (args.type === LOAD_BALANCER_SERVICE) {
    for (const port of ports) {
      if (Number(args.props.listenPort) === port || Number(args.props.destinationPort) === port) report(port, `forwards port ${args.props.listenPort} to ${args.props.destinationPort}`);
    }
  } else if (args.type === RULESET) {
    const rules = (args.props.rules ?? []) as { actionParameters?: { origin?: { port?: number } } }[];
    for (const rule of rules) {
      const port = Number(rule.actionParameters?.origin?.port);
      if (ports.includes(port)) report(port, `sends requests to the origin's port ${port}`);
    }
  }
};

/** A provider resource's name from its reference (`<urn>::<id>`). */
function providerName(urn: string | undefined): string | undefined {
  return urn?.split("::")[3];
}

/**
 * The backup bucket in another Cloudflare account than the zone's: its accountId is not
 * leaninfra:cloudflareAccountId, and it is created by its own provider (backup-account), not the
 * default one that holds the zone's token.
 */
export function backupBucketInSecondAccount(settings: StackSettings): Validator {
  return (args, reportViolation) => {
    if (args.type !== R2_BUCKET) return;
    // Accepted only where the program accepts it too, and never for production.
    if (settings.backupAllowSameAccount && settings.environment !== "production") return;
    const accountId = String(args.props.accountId ?? "");
    const remedy =
      `Put the backups in a second Cloudflare account: its id in ${PROJECT}:backupAccountId, its token in ${PROJECT}:backupApiToken ` +
      "(README: the backup account).";
    if (settings.cloudflareAccountId && accountId === settings.cloudflareAccountId) {
      reportViolation(
        `R2 bucket ${args.name} is in account ${accountId}, the account that holds the zone (${PROJECT}:cloudflareAccountId). ${remedy}`,
        args.urn,
      );
    }
    const provider = args.provider;
    const name = providerName(provider?.urn);
    if (provider && name && name.startsWith("default")) {
      reportViolation(`R2 bucket ${args.name} is created by the default Cloudflare provider (${name}), with the zone's token (cloudflare:apiToken). ${remedy}`, args.urn);
    } else if (provider && settings.zoneApiToken && provider.props.apiToken === settings.zoneApiToken) {
      reportViolation(`R2 bucket ${args.name}'s provider (${name}) uses the zone's token (cloudflare:apiToken). ${remedy}`, args.urn);
    }
  };
}

/** A command's role, when it is a role's (`<host>-role-<role>`). */
export function roleOfCommand(args: Pick<ResourceArgs, "type" | "name">): string | undefined {
  if (args.type !== REMOTE_COMMAND) return undefined;
  return /^[a-z0-9-]+?-role-([a-z0-9-]+)$/.exec(args.name)?.[1];
}

/** Redis (the redis role's command) only with one named job in leaninfra:redisJob. */
export function redisOnlyWithJob(settings: StackSettings): Validator {
  return (args, reportViolation) => {
    if (roleOfCommand(args) !== "redis" || isRedisJob(settings.redisJob)) return;
    reportViolation(
      `${args.name} installs Redis, but ${PROJECT}:redisJob is ${JSON.stringify(settings.redisJob)}. Redis runs here only with one named job: ` +
        `${REDIS_JOB_LIST}; set ${PROJECT}:redisJob to it, or none to leave Redis out.`,
      args.urn,
    );
  };
}

/**
 * Delete protection on the production server (and rebuild protection), its volume and its primary
 * IPs: production when leaninfra:environment says so or the resource's environment label does.
 */
export function productionProtected(settings: StackSettings): Validator {
  return (args, reportViolation) => {
    const flags = args.type === SERVER ? ["deleteProtection", "rebuildProtection"] : args.type === VOLUME || args.type === PRIMARY_IP ? ["deleteProtection"] : [];
    if (flags.length === 0) return;
    const labels = (args.props.labels ?? {}) as Record<string, string>;
    if (settings.environment !== "production" && labels.environment !== "production") return;
    const off = flags.filter((flag) => args.props[flag] !== true);
    if (off.length > 0) {
      reportViolation(
        `${args.type.split(":").pop()} ${args.name} is production but has ${off.join(" and ")} off: one mistaken delete or rebuild ` +
          `loses the server, its data or its addresses. Set ${PROJECT}:deleteProtection true (${PROJECT}:allowUnprotectedProduction ` +
          "does not lift this policy; tear production down from a laptop without --policy-pack, on purpose).",
        args.urn,
      );
    }
  };
}

/** What is missing from a role's budget (RoleBudget in components/host/define.ts); empty when complete. */
export function budgetProblems(role: AnyRoleDefinition): string[] {
  const budget = (role as { budget?: Partial<AnyRoleDefinition["budget"]> }).budget;
  if (!budget) return ["no budget"];
  const problems: string[] = [];
  const text = (value: unknown) => typeof value === "string" && value.trim() !== "";
  const cost = budget.monthlyCost;
  if (!cost || typeof cost.amount !== "number" || !Number.isFinite(cost.amount) || cost.amount < 0) problems.push("monthlyCost.amount (a number, 0 or more)");
  if (!cost || (cost.currency !== "EUR" && cost.currency !== "USD")) problems.push("monthlyCost.currency (EUR or USD)");
  if (!cost || !text(cost.what)) problems.push("monthlyCost.what");
  // Present even when empty: an empty list says "holds no secret", a missing one says nothing.
  if (!Array.isArray(budget.secrets) || !budget.secrets.every((s) => text(s?.name) && text(s?.livesIn))) problems.push("secrets (a list of { name, livesIn })");
  if (!Array.isArray(budget.alerts) || budget.alerts.length === 0 || !budget.alerts.every(text)) problems.push("alerts (at least one alert name)");
  if (!Array.isArray(budget.failurePoints) || budget.failurePoints.length === 0 || !budget.failurePoints.every(text)) {
    problems.push("failurePoints (at least one line)");
  }
  return problems;
}

/** Every role the stack deploys (a `<host>-role-<role>` command) declares a complete budget. */
export function rolesHaveBudgets(roles: readonly AnyRoleDefinition[]): Validator {
  return (args, reportViolation) => {
    const name = roleOfCommand(args);
    if (!name) return;
    const role = roles.find((r) => r.name === name);
    const problems = role ? budgetProblems(role) : [`no role named ${name} in infra/roles.ts`];
    if (problems.length > 0) {
      reportViolation(
        `${args.name} deploys the ${name} role, whose budget is incomplete: ${problems.join("; ")}. Declare its monthly cost, secrets, ` +
          `alerts and failure points in budget (RoleBudget) in components/${name}/index.ts, or leave the role out of the stack (its ${PROJECT}: key).`,
        args.urn,
      );
    }
  };
}

/** The pack's policies, all mandatory. */
export function policies(settings: StackSettings, roles: readonly AnyRoleDefinition[]): ResourceValidationPolicy[] {
  const policy = (name: string, description: string, validateResource: Validator): ResourceValidationPolicy => ({
    name,
    description,
    enforcementLevel: "mandatory",
    validateResource,
  });
  return [
    policy("public-ports-only-ssh-web", "No public inbound port but 22, 80 and 443 (ICMP allowed: ping and path MTU discovery).", publicPortsOnly),
    policy("ssh-not-from-whole-internet", `SSH never from 0.0.0.0/0 or ::/0 unless ${PROJECT}:sshAllowAnywhere is true.`, sshNotFromEverywhere(settings)),
    policy("databases-not-exposed", "PostgreSQL (5432) and Redis (6379) never exposed: no firewall rule, load balancer or origin rule reaches them.", databasesNotExposed),
    policy("backup-bucket-in-second-account", "The backup bucket in another Cloudflare account than the zone's, through its own provider.", backupBucketInSecondAccount(settings)),
    policy("redis-only-with-named-job", `Redis only with one named job (${PROJECT}:redisJob).`, redisOnlyWithJob(settings)),
    policy("production-delete-protection", "Production servers, volumes and primary IPs have delete protection (servers rebuild protection too).", productionProtected(settings)),
    policy("roles-declare-budget", "Every deployed role declares its monthly cost, secrets, alerts and failure points.", rolesHaveBudgets(roles)),
  ];
}
