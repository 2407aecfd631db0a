import { RecordedResource } from "../../infra/mock-run";

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

/** What the mock cloud computes for a resource once "applied": addresses, PEMs, the token's value. */
export function mockCloudOutputs(r: RecordedResource): Record<string, unknown> {
  switch (r.type) {
    case "hcloud:index/primaryIp:PrimaryIp":
      return { ipAddress: r.inputs.type === "ipv4" ? "198.51.100.10" : "2001:db8:42::/64" };
    case "hcloud:index/server:Server":
      return { ipv4Address: "198.51.100.10", ipv6Address: "2001:db8:42::1" };
    case "tls:index/privateKey:PrivateKey":
      return { privateKeyPem: `-----BEGIN PRIVATE KEY----- ${r.name}` };
    case "tls:index/selfSignedCert:SelfSignedCert":
    case "tls:index/locallySignedCert:LocallySignedCert":
      return { certPem: `-----BEGIN CERTIFICATE----- ${r.name}` };
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
