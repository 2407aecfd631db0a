import * as cloudflare from "@pulumi/cloudflare";
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import { EdgeNames, ZONE_SETTINGS, cacheRuleExpression, canonicalName, edgeHostnames, redirectRule } from "./rules";

export interface EdgeArgs extends EdgeNames {
  zoneId: pulumi.Input<string>;
  /** The Host's addresses. */
  ipv4: pulumi.Input<string>;
  ipv6: pulumi.Input<string>;
  /** Through Cloudflare's proxy (CDN, origin certificate, authenticated origin pulls) or plain DNS. */
  cdnProxy: boolean;
  staticPathPrefixes: readonly string[];
  staticEdgeTtlSeconds: number;
  originCertValidityDays: number;
}

/** What nginx needs to terminate TLS for Cloudflare and refuse everyone else; all PEM. */
export interface OriginTls {
  certificatePem: pulumi.Output<string>;
  /** Secret: lives only in Pulumi state (encrypted) and, later, a root-only file on the server. */
  privateKeyPem: pulumi.Output<string>;
  /** The CA of the client certificate Cloudflare presents (authenticated origin pulls). */
  originPullCaPem: pulumi.Output<string>;
}

const HOUR = 1;
const DAY = 24 * HOUR;

/**
 * Cloudflare in front of the Host: DNS for every name, zone TLS settings, a cache rule for static
 * files, the www/apex redirect, an Origin CA certificate for nginx and authenticated origin pulls.
 * With the proxy off it is plain DNS, and nginx gets its certificate from Let's Encrypt instead.
 */
export class Edge extends pulumi.ComponentResource {
  public readonly hostnames: string[];
  public readonly canonicalUrl: string;
  public readonly records: cloudflare.DnsRecord[] = [];
  /** Undefined when the proxy is off. */
  public readonly originTls?: OriginTls;

  constructor(name: string, args: EdgeArgs, opts?: pulumi.ComponentResourceOptions) {
    super("leaninfra:edge:Edge", name, {}, opts);
    const child = { parent: this };
    this.hostnames = edgeHostnames(args);
    this.canonicalUrl = `https://${canonicalName(args)}`;

    for (const hostname of this.hostnames) {
      const label = hostname === args.domain ? "apex" : hostname.slice(0, -(args.domain.length + 1));
      for (const [type, content] of [["A", args.ipv4], ["AAAA", args.ipv6]] as const) {
        this.records.push(new cloudflare.DnsRecord(
          `${name}-${label}-${type.toLowerCase()}`,
          {
            zoneId: args.zoneId,
            name: hostname,
            type,
            content,
            proxied: args.cdnProxy,
            // 1 means "automatic", the only TTL Cloudflare allows on proxied records.
            ttl: args.cdnProxy ? 1 : 300,
            comment: "Managed by LeanInfra (Pulumi): points at the Host's Primary IP",
          },
          child,
        ));
      }
    }

    for (const setting of ZONE_SETTINGS) {
      new cloudflare.ZoneSetting(`${name}-setting-${setting.id}`, { zoneId: args.zoneId, settingId: setting.id, value: setting.value }, child);
    }

    const cacheExpression = cacheRuleExpression(args);
    if (args.cdnProxy && cacheExpression) {
      new cloudflare.Ruleset(
        `${name}-cache-rules`,
        {
          zoneId: args.zoneId,
          kind: "zone",
          phase: "http_request_cache_settings",
          name: "LeanInfra cache rules",
          description: "Static files are cached at the edge; everything else goes to the origin uncached.",
          rules: [
            {
              description: "Cache static files at the edge",
              expression: cacheExpression,
              action: "set_cache_settings",
              actionParameters: {
                cache: true,
                edgeTtl: { mode: "override_origin", default: args.staticEdgeTtlSeconds },
                browserTtl: { mode: "respect_origin" },
              },
              enabled: true,
            },
          ],
        },
        child,
      );
    }

    if (args.cdnProxy) {
      const redirect = redirectRule(args);
      new cloudflare.Ruleset(
        `${name}-redirect-rules`,
        {
          zoneId: args.zoneId,
          kind: "zone",
          phase: "http_request_dynamic_redirect",
          name: "LeanInfra redirects",
          description: `One canonical host: ${canonicalName(args)}`,
          rules: [
            {
              description: `Redirect to ${canonicalName(args)}`,
              expression: redirect.expression,
              action: "redirect",
              actionParameters: {
                fromValue: { statusCode: 301, preserveQueryString: true, targetUrl: { expression: redirect.targetExpression } },
              },
              enabled: true,
            },
          ],
        },
        child,
      );
      this.originTls = this.originTlsFor(name, args, child);
    }

    this.registerOutputs({ hostnames: this.hostnames, canonicalUrl: this.canonicalUrl });
  }

