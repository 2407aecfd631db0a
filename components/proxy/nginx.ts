import { canonicalName, edgeHostnames, redirectedName } from "../edge/rules";
import { LAYOUT } from "../host/layout";

/** How nginx gets its certificate: Cloudflare's Origin CA (behind the proxy) or Let's Encrypt (without it). */
export type ProxyTls =
  | {
      mode: "cloudflare";
      /** Cloudflare Origin CA certificate for domain and *.domain (PEM). */
      certificatePem: string;
      /** Its private key (PEM); lands in a root-only 0600 file. */
      privateKeyPem: string;
      /** CA of the client certificate the zone presents (authenticated origin pulls). */
      originPullCaPem: string;
    }
  | { mode: "letsencrypt"; acmeEmail: string };

export interface ProxySettings {
  domain: string;
  canonicalHost: "apex" | "www";
  /** "" or a label (e.g. "static"): served by the app like the site. */
  staticHostname: string;
  /** Labels claimed by later roles (e.g. "grafana"); until then they answer 404. */
  extraHostnames: string[];
  /** Behind Cloudflare's proxy: the client address comes from CF-Connecting-IP, sent by these ranges only. */
  proxied: boolean;
  cloudflareRanges: { ipv4Cidrs: string[]; ipv6Cidrs: string[] };
  tls: ProxyTls;
  /** Path prefixes (e.g. "/login", "/api/auth/") rate-limited per client address. */
  authPaths: string[];
  authRateLimitPerMinute: number;
  clientMaxBodyMb: number;
}

