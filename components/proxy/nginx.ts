import * as path from "node:path";
import { canonicalName, edgeHostnames, redirectedName } from "../edge/rules";
import { LAYOUT } from "../host/layout";
import { renderScript } from "../host/script";
import { ROUTES, parseSloRouteGroups, renderRouteMap } from "./request-metrics";
import { PROXY_FILES_DIR, TemplateValue, fillTemplate } from "./template";

/** Cloudflare's Origin CA certificate for nginx and the CA of the zone's origin-pull client certificate. */
export interface OriginTls {
  /** Cloudflare Origin CA certificate for domain and *.domain (PEM). */
  certificatePem: string;
  /** Its private key (PEM); lands in a root-only 0600 file. */
  privateKeyPem: string;
  /** CA of the client certificate the zone presents (authenticated origin pulls). */
  originPullCaPem: string;
}

/** Cloudflare's published address ranges: the only senders whose CF-Connecting-IP nginx believes. */
export interface CdnRanges {
  ipv4Cidrs: readonly string[];
  ipv6Cidrs: readonly string[];
}

/** How nginx gets its certificate: Cloudflare's Origin CA (behind the proxy) or Let's Encrypt (without it). */
export type ProxyTls = ({ mode: "cloudflare" } & OriginTls) | { mode: "letsencrypt"; acmeEmail: string };

/** What the renderers read: the config keys by their names, the Origin CA as tls, Cloudflare's ranges. */
export interface ProxySettings {
  domain: string;
  canonicalHost: "apex" | "www";
  /** "" or a label (e.g. "static"): serves only staticPathPrefixes (Cloudflare caches everything there), 404 the rest. */
  staticHostname: string;
  /** The path prefixes of static files, which Cloudflare caches. */
  staticPathPrefixes: readonly string[];
  /** Labels claimed by later roles (e.g. "grafana"); until then they answer 404. */
  extraHostnames: readonly string[];
  /** Behind Cloudflare's proxy: the client address comes from CF-Connecting-IP, sent by cloudflareRanges only. */
  cdnProxy: boolean;
  cloudflareRanges: CdnRanges;
  tls: ProxyTls;
  /** Path prefixes (e.g. "/login", "/api/auth/") rate-limited per client address. */
  authPaths: readonly string[];
  authRateLimitPerMinute: number;
  clientMaxBodyMb: number;
  /** Route groups of the request metrics, "name=/prefix" each (a name may repeat); none: every request of the app is "other" or "static". */
  sloRouteGroups?: readonly string[];
}

/** nginx's own files that the proxy role writes or removes. */
export const NGINX_FILES = Object.freeze({
  /** The whole main and http configuration (replaces Debian's nginx.conf). */
  httpConf: "/etc/nginx/nginx.conf",
  /** LeanInfra's servers; later roles add their own files beside it in /etc/nginx/conf.d/. */
  siteConf: "/etc/nginx/conf.d/leaninfra.conf",
  /** One JSON object per request (log_format leaninfra_json); mtail reads it for the request metrics. */
  accessLog: "/var/log/nginx/access.log",
  errorLog: "/var/log/nginx/error.log",
  /** Debian's welcome site: removed by the role (nginx.conf no longer reads sites-enabled anyway). */
  debianDefaultSite: "/etc/nginx/sites-enabled/default",
});

/** The sandboxes (systemd drop-ins) of the units the proxy role runs: files/nginx.service.conf, files/certbot.service.conf. */
export const SYSTEMD_DROP_INS = Object.freeze({
  nginx: "/etc/systemd/system/nginx.service.d/leaninfra-hardening.conf",
  /** Let's Encrypt mode only: certbot.timer runs certbot.service, which runs the deploy hook. */
  certbot: "/etc/systemd/system/certbot.service.d/leaninfra-hardening.conf",
});

/**
 * nginx's stub_status, on loopback only. Port 8080 and path /stub_status are the defaults of
 * Debian's prometheus-nginx-exporter (--nginx.scrape-uri), so it needs no arguments.
 */
export const NGINX_STATUS = Object.freeze({
  address: "127.0.0.1",
  port: 8080,
  path: "/stub_status",
  url: "http://127.0.0.1:8080/stub_status",
});