  private originTlsFor(name: string, args: EdgeArgs, child: pulumi.CustomResourceOptions): OriginTls {
    // Origin CA: the key is generated here and stays in Pulumi state (encrypted); only the CSR goes to Cloudflare.
    const originKey = new tls.PrivateKey(`${name}-origin-key`, { algorithm: "ECDSA", ecdsaCurve: "P256" }, child);
    const originCsr = new tls.CertRequest(
      `${name}-origin-csr`,
      { privateKeyPem: originKey.privateKeyPem, subject: { commonName: args.domain, organization: "LeanInfra origin" } },
      child,
    );
    const originCert = new cloudflare.OriginCaCertificate(
      `${name}-origin-cert`,
      {
        csr: originCsr.certRequestPem,
        hostnames: [args.domain, `*.${args.domain}`],
        requestType: "origin-ecc",
        requestedValidity: args.originCertValidityDays,
      },
      child,
    );

    // Authenticated origin pulls with the zone's own client certificate, not Cloudflare's shared
    // one, which every Cloudflare customer's traffic presents.
    const caKey = new tls.PrivateKey(`${name}-origin-pull-ca-key`, { algorithm: "ECDSA", ecdsaCurve: "P256" }, child);
    const caCert = new tls.SelfSignedCert(
      `${name}-origin-pull-ca`,
      {
        privateKeyPem: caKey.privateKeyPem,
        subject: { commonName: `LeanInfra origin-pull CA for ${args.domain}` },
        isCaCertificate: true,
        allowedUses: ["cert_signing", "crl_signing"],
        validityPeriodHours: 10 * 365 * DAY,
      },
      child,
    );
    const clientKey = new tls.PrivateKey(`${name}-origin-pull-client-key`, { algorithm: "ECDSA", ecdsaCurve: "P256" }, child);
    const clientCsr = new tls.CertRequest(
      `${name}-origin-pull-client-csr`,
      { privateKeyPem: clientKey.privateKeyPem, subject: { commonName: `Cloudflare origin pull for ${args.domain}` } },
      child,
    );
    const clientCert = new tls.LocallySignedCert(
      `${name}-origin-pull-client-cert`,
      {
        certRequestPem: clientCsr.certRequestPem,
        caPrivateKeyPem: caKey.privateKeyPem,
        caCertPem: caCert.certPem,
        allowedUses: ["client_auth", "digital_signature"],
        validityPeriodHours: 5 * 365 * DAY,
        // `pulumi up` in the last 60 days issues a new one.
        earlyRenewalHours: 60 * DAY,
      },
      child,
    );
    const uploaded = new cloudflare.AuthenticatedOriginPullsCertificate(
      `${name}-origin-pull-cert`,
      { zoneId: args.zoneId, certificate: clientCert.certPem, privateKey: clientKey.privateKeyPem },
      child,
    );
    new cloudflare.AuthenticatedOriginPullsSettings(`${name}-origin-pulls`, { zoneId: args.zoneId, enabled: true }, { ...child, dependsOn: [uploaded] });

    return {
      certificatePem: originCert.certificate,
      privateKeyPem: pulumi.secret(originKey.privateKeyPem),
      originPullCaPem: caCert.certPem,
    };
  }
}
