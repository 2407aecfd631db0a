import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { appRole, dockerRole } from "../components/app";
import { appSettingsProblems } from "../components/app/settings";
import { BackupBucket, S3Settings } from "../components/backup-bucket";
import { backupsRole } from "../components/backups";
import { baseRole } from "../components/base";
import { Edge } from "../components/edge";
import { RoleBundle } from "../components/host";
import { renderRoleBundle } from "../components/host/bundle";
import { HostRole } from "../components/host/role";
import { LAYOUT } from "../components/host/layout";
import { postgresRole } from "../components/postgres";
import { POSTGRES_DEFAULT_PORT } from "../components/postgres/config";
import { ProxyTls, proxyRole } from "../components/proxy";
import { redisRole } from "../components/redis";
import { REDIS_PORT } from "../components/redis/config";
import { PROJECT, StackConfig } from "./config";
import cloudflareIps from "./data/cloudflare-ips.json";

/** A role ready for the Host, and its text for out/<stack>/ with placeholders where secrets go. */
export interface RenderedRole extends RoleBundle {
  /** The bundle as `npm run plan` writes it: same script, secrets and cloud-issued values replaced by placeholders. */
  preview: string;
}

const PLACEHOLDER_PEM = (what: string) => `-----BEGIN CERTIFICATE-----\n(${what}: issued on pulumi up)\n-----END CERTIFICATE-----\n`;
const PLACEHOLDER_SECRET = "generated-on-pulumi-up-kept-secret";
const PLACEHOLDER_KEY = "-----BEGIN PRIVATE KEY-----\n(secret: generated on pulumi up, kept in Pulumi state)\n-----END PRIVATE KEY-----\n";

/**
 * One role from values that may be secret or known only after apply: the bundle is an output (secret
 * when any input is), and the preview is the same role rendered from placeholders.
 */
export function roleFromOutputs<T>(
  name: string,
  values: pulumi.Input<T>,
  placeholder: T,
  build: (values: T) => HostRole,
  dependsOn?: pulumi.Resource[],
): RenderedRole {
  return {
    name,
    bundle: pulumi.output(values).apply((v) => renderRoleBundle(build(v as T))),
    preview: renderRoleBundle(build(placeholder)),
    dependsOn,
  };
}

/** DATABASE_URL with the placeholder password: the plan's app bundle and the up-front secret checks. */
function placeholderDatabaseUrl(cfg: StackConfig): string {
  return `postgresql://${cfg.postgresUser}:${PLACEHOLDER_SECRET}@${LAYOUT.dockerHostName}:${POSTGRES_DEFAULT_PORT}/${cfg.postgresDatabase}`;
}

/** The app's settings that come from plain config. */
function appBaseSettings(cfg: StackConfig) {
  return {
    image: cfg.appImage,
    tag: cfg.appTag,
    env: [...cfg.appEnv],
    containerPort: cfg.appPort,
    healthPath: cfg.appHealthPath,
    healthTimeoutSeconds: cfg.appHealthTimeoutSeconds,
    drainSeconds: cfg.appDrainSeconds,
    keepImages: cfg.appKeepImages,
    migrationCommand: cfg.appMigrationCommand.length ? [...cfg.appMigrationCommand] : undefined,
    registryUser: cfg.appRegistryUser || undefined,
  };
}

const APP_SETTING_KEYS: Record<string, string> = {
  image: "appImage",
  tag: "appTag",
  env: "appEnv",
  secretEnv: "appSecretEnv",
  registryUser: "appRegistryUser",
  registryPassword: "appRegistryPassword",
  containerPort: "appPort",
  healthPath: "appHealthPath",
};

/**
 * The app role's own checks on the app's secret settings, run on their clear values before anything
 * is registered (the engine hands the program decrypted config), so a bad secret stops `pulumi up` at
 * the start instead of failing the app role after the server exists. Problems name the config key;
 * secret values are never quoted (appSettingsProblems does not quote them).
 */
export function appSecretProblems(cfg: StackConfig, secrets: { appSecretEnv?: string; appRegistryPassword?: string }): string[] {
  if (!cfg.appImage) return [];
  const problems = appSettingsProblems({
    ...appBaseSettings(cfg),
    databaseUrl: placeholderDatabaseUrl(cfg),
    secretEnv: secrets.appSecretEnv ?? "",
    registryPassword: secrets.appRegistryPassword || undefined,
  });
  return problems.map((problem) => {
    const field = /^[a-zA-Z]+/.exec(problem)?.[0] ?? "";
    return APP_SETTING_KEYS[field] ? `${PROJECT}:${APP_SETTING_KEYS[field]}${problem.slice(field.length)}` : `${PROJECT}: app ${problem}`;
  });
}

