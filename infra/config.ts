import * as ipaddr from "ipaddr.js";
import { z } from "zod";
import { serverTypeInfo } from "./cost";

// Every project key is a flat, top-level key under `leaninfra:` because Pulumi's project config
// schema (Pulumi.yaml `config:`) can only declare string, integer, boolean and array keys.
export const PROJECT = "leaninfra";

export const LOCATIONS = ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"] as const;
// Hetzner sells the shared Intel (cx) and Arm (cax) types in its EU locations only.
const EU_ONLY_FAMILIES = ["cx", "cax"];
const EU_LOCATIONS = ["fsn1", "nbg1", "hel1"];

const ACCOUNT_ID = /^[0-9a-f]{32}$/;
const ORIGIN_CA_VALIDITY_DAYS = [7, 30, 90, 365, 730, 1095, 5475];
const HOSTNAME_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const SSH_PUBLIC_KEY =
  /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/]{40,}={0,3}( \S.*)?$/;

function isDomainName(value: string): boolean {
  if (value.length > 253 || !value.includes(".")) return false;
  return value.split(".").every((label) => HOSTNAME_LABEL.test(label));
}

/** Returns why `value` is not a usable firewall CIDR, or undefined when it is one. */
export function cidrProblem(value: string): string | undefined {
  if (!ipaddr.isValidCIDR(value)) return "is not a CIDR (accepted: an IPv4 or IPv6 network such as 203.0.113.7/32 or 2001:db8::/56)";
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

const cidr = z.string().superRefine((value, ctx) => {
  const problem = cidrProblem(value);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

/**
 * The project's config keys: the single source of the Pulumi.yaml `config:` block (type, default,
 * description) and of validation. Descriptions are written for the person editing Pulumi.<stack>.yaml.
 */
export const configSchema = z
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
      .refine((name) => name !== "root", { message: "cannot be root: root login over SSH is turned off (accepted: any other user name, e.g. ops)" })
      .default("ops")
      .describe("The admin user created on the server; it logs in with adminSshPublicKey and uses sudo."),
    adminSshPublicKey: z
      .string()
      .regex(SSH_PUBLIC_KEY, { message: "is not an OpenSSH public key (accepted: one line such as 'ssh-ed25519 AAAA... you@laptop')" })
      .describe("The admin's OpenSSH public key, one line (e.g. the content of ~/.ssh/id_ed25519.pub)."),
    sshAllowFrom: z
      .array(cidr)
      .min(1, { message: "is empty (accepted: at least one network, e.g. your office address as 203.0.113.7/32)" })
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
      .array(z.string().regex(HOSTNAME_LABEL, { message: "is not a host name label (accepted: a-z, 0-9 and '-', e.g. grafana)" }))
      .default([])
      .describe("Further names under domain that point at the server through Cloudflare, e.g. [grafana]."),
    staticHostname: z
      .string()
      .refine((v) => v === "" || HOSTNAME_LABEL.test(v), { message: "is not a host name label (accepted: e.g. static, or empty for none)" })
      .default("")
      .describe("Optional name under domain for static files only (e.g. static): everything on it is cached at the edge."),
    staticPathPrefixes: z
      .array(z.string().regex(/^\/[A-Za-z0-9._~\/-]*\/$/, { message: 'is not a path prefix (accepted: starts and ends with "/", e.g. /assets/)' }))
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
    acmeEmail: z
      .string()
      .refine((v) => v === "" || /^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(v), { message: "is not an e-mail address (accepted: e.g. owner@example.com)" })
      .default("")
      .describe("E-mail for Let's Encrypt when cdnProxy is false (nginx then gets its certificate with certbot); unused behind Cloudflare."),
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
      .describe("Name of the R2 backup bucket. Empty: leaninfra-<stack>-backups."),
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
    drillRowTolerancePercent: z
      .number()
      .int()
      .min(0)
      .max(100)
      .default(5)
      .describe("How far a table's row count in the restore drill may differ from production, in percent (small tables must match)."),
    drillFreshnessQuery: z
      .string()
      .default("")
      .describe("SQL returning the newest timestamp in the data, e.g. SELECT max(created_at) FROM orders; the drill checks the restored copy is recent."),
    drillMaxDataAgeMinutes: z
      .number()
      .int()
      .min(1)
      .max(525600)
      .default(1560)
      .describe("How old the newest restored data may be, in minutes, before the drill fails (default 26 hours)."),
    authPaths: z
      .array(z.string().regex(/^\/[A-Za-z0-9._~\/-]*$/, { message: 'is not a path (accepted: starts with "/", e.g. /login)' }))
      .default(["/login", "/api/auth/"])
      .describe("Path prefixes of the login and auth endpoints; nginx rate-limits them per client address."),
    authRateLimitPerMinute: z
      .number()
      .int()
      .min(1)
      .max(6000)
      .default(30)
      .describe("Requests a minute one client address may make to authPaths before nginx answers 429."),
    clientMaxBodyMb: z
      .number()
      .int()
      .min(1)
      .max(1024)
      .default(25)
      .describe("Largest request body nginx accepts, in MB (uploads)."),
    postgresDatabase: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, { message: "is not a PostgreSQL identifier (accepted: a-z, 0-9 and '_', starting with a letter or '_')" })
      .default("app")
      .describe("Name of the app's database, owned by the app role postgresUser."),
    postgresUser: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, { message: "is not a PostgreSQL identifier (accepted: a-z, 0-9 and '_', starting with a letter or '_')" })
      .refine((v) => v !== "postgres", { message: "cannot be postgres, the superuser (accepted: e.g. app)" })
      .default("app")
      .describe("The app's database role; its password is generated and kept secret by Pulumi."),
    postgresMaxConnections: z
      .number()
      .int()
      .min(0)
      .max(5000)
      .default(0)
      .describe("PostgreSQL max_connections; 0 derives it from the server's memory with headroom for a launch day."),
    redisEnabled: z
      .boolean()
      .default(false)
      .describe("Run Redis on the server. Needs redisJob: add Redis only when you can name its one job."),
    redisJob: z
      .enum(["", "cache", "sessions", "queue"])
      .default("")
      .describe("Redis's one job: cache (evicts, no persistence), sessions (persistent, evicts only expiring keys) or queue (persistent, never evicts)."),
    redisMaxMemoryMb: z
      .number()
      .int()
      .min(0)
      .max(1048576)
      .default(0)
      .describe("Redis maxmemory in MB; 0 derives it from the server's memory."),
    appImage: z
      .string()
      .refine((v) => v === "" || /^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/.test(v) || /^[a-z0-9.-]+(:[0-9]+)?(\/[a-z0-9._-]+)+$/.test(v), {
        message: "is not a container image name without tag (accepted: e.g. ghcr.io/acme/shop)",
      })
      .default("")
      .describe("The product's container image, without tag (e.g. ghcr.io/acme/shop). Empty: no app deployed yet."),
    appTag: z
      .string()
      .regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/, { message: "is not an image tag (accepted: e.g. 1.8.4 or 2026-11-28.3)" })
      .default("latest")
      .describe("The release to run. Deploy = set a new tag and pulumi up; rollback = set the previous tag and pulumi up."),
    appPort: z
      .number()
      .int()
      .min(1)
      .max(65535)
      .default(8080)
      .describe("The port the app listens on inside its container."),
    appHealthPath: z
      .string()
      .regex(/^\/[A-Za-z0-9._~\/?=&-]*$/, { message: 'is not a path (accepted: starts with "/", e.g. /healthz)' })
      .default("/healthz")
      .describe("Path that answers 200 when the app can serve (it should check its database)."),
    appHealthTimeoutSeconds: z
      .number()
      .int()
      .min(5)
      .max(1800)
      .default(90)
      .describe("How long a new release may take to answer its health path before the deploy gives up and keeps the old one."),
    appDrainSeconds: z
      .number()
      .int()
      .min(0)
      .max(600)
      .default(15)
      .describe("Seconds the old release keeps running after the switch, so requests in flight finish."),
    appKeepImages: z
      .number()
      .int()
      .min(2)
      .max(50)
      .default(5)
      .describe("Releases kept on the server, so a rollback needs no registry."),
    appEnv: z
      .array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*=.*$/, { message: "is not KEY=value (accepted: e.g. LOG_LEVEL=info)" }))
      .default([])
      .describe("Plain environment of the app, as KEY=value. Secrets go in the secret leaninfra:appSecretEnv instead."),
    appMigrationCommand: z
      .array(z.string().min(1, { message: "is empty (accepted: one argument of the command, e.g. migrate)" }))
      .default([])
      .describe("One-shot command (as a list of arguments) run in the new release before traffic switches, e.g. [./manage, migrate]; empty when the app migrates itself."),
    appRegistryUser: z
      .string()
      .default("")
      .describe("User for a private registry; its password is the secret leaninfra:appRegistryPassword."),
  })
  .strict();

