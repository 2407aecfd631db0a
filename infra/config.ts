import * as fs from "node:fs";
import * as path from "node:path";
import * as ipaddr from "ipaddr.js";
import { parse } from "yaml";
import { z } from "zod";
import { FACT_KEYS, SettingsError, checkRoleOrder, eachOnce, placeholderInputs, type AnyRoleDefinition, type RoleSettings } from "../components/host/define";
import { roleProblems } from "../components/host/bundle";
import { renderCloudInit } from "../components/host/cloud-init";
import { PLACEHOLDER_HOST_KEY, hostKeyProblem } from "../components/host/host-key";
import { DOMAIN_NAME, HOSTNAME_LABEL, SYSTEM_ACCOUNTS } from "../components/host/names";
import { serverTypeInfo } from "./cost";
import { stackInputPlaceholders } from "./placeholders";
import { ROLES } from "./roles";

// Every project key is a flat, top-level key under `<project>:` because Pulumi's project config
// schema (Pulumi.yaml `config:`) can only declare string, integer, boolean and array keys.
export const PROJECT = projectName(path.resolve(__dirname, "../Pulumi.yaml"));

/**
 * The project's name, `name:` in Pulumi.yaml: the namespace of its config keys. Pulumi puts every key
 * the project declares, and every key `pulumi config set` or `pulumi new` writes without one, under
 * that name, and refuses typed declarations under another; `pulumi new --name shop` renames it.
 */
export function projectName(projectFile: string): string {
  const name = (parse(fs.readFileSync(projectFile, "utf8")) as { name?: unknown } | null)?.name;
  if (typeof name !== "string" || name === "") throw new Error(`${projectFile}: no project name`);
  return name;
}

export const LOCATIONS = ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"] as const;
// Hetzner sells the shared Intel (cx) and Arm (cax) types in its EU locations only.
const EU_ONLY_FAMILIES = ["cx", "cax"];
const EU_LOCATIONS = ["fsn1", "nbg1", "hel1"];

const ACCOUNT_ID = /^[0-9a-f]{32}$/;
const ORIGIN_CA_VALIDITY_DAYS = [7, 30, 90, 365, 730, 1095, 5475];
const SSH_PUBLIC_KEY =
  /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/]{40,}={0,3}( \S.*)?$/;
// An OpenSSH public key of the largest RSA size (16384 bits) is about 2.8 KB; a comment adds little.
const SSH_PUBLIC_KEY_MAX = 4096;

function isDomainName(value: string): boolean {
  return DOMAIN_NAME.test(value);
}

/** Returns why `value` is not a usable firewall CIDR, or undefined when it is one. */
export function cidrProblem(value: string): string | undefined {
  if (!ipaddr.isValidCIDR(value)) return "is not a CIDR (accepted: an IPv4 or IPv6 network such as 203.0.113.7/32 or 2001:db8::/56)";
  // 010.0.0.0 is 8.0.0.0 to some parsers and 10.0.0.0 to others: only one spelling is taken.
  if (/(^|\.)0[0-9]/.test(value.split("/")[0]) && value.includes(".")) {
    return "has a leading zero in an IPv4 part, which tools read differently (accepted: the address without leading zeros, e.g. 10.0.0.0/8)";
  }
  const [address, prefix] = ipaddr.parseCIDR(value);
  const network =
    address.kind() === "ipv4"
      ? ipaddr.IPv4.networkAddressFromCIDR(value)
      : ipaddr.IPv6.networkAddressFromCIDR(value);
  if (network.toString() !== address.toString()) {
    return `has host bits set (accepted: the network address, here ${network.toString()}/${prefix})`;
  }
  return undefined;
}

export function isWholeInternet(cidr: string): boolean {
  return ipaddr.isValidCIDR(cidr) && ipaddr.parseCIDR(cidr)[1] === 0;
}

/** One spelling per network: lower-case, compressed IPv6, so what Hetzner gets is what was checked. */
export function canonicalCidr(cidr: string): string {
  const [address, prefix] = ipaddr.parseCIDR(cidr);
  return `${address.toString()}/${prefix}`;
}

/**
 * Whether the networks together cover a whole address family (e.g. 0.0.0.0/1 and 128.0.0.0/1):
 * "ipv4", "ipv6", or undefined. Invalid entries are left out.
 */
export function wholeInternetCovered(cidrs: readonly string[]): "ipv4" | "ipv6" | undefined {
  for (const kind of ["ipv4", "ipv6"] as const) {
    const bits = kind === "ipv4" ? 32 : 128;
    const ranges = cidrs
      .filter((c) => ipaddr.isValidCIDR(c) && ipaddr.parseCIDR(c)[0].kind() === kind)
      .map((c) => {
        const [address, prefix] = ipaddr.parseCIDR(c);
        const start = address.toByteArray().reduce((acc, byte) => (acc << 8n) | BigInt(byte), 0n);
        const size = 1n << BigInt(bits - prefix);
        const first = (start / size) * size;
        return [first, first + size] as const;
      })
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    let reached = 0n;
    for (const [first, end] of ranges) {
      if (first > reached) break;
      if (end > reached) reached = end;
    }
    if (reached >= 1n << BigInt(bits)) return kind;
  }
  return undefined;
}

