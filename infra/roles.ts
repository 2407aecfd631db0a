import * as pulumi from "@pulumi/pulumi";
import { baseRole } from "../components/base";
import { Edge } from "../components/edge";
import { RoleBundle } from "../components/host";
import { renderRoleBundle } from "../components/host/bundle";
import { HostRole } from "../components/host/role";
import { ProxyTls, proxyRole } from "../components/proxy";
import { StackConfig } from "./config";
import cloudflareIps from "./data/cloudflare-ips.json";

/** A role ready for the Host, and its text for out/<stack>/ with placeholders where secrets go. */
export interface RenderedRole extends RoleBundle {
  /** The bundle as `npm run plan` writes it: same script, secrets and cloud-issued values replaced by placeholders. */
  preview: string;
}

const PLACEHOLDER_PEM = (what: string) => `-----BEGIN CERTIFICATE-----\n(${what}: issued on pulumi up)\n-----END CERTIFICATE-----\n`;
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

export interface RoleInputs {
  cfg: StackConfig;
  edge: Edge;
  cdnRanges: pulumi.Output<{ ipv4Cidrs: string[]; ipv6Cidrs: string[] }>;
}

/** Every role of the stack, in the order the Host applies them. */
export function stackRoles({ cfg, edge, cdnRanges }: RoleInputs): RenderedRole[] {
  const base = renderRoleBundle(baseRole({ adminUser: cfg.adminUser }));
  const roles: RenderedRole[] = [{ name: "base", bundle: base, preview: base }];

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
  return roles;
}
