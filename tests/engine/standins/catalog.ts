// What each stand-in provider knows: for every resource type the program creates, the inputs it
// checks, the inputs whose change replaces the resource, what the cloud computes, and when a delete
// is refused; for every function, its canned answer. Computed values come from tests/lib/mock-cloud.ts,
// the same ones the component tests' mocks return.
//
// Replacements were read from the real providers' schemas (ForceNew / RequiresReplace):
//   hcloud      hetznercloud/terraform-provider-hcloud v1.68.0 internal/*/resource.go (pulumi-hcloud
//               1.41 bridges a 1.67/1.68 release; `datacenter`, removed in 1.67, was ForceNew before);
//   cloudflare  cloudflare/terraform-provider-cloudflare v5.22.0 internal/services/*/schema.go (same
//               replace rules as the v5.19.1 that pulumi-cloudflare 6.x bridges);
//   random      hashicorp/terraform-provider-random v3.9.0 internal/provider/resource_password.go;
//   tls         hashicorp/terraform-provider-tls d72d90e1 internal/provider/resource_*.go;
//   command     pulumi/pulumi-command v1.2.1 provider/pkg/provider/{local,remote} (only `triggers`
//               replaces; any other input change is an update that runs the command again; the
//               connection's hostKey is read by x/crypto ssh.ParseAuthorizedKey, remote/connection.go).
import ipaddr from "ipaddr.js";
import { z } from "zod";
import { SNAPSHOT_CALLS } from "../../../infra/offline-calls";
import { CannedResource, cannedZone, mockCloudOutputs } from "../../lib/mock-cloud";

export const PACKAGES = ["hcloud", "cloudflare", "random", "tls", "command"] as const;
export type PackageName = (typeof PACKAGES)[number];

export function isPackageName(name: string | undefined): name is PackageName {
  return (PACKAGES as readonly string[]).includes(name ?? "");
}

/** The version the program's npm package asks the engine for (its package.json), so pins stay in one place. */
export function packageVersion(pkg: PackageName): string {
  return (require(`@pulumi/${pkg}/package.json`) as { version: string }).version;
}

// Pulumi's wire constants (sdk/nodejs/runtime/rpc.ts), written out so that a stand-in starts without
// loading the whole SDK: each engine command starts one plugin process per provider.
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
export const SIG = "4dabf18193072939515e22adb298388d";
export const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";
export const OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4";