const cidr = z.string().superRefine((value, ctx) => {
  const problem = cidrProblem(value);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

/**
 * The stack's own config keys (the server, the edge, the backup bucket); each role adds its slice
 * (components/<role>/index.ts). Together they are the single source of the Pulumi.yaml `config:` block
 * (type, default, description) and of validation. Descriptions are written for the person editing
 * Pulumi.<stack>.yaml.
 */
export const coreSchema = z
  .object({
    domain: z
      .string()
      .refine(isDomainName, { message: "is not a domain name (accepted: lower-case labels joined by dots, e.g. example.com)" })
      .describe("The product's apex domain, e.g. example.com. The server's name and reverse DNS derive from it."),
    environment: z
      .enum(["production", "staging", "development"])
      .default("production")
      .describe("What this stack is. production turns on delete and rebuild protection and refuses to run without them."),
    location: z
      .enum(LOCATIONS)
      .default("fsn1")
      .describe("Hetzner location of the server, its IPs and its volume: fsn1, nbg1, hel1 (EU), ash, hil (US), sin (Asia)."),
    serverType: z
      .string()
      .regex(/^(cx|cpx|cax|ccx)[0-9]{2}$/, { message: "is not a Hetzner server type (accepted: e.g. cx22, cx32, cpx31, cax21, ccx13)" })
      .default("cx32")
      .describe("Hetzner server type, e.g. cx22 (2 vCPU, 4 GB), cx32 (4 vCPU, 8 GB), cpx31, cax21, ccx13."),
    image: z
      .string()
      .regex(/^(debian-13|[0-9]+)$/, { message: "is not supported (accepted: debian-13, or the numeric id of a snapshot made from it)" })
      .default("debian-13")
      .describe("Server image: debian-13, or the numeric id of a Hetzner snapshot of it. The host roles are written for Debian 13."),
    hostname: z
      .string()
      .regex(HOSTNAME_LABEL, { message: "is not a host name label (accepted: a-z, 0-9 and '-', at most 63 characters)" })
      .default("app")
      .describe("The server's host name; its full name is <hostname>.<domain>, used for reverse DNS."),
    adminUser: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]{0,31}$/, { message: "is not a Linux user name (accepted: a-z, 0-9, '_' and '-', starting with a letter or '_')" })
      .refine((name) => !(SYSTEM_ACCOUNTS as readonly string[]).includes(name), {
        message: "is an account of the system or of a service on the server (root login over SSH is off; accepted: a user name of your own, e.g. ops)",
      })
      .default("ops")
      .describe("The admin user created on the server; it logs in with adminSshPublicKey and uses sudo."),
    adminSshPublicKey: z
      .string()
      .refine((key) => key.length <= SSH_PUBLIC_KEY_MAX, { message: `is longer than any OpenSSH public key (accepted: one key line of at most ${SSH_PUBLIC_KEY_MAX} characters)` })
      .regex(SSH_PUBLIC_KEY, { message: "is not an OpenSSH public key (accepted: one line such as 'ssh-ed25519 AAAA... you@laptop')" })
      .describe("The admin's OpenSSH public key, one line (e.g. the content of ~/.ssh/id_ed25519.pub)."),
    sshHostKey: z
      .string()
      .superRefine((value, ctx) => {
        const problem = value === "" ? undefined : hostKeyProblem(value);
        if (problem) ctx.addIssue({ code: "custom", message: problem });
      })
      .default("")
      .describe(
        "Only for a server created before LeanInfra pinned SSH host keys: its ssh-ed25519 host public key, checked out of band " +
          "(README: \"SSH host key\"). Empty: the key generated for the server, installed by cloud-init.",
      ),
    sshAllowFrom: z
      .array(cidr)
      .min(1, { message: "is empty (accepted: at least one network, e.g. your office address as 203.0.113.7/32)" })
      .superRefine(eachOnce(canonicalCidr))
      .describe("Networks allowed to reach SSH (port 22), as CIDRs. 0.0.0.0/0 or ::/0 also needs sshAllowAnywhere."),
    sshAllowAnywhere: z
      .boolean()
      .default(false)
      .describe("Set true to accept 0.0.0.0/0 or ::/0 in sshAllowFrom, i.e. SSH open to the whole internet."),
    cdnProxy: z
      .boolean()
      .default(true)
      .describe("Serve through Cloudflare's proxy. When true, ports 80/443 admit Cloudflare's published ranges only; when false, anyone."),
    deleteProtection: z
      .boolean()
      .default(true)
      .describe("Hetzner delete and rebuild protection on the server, its IPs and its volume."),
    allowUnprotectedProduction: z
      .boolean()
      .default(false)
      .describe("Set true to let a production stack run with deleteProtection false (e.g. to tear it down on purpose)."),
    hetznerBackups: z
      .boolean()
      .default(false)
      .describe("Hetzner's own daily server backups (+20% of the server price). Database backups do not depend on them."),
    volumeSizeGb: z
      .number()
      .int()
      .min(10)
      .max(10240)
      .default(20)
      .describe("Size in GB of the data volume mounted at /srv/data (PostgreSQL and backup staging). It can grow, never shrink."),
    serverMemoryGb: z
      .number()
      .int()
      .min(0)
      .max(4096)
      .default(0)
      .describe("RAM of the server in GB, for PostgreSQL and Redis sizing; 0 reads it from the server type (infra/data/prices.json)."),
    swapSizeMb: z
      .number()
      .int()
      .min(0)
      .max(65536)
      .default(2048)
      .describe("Size in MB of the swap file /swapfile; 0 for none."),
    journalMaxUseMb: z
      .number()
      .int()
      .min(64)
      .max(16384)
      .default(1024)
      .describe("Upper bound in MB for the systemd journal on disk."),
    cloudflareAccountId: z
      .string()
      .regex(ACCOUNT_ID, { message: "is not a Cloudflare account id (accepted: 32 hexadecimal characters, from the dashboard's account home)" })
      .describe("The Cloudflare account that holds the product's zone (32 hex characters)."),
    cloudflareZone: z
      .string()
      .refine((v) => v === "" || ACCOUNT_ID.test(v) || isDomainName(v), {
        message: "is neither a zone id (32 hexadecimal characters) nor a zone name (accepted: e.g. example.com, or empty for the zone named like domain)",
      })
      .default("")
      .describe("The Cloudflare zone: its id (32 hex characters) or its name. Empty: the zone named like domain."),
    canonicalHost: z
      .enum(["apex", "www"])
      .default("apex")
      .describe("Which name serves the site: apex (example.com, www redirects to it) or www (www.example.com, the apex redirects)."),
    extraHostnames: z
      .array(z.string().regex(HOSTNAME_LABEL, { message: "is not a host name label (accepted: a-z, 0-9 and '-', e.g. status)" }))
      .superRefine(eachOnce())
      .default([])
      .describe("Further names under domain that point at the server through Cloudflare, e.g. [status] (Grafana has its own key, grafanaHostname)."),
    staticHostname: z
      .string()
      .refine((v) => v === "" || HOSTNAME_LABEL.test(v), { message: "is not a host name label (accepted: e.g. static, or empty for none)" })
      .default("")
      .describe("Optional name under domain for static files only (e.g. static): everything on it is cached at the edge."),
    staticPathPrefixes: z
      .array(z.string().regex(/^\/[A-Za-z0-9._~\/-]*\/$/, { message: 'is not a path prefix (accepted: starts and ends with "/", e.g. /assets/)' }))
      .superRefine(eachOnce())
      .default(["/assets/", "/static/"])
      .describe("Path prefixes of static files cached at Cloudflare's edge for staticEdgeTtlSeconds; other paths are not cached."),
    staticEdgeTtlSeconds: z
      .number()
      .int()
      .min(60)
      .max(31536000)
      .default(2592000)
      .describe("How long Cloudflare's edge keeps static files, in seconds (default 30 days). Use fingerprinted file names."),
    originCertValidityDays: z
      .number()
      .int()
      .refine((v) => ORIGIN_CA_VALIDITY_DAYS.includes(v), { message: `is not a validity Cloudflare offers (accepted: ${ORIGIN_CA_VALIDITY_DAYS.join(", ")})` })
      .default(5475)
      .describe("Validity of the Cloudflare Origin CA certificate for nginx, in days: 7, 30, 90, 365, 730, 1095 or 5475 (15 years)."),
    backupAccountId: z
      .string()
      .regex(ACCOUNT_ID, { message: "is not a Cloudflare account id (accepted: 32 hexadecimal characters of the SECOND account, the one for backups)" })
      .describe("The SECOND Cloudflare account, holding the backup bucket; its API token is the secret leaninfra:backupApiToken."),
    backupAllowSameAccount: z
      .boolean()
      .default(false)
      .describe("Set true to accept backupAccountId equal to cloudflareAccountId (not recommended: one lost account then takes the backups too)."),
    backupBucketName: z
      .string()
      .refine((v) => v === "" || /^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/.test(v), { message: "is not an R2 bucket name (accepted: 3-63 characters of a-z, 0-9 and '-', not starting or ending with '-')" })
      .default("")
      .describe("Name of the R2 backup bucket. Empty: <project>-<stack>-backups, e.g. leaninfra-prod-backups."),
    backupLocationHint: z
      .enum(["weur", "eeur", "wnam", "enam", "apac", "oc"])
      .default("weur")
      .describe("Where R2 should place the bucket: weur, eeur (Europe), wnam, enam (North America), apac, oc. Only honoured at creation."),
    backupJurisdiction: z
      .enum(["default", "eu", "fedramp"])
      .default("default")
      .describe("R2 jurisdiction: default, or eu to keep backups inside the EU (changes the endpoint)."),
    backupRetentionDays: z
      .number()
      .int()
      .min(21)
      .max(3650)
      .default(35)
      .describe("Days the bucket keeps physical backups and WAL before its lifecycle deletes them."),
    backupLockDays: z
      .number()
      .int()
      .min(1)
      .max(3650)
      .default(14)
      .describe("Days during which no one, not even a token stolen from the server, can delete or overwrite a backup. Shorter than backupRetentionDays."),
    backupDumpRetentionDays: z
      .number()
      .int()
      .min(30)
      .max(3650)
      .default(365)
      .describe("Days the monthly logical dumps (pg_dump) are kept, for mistakes noticed weeks later."),
    backupEstimatedGb: z
      .number()
      .int()
      .min(1)
      .max(100000)
      .default(10)
      .describe("Expected size of everything in the backup bucket, in GB; used only for the monthly cost estimate."),
  })
  .strict();