/** Let's Encrypt (tls.mode "letsencrypt"): certbot's webroot, certificate name and deploy hook. */
export const ACME = Object.freeze({
  /** certbot --webroot writes .well-known/acme-challenge/<token> here; port 80 serves it. */
  webroot: "/var/www/letsencrypt",
  /** certbot --cert-name: the lineage is /etc/letsencrypt/live/leaninfra. */
  certName: "leaninfra",
  lineage: "/etc/letsencrypt/live/leaninfra",
  /** Copies the lineage's certificate and key to LAYOUT.tls and reloads nginx; saved in certbot's renewal config. */
  deployHook: "/etc/leaninfra/certbot-deploy-hook.sh",
  /** The names the current certificate was requested for, one a line: a change requests a new one. */
  namesStamp: "/var/lib/leaninfra/proxy/letsencrypt-names",
});

/** The internal URI of the maintenance page (never reachable from outside: `internal`). */
export const MAINTENANCE_URI = "/__leaninfra/maintenance.html";
/** Seconds a client is asked to wait (Retry-After) while the app does not answer. */
export const MAINTENANCE_RETRY_AFTER_SECONDS = 30;
/** The tags (SYSLOG_IDENTIFIER) of nginx's lines in the journal. */
export const NGINX_JOURNAL_TAGS = Object.freeze({ access: "nginx_access", error: "nginx_error" });
/** nginx's syslog destination: journald's socket for syslog messages. */
const JOURNAL_SOCKET = "unix:/dev/log";

/** Sets the route group of the servers that answer without the app: their requests are not counted. */
export const NOT_APP_ROUTE_LINE = `set $leaninfra_route ${ROUTES.notApp};`;

/** The limit_req zone of the auth paths. */
export const AUTH_ZONE = "leaninfra_auth";

/** What the deploy-owned files hold until the first deploy writes them. */
export const FIRST_UPSTREAM_LINE = `server 127.0.0.1:${LAYOUT.app.slotPorts.blue};`;
export const FIRST_RELEASE_LINE = `set $leaninfra_release "none";`;

/** The names nginx answers for, grouped by what it does with them. */
export interface ProxyHostnames {
  /** Served by the app. */
  canonical: string;
  /** The static host's name, when there is one: only the static path prefixes answer there. */
  static?: string;
  /** 301 to the canonical name (www or the apex). */
  redirected: string;
  /** 404 until a later role claims them. */
  extra: string[];
  /** Every name, in the Edge's order: the certificate must cover these. */
  all: string[];
}

export function proxyHostnames(s: Pick<ProxySettings, "domain" | "canonicalHost" | "staticHostname" | "extraHostnames">): ProxyHostnames {
  const canonical = canonicalName(s);
  return {
    canonical,
    ...(s.staticHostname ? { static: `${s.staticHostname}.${s.domain}` } : {}),
    redirected: redirectedName(s),
    extra: s.extraHostnames.map((label) => `${label}.${s.domain}`),
    all: edgeHostnames(s),
  };
}

/**
 * Requests a client may send at once before the steady rate applies: ten seconds' worth. With
 * `nodelay`, burst + 1 requests pass at once, then one every 60/rate seconds; the rest get 429.
 */
export function authBurst(perMinute: number): number {
  return Math.max(1, Math.ceil(perMinute / 6));
}

/** A template or snippet of components/proxy/files/ that the renderers fill. */
const TEMPLATES = Object.freeze({
  httpConf: "nginx.conf",
  siteConf: "leaninfra.conf",
  tlsCloudflare: "tls-cloudflare.conf",
  tlsLetsencrypt: "tls-letsencrypt.conf",
  realIpCloudflare: "real-ip-cloudflare.conf",
  securityHeaders: "security-headers.conf",
  acmeChallenge: "acme-challenge.conf",
  proxyToApp: "proxy-to-app.conf",
  maintenancePage: "maintenance.html",
  certbotDeployHook: "certbot-deploy-hook.sh",
});

/**
 * Fields of every access log line, in order: [JSON key, nginx value, quoted]. The first four come
 * from a fixed alphabet (no client text), so mtail's pattern (files/leaninfra-nginx.mtail) reads
 * them anchored at the line's start, whatever a client puts in the fields after them.
 */