/** nginx's own files that the proxy role writes or removes. */
export const NGINX_FILES = Object.freeze({
  /** The whole main and http configuration (replaces Debian's nginx.conf). */
  httpConf: "/etc/nginx/nginx.conf",
  /** LeanInfra's servers; later roles add their own files beside it in /etc/nginx/conf.d/. */
  siteConf: "/etc/nginx/conf.d/leaninfra.conf",
  /** One JSON object per request (log_format leaninfra_json). */
  accessLog: "/var/log/nginx/access.log",
  errorLog: "/var/log/nginx/error.log",
  /** Debian's welcome site: removed by the role (nginx.conf no longer reads sites-enabled anyway). */
  debianDefaultSite: "/etc/nginx/sites-enabled/default",
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
/** The limit_req zone of the auth paths. */
export const AUTH_ZONE = "leaninfra_auth";

/** What the deploy-owned files hold until the first deploy writes them. */
export const FIRST_UPSTREAM_LINE = `server 127.0.0.1:${LAYOUT.app.slotPorts.blue};`;
export const FIRST_RELEASE_LINE = `set $leaninfra_release "none";`;

/** The names nginx answers for, grouped by what it does with them. */
export interface ProxyHostnames {
  /** Served by the app: the canonical name, then the static host when there is one. */
  served: string[];
  canonical: string;
  /** 301 to the canonical name (www or the apex). */
  redirected: string;
  /** 404 until a later role claims them. */
  extra: string[];
  /** Every name, in the Edge's order: the certificate must cover these. */
  all: string[];
}

export function proxyHostnames(s: Pick<ProxySettings, "domain" | "canonicalHost" | "staticHostname" | "extraHostnames">): ProxyHostnames {
  const canonical = canonicalName(s);
  const served = [canonical, ...(s.staticHostname ? [`${s.staticHostname}.${s.domain}`] : [])];
  return {
    served,
    canonical,
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

const MANAGED = `# Managed by LeanInfra (role "proxy"); edit the role in the repository, not this file.`;

// Mozilla's "intermediate" TLS 1.2 ciphers; TLS 1.3 suites are OpenSSL's defaults.
const TLS12_CIPHERS = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
  "DHE-RSA-AES128-GCM-SHA256",
  "DHE-RSA-AES256-GCM-SHA384",
].join(":");

const GZIP_TYPES = [
  "text/plain",
  "text/css",
  "text/xml",
  "text/javascript",
  "application/javascript",
  "application/json",
  "application/manifest+json",
  "application/xml",
  "application/rss+xml",
  "application/atom+xml",
  "image/svg+xml",
];

/** Fields of every access log line, in order: [JSON key, nginx value, quoted]. */
export const ACCESS_LOG_FIELDS: ReadonlyArray<readonly [string, string, boolean]> = [
  ["time", "$time_iso8601", true],
  ["request_id", "$leaninfra_request_id", true],
  ["client", "$remote_addr", true],
  ["method", "$request_method", true],
  ["host", "$host", true],
  // The path without the query string: queries may carry tokens.
  ["path", "$leaninfra_path", true],
  ["status", "$status", false],
  ["bytes", "$body_bytes_sent", false],
  ["request_time", "$request_time", false],
  ["upstream_response_time", "$upstream_response_time", true],
  ["upstream", "$upstream_addr", true],
  ["release", "$leaninfra_release", true],
  ["protocol", "$server_protocol", true],
  ["user_agent", "$http_user_agent", true],
  ["cf_ray", "$http_cf_ray", true],
];

function indent(lines: string[], depth: number): string[] {
  const pad = "    ".repeat(depth);
  return lines.map((line) => (line === "" ? "" : `${pad}${line}`));
}

/**
 * /etc/nginx/nginx.conf: the main and http settings (TLS, client certificates, real client address,
 * request ids, the JSON access log, gzip, body size, the auth rate-limit zone). Servers are in
 * renderNginxSiteConf's file, read through conf.d.
 */
export function renderNginxHttpConf(s: ProxySettings): string {
  const tlsLines = [
    "# TLS 1.2 and 1.3 only; HTTP/2 on every TLS server.",
    "ssl_protocols TLSv1.2 TLSv1.3;",
    `ssl_ciphers ${TLS12_CIPHERS};`,
    "ssl_prefer_server_ciphers off;",
    "ssl_session_cache shared:leaninfra_tls:10m;",
    "ssl_session_timeout 1d;",
    "ssl_session_tickets off;",
    "http2 on;",
    s.tls.mode === "cloudflare"
      ? "# Cloudflare's Origin CA certificate (Cloudflare checks it: SSL mode Full (strict))."
      : `# Let's Encrypt's certificate, copied here by ${ACME.deployHook} (a self-signed placeholder until the first one).`,
    `ssl_certificate ${LAYOUT.tls.certificate};`,
    `ssl_certificate_key ${LAYOUT.tls.privateKey};`,
  ];
  if (s.tls.mode === "cloudflare") {
    tlsLines.push(
      "# Authenticated origin pulls: only a client certificate from our zone's CA gets an answer (400",
      "# otherwise), so nobody can reach the origin around Cloudflare, not even through another zone.",
      `ssl_client_certificate ${LAYOUT.tls.originPullCa};`,
      "ssl_verify_client on;",
    );
  }

  const realIp = s.proxied
    ? [
        "# The client's address is CF-Connecting-IP, believed only from Cloudflare's published ranges.",
        ...[...s.cloudflareRanges.ipv4Cidrs, ...s.cloudflareRanges.ipv6Cidrs].map((cidr) => `set_real_ip_from ${cidr};`),
        "real_ip_header CF-Connecting-IP;",
        "",
      ]
    : [];

  const logFormat = [
    "log_format leaninfra_json escape=json",
    ...ACCESS_LOG_FIELDS.map(([key, value, quoted], i) => {
      const open = i === 0 ? "{" : "";
      const close = i === ACCESS_LOG_FIELDS.length - 1 ? "}" : ",";
      const v = quoted ? `"${value}"` : value;
      return `    '${open}"${key}":${v}${close}'${i === ACCESS_LOG_FIELDS.length - 1 ? ";" : ""}`;
    }),
  ];

  const http = [
    "sendfile on;",
    "tcp_nopush on;",
    "types_hash_max_size 2048;",
    "server_names_hash_bucket_size 128;",
    "server_tokens off;",
    "include /etc/nginx/mime.types;",
    "default_type application/octet-stream;",
    "",
    ...tlsLines,
    "",
    ...realIp,
    "# The request id: the client's (or Cloudflare's) when it is a sane token, else nginx's own;",
    "# passed to the app as X-Request-ID, returned to the client and logged.",
    "map $http_x_request_id $leaninfra_request_id {",
    "    default $request_id;",
    '    "~^[A-Za-z0-9._:+=/@-]{1,128}$" $http_x_request_id;',
    "}",
    "map $request_uri $leaninfra_path {",
    "    default $request_uri;",
    '    "~^(?<leaninfra_path_only>[^?]*)" $leaninfra_path_only;',
    "}",
    "# WebSocket upgrades pass through; other requests keep the upstream connection alive.",
    "map $http_upgrade $leaninfra_connection {",
    "    default upgrade;",
    '    "" "";',
    "}",
    "",
    `# One JSON object per request. $leaninfra_release comes from ${LAYOUT.nginx.release}, which every`,
    "# server includes (the deploy rewrites it).",
    ...logFormat,
    `access_log ${NGINX_FILES.accessLog} leaninfra_json;`,
    "",
    "gzip on;",
    "gzip_vary on;",
    "gzip_proxied any;",
    "gzip_comp_level 5;",
    "gzip_min_length 256;",
    `gzip_types ${GZIP_TYPES.join(" ")};`,
    "",
    `client_max_body_size ${s.clientMaxBodyMb}m;`,
    "",
    `# Auth paths: ${s.authRateLimitPerMinute} requests a minute per client address (after real_ip), then 429.`,
    `limit_req_zone $binary_remote_addr zone=${AUTH_ZONE}:10m rate=${s.authRateLimitPerMinute}r/m;`,
    "limit_req_status 429;",
    "limit_req_log_level warn;",
    "",
    "include /etc/nginx/conf.d/*.conf;",
  ];

  return [
    MANAGED,
    `# nginx's main and http settings. LeanInfra's servers are in ${NGINX_FILES.siteConf}; Debian's`,
    "# sites-enabled/ is not read.",
    "user www-data;",
    "worker_processes auto;",
    "pid /run/nginx.pid;",
    `error_log ${NGINX_FILES.errorLog};`,
    "include /etc/nginx/modules-enabled/*.conf;",
    "",
    "events {",
    "    worker_connections 1024;",
    "}",
    "",
    "http {",
    ...indent(http, 1),
    "}",
    "",
  ].join("\n");
}

/** Headers on every answer of the TLS servers. add_header in a block replaces the inherited ones, so blocks that add their own repeat these. */
function responseHeaders(): string[] {
  return [
    'add_header Strict-Transport-Security "max-age=31536000" always;',
    'add_header X-Content-Type-Options "nosniff" always;',
    'add_header Referrer-Policy "strict-origin-when-cross-origin" always;',
    'add_header X-Frame-Options "SAMEORIGIN" always;',
    "add_header X-Request-ID $leaninfra_request_id always;",
  ];
}

const LISTEN_TLS = ["listen 443 ssl;", "listen [::]:443 ssl;"];
// `set` runs in the rewrite phase in order: the release must be set before any `return`.
const RELEASE = `include ${LAYOUT.nginx.release};`;

function block(header: string, body: string[]): string[] {
  return [`${header} {`, ...indent(body, 1), "}"];
}

/**
 * /etc/nginx/conf.d/leaninfra.conf: the upstream (its server line from the deploy's file), port 80
 * (redirects, ACME challenges), the canonical site and static host, the www/apex redirect, the
 * extra names (404), a default server that drops unknown names and IP literals (444), and stub_status
 * on loopback.
 */
export function renderNginxSiteConf(s: ProxySettings): string {
  const names = proxyHostnames(s);
  const burst = authBurst(s.authRateLimitPerMinute);
  const proxyToApp = "proxy_pass http://leaninfra_app;";

  const port80 = block("server", [
    "listen 80;",
    "listen [::]:80;",
    `server_name ${names.all.join(" ")};`,
    RELEASE,
    ...(s.tls.mode === "letsencrypt"
      ? [
          "# Let's Encrypt's HTTP-01 challenges (certbot --webroot).",
          ...block("location ^~ /.well-known/acme-challenge/", [`root ${ACME.webroot};`, "default_type text/plain;", "try_files $uri =404;"]),
        ]
      : []),
    ...block("location /", ["return 301 https://$host$request_uri;"]),
  ]);

  const dropUnknown = block("server", [
    "listen 80 default_server;",
    "listen [::]:80 default_server;",
    "listen 443 ssl default_server;",
    "listen [::]:443 ssl default_server;",
    "server_name _;",
    "# No TLS handshake without one of our names (IP literals send none), and no answer (444) over HTTP.",
    "ssl_reject_handshake on;",
    RELEASE,
    "return 444;",
  ]);

  const redirect = block("server", [
    ...LISTEN_TLS,
    `server_name ${names.redirected};`,
    RELEASE,
    ...responseHeaders(),
    `return 301 https://${names.canonical}$request_uri;`,
  ]);

  const authLocations = s.authPaths.flatMap((prefix) =>
    block(`location ^~ ${prefix}`, [`limit_req zone=${AUTH_ZONE} burst=${burst} nodelay;`, proxyToApp]),
  );

  const site = block("server", [
    ...LISTEN_TLS,
    `server_name ${names.served.join(" ")};`,
    RELEASE,
    ...responseHeaders(),
    "",
    // proxy_set_header in a location would replace all of these: locations set none.
    "proxy_http_version 1.1;",
    "proxy_set_header Host $host;",
    "proxy_set_header X-Request-ID $leaninfra_request_id;",
    "proxy_set_header X-Real-IP $remote_addr;",
    "proxy_set_header X-Forwarded-For $remote_addr;",
    "proxy_set_header X-Forwarded-Proto $scheme;",
    "proxy_set_header X-Forwarded-Host $host;",
    "proxy_set_header Upgrade $http_upgrade;",
    "proxy_set_header Connection $leaninfra_connection;",
    "proxy_hide_header X-Request-ID;",
    "proxy_connect_timeout 5s;",
    "proxy_read_timeout 60s;",
    "",
    "# The app does not answer (or answers 502/503/504): the maintenance page, 503 with Retry-After.",
    "proxy_intercept_errors on;",
    `error_page 502 503 504 =503 ${MAINTENANCE_URI};`,
    ...block(`location = ${MAINTENANCE_URI}`, [
      "internal;",
      `alias ${LAYOUT.nginx.maintenancePage};`,
      "default_type text/html;",
      ...responseHeaders(),
      `add_header Retry-After ${MAINTENANCE_RETRY_AFTER_SECONDS} always;`,
      'add_header Cache-Control "no-store" always;',
    ]),
    "",
    ...(authLocations.length > 0
      ? [`# Auth paths: ${burst + 1} requests at once, then ${s.authRateLimitPerMinute} a minute per client address; 429 beyond.`, ...authLocations]
      : []),
    ...block("location /", [proxyToApp]),
  ]);

  const extra =
    names.extra.length === 0
      ? []
      : [
          "",
          "# Names a later role will serve; until then, nothing here.",
          ...block("server", [...LISTEN_TLS, `server_name ${names.extra.join(" ")};`, RELEASE, ...responseHeaders(), "return 404;"]),
        ];

  const status = block("server", [
    `listen ${NGINX_STATUS.address}:${NGINX_STATUS.port};`,
    "server_name _;",
    "access_log off;",
    ...block(`location = ${NGINX_STATUS.path}`, ["stub_status;"]),
    ...block("location /", ["return 404;"]),
  ]);

  return [
    MANAGED,
    "",
    block("upstream leaninfra_app", [
      `# One line, e.g. \`${FIRST_UPSTREAM_LINE}\`, written by each deploy, which then reloads nginx.`,
      `include ${LAYOUT.nginx.upstream};`,
      "keepalive 16;",
    ]).join("\n"),
    "",
    "# Port 80 only sends clients to https.",
    port80.join("\n"),
    "",
    "# Unknown Host names and IP-literal access.",
    dropUnknown.join("\n"),
    "",
    `# ${names.redirected} -> ${names.canonical}, path and query kept.`,
    redirect.join("\n"),
    "",
    `# The site${names.served.length > 1 ? " and the static host" : ""}, served by the app.`,
    site.join("\n"),
    ...extra,
    "",
    `# stub_status for the metrics exporter, on loopback only (${NGINX_STATUS.url}).`,
    status.join("\n"),
    "",
  ].join("\n");
}

/** The page nginx serves (503) while the app does not answer: self-contained, no outside assets. */
export function renderMaintenancePage(s: Pick<ProxySettings, "domain">): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Back in a moment - ${s.domain}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 32rem; margin: 20vh auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; }
</style>
</head>
<body>
<h1>Back in a moment</h1>
<p>${s.domain} is being updated or restarted. Please try again in a minute.</p>
</body>
</html>
`;
}

/**
 * certbot's deploy hook (tls.mode "letsencrypt"): after each issuance and renewal, copies the
 * lineage's certificate and key to where nginx reads them, checks the config and reloads nginx.
 */
export function renderCertbotDeployHook(): string {
  return `#!/usr/bin/env bash
${MANAGED}
# certbot's deploy hook for the "${ACME.certName}" certificate. certbot runs it after each issuance and
# renewal (it is saved in /etc/letsencrypt/renewal/${ACME.certName}.conf): it copies the certificate and key
# to where nginx reads them, then reloads nginx. Run by hand: RENEWED_LINEAGE=${ACME.lineage} $0
set -euo pipefail
umask 077
lineage=\${RENEWED_LINEAGE:-${ACME.lineage}}
cert=${LAYOUT.tls.certificate}
key=${LAYOUT.tls.privateKey}

for file in fullchain.pem privkey.pem; do
  if [[ ! -s $lineage/$file ]]; then
    echo "certbot deploy hook: $lineage/$file is missing or empty; nothing installed" >&2
    exit 1
  fi
done
# Beside the targets, so each mv is atomic: nginx never reads a half-written file.
install -m 0644 -o root -g root -T -- "$lineage/fullchain.pem" "$cert.new"
install -m 0600 -o root -g root -T -- "$lineage/privkey.pem" "$key.new"
mv -fT -- "$key.new" "$key"
mv -fT -- "$cert.new" "$cert"
echo "installed the certificate of $lineage as $cert (key: $key)"

if [[ -d /run/systemd/system ]]; then
  nginx -t -q
  systemctl reload nginx
  echo "reloaded nginx"
else
  echo "systemd is not running here: skipped systemctl reload nginx"
fi
`;
}