type CoreConfig = z.output<typeof coreSchema>;
type ParsedConfig = CoreConfig;

/**
 * The stack's config schema: the core keys and every role's slice. A key owned twice is a programming
 * error, found when the module loads.
 */
export function composeConfigSchema(roles: readonly AnyRoleDefinition[]): z.ZodObject {
  const owners = new Map<string, string>(Object.keys(coreSchema.shape).map((key) => [key, "the stack"]));
  const shape: Record<string, z.ZodType> = { ...coreSchema.shape };
  for (const role of roles) {
    for (const [key, schema] of Object.entries(role.settings.shape as Record<string, z.ZodType>)) {
      if (owners.has(key) || key in SECRET_KEYS_CORE) throw new Error(`config key ${key} of role ${role.name} is already owned by ${owners.get(key) ?? "the stack"}`);
      owners.set(key, `role ${role.name}`);
      shape[key] = schema;
    }
  }
  return z.object(shape).strict();
}

interface CrossFieldProblem {
  path: (string | number)[];
  input: unknown;
  message: string;
}

/**
 * Rules that span several keys. They run on every key that is valid by itself, so a stack with a
 * bad serverType still hears about its unprotected production server in the same run.
 */
function crossFieldProblems(cfg: Partial<ParsedConfig>): CrossFieldProblem[] {
  const problems: CrossFieldProblem[] = [];
  if (cfg.environment === "production" && cfg.deleteProtection === false && cfg.allowUnprotectedProduction === false) {
    problems.push({
      path: ["deleteProtection"],
      input: false,
      message:
        "is refused for a production stack: one mistaken `pulumi destroy` would delete the server and its data volume " +
        "(accepted: true, or set allowUnprotectedProduction true as well)",
    });
  }
  cfg.sshAllowFrom?.forEach((network, index) => {
    if (isWholeInternet(network) && cfg.sshAllowAnywhere === false) {
      problems.push({
        path: ["sshAllowFrom", index],
        input: network,
        message: "opens SSH to the whole internet (accepted: your own networks, or set sshAllowAnywhere true as well)",
      });
    }
  });
  const covered = cfg.sshAllowFrom && !cfg.sshAllowFrom.some(isWholeInternet) ? wholeInternetCovered(cfg.sshAllowFrom) : undefined;
  if (covered && cfg.sshAllowAnywhere === false) {
    problems.push({
      path: ["sshAllowFrom"],
      input: cfg.sshAllowFrom,
      message: `together cover the whole ${covered === "ipv4" ? "IPv4" : "IPv6"} internet, which opens SSH to everyone (accepted: your own networks, or set sshAllowAnywhere true as well)`,
    });
  }
  if (cfg.serverType && cfg.location) {
    const family = cfg.serverType.replace(/[0-9]+$/, "");
    if (EU_ONLY_FAMILIES.includes(family) && !EU_LOCATIONS.includes(cfg.location)) {
      problems.push({
        path: ["serverType"],
        input: cfg.serverType,
        message: `is not sold in location ${cfg.location} (accepted there: cpx or ccx types, e.g. cpx31)`,
      });
    }
  }
  if (cfg.backupAccountId && cfg.cloudflareAccountId && cfg.backupAccountId === cfg.cloudflareAccountId && cfg.backupAllowSameAccount === false) {
    problems.push({
      path: ["backupAccountId"],
      input: cfg.backupAccountId,
      message:
        "is the account that also holds the zone: whoever takes over or locks that account, or a leaked token of it, " +
        "would reach the production data and its backups at once (accepted: the id of a second Cloudflare account, " +
        "or set backupAllowSameAccount true to accept that risk)",
    });
  }
  if (cfg.backupLockDays !== undefined && cfg.backupRetentionDays !== undefined && cfg.backupLockDays + 14 > cfg.backupRetentionDays) {
    problems.push({
      path: ["backupLockDays"],
      input: cfg.backupLockDays,
      message:
        `must be at least 14 days shorter than backupRetentionDays (${cfg.backupRetentionDays}): pgBackRest keeps full backups ` +
        "for the retention minus 14 days, and neither it nor the lifecycle can delete what is still locked",
    });
  }
  if (cfg.backupLockDays !== undefined && cfg.backupDumpRetentionDays !== undefined && cfg.backupLockDays >= cfg.backupDumpRetentionDays) {
    problems.push({
      path: ["backupLockDays"],
      input: cfg.backupLockDays,
      message: `must be shorter than backupDumpRetentionDays (${cfg.backupDumpRetentionDays})`,
    });
  }
  cfg.extraHostnames?.forEach((name, index) => {
    if (name === "www" || cfg.extraHostnames?.indexOf(name) !== index) {
      problems.push({ path: ["extraHostnames", index], input: name, message: "is already managed or listed (accepted: a name other than www, listed once)" });
    }
  });
  if (cfg.staticHostname && (cfg.staticHostname === "www" || cfg.extraHostnames?.includes(cfg.staticHostname))) {
    problems.push({ path: ["staticHostname"], input: cfg.staticHostname, message: "is also listed in extraHostnames (accepted: a name used once)" });
  }
  const typeMemoryGb = cfg.serverType ? serverTypeInfo(cfg.serverType)?.memoryGb : undefined;
  if (typeMemoryGb !== undefined && cfg.serverMemoryGb !== undefined && cfg.serverMemoryGb > typeMemoryGb) {
    problems.push({
      path: ["serverMemoryGb"],
      input: cfg.serverMemoryGb,
      message: `is more than server type ${cfg.serverType} has (${typeMemoryGb} GB): PostgreSQL and Redis would be sized for memory that is not there (accepted: 0 to read it from the type, or at most ${typeMemoryGb})`,
    });
  }
  if (cfg.serverType && cfg.serverMemoryGb === 0 && !serverTypeInfo(cfg.serverType)) {
    problems.push({
      path: ["serverMemoryGb"],
      input: 0,
      message: `cannot be read from server type ${cfg.serverType}, which infra/data/prices.json does not list (accepted: the server's RAM in GB, e.g. 8)`,
    });
  }
  if (cfg.hostname && cfg.domain && `${cfg.hostname}.${cfg.domain}`.length > 253) {
    problems.push({ path: ["hostname"], input: cfg.hostname, message: "makes the full host name longer than 253 characters" });
  }
  return problems;
}