export const ACCESS_LOG_FIELDS: ReadonlyArray<readonly [string, string, boolean]> = [
  ["time", "$time_iso8601", true],
  // The route group (sloRouteGroups) of the request metrics.
  ["route", "$leaninfra_route", true],
  ["status", "$status", false],
  ["request_time", "$request_time", false],
  ["request_id", "$leaninfra_request_id", true],
  ["client", "$remote_addr", true],
  ["method", "$request_method", true],
  ["host", "$host", true],
  // The path without the query string: queries may carry tokens.
  ["path", "$leaninfra_path", true],
  ["bytes", "$body_bytes_sent", false],
  ["upstream_response_time", "$upstream_response_time", true],
  ["upstream", "$upstream_addr", true],
  ["release", "$leaninfra_release", true],
  ["protocol", "$server_protocol", true],
  ["user_agent", "$http_user_agent", true],
  ["cf_ray", "$http_cf_ray", true],
];

function indent(lines: readonly string[], depth: number): string[] {
  const pad = "    ".repeat(depth);
  return lines.map((line) => (line === "" ? "" : `${pad}${line}`));
}

/** A snippet file's lines, to insert into a bigger template or block. */
function snippetLines(file: string, values: Readonly<Record<string, TemplateValue>> = {}): string[] {
  return fillTemplate(file, values).replace(/\n$/, "").split("\n");
}

function logFormat(): string[] {
  return [
    "log_format leaninfra_json escape=json",
    ...ACCESS_LOG_FIELDS.map(([key, value, quoted], i) => {
      const open = i === 0 ? "{" : "";
      const close = i === ACCESS_LOG_FIELDS.length - 1 ? "}" : ",";
      const v = quoted ? `"${value}"` : value;
      return `    '${open}"${key}":${v}${close}'${i === ACCESS_LOG_FIELDS.length - 1 ? ";" : ""}`;
    }),
  ];
}

/**
 * /etc/nginx/nginx.conf (files/nginx.conf): the main and http settings (TLS, client certificates, real
 * client address, request ids, the JSON access log, gzip, body size, the auth rate-limit zone).
 * Servers are in renderNginxSiteConf's file, read through conf.d.
 */
export function renderNginxHttpConf(s: ProxySettings): string {
  const certificate =
    s.tls.mode === "cloudflare"
      ? snippetLines(TEMPLATES.tlsCloudflare, { certificate: LAYOUT.tls.certificate, private_key: LAYOUT.tls.privateKey, origin_pull_ca: LAYOUT.tls.originPullCa })
      : snippetLines(TEMPLATES.tlsLetsencrypt, { certificate: LAYOUT.tls.certificate, private_key: LAYOUT.tls.privateKey, deploy_hook: ACME.deployHook });
  const ranges = [...s.cloudflareRanges.ipv4Cidrs, ...s.cloudflareRanges.ipv6Cidrs];
  const realIp = s.cdnProxy ? [...snippetLines(TEMPLATES.realIpCloudflare, { set_real_ip_from: ranges.map((cidr) => `set_real_ip_from ${cidr};`) }), ""] : [];
  return fillTemplate(TEMPLATES.httpConf, {
    site_conf: NGINX_FILES.siteConf,
    error_log: NGINX_FILES.errorLog,
    certificate,
    real_ip: realIp,
    release_file: LAYOUT.nginx.release,
    route_map: renderRouteMap(parseSloRouteGroups(s.sloRouteGroups ?? []), s.staticPathPrefixes),
    log_format: logFormat(),
    access_log: NGINX_FILES.accessLog,
    journal_access_log: `syslog:server=${JOURNAL_SOCKET},tag=${NGINX_JOURNAL_TAGS.access},nohostname`,
    journal_error_log: `syslog:server=${JOURNAL_SOCKET},tag=${NGINX_JOURNAL_TAGS.error},nohostname`,
    client_max_body_mb: s.clientMaxBodyMb,
    auth_rate_per_minute: s.authRateLimitPerMinute,
    auth_zone: AUTH_ZONE,
  });
}

const LISTEN_TLS = ["listen 443 ssl;", "listen [::]:443 ssl;"];

function block(header: string, body: readonly string[]): string[] {
  return [`${header} {`, ...indent(body, 1), "}"];
}

/**
 * /etc/nginx/conf.d/leaninfra.conf (files/leaninfra.conf): the upstream (its server line from the
 * deploy's file), port 80 (redirects, ACME challenges), the canonical site and static host, the
 * www/apex redirect, the extra names (404), a default server that drops unknown names and IP literals
 * (444), and stub_status on loopback.
 */