/** A value as the provider sees it, with secret and output wrappers taken off (unknowns stay unknown). */
export function plain(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") {
    const record = value as Record<string, unknown>;
    if (record[SIG] === SECRET_SIG) return plain(record.value);
    if (record[SIG] === OUTPUT_SIG) return "value" in record ? plain(record.value) : UNKNOWN;
    return Object.fromEntries(Object.entries(record).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

/** Any schema, or a value still unknown at preview (checked once it is known). */
const k = <T extends z.ZodType>(schema: T) => z.union([z.literal(UNKNOWN), schema]);
const str = k(z.string().min(1));
const bool = k(z.boolean());
const int = k(z.number().int());
/** hcloud ids: strings in Pulumi, numbers in hcloud inputs. */
const hcloudId = k(z.number().int().positive());
const cfId = k(z.string().regex(/^[0-9a-f]{32}$/, "expected a 32-hex-digit Cloudflare id"));
const list = <T extends z.ZodType>(item: T) => k(z.array(item));
// Hetzner's label rule (API reference, "Labels"): keys and values up to 63 characters of [A-Za-z0-9._-], alphanumeric ends.
const LABEL = /^([a-zA-Z0-9]([-_.a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)?$/;
const labels = k(z.record(z.string().regex(/^([a-z0-9.-]+\/)?[a-zA-Z0-9]([-_.a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$/), z.string().regex(LABEL)));
const isAddress = (value: unknown, family: "ipv4" | "ipv6") => typeof value === "string" && ipaddr.isValid(value) && ipaddr.parse(value).kind() === family;

export interface ResourceSpec {
  /** The inputs the program relies on, as the real provider would check them. */
  inputs: z.ZodType;
  /** Inputs whose change replaces the resource instead of updating it. */
  replaceOnChanges: string[];
  /** The real provider fills `name` when the program leaves it out (Pulumi's auto-naming). */
  autoName?: boolean;
  /** Inputs the real provider keeps at their first value: a later change shows no diff at all. */
  fixedAfterCreate?: string[];
  /** The real provider cannot update in place: a planned update fails when applied. */
  noUpdate?: boolean;
  /** Rules across inputs (known values only), as property and reason. */
  crossCheck?: (inputs: Record<string, unknown>) => { property: string; reason: string }[];
  /** What the cloud computes on create (addresses, PEMs, secrets' values). */
  outputs: (resource: CannedResource) => Record<string, unknown>;
  /** Why the cloud refuses a delete, if it does. */
  refuseDelete?: (state: Record<string, unknown>) => string | undefined;
}

type Spec = Omit<ResourceSpec, "outputs" | "inputs"> & { inputs: Record<string, z.ZodType>; required?: string[]; outputs?: ResourceSpec["outputs"] };

function spec(s: Spec): ResourceSpec {
  const required = new Set(s.required ?? []);
  const shape = Object.fromEntries(Object.entries(s.inputs).map(([key, schema]) => [key, required.has(key) ? schema : schema.optional()]));
  return { ...s, inputs: z.looseObject(shape), outputs: s.outputs ?? mockCloudOutputs };
}

// Hetzner's API refuses to delete a protected resource (error code "protected"); the provider does not lift it.
const hetznerProtected = (what: string) => (state: Record<string, unknown>) =>
  state.deleteProtection === true ? `hcloud: ${what} deletion is protected (protected). Turn delete protection off first.` : undefined;

const firewallRule = z.looseObject({
  direction: k(z.enum(["in", "out"])),
  protocol: k(z.enum(["tcp", "udp", "icmp", "gre", "esp"])),
  port: k(z.string().regex(/^(\d+(-\d+)?|any)$/)).optional(),
  sourceIps: list(k(z.string())).optional(),
  description: k(z.string()).optional(),
});

const hcloud: Record<string, ResourceSpec> = {
  "hcloud:index/sshKey:SshKey": spec({
    inputs: { name: str, publicKey: str, labels },
    required: ["publicKey"],
    replaceOnChanges: ["publicKey"],
    autoName: true,
  }),
  "hcloud:index/primaryIp:PrimaryIp": spec({
    inputs: { name: str, type: k(z.enum(["ipv4", "ipv6"])), assigneeType: k(z.literal("server")), autoDelete: bool, location: str, datacenter: str, deleteProtection: bool, labels },
    required: ["type", "assigneeType", "autoDelete"],
    replaceOnChanges: ["type", "location", "datacenter"],
    autoName: true,
    refuseDelete: hetznerProtected("primary IP"),
  }),
  "hcloud:index/volume:Volume": spec({
    inputs: { name: str, size: k(z.number().int().min(10).max(10240)), location: str, format: k(z.enum(["ext4", "xfs"])), deleteProtection: bool, labels },
    required: ["size"],
    replaceOnChanges: ["location"],
    autoName: true,
    refuseDelete: hetznerProtected("volume"),
  }),
  "hcloud:index/firewall:Firewall": spec({
    inputs: { name: str, rules: list(firewallRule), labels },
    replaceOnChanges: [],
    autoName: true,
  }),
  "hcloud:index/server:Server": spec({
    inputs: {
      name: str,
      serverType: str,
      image: str,
      location: str,
      sshKeys: list(str),
      publicNets: list(z.looseObject({ ipv4Enabled: bool.optional(), ipv4: hcloudId.optional(), ipv6Enabled: bool.optional(), ipv6: hcloudId.optional() })),
      firewallIds: list(hcloudId),
      // Hetzner's API limit on user data.
      userData: k(z.string().max(32 * 1024, "user data is limited to 32 KiB")),
      backups: bool,
      deleteProtection: bool,
      rebuildProtection: bool,
      shutdownBeforeDeletion: bool,
      labels,
    },
    required: ["serverType"],
    replaceOnChanges: ["image", "location", "datacenter", "userData", "sshKeys"],
    autoName: true,
    refuseDelete: hetznerProtected("server"),
  }),
  "hcloud:index/volumeAttachment:VolumeAttachment": spec({
    inputs: { serverId: hcloudId, volumeId: hcloudId, automount: bool },
    required: ["serverId", "volumeId"],
    replaceOnChanges: ["serverId", "volumeId"],
    noUpdate: true,
  }),
  "hcloud:index/rdns:Rdns": spec({
    inputs: { dnsPtr: str, ipAddress: k(z.string().refine((v) => ipaddr.isValid(v), "expected an IP address")), primaryIpId: hcloudId, serverId: hcloudId },
    required: ["dnsPtr", "ipAddress"],
    replaceOnChanges: ["ipAddress", "primaryIpId", "serverId"],
  }),
};

const cloudflare: Record<string, ResourceSpec> = {
  "cloudflare:index/zoneSetting:ZoneSetting": spec({
    inputs: { zoneId: cfId, settingId: str, value: k(z.unknown()) },
    required: ["zoneId", "settingId", "value"],
    replaceOnChanges: ["zoneId", "settingId"],
  }),
  "cloudflare:index/dnsRecord:DnsRecord": spec({
    inputs: { zoneId: cfId, name: str, type: k(z.enum(["A", "AAAA", "CNAME", "TXT", "MX", "CAA", "NS", "SRV"])), content: str, ttl: k(z.union([z.literal(1), z.number().int().min(30).max(86400)])), proxied: bool, comment: k(z.string().max(100)) },
    required: ["zoneId", "name", "type", "ttl"],
    replaceOnChanges: ["zoneId", "type"],
    // Cloudflare refuses an A record that is not one IPv4 address, and an AAAA that is not one IPv6 address.
    crossCheck: ({ type, content }) =>
      (type === "A" || type === "AAAA") && content !== UNKNOWN && !isAddress(content, type === "A" ? "ipv4" : "ipv6")
        ? [{ property: "content", reason: `${JSON.stringify(content)} is not a valid ${type === "A" ? "IPv4" : "IPv6"} address` }]
        : [],
  }),
  "cloudflare:index/ruleset:Ruleset": spec({
    inputs: {
      zoneId: cfId,
      accountId: cfId,
      name: str,
      kind: k(z.enum(["managed", "custom", "root", "zone"])),
      phase: str,
      description: k(z.string()),
      rules: list(z.looseObject({ expression: str, action: str })),
    },
    required: ["name", "kind", "phase"],
    replaceOnChanges: ["zoneId", "accountId", "kind", "phase", "name"],
  }),
  "cloudflare:index/originCaCertificate:OriginCaCertificate": spec({
    inputs: {
      csr: str,
      hostnames: list(str),
      requestType: k(z.enum(["origin-rsa", "origin-ecc", "keyless-certificate"])),
      requestedValidity: k(z.union([7, 30, 90, 365, 730, 1095, 5475].map((d) => z.literal(d)) as unknown as [z.ZodLiteral<number>, z.ZodLiteral<number>])),
    },
    required: ["csr", "hostnames", "requestType"],
    replaceOnChanges: ["csr", "hostnames", "requestType", "requestedValidity"],
  }),
  "cloudflare:index/authenticatedOriginPullsCertificate:AuthenticatedOriginPullsCertificate": spec({
    inputs: { zoneId: cfId, certificate: str, privateKey: str },
    required: ["zoneId", "certificate", "privateKey"],
    replaceOnChanges: ["zoneId", "certificate"],
  }),
  "cloudflare:index/authenticatedOriginPullsSettings:AuthenticatedOriginPullsSettings": spec({
    inputs: { zoneId: cfId, enabled: bool },
    required: ["zoneId", "enabled"],
    replaceOnChanges: ["zoneId"],
  }),
  "cloudflare:index/r2Bucket:R2Bucket": spec({
    inputs: {
      accountId: cfId,
      name: k(z.string().regex(/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/, "3-63 lowercase letters, digits and hyphens")),
      location: k(z.enum(["apac", "eeur", "enam", "weur", "wnam", "oc", "APAC", "EEUR", "ENAM", "WEUR", "WNAM", "OC"])),
      jurisdiction: k(z.enum(["default", "eu", "fedramp"])),
      storageClass: k(z.enum(["Standard", "InfrequentAccess"])),
    },
    required: ["accountId", "name"],
    replaceOnChanges: ["accountId", "name"],
    // The provider resets a planned location to the stored one: R2 cannot move a bucket.
    fixedAfterCreate: ["location"],
  }),
  "cloudflare:index/r2BucketLifecycle:R2BucketLifecycle": spec({
    inputs: { accountId: cfId, bucketName: str, jurisdiction: k(z.enum(["default", "eu", "fedramp"])), rules: list(z.looseObject({ id: str, enabled: bool })) },
    required: ["accountId", "bucketName"],
    replaceOnChanges: ["accountId", "bucketName"],
  }),
  "cloudflare:index/r2BucketLock:R2BucketLock": spec({
    inputs: { accountId: cfId, bucketName: str, jurisdiction: k(z.enum(["default", "eu", "fedramp"])), rules: list(z.looseObject({ id: str, enabled: bool })) },
    required: ["accountId", "bucketName"],
    replaceOnChanges: ["accountId", "bucketName"],
  }),
  "cloudflare:index/accountToken:AccountToken": spec({
    inputs: {
      accountId: cfId,
      name: str,
      policies: list(z.looseObject({ effect: k(z.enum(["allow", "deny"])), permissionGroups: list(z.looseObject({ id: cfId })), resources: k(z.unknown()) })),
    },
    required: ["accountId", "name", "policies"],
    replaceOnChanges: ["accountId"],
  }),
};

const random: Record<string, ResourceSpec> = {
  "random:index/randomPassword:RandomPassword": spec({
    inputs: { length: k(z.number().int().min(1)), special: bool, keepers: k(z.record(z.string(), z.unknown())) },
    required: ["length"],
    replaceOnChanges: ["length", "special", "upper", "lower", "numeric", "number", "minLower", "minUpper", "minNumeric", "minSpecial", "overrideSpecial", "keepers"],
  }),
};

const tls: Record<string, ResourceSpec> = {
  "tls:index/privateKey:PrivateKey": spec({
    inputs: { algorithm: k(z.enum(["RSA", "ECDSA", "ED25519"])), ecdsaCurve: k(z.enum(["P224", "P256", "P384", "P521"])), rsaBits: int },
    required: ["algorithm"],
    replaceOnChanges: ["algorithm", "ecdsaCurve", "rsaBits"],
  }),
  "tls:index/certRequest:CertRequest": spec({
    inputs: { privateKeyPem: str, subject: k(z.looseObject({})), dnsNames: list(str) },
    required: ["privateKeyPem"],
    replaceOnChanges: ["privateKeyPem", "subject", "dnsNames", "ipAddresses", "uris"],
  }),
  "tls:index/selfSignedCert:SelfSignedCert": spec({
    inputs: { privateKeyPem: str, subject: k(z.looseObject({})), validityPeriodHours: k(z.number().int().min(0)), allowedUses: list(str), isCaCertificate: bool },
    required: ["privateKeyPem", "validityPeriodHours", "allowedUses"],
    replaceOnChanges: ["privateKeyPem", "subject", "validityPeriodHours", "allowedUses", "isCaCertificate", "dnsNames", "ipAddresses", "uris", "setSubjectKeyId", "setAuthorityKeyId"],
  }),
  "tls:index/locallySignedCert:LocallySignedCert": spec({
    inputs: { certRequestPem: str, caPrivateKeyPem: str, caCertPem: str, validityPeriodHours: k(z.number().int().min(0)), allowedUses: list(str), earlyRenewalHours: int, isCaCertificate: bool },
    required: ["certRequestPem", "caPrivateKeyPem", "caCertPem", "validityPeriodHours", "allowedUses"],
    replaceOnChanges: ["certRequestPem", "caPrivateKeyPem", "caCertPem", "validityPeriodHours", "allowedUses", "isCaCertificate", "setSubjectKeyId"],
  }),
};

/**
 * Whether x/crypto's ssh.ParseAuthorizedKey, which @pulumi/command runs on `connection.hostKey`, reads
 * the line: a key type, then base64 whose first SSH string is that type.
 */
function isAuthorizedKeyLine(line: string): boolean {
  const [type, data] = line.trim().split(/\s+/);
  if (!type || !data || !/^[A-Za-z0-9+/]+={0,2}$/.test(data)) return false;
  const blob = Buffer.from(data, "base64");
  if (blob.length < 4) return false;
  const length = blob.readUInt32BE(0);
  return blob.length >= 4 + length && blob.subarray(4, 4 + length).toString("latin1") === type;
}

const command: Record<string, ResourceSpec> = {
  "command:local:Command": spec({
    inputs: {
      create: str,
      update: str,
      delete: str,
      stdin: k(z.string()),
      interpreter: list(str),
      dir: str,
      environment: k(z.record(z.string(), z.string())),
      triggers: list(z.unknown()),
      logging: k(z.enum(["stdout", "stderr", "stdoutAndStderr", "none"])),
    },
    replaceOnChanges: ["triggers"],
    outputs: () => ({ stdout: "", stderr: "" }),
  }),
  "command:remote:Command": spec({
    inputs: {
      connection: k(
        z.looseObject({
          host: str,
          user: str,
          port: int,
          dialErrorLimit: int,
          perDialTimeout: int,
          // The provider fails the resource with "failed to parse host key" otherwise.
          hostKey: k(z.string().refine(isAuthorizedKeyLine, "failed to parse host key: expected one authorized_keys line, e.g. ssh-ed25519 AAAA...")),
        }),
      ),
      create: str,
      update: str,
      delete: str,
      stdin: k(z.string()),
      triggers: list(z.unknown()),
      logging: k(z.enum(["stdout", "stderr", "stdoutAndStderr", "none"])),
    },
    required: ["connection"],
    replaceOnChanges: ["triggers"],
    outputs: () => ({ stdout: "", stderr: "" }),
  }),
};

export interface PackageCatalog {
  resources: Record<string, ResourceSpec>;
  functions: Record<string, (args: Record<string, unknown>) => Record<string, unknown>>;
}

const offline = (token: string) => SNAPSHOT_CALLS[token];

export const CATALOG: Record<PackageName, PackageCatalog> = {
  hcloud: { resources: hcloud, functions: {} },
  cloudflare: {
    resources: cloudflare,
    functions: {
      "cloudflare:index/getZone:getZone": cannedZone,
      "cloudflare:index/getIpRanges:getIpRanges": offline("cloudflare:index/getIpRanges:getIpRanges"),
      "cloudflare:index/getAccountApiTokenPermissionGroupsList:getAccountApiTokenPermissionGroupsList": offline(
        "cloudflare:index/getAccountApiTokenPermissionGroupsList:getAccountApiTokenPermissionGroupsList",
      ),
    },
  },
  random: { resources: random, functions: {} },
  tls: { resources: tls, functions: {} },
  command: { resources: command, functions: {} },
};

/** The output keys the stand-in adds on create, which are not inputs and so never part of a diff. */
export function computedKeys(type: string): Set<string> {
  for (const pkg of PACKAGES) {
    const resource = CATALOG[pkg].resources[type];
    if (resource) return new Set(Object.keys(resource.outputs({ type, name: "x", inputs: {} })));
  }
  return new Set();
}

/** The check failures of `inputs` against `spec`, as the engine shows them (property path, reason). */
export function problems(spec: ResourceSpec, inputs: Record<string, unknown>): { property: string; reason: string }[] {
  const values = plain(inputs) as Record<string, unknown>;
  const result = spec.inputs.safeParse(values);
  // A value that is not unknown failed its schema: report the schema's own issue, not "invalid union".
  const flatten = (issue: z.core.$ZodIssue, prefix: PropertyKey[]): { property: string; reason: string }[] => {
    const path = [...prefix, ...issue.path];
    if (issue.code === "invalid_union" && issue.errors.length === 2) return issue.errors[1].flatMap((inner) => flatten(inner, path));
    return [{ property: path.map(String).join("."), reason: issue.message }];
  };
  const issues = result.success ? [] : result.error.issues.flatMap((issue) => flatten(issue, []));
  return [...issues, ...(spec.crossCheck?.(values) ?? [])];
}