export type StackConfigInput = z.input<typeof coreSchema> & Record<string, unknown>;

/** The validated config: the core keys typed, the roles' keys (typed by their slices in the roles), derived facts. */
export interface StackConfig extends CoreConfig {
  readonly [roleKey: string]: unknown;
  /** Pulumi stack name. */
  readonly stack: string;
  /** The server's fully qualified name: <hostname>.<domain>. */
  readonly fqdn: string;
  readonly isProduction: boolean;
  /** The R2 bucket's name: backupBucketName, or <project>-<stack>-backups. */
  readonly bucketName: string;
  /** The server's RAM in MB and its vCPUs: serverMemoryGb, else the server type's. */
  readonly memoryMb: number;
  readonly vcpus: number;
}

/** Raised when config is invalid; `problems` holds one line per bad key, all of them at once. */
export class ConfigError extends Error {
  constructor(
    readonly stack: string,
    readonly problems: string[],
  ) {
    super(
      `Stack "${stack}" has ${problems.length} configuration problem${problems.length === 1 ? "" : "s"}; nothing was created:\n` +
        problems.map((p) => `  - ${p}`).join("\n") +
        `\nFix them in Pulumi.${stack}.yaml (or with \`pulumi config set\`) and run again.`,
    );
    this.name = "ConfigError";
  }
}

