import * as cloudflare from "@pulumi/cloudflare";
import * as pulumi from "@pulumi/pulumi";
import { BackupBucket } from "../components/backup-bucket";
import { Edge } from "../components/edge";
import { grafanaEdgeLabels } from "../components/grafana";
import { zoneAccountProblem } from "../components/edge/rules";
import { Host } from "../components/host";
import { AnyRoleDefinition } from "../components/host/define";
import { ConfigError, PROJECT, SECRET_KEYS, StackConfig, validateConfig } from "./config";
import { ROLES } from "./roles";
import { renderStackRoles } from "./wiring";

/** Project config as Pulumi hands it to the program: keys without the `leaninfra:` prefix. */
export function projectConfig(all: Record<string, string> = pulumi.runtime.allConfig()): Record<string, string> {
  const prefix = `${PROJECT}:`;
  return Object.fromEntries(
    Object.entries(all)
      .filter(([key]) => key.startsWith(prefix))
      .map(([key, value]) => [key.slice(prefix.length), value]),
  );
}

/** The config keys whose value the engine received encrypted (`pulumi config set --secret`). */
export function encryptedConfigKeys(): string[] {
  // The SDK exports isConfigSecret at runtime without declaring it in its types.
  const runtime = pulumi.runtime as typeof pulumi.runtime & { isConfigSecret(key: string): boolean };
  return Object.keys(runtime.allConfig()).filter((key) => runtime.isConfigSecret(key));
}

/** Validates the stack's config; invalid config stops the program before any resource exists. */
export function loadStackConfig(): StackConfig {
  try {
    const raw = projectConfig();
    // The engine hands the program decrypted config: the roles' own checks run on the clear secret
    // values too, so a bad secret stops `pulumi up` before the server exists. Problems never quote them.
    const secretValues = Object.fromEntries(Object.keys(SECRET_KEYS).map((key) => [key, raw[key]]));
    return validateConfig(pulumi.getStack(), raw, encryptedConfigKeys(), { secretValues, allConfig: pulumi.runtime.allConfig() });
  } catch (error) {
    // RunError is shown to the user without a stack trace, and `pulumi up` exits non-zero.
    if (error instanceof ConfigError) throw new pulumi.RunError(error.message);
    throw error;
  }
}

export interface StackOutputs {
  fqdn: string;
  ipv4: pulumi.Output<string>;
  ipv6: pulumi.Output<string>;
  serverId: pulumi.Output<string>;
  sshCommand: pulumi.Output<string>;
  url: string;
  hostnames: string[];
  backupBucket: pulumi.Output<string>;
  backupEndpoint: pulumi.Output<string>;
  /** Secret: `pulumi stack output --show-secrets backupPassphrase`, kept off the VM (password manager). */
  backupPassphrase: pulumi.Output<string>;
  /** Secret: Grafana's admin password, `pulumi stack output --show-secrets grafanaAdminPassword` ("" without the grafana role). */
  grafanaAdminPassword: pulumi.Output<string>;
}

export interface BuiltStack {
  outputs: StackOutputs;
  host: Host;
  edge: Edge;
  backups: BackupBucket;
  zoneId: pulumi.Output<string>;
  /** Every file rendered for the host, by path under out/<stack>/ (user data, role bundles). */
  rendered: Record<string, string>;
}

const ZONE_ID = /^[0-9a-f]{32}$/;

function zoneArgs(cfg: StackConfig): cloudflare.GetZoneArgs {
  return ZONE_ID.test(cfg.cloudflareZone)
    ? { zoneId: cfg.cloudflareZone }
    : { filter: { name: cfg.cloudflareZone || cfg.domain, account: { id: cfg.cloudflareAccountId } } };
}

/**
 * The zone's id as an output (the offline plan and the component tests, where the zone is a mock's
 * answer). A zone that belongs to another account is refused, since the backup-account check relies on it.
 */
export function zoneIdFor(cfg: StackConfig): pulumi.Output<string> {
  return cloudflare.getZoneOutput(zoneArgs(cfg)).apply((zone) => zoneIdInAccount(zone, cfg));
}

/** The zone's id, or a RunError when the zone belongs to another account than cloudflareAccountId. */
function zoneIdInAccount(zone: cloudflare.GetZoneResult, cfg: StackConfig): string {
  const problem = zoneAccountProblem({ name: zone.name, accountId: zone.account?.id }, cfg.cloudflareAccountId);
  if (problem) throw new pulumi.RunError(problem);
  return zone.id;
}

/**
 * The zone's id, looked up before anything is registered (`pulumi preview` and `up`): a missing zone,
 * or one of another account, stops the program with one message naming the key.
 */
export async function lookUpZone(cfg: StackConfig): Promise<string> {
  const args = zoneArgs(cfg);
  const wanted = args.zoneId ? `zone id ${args.zoneId}` : `zone ${args.filter?.name} in account ${cfg.cloudflareAccountId}`;
  let zone: cloudflare.GetZoneResult;
  try {
    zone = await cloudflare.getZone(args);
  } catch (error) {
    const reason = String((error as Error).message ?? error).replace(/^.*returned an error: /s, "");
    throw new pulumi.RunError(
      `leaninfra:cloudflareZone: Cloudflare has no ${wanted} that cloudflare:apiToken can read (${reason}). ` +
        "Check the zone's name or id, leaninfra:cloudflareAccountId, and the token's zone permissions.",
    );
  }
  return zoneIdInAccount(zone, cfg);
}

