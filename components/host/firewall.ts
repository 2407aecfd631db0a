export interface FirewallRuleSpec {
  direction: "in";
  protocol: "tcp" | "icmp";
  port?: string;
  sourceIps: string[];
  description: string;
}

export interface FirewallSettings {
  /** Networks allowed to reach SSH. */
  sshAllowFrom: readonly string[];
  /** When true, 80/443 admit only `cdnRanges`; when false, the whole internet. */
  cdnProxy: boolean;
  /** Cloudflare's published ranges (IPv4 and IPv6), used when cdnProxy is on. */
  cdnRanges: { ipv4Cidrs: readonly string[]; ipv6Cidrs: readonly string[] };
}

const ANYWHERE = ["0.0.0.0/0", "::/0"];

/**
 * The Host firewall's inbound rules: SSH from the owner's networks, HTTP(S) from Cloudflare (or
 * anyone when the proxy is off), ICMP for path MTU discovery and ping. Hetzner drops everything else.
 */
export function firewallRules(settings: FirewallSettings): FirewallRuleSpec[] {
  const webSources = settings.cdnProxy ? [...settings.cdnRanges.ipv4Cidrs, ...settings.cdnRanges.ipv6Cidrs] : ANYWHERE;
  if (webSources.length === 0) {
    throw new Error("firewallRules: cdnProxy is on but Cloudflare's IP ranges are empty; refusing to close ports 80/443 to everyone");
  }
  const web = settings.cdnProxy ? "Cloudflare's published ranges" : "anywhere (CDN proxy off)";
  return [
    { direction: "in", protocol: "tcp", port: "22", sourceIps: [...settings.sshAllowFrom], description: "SSH from the owner's networks" },
    { direction: "in", protocol: "tcp", port: "80", sourceIps: webSources, description: `HTTP from ${web}` },
    { direction: "in", protocol: "tcp", port: "443", sourceIps: webSources, description: `HTTPS from ${web}` },
    { direction: "in", protocol: "icmp", sourceIps: ANYWHERE, description: "ICMP (ping, path MTU discovery)" },
  ];
}