type ParsedConfig = z.output<typeof configSchema>;

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
  if (cfg.cdnProxy === false && cfg.acmeEmail === "") {
    problems.push({
      path: ["acmeEmail"],
      input: "",
      message: "is required when cdnProxy is false: nginx then gets its certificate from Let's Encrypt, which needs a contact address",
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
  if (cfg.serverType && cfg.serverMemoryGb === 0 && !serverTypeInfo(cfg.serverType)) {
    problems.push({
      path: ["serverMemoryGb"],
      input: 0,
      message: `cannot be read from server type ${cfg.serverType}, which infra/data/prices.json does not list (accepted: the server's RAM in GB, e.g. 8)`,
    });
  }
  if (cfg.redisEnabled === true && cfg.redisJob === "") {
    problems.push({
      path: ["redisJob"],
      input: "",
      message:
        "must name Redis's one job when redisEnabled is true: add Redis only when you can point to a clear job for it, " +
        "until then PostgreSQL does it (accepted: cache, sessions or queue)",
    });
  }
  cfg.authPaths?.forEach((prefix, index) => {
    if (prefix === "/") {
      problems.push({ path: ["authPaths", index], input: prefix, message: "would rate-limit the whole site (accepted: the login and auth prefixes, e.g. /login)" });
    } else if (cfg.authPaths?.indexOf(prefix) !== index) {
      problems.push({ path: ["authPaths", index], input: prefix, message: "is listed twice" });
    }
  });
  cfg.appEnv?.forEach((entry, index) => {
    const key = entry.split("=")[0];
    if (["DATABASE_URL", "REDIS_URL", "RELEASE", "PORT"].includes(key)) {
      problems.push({ path: ["appEnv", index], input: entry, message: `sets ${key}, which LeanInfra provides itself (accepted: any other KEY=value)` });
    }
  });
  if (cfg.hostname && cfg.domain && `${cfg.hostname}.${cfg.domain}`.length > 253) {
    problems.push({ path: ["hostname"], input: cfg.hostname, message: "makes the full host name longer than 253 characters" });
  }
  return problems;
}

export type StackConfigInput = z.input<typeof configSchema>;

export interface StackConfig extends ParsedConfig {
  /** Pulumi stack name. */
  readonly stack: string;
  /** The server's fully qualified name: <hostname>.<domain>. */
  readonly fqdn: string;
  readonly isProduction: boolean;
  /** The R2 bucket's name: backupBucketName, or leaninfra-<stack>-backups. */
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

/** leaninfra-<stack>-backups, with the stack name folded into what R2 accepts. */
export function defaultBucketName(stack: string): string {
  const slug = stack.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40) || "stack";
  return `leaninfra-${slug}-backups`;
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

function describeIssue(issue: z.core.$ZodIssue, shape: Record<string, z.ZodType>): string {
  const key = `${PROJECT}:${keyPath(issue.path)}`;
  const input = (issue as { input?: unknown }).input;
  switch (issue.code) {
    case "unrecognized_keys": {
      const known = [...Object.keys(shape), ...Object.keys(SECRET_KEYS)].sort().join(", ");
      return issue.keys.map((k) => `${PROJECT}:${k}: is not a LeanInfra setting (accepted keys: ${known})`).join("\n");
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
        : `${key}: ${shown(input)} is too small (accepted: at least ${String(issue.minimum)})`;
    case "too_big":
      return `${key}: ${shown(input)} is too large (accepted: at most ${String(issue.maximum)})`;
    default:
      return `${key}: ${shown(input)} ${issue.message}`;
  }
}

/** The declared Pulumi type of each key, used to decode the strings Pulumi hands the program. */
export function declaredType(schema: z.core.JSONSchema.BaseSchema): "string" | "integer" | "boolean" | "array" {
  const type = schema.type;
  if (type === "string" || type === "integer" || type === "boolean" || type === "array") return type;
  throw new Error(`config key type ${String(type)} cannot be declared in Pulumi.yaml`);
}

const jsonSchema = z.toJSONSchema(configSchema, { io: "input" });
const keySchemas = jsonSchema.properties as Record<string, z.core.JSONSchema.BaseSchema>;

/**
 * Pulumi passes every config value to the program as a string ("true", "20", "[\"1.2.3.4/32\"]");
 * a stack file read offline gives YAML types. Both become the declared type here; anything that
 * does not decode is left as it is, for validation to report.
 */
export function decodeRawValue(key: string, value: unknown): unknown {
  const schema = keySchemas[key];
  if (!schema || typeof value !== "string") return value;
  const type = declaredType(schema);
  if (type === "string") return value;
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

/**
 * Turns raw project config (keys without the `leaninfra:` prefix) into one frozen StackConfig, or
 * throws ConfigError listing every problem, each with its key, the value given and what is accepted.
 */
export function validateConfig(stack: string, raw: Record<string, unknown>, encryptedKeys?: readonly string[]): StackConfig {
  const decoded = Object.fromEntries(
    Object.entries(raw)
      .filter(([k]) => !(k in SECRET_KEYS))
      .map(([k, v]) => [k, decodeRawValue(k, v)]),
  );
  const shape = configSchema.shape as Record<string, z.ZodType>;
  const result = configSchema.safeParse(decoded, { reportInput: true });
  const problems = result.success ? [] : result.error.issues.flatMap((issue) => describeIssue(issue, shape).split("\n"));
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
  if (encryptedKeys) problems.push(...plaintextSecretProblems(raw, encryptedKeys));
  const stackProblem = stackNameProblem(stack);
  if (stackProblem) problems.push(stackProblem);
  if (!result.success || problems.length > 0) throw new ConfigError(stack, problems);
  const cfg = result.data;
  return Object.freeze({
    ...cfg,
    sshAllowFrom: Object.freeze([...cfg.sshAllowFrom]) as string[],
    extraHostnames: Object.freeze([...cfg.extraHostnames]) as string[],
    staticPathPrefixes: Object.freeze([...cfg.staticPathPrefixes]) as string[],
    stack,
    fqdn: `${cfg.hostname}.${cfg.domain}`,
    isProduction: cfg.environment === "production",
    bucketName: cfg.backupBucketName || defaultBucketName(stack),
    memoryMb: (cfg.serverMemoryGb || serverTypeInfo(cfg.serverType)?.memoryGb || 0) * 1024,
    vcpus: serverTypeInfo(cfg.serverType)?.vcpu ?? 2,
  });
}

/**
 * Secret project keys: read with config.requireSecret by the program, never validated in clear (the
 * offline plan cannot decrypt them). The required one is declared in Pulumi.yaml with `secret: true`;
 * the optional ones cannot be (the CLI refuses a plain default for a secret key), so the program
 * itself refuses them in plain text.
 */
export const SECRET_KEYS: Record<string, { description: string; required: boolean }> = {
  appSecretEnv: {
    description: "Secret environment of the app, one KEY=value a line (e.g. SESSION_SECRET=...). Optional; set it encrypted: pulumi config set --secret leaninfra:appSecretEnv ...",
    required: false,
  },
  appRegistryPassword: {
    description: "Password or token for appRegistryUser's private registry. Optional; set it encrypted: pulumi config set --secret leaninfra:appRegistryPassword ...",
    required: false,
  },
  backupApiToken: {
    description: "API token of the backup account (R2 admin read & write, API tokens edit). Set with: pulumi config set --secret leaninfra:backupApiToken ...",
    required: true,
  },
};

export interface PulumiConfigDeclaration {
  type: "string" | "integer" | "boolean" | "array";
  description: string;
  secret?: boolean;
  default?: unknown;
  items?: { type: string };
}

/** The Pulumi.yaml `config:` block derived from the schema; a test keeps Pulumi.yaml equal to it. */
export function pulumiConfigDeclarations(): Record<string, PulumiConfigDeclaration> {
  const out: Record<string, PulumiConfigDeclaration> = {};
  for (const [key, schema] of Object.entries(keySchemas)) {
    const declaration: PulumiConfigDeclaration = { type: declaredType(schema), description: String(schema.description) };
    if (declaration.type === "array") {
      declaration.items = { type: String((schema.items as z.core.JSONSchema.BaseSchema).type) };
    }
    if (schema.default !== undefined) declaration.default = schema.default;
    out[key] = declaration;
  }
  for (const [key, secret] of Object.entries(SECRET_KEYS)) {
    out[key] = { type: "string", description: secret.description, ...(secret.required ? { secret: true } : { default: "" }) };
  }
  return out;
}

/**
 * A secret key set in plain text: refused, value unshown. `encryptedKeys` are the keys (with or
 * without the `leaninfra:` prefix) whose value the stack file holds encrypted.
 */
export function plaintextSecretProblems(raw: Record<string, unknown>, encryptedKeys: readonly string[]): string[] {
  const encrypted = new Set(encryptedKeys.map((key) => key.replace(`${PROJECT}:`, "")));
  return Object.keys(SECRET_KEYS)
    .filter((key) => raw[key] !== undefined && raw[key] !== "" && !encrypted.has(key))
    .map(
      (key) =>
        `${PROJECT}:${key}: is stored in plain text in the stack file (value not shown; accepted: an encrypted value, set with \`pulumi config set --secret ${PROJECT}:${key}\`)`,
    );
}