export interface BuildOptions {
  /** The offline plan: secrets it cannot decrypt are left unset instead of required. */
  offline?: boolean;
  /** The zone's id when already looked up (the program does, before registering anything). */
  zoneId?: string;
  /** The host roles, in order (default: infra/roles.ts); the config must have been validated with the same list. */
  roles?: readonly AnyRoleDefinition[];
}

/**
 * The backup account's own provider. Its token is a project secret; only the offline plan may run
 * without it (Pulumi.yaml also declares it, so the CLI asks for it before `pulumi up`).
 */
export function backupProvider(options: BuildOptions): cloudflare.Provider {
  const config = new pulumi.Config(PROJECT);
  const apiToken = options.offline ? config.getSecret("backupApiToken") : config.requireSecret("backupApiToken");
  return new cloudflare.Provider("backup-account", { apiToken });
}

/** Composes the components for one stack from its validated config. */
export function buildStack(cfg: StackConfig, options: BuildOptions = {}): BuiltStack {
  const cdnRanges: pulumi.Output<{ ipv4Cidrs: string[]; ipv6Cidrs: string[] }> = cfg.cdnProxy
    ? cloudflare.getIpRangesOutput({}).apply((r) => ({ ipv4Cidrs: r.ipv4Cidrs, ipv6Cidrs: r.ipv6Cidrs }))
    : pulumi.output({ ipv4Cidrs: [], ipv6Cidrs: [] });

  const host = new Host("host", {
    location: cfg.location,
    serverType: cfg.serverType,
    image: cfg.image,
    hostname: cfg.hostname,
    fqdn: cfg.fqdn,
    adminUser: cfg.adminUser,
    adminSshPublicKey: cfg.adminSshPublicKey,
    sshHostKey: cfg.sshHostKey,
    sshAllowFrom: cfg.sshAllowFrom,
    cdnProxy: cfg.cdnProxy,
    cdnRanges,
    deleteProtection: cfg.deleteProtection,
    hetznerBackups: cfg.hetznerBackups,
    volumeSizeGb: cfg.volumeSizeGb,
    swapSizeMb: cfg.swapSizeMb,
    journalMaxUseMb: cfg.journalMaxUseMb,
    labels: { project: PROJECT, stack: cfg.stack, environment: cfg.environment },
  });

  const zoneId = options.zoneId !== undefined ? pulumi.output(options.zoneId) : zoneIdFor(cfg);
  const edge = new Edge("edge", {
    zoneId,
    domain: cfg.domain,
    canonicalHost: cfg.canonicalHost,
    // Grafana's name too, when it serves one (the Origin CA certificate covers *.<domain>).
    extraHostnames: [...cfg.extraHostnames, ...grafanaEdgeLabels(cfg)],
    staticHostname: cfg.staticHostname,
    staticPathPrefixes: cfg.staticPathPrefixes,
    staticEdgeTtlSeconds: cfg.staticEdgeTtlSeconds,
    originCertValidityDays: cfg.originCertValidityDays,
    cdnProxy: cfg.cdnProxy,
    ipv4: host.ipv4,
    ipv6: host.ipv6,
  });

  const backups = new BackupBucket(
    "backups",
    {
      accountId: cfg.backupAccountId,
      bucketName: cfg.bucketName,
      locationHint: cfg.backupLocationHint,
      jurisdiction: cfg.backupJurisdiction,
      retentionDays: cfg.backupRetentionDays,
      lockDays: cfg.backupLockDays,
      dumpRetentionDays: cfg.backupDumpRetentionDays,
    },
    { providers: { cloudflare: backupProvider(options) }, protect: cfg.deleteProtection },
  );

  const origin = edge.originTls;
  const { roles, passwords } = renderStackRoles(cfg, options.roles ?? ROLES, {
    stackInputs: {
      "proxy.originTls": origin
        ? pulumi.all([origin.certificatePem, origin.privateKeyPem, origin.originPullCaPem]).apply(([certificatePem, privateKeyPem, originPullCaPem]) => ({
            certificatePem,
            privateKeyPem,
            originPullCaPem,
          }))
        : undefined,
      "proxy.cloudflareRanges": cdnRanges,
      "backups.s3": backups.s3,
    },
    // Let's Encrypt's HTTP-01 check needs the names to resolve to this server first.
    dependsOn: { proxy: cfg.cdnProxy ? undefined : edge.records },
    offline: options.offline,
  });
  host.applyRoles(roles);
  /** Keep a copy off the VM: without it the encrypted backups cannot be read. */
  const backupPassphrase = passwords.get("backup-cipher-passphrase") ?? pulumi.output("");

  // The user data as Hetzner gets it, but with a placeholder for the server's private host key.
  const rendered: Record<string, string> = { "cloud-init/user-data.yaml": host.userDataPreview };
  for (const role of roles) rendered[`bundles/${role.name}.sh`] = role.preview;

  return {
    outputs: {
      fqdn: cfg.fqdn,
      ipv4: host.ipv4,
      ipv6: host.ipv6,
      serverId: host.serverId,
      sshCommand: pulumi.interpolate`ssh ${cfg.adminUser}@${host.ipv4}`,
      url: edge.canonicalUrl,
      hostnames: edge.hostnames,
      backupBucket: backups.bucketName,
      backupEndpoint: backups.endpoint,
      backupPassphrase,
      grafanaAdminPassword: passwords.get("grafana-admin-password") ?? pulumi.secret(""),
    },
    host,
    edge,
    backups,
    zoneId,
    rendered,
  };
}
