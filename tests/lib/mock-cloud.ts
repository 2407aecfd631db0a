// The one source of canned cloud values: Pulumi's mocks (component tests) and the engine tier's
// stand-in provider plugins both answer from here, so the two tiers see the same cloud.
import type { RecordedResource } from "../../infra/mock-run";
import { ed25519Key } from "./ed25519-key";

export const SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn9lq7g1xv3Y2Yl7Zb3eVq9tW4k8dG0ZcU2n6pYb1Xq owner@laptop";
export const MAIN_ACCOUNT = "0123456789abcdef0123456789abcdef";
export const BACKUP_ACCOUNT = "fedcba9876543210fedcba9876543210";

/** The smallest valid project config (keys without the `leaninfra:` prefix). */
export const MINIMAL_CONFIG = {
  domain: "example.com",
  adminSshPublicKey: SSH_KEY,
  sshAllowFrom: ["203.0.113.7/32", "2001:db8:1234::/48"],
  cloudflareAccountId: MAIN_ACCOUNT,
  backupAccountId: BACKUP_ACCOUNT,
};

/** The zones the canned Cloudflare knows: example.com in the main account, example.net in another. */
export const CANNED_ZONES = [
  { id: "aaaabbbbccccddddeeeeffff00001111", name: "example.com", account: { id: MAIN_ACCOUNT } },
  { id: "9999888877776666555544443333aaaa", name: "example.net", account: { id: "00000000000000000000000000000099" } },
];

/** Answers `cloudflare.getZone` as the live API would for the canned zones (by id, or by name and account). */
export function cannedZone(args: Record<string, unknown>): Record<string, unknown> {
  const filter = (args.filter ?? {}) as { name?: string; account?: { id?: string } };
  const zone = args.zoneId
    ? CANNED_ZONES.find((z) => z.id === args.zoneId)
    : CANNED_ZONES.find((z) => z.name === filter.name && (!filter.account?.id || z.account.id === filter.account.id));
  if (!zone) throw new Error(`no zone matches ${JSON.stringify(args)} (Cloudflare answered: zone not found)`);
  return { ...args, id: zone.id, zoneId: zone.id, name: zone.name, account: zone.account, status: "active" };
}

/** What a resource looks like to `mockCloudOutputs`: its type, its name and its (plain) inputs. */
export type CannedResource = Pick<RecordedResource, "type" | "name" | "inputs">;

/** What the cloud computes for a resource once created: addresses, PEMs, the token's value. */
export function mockCloudOutputs(r: CannedResource): Record<string, unknown> {
  switch (r.type) {
    case "hcloud:index/primaryIp:PrimaryIp":
      // Hetzner gives an IPv6 Primary IP as a /64: its first address, and the network.
      return r.inputs.type === "ipv4" ? { ipAddress: "198.51.100.10" } : { ipAddress: "2001:db8:42::", ipNetwork: "2001:db8:42::/64" };
    case "hcloud:index/server:Server":
      return { ipv4Address: "198.51.100.10", ipv6Address: "2001:db8:42::1" };
    case "tls:index/privateKey:PrivateKey": {
      // ED25519 keys are real (sshd loads the host key); the others keep a readable stand-in, with the same outputs.
      const { algorithm: _, ...key } = ed25519Key(r.name);
      if (r.inputs.algorithm === "ED25519") return key;
      return { ...Object.fromEntries(Object.keys(key).map((k) => [k, `(${k} of ${r.name})`])), privateKeyPem: `-----BEGIN PRIVATE KEY----- ${r.name}` };
    }
    case "tls:index/selfSignedCert:SelfSignedCert":
    case "tls:index/locallySignedCert:LocallySignedCert":
      return { certPem: `-----BEGIN CERTIFICATE----- ${r.name}` };
    case "tls:index/certRequest:CertRequest":
      return { certRequestPem: `-----BEGIN CERTIFICATE REQUEST----- ${r.name}` };
    case "cloudflare:index/originCaCertificate:OriginCaCertificate":
      return { certificate: "-----BEGIN CERTIFICATE----- origin" };
    case "random:index/randomPassword:RandomPassword":
      return { result: `${r.name.replace(/[^A-Za-z0-9]/g, "")}0123456789abcdefABCDEF` };
    case "cloudflare:index/accountToken:AccountToken":
      return { value: `token-value-of-${r.name}` };
    default:
      return {};
  }
}
