/**
 * What each resource type of the plan is, in the inventory's words. A type the plan registers and this
 * table lacks stops `npm run docs` (tests/component/docs.test.ts runs it on two stacks).
 */
export const RESOURCE_TYPES: Readonly<Record<string, string>> = Object.freeze({
  "leaninfra:host:Host": "LeanInfra component: the server, its addresses, firewall, volume and host roles",
  "leaninfra:edge:Edge": "LeanInfra component: the Cloudflare zone's records, settings, rules and origin certificate",
  "leaninfra:backup:BackupBucket": "LeanInfra component: the R2 backup bucket in the backup account",
  "pulumi:providers:cloudflare": "a second Cloudflare provider, logged in to the backup account with backupApiToken",
  "hcloud:index/server:Server": "the Hetzner server (Debian 13)",
  "hcloud:index/primaryIp:PrimaryIp": "a Hetzner Primary IP (IPv4, IPv6): kept across server rebuilds",
  "hcloud:index/rdns:Rdns": "reverse DNS of a Primary IP: the server's full name",
  "hcloud:index/firewall:Firewall": "the Hetzner firewall: 22 from sshAllowFrom, 80/443 from Cloudflare (or anyone), ICMP",
  "hcloud:index/sshKey:SshKey": "the admin's SSH public key in the Hetzner project",
  "hcloud:index/volume:Volume": "the data volume (/srv/data: PostgreSQL, metrics, logs)",
  "hcloud:index/volumeAttachment:VolumeAttachment": "the volume attached to the server",
  "cloudflare:index/dnsRecord:DnsRecord": "an A or AAAA record of the site's names, pointing at the Primary IPs",
  "cloudflare:index/zoneSetting:ZoneSetting": "a zone setting (SSL Full strict, Always Use HTTPS, minimum TLS, HTTP/3)",
  "cloudflare:index/ruleset:Ruleset": "a zone ruleset: the canonical-host redirect or the static files' cache rule",
  "cloudflare:index/originCaCertificate:OriginCaCertificate": "the Cloudflare Origin CA certificate nginx serves",
  "cloudflare:index/authenticatedOriginPullsCertificate:AuthenticatedOriginPullsCertificate": "the zone's client certificate for authenticated origin pulls",
  "cloudflare:index/authenticatedOriginPullsSettings:AuthenticatedOriginPullsSettings": "authenticated origin pulls turned on for the zone",
  "cloudflare:index/r2Bucket:R2Bucket": "the R2 bucket holding pgBackRest's backups, WAL and the monthly dumps",
  "cloudflare:index/r2BucketLifecycle:R2BucketLifecycle": "the bucket's lifecycle: backups, dumps and stale uploads expire",
  "cloudflare:index/r2BucketLock:R2BucketLock": "the bucket lock: backups cannot be deleted or overwritten for backupLockDays",
  "cloudflare:index/accountToken:AccountToken": "the bucket-scoped token the server's backups use (S3 credentials)",
  "random:index/randomPassword:RandomPassword": "a generated password, kept encrypted in Pulumi state",
  "tls:index/privateKey:PrivateKey": "a generated private key (SSH host key, origin key, origin-pull CA and client keys), kept in Pulumi state",
  "tls:index/certRequest:CertRequest": "a certificate signing request (only the CSR leaves Pulumi)",
  "tls:index/selfSignedCert:SelfSignedCert": "the stack's own origin-pull CA",
  "tls:index/locallySignedCert:LocallySignedCert": "the origin-pull client certificate, signed by the stack's CA",
  "command:local:Command": "the host key check on your machine before any role runs",
  "command:remote:Command": "one host role applied over SSH (its bundle runs when its digest changes)",
});

/** What a resource type is; throws for a type the table lacks, naming where to add it. */
export function describeResourceType(type: string): string {
  const what = RESOURCE_TYPES[type];
  if (!what) throw new Error(`resource type ${type} is not described: add it to infra/docs/resource-types.ts`);
  return what;
}
