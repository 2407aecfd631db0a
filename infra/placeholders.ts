import type { S3Settings } from "../components/backup-bucket";
import { r2Endpoint } from "../components/backup-bucket/policy";
import type { CdnRanges, OriginTls } from "../components/proxy";
import type { StackConfig } from "./config";
import cloudflareIps from "./data/cloudflare-ips.json";

const placeholderPem = (what: string) => `-----BEGIN CERTIFICATE-----\n(${what}: issued on pulumi up)\n-----END CERTIFICATE-----\n`;
const PLACEHOLDER_KEY = "-----BEGIN PRIVATE KEY-----\n(secret: generated on pulumi up, kept in Pulumi state)\n-----END PRIVATE KEY-----\n";

/**
 * What the stack's cloud components give the roles ("role.input"), as placeholders: the offline
 * plan renders the roles from them, and the config check runs the roles' own checks on them. The
 * real values are wired in infra/stack.ts under the same names.
 */
export function stackInputPlaceholders(cfg: StackConfig): Record<string, unknown> {
  const originTls: OriginTls | undefined = cfg.cdnProxy
    ? { certificatePem: placeholderPem("Cloudflare Origin CA certificate"), privateKeyPem: PLACEHOLDER_KEY, originPullCaPem: placeholderPem("origin-pull CA") }
    : undefined;
  // The dated snapshot; `pulumi up` reads the live list.
  const cloudflareRanges: CdnRanges = cfg.cdnProxy ? { ipv4Cidrs: cloudflareIps.ipv4Cidrs, ipv6Cidrs: cloudflareIps.ipv6Cidrs } : { ipv4Cidrs: [], ipv6Cidrs: [] };
  // BackupBucket's own derivation from the same keys, so out/ shows the endpoint `pulumi up` uses (a bucket
  // in a jurisdiction has its own host); tests/component/plan.test.ts compares the two backups bundles.
  const s3: S3Settings = {
    endpoint: r2Endpoint(cfg.backupAccountId, cfg.backupJurisdiction),
    region: "auto",
    bucket: cfg.bucketName,
    accessKeyId: "bucket-token-id-set-on-pulumi-up",
    secretAccessKey: "bucket-token-secret-set-on-pulumi-up",
  };
  return { "proxy.originTls": originTls, "proxy.cloudflareRanges": cloudflareRanges, "backups.s3": s3 };
}