// Hetzner's rule for label values (API reference, "Labels"); the stack name labels every server resource.
const HETZNER_LABEL_VALUE = /^([a-zA-Z0-9]([-_.a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)?$/;

/** The stack name becomes a Hetzner label value, which Pulumi's longer or edge-punctuated names can break. */
export function stackNameProblem(stack: string): string | undefined {
  if (HETZNER_LABEL_VALUE.test(stack)) return undefined;
  return `stack name: "${stack}" cannot label Hetzner resources (accepted: up to 63 letters, digits, "-", "_" and ".", starting and ending with a letter or digit); create the stack under a shorter name`;
}

/**
 * <project>-<stack>-backups (leaninfra-prod-backups here), each name folded into what R2 accepts: two
 * products made from this template keep apart in one backup account even when both stacks are prod.
 */
export function defaultBucketName(stack: string, project: string = PROJECT): string {
  const slug = (name: string, max: number, fallback: string) => name.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, max).replace(/-+$/, "") || fallback;
  return `${slug(project, 12, "leaninfra")}-${slug(stack, 40, "stack")}-backups`;
}

export function keyPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (acc, part) => (typeof part === "number" ? `${acc}[${part}]` : acc ? `${acc}.${String(part)}` : String(part)),
    "",
  );
}

function shown(value: unknown): string {
  if (value === undefined) return "(not set)";
  const text = JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

const TYPE_NOUNS: Record<string, string> = {
  string: "a string",
  number: "a number",
  int: "an integer",
  boolean: "true or false",
  array: "a list",
  object: "an object",
};

/**
 * Secret project keys: read with config.requireSecret / getSecret by the program, never validated in
 * clear by the offline plan (it cannot decrypt them). The required one is declared in Pulumi.yaml with
 * `secret: true`; the optional ones (the roles' secret config inputs) cannot be (the CLI refuses a plain
 * default for a secret key), so the program itself refuses them in plain text.
 */
const SECRET_KEYS_CORE: Record<string, { description: string; required: boolean }> = {
  backupApiToken: {
    description: "API token of the backup account (R2 admin read & write, API tokens edit). Set with: pulumi config set --secret leaninfra:backupApiToken ...",
    required: true,
  },
};

/** The secret keys of the stack with the given roles: the core's and each role's secret config inputs. */
export function secretKeysOf(roles: readonly AnyRoleDefinition[]): Record<string, { description: string; required: boolean }> {
  const keys: Record<string, { description: string; required: boolean }> = {};
  for (const role of roles) {
    for (const input of Object.values(role.inputs ?? {})) {
      if (input.from === "secretConfig") keys[input.key] = { description: input.description, required: false };
    }
  }
  return { ...keys, ...SECRET_KEYS_CORE };
}

// Keys a stack file may still hold from an earlier LeanInfra, and what replaced them.
const RETIRED_KEYS: Record<string, string> = {
  redisEnabled: "was replaced by leaninfra:redisJob (accepted: none, cache, sessions or queue; none = no Redis): delete redisEnabled and set redisJob",
  drillAppPort: "is no longer used: the drill reaches its app container on an internal Docker network, with no port on the host; delete drillAppPort",
};

function describeIssue(issue: z.core.$ZodIssue, shape: Record<string, z.ZodType>, secretKeys: readonly string[]): string {
  const key = `${PROJECT}:${keyPath(issue.path)}`;
  const input = (issue as { input?: unknown }).input;
  switch (issue.code) {
    case "unrecognized_keys": {
      const known = [...Object.keys(shape), ...secretKeys].sort().join(", ");
      return issue.keys
        .map((k) => (RETIRED_KEYS[k] ? `${PROJECT}:${k}: ${RETIRED_KEYS[k]}` : `${PROJECT}:${k}: is not a LeanInfra setting (accepted keys: ${known})`))
        .join("\n");
    }
    case "invalid_type": {
      if (input === undefined) {
        const description = shape[String(issue.path[0])]?.description;
        return `${key}: is required but not set${description ? ` (${description})` : ""}`;
      }
      return `${key}: ${shown(input)} is not ${TYPE_NOUNS[issue.expected] ?? issue.expected} (accepted: ${TYPE_NOUNS[issue.expected] ?? issue.expected})`;
    }
    case "invalid_value":
      return `${key}: ${shown(input)} is not allowed (accepted: ${issue.values.map((v) => (v === "" ? '"" (none)' : String(v))).join(", ")})`;
    case "too_small":
      return issue.origin === "array"
        ? `${key}: ${shown(input)} ${issue.message}`
        : `${key}: ${shown(input)} is too small (accepted: ${issue.inclusive === false ? "more than" : "at least"} ${String(issue.minimum)})`;
    case "too_big":
      return `${key}: ${shown(input)} is too large (accepted: ${issue.inclusive === false ? "less than" : "at most"} ${String(issue.maximum)})`;
    default:
      return `${key}: ${shown(input)} ${issue.message}`;
  }
}

/**
 * The type of each key, used to decode the strings Pulumi hands the program. A fractional number
 * ("number", e.g. sloObjectivePercent 99.95) has no type in Pulumi.yaml, which knows string, integer,
 * boolean and array only: it is declared there as a string (an unquoted 99.95 in the stack file is
 * accepted as one) and decoded here as a number.
 */
export function declaredType(schema: z.core.JSONSchema.BaseSchema): "string" | "integer" | "number" | "boolean" | "array" {
  const type = schema.type;
  if (type === "string" || type === "integer" || type === "number" || type === "boolean" || type === "array") return type;
  throw new Error(`config key type ${String(type)} cannot be declared in Pulumi.yaml`);
}

/** The stack's config as the listed roles make it: the schema, each key's JSON schema, the secret keys. */
class ConfigModel {
  readonly schema: z.ZodObject;
  readonly keySchemas: Record<string, z.core.JSONSchema.BaseSchema>;
  readonly secretKeys: Record<string, { description: string; required: boolean }>;
  constructor(readonly roles: readonly AnyRoleDefinition[]) {
    checkRoleOrder(roles);
    this.schema = composeConfigSchema(roles);
    this.keySchemas = z.toJSONSchema(this.schema, { io: "input" }).properties as Record<string, z.core.JSONSchema.BaseSchema>;
    this.secretKeys = secretKeysOf(roles);
  }
}

const models = new Map<readonly AnyRoleDefinition[], ConfigModel>();
function modelOf(roles: readonly AnyRoleDefinition[]): ConfigModel {
  let model = models.get(roles);
  if (!model) models.set(roles, (model = new ConfigModel(roles)));
  return model;
}

/** The stack's config schema with LeanInfra's roles: what Pulumi.yaml declares. */
export const configSchema = modelOf(ROLES).schema;
/** The secret keys with LeanInfra's roles. */
export const SECRET_KEYS = modelOf(ROLES).secretKeys;

/**
 * List keys that `pulumi new` asks for: a template's answer is one line of text, so these take a
 * list or its entries separated by commas ("203.0.113.7/32, 2001:db8::/48"). Pulumi.yaml declares
 * them without a type, since the CLI would refuse the text as not an array.
 */
export const TEXT_LIST_KEYS: ReadonlySet<string> = new Set(["sshAllowFrom"]);

/**
 * Pulumi passes every config value to the program as a string ("true", "20", "[\"1.2.3.4/32\"]");
 * a stack file read offline gives YAML types. Both become the declared type here; anything that
 * does not decode is left as it is, for validation to report.
 */
export function decodeRawValue(key: string, value: unknown, roles: readonly AnyRoleDefinition[] = ROLES): unknown {
  const schema = modelOf(roles).keySchemas[key];
  if (!schema || typeof value !== "string") return value;
  const type = declaredType(schema);
  if (type === "string") return value;
  if (TEXT_LIST_KEYS.has(key) && !value.trimStart().startsWith("[")) return value.split(/[\s,]+/).filter((entry) => entry !== "");
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

/** "postgresDatabase \"x\" is ..." -> "leaninfra:postgresDatabase: \"x\" is ...": a role's problem as a config problem. */
function roleProblemLine(role: string, problem: string, keys: ReadonlySet<string>): string {
  const match = /^([A-Za-z][A-Za-z0-9]*)((?:\[\d+\])?)\s+([\s\S]*)$/.exec(problem);
  if (match) {
    const key = FACT_KEYS[match[1]] ?? match[1];
    if (keys.has(key)) return `${PROJECT}:${key}${FACT_KEYS[match[1]] ? "" : match[2]}: ${FACT_KEYS[match[1]] ? `(${match[1]}) ` : ""}${match[3]}`;
  }
  return `${PROJECT}: role ${role}: ${problem}`;
}

/**
 * The first character of `value` that is not text (as "U+0009"): C0 and C1 controls and DEL, line and
 * paragraph separators (line breaks to YAML), lone surrogates, noncharacters and the BOM. Config values
 * reach YAML (cloud-init's user data), shell scripts and log lines, none of which carry them as text.
 */
export function nonTextCharacter(value: string): string | undefined {
  for (const ch of value) {
    const cp = ch.codePointAt(0)!;
    const bad =
      cp < 0x20 ||
      (cp >= 0x7f && cp <= 0x9f) ||
      cp === 0x2028 ||
      cp === 0x2029 ||
      (cp >= 0xd800 && cp <= 0xdfff) ||
      (cp >= 0xfdd0 && cp <= 0xfdef) ||
      cp === 0xfeff ||
      (cp & 0xfffe) === 0xfffe;
    if (bad) return `U+${cp.toString(16).toUpperCase().padStart(4, "0")}`;
  }
  return undefined;
}

function textProblems(decoded: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const check = (key: string, value: unknown) => {
    if (typeof value !== "string") return;
    const bad = nonTextCharacter(value);
    if (bad) problems.push(`${PROJECT}:${key}: ${shown(value)} contains ${bad}, which is not printable text (accepted: printable characters only: no tabs, line breaks or control characters)`);
  };
  for (const [key, value] of Object.entries(decoded)) {
    if (Array.isArray(value)) value.forEach((entry, index) => check(`${key}[${index}]`, entry));
    else check(key, value);
  }
  return problems;
}

// Provider keys that hold credentials: refused in clear like the project's own secret keys.
const PROVIDER_SECRET = new RegExp(`^(?!${PROJECT.replace(/[.]/g, "\\.")}:)[a-z0-9-]+:.*(token|password|secret|apikey)$`, "i");

/**
 * A provider credential (hcloud:token, cloudflare:apiToken, ...) stored in plain text in the stack file:
 * refused, value unshown, with the command that stores it encrypted. `config` holds every key with
 * its namespace; `encryptedKeys` those the stack file holds encrypted.
 */
export function providerSecretProblems(config: Record<string, unknown>, encryptedKeys: readonly string[]): string[] {
  const encrypted = new Set(encryptedKeys);
  return Object.keys(config)
    .filter((key) => PROVIDER_SECRET.test(key) && config[key] !== "" && !encrypted.has(key))
    .map((key) => `${key}: is stored in plain text in the stack file (value not shown; accepted: an encrypted value, set with \`pulumi config set --secret ${key}\`)`);
}

/**
 * Settings written under another project's name (e.g. `leaninfra:domain` in a project that `pulumi new
 * --name shop` named shop): Pulumi hands the program only `shop:` keys, so they would be ignored. One
 * line per namespace, with the fix: the keys without a namespace (Pulumi reads them as the project's),
 * after removing those the project also sets under its own name (e.g. `pulumi new`'s answers).
 */
export function otherProjectKeyProblems(config: Record<string, unknown>, roles: readonly AnyRoleDefinition[] = ROLES): string[] {
  const model = modelOf(roles);
  const settings = new Set([...Object.keys(model.schema.shape), ...Object.keys(model.secretKeys)]);
  const byNamespace = new Map<string, string[]>();
  for (const key of Object.keys(config)) {
    const [namespace, name] = key.split(":", 2);
    if (name === undefined || namespace === PROJECT || !settings.has(name)) continue;
    byNamespace.set(namespace, [...(byNamespace.get(namespace) ?? []), name]);
  }
  const some = (names: string[]) => (names.length > 3 ? `${names.slice(0, 3).join(", ")} and ${names.length - 3} more` : names.join(", "));
  return [...byNamespace].map(([namespace, names]) => {
    const twice = names.filter((name) => `${PROJECT}:${name}` in config);
    const first = twice.length ? `first \`pulumi config rm ${namespace}:<key>\` for those also set as ${PROJECT}:<key> (${twice.join(", ")}), then ` : "";
    return (
      `${namespace}:*: ${some(names)} are set under ${namespace}:, but this project is named ${PROJECT} (Pulumi.yaml), so they would be ignored ` +
      `(accepted: ${PROJECT}:<key>, or the key without a namespace: ${first}sed -i 's/^  ${namespace}:/  /' Pulumi.<stack>.yaml)`
    );
  });
}

export interface ValidateOptions {
  /**
   * Every config key of the stack with its namespace (hcloud:token, cloudflare:apiToken, ...): provider
   * credentials in plain text are refused too. Needs the encrypted keys.
   */
  allConfig?: Record<string, unknown>;
  /** The roles of the stack, in order (default: LeanInfra's list in infra/roles.ts). */
  roles?: readonly AnyRoleDefinition[];
  /**
   * Clear values of the roles' secret config keys (`pulumi up` has them decrypted); the roles' own
   * checks then run on them. The offline plan has none: the checks run on placeholders.
   */
  secretValues?: Readonly<Record<string, string | undefined>>;
}

/**
 * What each enabled role refuses, found by rendering it from placeholder inputs (and clear secret
 * values where known) before anything exists: the same checks `pulumi up` would meet.
 */
export function roleSettingsProblems(cfg: StackConfig, roles: readonly AnyRoleDefinition[], secretValues: Readonly<Record<string, string | undefined>> = {}): string[] {
  const model = modelOf(roles);
  const keys = new Set([...Object.keys(model.schema.shape), ...Object.keys(model.secretKeys)]);
  const problems: string[] = [];
  const offers = new Map<string, Record<string, string>>();
  const settings = cfg as unknown as RoleSettings<z.ZodObject>;
  const stackPlaceholders = stackInputPlaceholders(cfg);
  for (const role of roles) {
    if (role.enabled && !role.enabled(settings)) continue;
    const inputs = placeholderInputs(role, settings, offers, stackPlaceholders, secretValues);
    try {
      const hostRole = role.render(settings, inputs);
      problems.push(...roleProblems(hostRole).map((p) => `${PROJECT}: role ${role.name}: ${p}`));
      if (role.offers) offers.set(role.name, role.offers(settings, inputs));
    } catch (error) {
      if (!(error instanceof SettingsError)) throw error;
      problems.push(...error.problems.map((p) => roleProblemLine(role.name, p, keys)));
    }
  }
  return problems;
}

/**
 * The secret keys the enabled roles need for these settings (their placeholder is not empty), e.g.
 * alertWebhookUrl with alertReceiver webhook: the plan says which are not set yet.
 */
export function neededSecretKeys(cfg: StackConfig, roles: readonly AnyRoleDefinition[] = ROLES): string[] {
  const settings = cfg as unknown as RoleSettings<z.ZodObject>;
  const needed: string[] = [];
  for (const role of roles) {
    if (role.enabled && !role.enabled(settings)) continue;
    for (const input of Object.values(role.inputs ?? {})) {
      if (input.from === "secretConfig" && input.placeholder && input.placeholder(settings) !== "") needed.push(input.key);
    }
  }
  return needed;
}

/** The user data the Host would render: Hetzner's 32 KiB cap is a config problem, not a failed `pulumi up`. */
function userDataProblems(cfg: CoreConfig & { fqdn: string }): string[] {
  try {
    renderCloudInit({
      hostname: cfg.hostname,
      fqdn: cfg.fqdn,
      adminUser: cfg.adminUser,
      adminSshPublicKey: cfg.adminSshPublicKey,
      swapSizeMb: cfg.swapSizeMb,
      journalMaxUseMb: cfg.journalMaxUseMb,
      hostKey: PLACEHOLDER_HOST_KEY,
    });
    return [];
  } catch (error) {
    return [`${PROJECT}:adminSshPublicKey: ${shown(cfg.adminSshPublicKey)} makes the server's user data too large: ${(error as Error).message}`];
  }
}

/**
 * Turns raw project config (keys without the `leaninfra:` prefix) into one frozen StackConfig, or
 * throws ConfigError listing every problem, each with its key, the value given and what is accepted:
 * the schema's, the cross-key rules', and every enabled role's own checks, before anything exists.
 */
export function validateConfig(stack: string, raw: Record<string, unknown>, encryptedKeys?: readonly string[], options: ValidateOptions = {}): StackConfig {
  const roles = options.roles ?? ROLES;
  const model = modelOf(roles);
  const decoded = Object.fromEntries(
    Object.entries(raw)
      .filter(([k]) => !(k in model.secretKeys))
      .map(([k, v]) => [k, decodeRawValue(k, v, roles)]),
  );
  const shape = model.schema.shape as Record<string, z.ZodType>;
  const result = model.schema.safeParse(decoded, { reportInput: true });
  const secretNames = Object.keys(model.secretKeys);
  const problems = result.success ? [] : result.error.issues.flatMap((issue) => describeIssue(issue, shape, secretNames).split("\n"));
  const validKeys: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(shape)) {
    const parsed = field.safeParse(decoded[key]);
    if (parsed.success) validKeys[key] = parsed.data;
  }
  // A list with one bad entry still has its other entries checked.
  if (Array.isArray(decoded.sshAllowFrom)) validKeys.sshAllowFrom = decoded.sshAllowFrom.map(String);
  for (const p of crossFieldProblems(validKeys as Partial<ParsedConfig>)) {
    problems.push(`${PROJECT}:${keyPath(p.path)}: ${shown(p.input)} ${p.message}`);
  }
  if (encryptedKeys) problems.push(...plaintextSecretProblems(raw, encryptedKeys, roles));
  if (encryptedKeys && options.allConfig) problems.push(...providerSecretProblems(options.allConfig, encryptedKeys));
  if (options.allConfig) problems.push(...otherProjectKeyProblems(options.allConfig, roles));
  problems.push(...textProblems(decoded));
  const stackProblem = stackNameProblem(stack);
  if (stackProblem) problems.push(stackProblem);
  if (!result.success || problems.length > 0) throw new ConfigError(stack, problems);
  const parsed = result.data as CoreConfig;
  const cfg: StackConfig = Object.freeze({
    ...parsed,
    sshAllowFrom: Object.freeze(parsed.sshAllowFrom.map(canonicalCidr)) as string[],
    extraHostnames: Object.freeze([...parsed.extraHostnames]) as string[],
    staticPathPrefixes: Object.freeze([...parsed.staticPathPrefixes]) as string[],
    stack,
    fqdn: `${parsed.hostname}.${parsed.domain}`,
    isProduction: parsed.environment === "production",
    bucketName: parsed.backupBucketName || defaultBucketName(stack),
    memoryMb: (parsed.serverMemoryGb || serverTypeInfo(parsed.serverType)?.memoryGb || 0) * 1024,
    vcpus: serverTypeInfo(parsed.serverType)?.vcpu ?? 2,
  });
  problems.push(...userDataProblems(cfg), ...roleSettingsProblems(cfg, roles, options.secretValues));
  if (problems.length > 0) throw new ConfigError(stack, problems);
  return cfg;
}

export interface PulumiConfigDeclaration {
  /** Absent for TEXT_LIST_KEYS, which take a list or a line of text. */
  type?: "string" | "integer" | "boolean" | "array";
  description: string;
  secret?: boolean;
  default?: unknown;
  items?: { type: string };
}

/** The Pulumi.yaml `config:` block derived from the schema; a test keeps Pulumi.yaml equal to it. */
export function pulumiConfigDeclarations(roles: readonly AnyRoleDefinition[] = ROLES): Record<string, PulumiConfigDeclaration> {
  const model = modelOf(roles);
  const out: Record<string, PulumiConfigDeclaration> = {};
  for (const [key, schema] of Object.entries(model.keySchemas)) {
    const type = declaredType(schema);
    const declaration: PulumiConfigDeclaration = { type: type === "number" ? "string" : type, description: String(schema.description) };
    if (declaration.type === "array") {
      declaration.items = { type: String((schema.items as z.core.JSONSchema.BaseSchema).type) };
    }
    if (schema.default !== undefined) declaration.default = type === "number" ? String(schema.default) : schema.default;
    if (TEXT_LIST_KEYS.has(key)) {
      delete declaration.type;
      delete declaration.items;
    }
    out[key] = declaration;
  }
  for (const [key, secret] of Object.entries(model.secretKeys)) {
    out[key] = { type: "string", description: secret.description, ...(secret.required ? { secret: true } : { default: "" }) };
  }
  return out;
}

/**
 * A secret key set in plain text: refused, value unshown. `encryptedKeys` are the keys (with or
 * without the `leaninfra:` prefix) whose value the stack file holds encrypted.
 */
export function plaintextSecretProblems(raw: Record<string, unknown>, encryptedKeys: readonly string[], roles: readonly AnyRoleDefinition[] = ROLES): string[] {
  const encrypted = new Set(encryptedKeys.map((key) => key.replace(`${PROJECT}:`, "")));
  return Object.keys(modelOf(roles).secretKeys)
    .filter((key) => raw[key] !== undefined && raw[key] !== "" && !encrypted.has(key))
    .map(
      (key) =>
        `${PROJECT}:${key}: is stored in plain text in the stack file (value not shown; accepted: an encrypted value, set with \`pulumi config set --secret ${PROJECT}:${key}\`)`,
    );
}