export interface RoleInputs {
  cfg: StackConfig;
  edge: Edge;
  backups: BackupBucket;
  cdnRanges: pulumi.Output<{ ipv4Cidrs: string[]; ipv6Cidrs: string[] }>;
}

/** A generated password: stored only in Pulumi state (encrypted) and root-only files on the server. */
function password(name: string): pulumi.Output<string> {
  // Letters and digits only: they need no escaping in URLs, pgpass lines or env files.
  // The provider marks `result` secret; saying so here keeps it secret whatever runs the program.
  return pulumi.secret(new random.RandomPassword(name, { length: 40, special: false }).result);
}

/** Where the app reaches its services: the stack's secrets put together, for the app role. */
export interface ServiceUrls {
  databaseUrl: pulumi.Output<string>;
  redisUrl?: pulumi.Output<string>;
}

/** Every role of the stack, in the order the Host applies them, and the URLs the app gets. */
export function stackRoles({ cfg, edge, backups, cdnRanges }: RoleInputs): {
  roles: RenderedRole[];
  urls: ServiceUrls;
  /** Keep a copy off the VM: without it the encrypted backups cannot be read. */
  backupPassphrase: pulumi.Output<string>;
} {
  const plain = (name: string, role: HostRole): RenderedRole => {
    const bundle = renderRoleBundle(role);
    return { name, bundle, preview: bundle };
  };
  // Docker comes right after base: PostgreSQL and Redis listen on its bridge for the app.
  const roles: RenderedRole[] = [plain("base", baseRole({ adminUser: cfg.adminUser })), plain("docker", dockerRole())];

  const databasePassword = password("postgres-app-password");
  const postgresSettings = { memoryMb: cfg.memoryMb, vcpus: cfg.vcpus, maxConnections: cfg.postgresMaxConnections, database: cfg.postgresDatabase, user: cfg.postgresUser };
  roles.push(roleFromOutputs("postgres", databasePassword, PLACEHOLDER_SECRET, (pw) => postgresRole({ ...postgresSettings, password: pw })));
  const urls: ServiceUrls = {
    databaseUrl: pulumi.secret(
      pulumi.interpolate`postgresql://${cfg.postgresUser}:${databasePassword}@${LAYOUT.dockerHostName}:${POSTGRES_DEFAULT_PORT}/${cfg.postgresDatabase}`,
    ),
  };

  if (cfg.redisEnabled && cfg.redisJob !== "") {
    const job = cfg.redisJob;
    const redisPasswords = pulumi.all([password("redis-app-password"), password("redis-admin-password")]);
    roles.push(
      roleFromOutputs("redis", redisPasswords, [PLACEHOLDER_SECRET, `${PLACEHOLDER_SECRET}-admin`], ([pw, admin]) =>
        redisRole({ job, memoryMb: cfg.memoryMb, maxMemoryMb: cfg.redisMaxMemoryMb, password: pw, adminPassword: admin }),
      ),
    );
    urls.redisUrl = pulumi.secret(redisPasswords.apply(([pw]) => `redis://default:${pw}@${LAYOUT.dockerHostName}:${REDIS_PORT}/0`));
  }

  const proxyBase = {
    domain: cfg.domain,
    canonicalHost: cfg.canonicalHost,
    staticHostname: cfg.staticHostname,
    extraHostnames: [...cfg.extraHostnames],
    proxied: cfg.cdnProxy,
    authPaths: [...cfg.authPaths],
    authRateLimitPerMinute: cfg.authRateLimitPerMinute,
    clientMaxBodyMb: cfg.clientMaxBodyMb,
  };
  const origin = edge.originTls;
  const tls: pulumi.Input<ProxyTls> = origin
    ? pulumi.all([origin.certificatePem, origin.privateKeyPem, origin.originPullCaPem]).apply(([certificatePem, privateKeyPem, originPullCaPem]) => ({
        mode: "cloudflare" as const,
        certificatePem,
        privateKeyPem,
        originPullCaPem,
      }))
    : { mode: "letsencrypt" as const, acmeEmail: cfg.acmeEmail };
  const placeholderTls: ProxyTls = origin
    ? { mode: "cloudflare", certificatePem: PLACEHOLDER_PEM("Cloudflare Origin CA certificate"), privateKeyPem: PLACEHOLDER_KEY, originPullCaPem: PLACEHOLDER_PEM("origin-pull CA") }
    : { mode: "letsencrypt", acmeEmail: cfg.acmeEmail };
  interface ProxyOutputs {
    tls: ProxyTls;
    cloudflareRanges: { ipv4Cidrs: string[]; ipv6Cidrs: string[] };
  }
  const proxyOutputs: pulumi.Output<ProxyOutputs> = pulumi.output(tls).apply((t) => cdnRanges.apply((cloudflareRanges) => ({ tls: t as ProxyTls, cloudflareRanges })));
  roles.push(
    roleFromOutputs<ProxyOutputs>(
      "proxy",
      proxyOutputs,
      { tls: placeholderTls, cloudflareRanges: cfg.cdnProxy ? { ipv4Cidrs: cloudflareIps.ipv4Cidrs, ipv6Cidrs: cloudflareIps.ipv6Cidrs } : { ipv4Cidrs: [], ipv6Cidrs: [] } },
      (v) => proxyRole({ ...proxyBase, tls: v.tls, cloudflareRanges: v.cloudflareRanges }),
      // Let's Encrypt's HTTP-01 check needs the names to resolve to this server first.
      cfg.cdnProxy ? undefined : edge.records,
    ),
  );
  if (cfg.appImage) {
    type AppSecrets = { databaseUrl: string; redisUrl?: string; secretEnv?: string; registryPassword?: string };
    const config = new pulumi.Config(PROJECT);
    const secrets: pulumi.Output<AppSecrets> = pulumi
      .all([urls.databaseUrl, urls.redisUrl, config.getSecret("appSecretEnv"), config.getSecret("appRegistryPassword")])
      .apply(([databaseUrl, redisUrl, secretEnv, registryPassword]) => ({ databaseUrl, redisUrl, secretEnv, registryPassword }));
    const appBase = appBaseSettings(cfg);
    roles.push(
      roleFromOutputs<AppSecrets>(
        "app",
        secrets,
        {
          databaseUrl: placeholderDatabaseUrl(cfg),
          redisUrl: urls.redisUrl ? `redis://default:${PLACEHOLDER_SECRET}@${LAYOUT.dockerHostName}:${REDIS_PORT}/0` : undefined,
          secretEnv: "",
          registryPassword: cfg.appRegistryUser ? PLACEHOLDER_SECRET : "",
        },
        (v) =>
          appRole({
            ...appBase,
            databaseUrl: v.databaseUrl,
            redisUrl: v.redisUrl,
            secretEnv: v.secretEnv ?? "",
            registryPassword: appBase.registryUser ? v.registryPassword : undefined,
          }),
      ),
    );
  }
  // Backups last: they need PostgreSQL, and the drill the app's serving release.
  const passphrase = password("backup-cipher-passphrase");
  const placeholderS3: S3Settings = {
    endpoint: `https://${cfg.backupAccountId}.r2.cloudflarestorage.com`,
    region: "auto",
    bucket: cfg.bucketName,
    accessKeyId: "bucket-token-id-set-on-pulumi-up",
    secretAccessKey: "bucket-token-secret-set-on-pulumi-up",
  };
  roles.push(
    roleFromOutputs<[S3Settings, string]>("backups", pulumi.all([backups.s3, passphrase]), [placeholderS3, PLACEHOLDER_SECRET], ([s3, cipherPassphrase]) =>
      backupsRole({
        s3,
        cipherPassphrase,
        retentionDays: cfg.backupRetentionDays,
        lockDays: cfg.backupLockDays,
        database: cfg.postgresDatabase,
        vcpus: cfg.vcpus,
        hostName: cfg.hostname,
        drill: {
          rowTolerancePercent: cfg.drillRowTolerancePercent,
          maxDataAgeMinutes: cfg.drillMaxDataAgeMinutes,
          ...(cfg.drillFreshnessQuery ? { freshnessQuery: cfg.drillFreshnessQuery } : {}),
        },
      }),
    ),
  );
  return { roles, urls, backupPassphrase: passphrase };
}