export function renderNginxSiteConf(s: ProxySettings): string {
  const names = proxyHostnames(s);
  const burst = authBurst(s.authRateLimitPerMinute);
  const securityHeaders = snippetLines(TEMPLATES.securityHeaders);

  const authLocations = s.authPaths.flatMap((prefix) =>
    block(`location ^~ ${prefix}`, [`limit_req zone=${AUTH_ZONE} burst=${burst} nodelay;`, "proxy_pass http://leaninfra_app;"]),
  );
  const extraNamesServer =
    names.extra.length === 0
      ? []
      : [
          "",
          "# Names a later role will serve; until then, nothing here.",
          ...block("server", [...LISTEN_TLS, `server_name ${names.extra.join(" ")};`, `include ${LAYOUT.nginx.release};`, NOT_APP_ROUTE_LINE, ...securityHeaders, "return 404;"]),
        ];

  const proxyToApp = snippetLines(TEMPLATES.proxyToApp, {
    maintenance_uri: MAINTENANCE_URI,
    maintenance_page: LAYOUT.nginx.maintenancePage,
    security_headers: securityHeaders,
    retry_after_seconds: MAINTENANCE_RETRY_AFTER_SECONDS,
  });
  // Static files carry no secret: the only answers nginx compresses.
  const staticLocations = s.staticPathPrefixes.flatMap((prefix) => block(`location ^~ ${prefix}`, ["gzip on;", "proxy_pass http://leaninfra_app;"]));
  // Cloudflare caches everything on the static host (components/edge/rules.ts): only static files may answer there.
  const staticServer = names.static
    ? [
        "",
        "# The static host: only the static path prefixes reach the app; anything else is 404, so no page",
        "# of the app can ever be cached at the edge under this name.",
        ...block("server", [
          ...LISTEN_TLS,
          `server_name ${names.static};`,
          `include ${LAYOUT.nginx.release};`,
          ...securityHeaders,
          "",
          ...proxyToApp,
          "",
          ...staticLocations,
          ...block("location /", [NOT_APP_ROUTE_LINE, "return 404;"]),
        ]),
      ]
    : [];
  return fillTemplate(TEMPLATES.siteConf, {
    first_upstream_line: FIRST_UPSTREAM_LINE,
    upstream_file: LAYOUT.nginx.upstream,
    release_file: LAYOUT.nginx.release,
    not_app_route: NOT_APP_ROUTE_LINE,
    all_names: names.all.join(" "),
    acme_challenge: s.tls.mode === "letsencrypt" ? snippetLines(TEMPLATES.acmeChallenge, { webroot: ACME.webroot }) : [],
    redirected_name: names.redirected,
    canonical_name: names.canonical,
    security_headers: securityHeaders,
    served_names: names.canonical,
    proxy_to_app: proxyToApp,
    static_server: staticServer,
    auth_locations:
      authLocations.length > 0
        ? [`# Auth paths: ${burst + 1} requests at once, then ${s.authRateLimitPerMinute} a minute per client address; 429 beyond.`, ...authLocations]
        : [],
    static_locations: staticLocations.length > 0 ? ["# Static path prefixes: compressed (no secret in them).", ...staticLocations] : [],
    extra_names_server: extraNamesServer,
    status_url: NGINX_STATUS.url,
    status_address: NGINX_STATUS.address,
    status_port: NGINX_STATUS.port,
    status_path: NGINX_STATUS.path,
  });
}

/** The page nginx serves (503) while the app does not answer (files/maintenance.html): self-contained, no outside assets. */
export function renderMaintenancePage(s: Pick<ProxySettings, "domain">): string {
  return fillTemplate(TEMPLATES.maintenancePage, { domain: s.domain });
}

/**
 * certbot's deploy hook (files/certbot-deploy-hook.sh, without Cloudflare's Origin CA): after each
 * issuance and renewal, copies the lineage's certificate and key to where nginx reads them, checks the
 * config and reloads nginx.
 */
export function renderCertbotDeployHook(): string {
  return renderScript(path.join(PROXY_FILES_DIR, TEMPLATES.certbotDeployHook), {
    default_lineage: ACME.lineage,
    cert: LAYOUT.tls.certificate,
    key: LAYOUT.tls.privateKey,
  });
}
