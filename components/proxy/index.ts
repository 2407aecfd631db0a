import * as fs from "node:fs";
import { isIP } from "node:net";
import * as path from "node:path";
import { z } from "zod";
import { defineRole, refuseProblems } from "../host/define";
import { LAYOUT } from "../host/layout";
import { DOMAIN_NAME, EMAIL_ADDRESS, HOSTNAME_LABEL } from "../host/names";
import { HostRole, RoleDirectory, RoleFile, systemctlHandler } from "../host/role";
import { ShellValue, renderScript } from "../host/script";
import {
  ACME,
  CdnRanges,
  FIRST_RELEASE_LINE,
  FIRST_UPSTREAM_LINE,
  NGINX_FILES,
  NGINX_STATUS,
  OriginTls,
  SYSTEMD_DROP_INS,
  ProxySettings,
  proxyHostnames,
  renderCertbotDeployHook,
  renderMaintenancePage,
  renderNginxHttpConf,
  renderNginxSiteConf,
} from "./nginx";
import { MTAIL, renderMtailDropIn, renderMtailProgram, sloRouteGroupProblems } from "./request-metrics";
import { PROXY_FILES_DIR } from "./template";

export * from "./nginx";
export * from "./request-metrics";

// Path prefixes land in nginx `location` lines: a plain alphabet keeps them literal.
const AUTH_PATH = /^\/[A-Za-z0-9._~\/-]*$/;

/** The proxy's config keys (Pulumi.<stack>.yaml). The names it serves and cdnProxy are the stack's. */
export const proxySettingsSchema = z.object({
  authPaths: z
    .array(z.string().regex(AUTH_PATH, { message: 'is not a path (accepted: starts with "/", e.g. /login)' }))
    .default(["/login", "/api/auth/"])
    .describe("Path prefixes of the login and auth endpoints; nginx rate-limits them per client address."),
  authRateLimitPerMinute: z
    .number()
    .int()
    .min(1)
    .max(6000)
    .default(30)
    .describe("Requests a minute one client address may make to authPaths before nginx answers 429."),
  clientMaxBodyMb: z
    .number()
    .int()
    .min(1)
    .max(1024)
    .default(25)
    .describe("Largest request body nginx accepts, in MB (uploads)."),
  acmeEmail: z
    .string()
    .refine((v) => v === "" || EMAIL_ADDRESS.test(v), { message: "is not an e-mail address (accepted: e.g. owner@example.com)" })
    .default("")
    .describe("E-mail for Let's Encrypt when cdnProxy is false (nginx then gets its certificate with certbot); unused behind Cloudflare."),
  sloRouteGroups: z
    .array(z.string())
    .default([])
    .describe(
      'Route groups of the request metrics and SLO alerts, "name=/prefix" each (a name may repeat for more prefixes; the longest matching prefix wins; at most 10 names of a-z, 0-9 and _), e.g. ["api=/api/", "checkout=/cart/", "checkout=/checkout/"]. Static path prefixes are "static", the rest "other".',
    ),
});

function cidrProblem(cidr: unknown, family: 4 | 6): string | undefined {
  if (typeof cidr !== "string") return "is not a string";
  const [address, prefix, ...rest] = cidr.split("/");
  const max = family === 4 ? 32 : 128;
  if (rest.length > 0 || isIP(address) !== family || !/^\d{1,3}$/.test(prefix ?? "") || Number(prefix) > max) {
    return `${JSON.stringify(cidr)} is not an IPv${family} CIDR (accepted: e.g. ${family === 4 ? "173.245.48.0/20" : "2400:cb00::/32"})`;
  }
  return undefined;
}

/**
 * Problems with the proxy's settings, each starting with the config key (or input) it is about;
 * empty when the role can be rendered.
 */
export function proxySettingsProblems(s: ProxySettings): string[] {
  const problems: string[] = [];
  const add = (key: string, message: string) => problems.push(`${key} ${message}`);

  if (typeof s.domain !== "string" || !DOMAIN_NAME.test(s.domain)) {
    add("domain", `${JSON.stringify(s.domain)} is not a lowercase domain name (accepted: labels of a-z, 0-9 and '-' joined by dots, e.g. example.com)`);
  }
  if (s.canonicalHost !== "apex" && s.canonicalHost !== "www") add("canonicalHost", `${JSON.stringify(s.canonicalHost)} is not a canonical host (accepted: apex or www)`);
  if (s.staticHostname !== "" && (!HOSTNAME_LABEL.test(s.staticHostname) || s.staticHostname === "www")) {
    add("staticHostname", `${JSON.stringify(s.staticHostname)} is not a host name label other than www (accepted: "" for none, or a label such as static)`);
  }
  // A cached prefix must never hold an auth path: Cloudflare would keep and serve its answers.
  s.authPaths.forEach((authPath, i) => {
    const cached = authPath === "/" ? undefined : s.staticPathPrefixes.find((prefix) => authPath.startsWith(prefix) || prefix.startsWith(authPath));
    if (cached) add(`authPaths[${i}]`, `${JSON.stringify(authPath)} overlaps the static path prefix ${cached}, which Cloudflare caches (accepted: an auth path outside staticPathPrefixes)`);
  });
  s.extraHostnames.forEach((label, i) => {
    if (!HOSTNAME_LABEL.test(label)) add(`extraHostnames[${i}]`, `${JSON.stringify(label)} is not a host name label (accepted: a-z, 0-9 and '-', e.g. grafana)`);
    else if (label === "www" || label === s.staticHostname || s.extraHostnames.indexOf(label) !== i) {
      add(`extraHostnames[${i}]`, `"${label}" is already served (www, the static host, or listed twice; accepted: another label)`);
    }
  });

  if (s.cdnProxy) {
    const { ipv4Cidrs, ipv6Cidrs } = s.cloudflareRanges;
    if (ipv4Cidrs.length + ipv6Cidrs.length === 0) {
      add("cloudflareRanges", "is empty: behind the proxy nginx must know Cloudflare's ranges to find the client's address");
    }
    ipv4Cidrs.forEach((c, i) => {
      const p = cidrProblem(c, 4);
      if (p) add(`cloudflareRanges.ipv4Cidrs[${i}]`, p);
    });
    ipv6Cidrs.forEach((c, i) => {
      const p = cidrProblem(c, 6);
      if (p) add(`cloudflareRanges.ipv6Cidrs[${i}]`, p);
    });
  }

  if (s.tls.mode === "cloudflare") {
    if (!s.cdnProxy) {
      add("originTls", "is set but cdnProxy is false: only Cloudflare's proxy presents the origin-pull client certificate (accepted: cdnProxy true, or Let's Encrypt with acmeEmail)");
    }
    const pem = (field: keyof OriginTls, value: string, kind: RegExp, example: string) => {
      if (typeof value !== "string" || !kind.test(value)) add(`originTls.${field}`, `is not a PEM ${example}`);
    };
    pem("certificatePem", s.tls.certificatePem, /-----BEGIN CERTIFICATE-----/, "certificate (accepted: -----BEGIN CERTIFICATE----- ...)");
    pem("privateKeyPem", s.tls.privateKeyPem, /-----BEGIN (RSA |EC )?PRIVATE KEY-----/, "private key (accepted: -----BEGIN PRIVATE KEY----- ...)");
    pem("originPullCaPem", s.tls.originPullCaPem, /-----BEGIN CERTIFICATE-----/, "CA certificate (accepted: -----BEGIN CERTIFICATE----- ...)");
  } else if (s.tls.mode === "letsencrypt") {
    if (s.tls.acmeEmail === "") {
      add("acmeEmail", `"" is required when cdnProxy is false: nginx then gets its certificate from Let's Encrypt, which needs a contact address`);
    } else if (typeof s.tls.acmeEmail !== "string" || !EMAIL_ADDRESS.test(s.tls.acmeEmail)) {
      add("acmeEmail", `${JSON.stringify(s.tls.acmeEmail)} is not an e-mail address (accepted: e.g. owner@example.com; Let's Encrypt needs one)`);
    }
  } else {
    add("originTls", `mode ${JSON.stringify((s.tls as { mode: unknown }).mode)} is not a TLS mode (accepted: "cloudflare" with originTls, "letsencrypt" with acmeEmail)`);
  }

  s.authPaths.forEach((p, i) => {
    if (!AUTH_PATH.test(p)) add(`authPaths[${i}]`, `${JSON.stringify(p)} is not a path prefix (accepted: starts with "/", e.g. /login)`);
    else if (p === "/") add(`authPaths[${i}]`, `"/" would rate-limit the whole site (accepted: the login and auth prefixes, e.g. /login)`);
    else if (s.authPaths.indexOf(p) !== i) add(`authPaths[${i}]`, `"${p}" is listed twice`);
  });
  if (!Number.isInteger(s.authRateLimitPerMinute) || s.authRateLimitPerMinute < 1 || s.authRateLimitPerMinute > 6000) {
    add("authRateLimitPerMinute", `${s.authRateLimitPerMinute} is not a whole number from 1 to 6000 (accepted: e.g. 30)`);
  }
  if (!Number.isInteger(s.clientMaxBodyMb) || s.clientMaxBodyMb < 1 || s.clientMaxBodyMb > 1024) {
    add("clientMaxBodyMb", `${s.clientMaxBodyMb} is not a whole number from 1 to 1024 (accepted: e.g. 25)`);
  }
  problems.push(...sloRouteGroupProblems(s.sloRouteGroups ?? [], s.staticPathPrefixes));
  return problems;
}

const SHELL_DIRECTIVE = /^# shellcheck shell=bash\n/;
// A part another snippet file includes: the shellcheck directive naming it and the `source ... # @include` line.
const INCLUDE = /^# shellcheck source=\S+\nsource .*\/([a-z0-9-]+\.sh)" # @include\n/m;

/**
 * A shell snippet of files/ (validate, apply, health check) as the bundle runs it: its settings block
 * rendered (renderScript), the part it includes (`source .../NAME.sh # @include`) put in its place
 * with that part's own settings, and the `# shellcheck shell=bash` line that lets shellcheck read the
 * file on its own dropped.
 */
function renderSnippet(file: string, settings: Record<string, ShellValue>, parts: Record<string, Record<string, ShellValue>> = {}): string {
  const used = new Set<string>();
  const text = renderScript(path.join(PROXY_FILES_DIR, file), settings)
    .replace(SHELL_DIRECTIVE, "")
    .replace(INCLUDE, (_, part: string) => {
      if (!(part in parts)) throw new Error(`renderSnippet ${file}: no settings for its part ${part}`);
      used.add(part);
      return renderSnippet(part, parts[part]);
    });
  if (INCLUDE.test(text)) throw new Error(`renderSnippet ${file}: includes more than one part`);
  const unused = Object.keys(parts).filter((part) => !used.has(part));
  if (unused.length > 0) throw new Error(`renderSnippet ${file}: does not include ${unused.join(", ")}`);
  return text;
}

/** files/seed-first-files.sh's settings: what the files nginx includes hold before the deploy (or certbot) writes them. */
function seedSettings(s: ProxySettings): Record<string, Record<string, ShellValue>> {
  const names = proxyHostnames(s);
  return {
    "seed-first-files.sh": {
      release_line: FIRST_RELEASE_LINE,
      release_file: LAYOUT.nginx.release,
      upstream_line: FIRST_UPSTREAM_LINE,
      upstream_file: LAYOUT.nginx.upstream,
      letsencrypt: s.tls.mode === "letsencrypt" ? 1 : 0,
      certificate: LAYOUT.tls.certificate,
      private_key: LAYOUT.tls.privateKey,
      canonical_name: names.canonical,
      names: names.all,
    },
  };
}

/** A shell test: true while a file nginx includes is missing (a fresh host, before apply creates them). */
function firstFilesMissing(s: ProxySettings): string {
  const needed = [LAYOUT.nginx.upstream, LAYOUT.nginx.release, ...(s.tls.mode === "letsencrypt" ? [LAYOUT.tls.certificate] : [])];
  return needed.map((p) => `[ ! -e ${p} ]`).join(" || ");
}

// The bundle reloads nginx after validation; on a fresh host the deploy-owned files do not exist
// yet, so the reload waits for apply, which creates them and restarts nginx.
function reloadHandler(s: ProxySettings): string {
  return `if ! [ -d /run/systemd/system ]; then
  echo "systemd is not running here: skipped systemctl reload nginx"
elif ${firstFilesMissing(s)}; then
  echo "nginx reload deferred: this role's apply step first creates the files nginx includes"
else
  # reload-or-restart also starts nginx when it is not running.
  systemctl reload-or-restart nginx
fi`;
}

// A changed sandbox applies only to a new nginx: a restart (a moment without answers), never a
// reload. When it fails, the bundle puts the previous drop-in back and runs this again.
function restartHandler(s: ProxySettings): string {
  return `if ! [ -d /run/systemd/system ]; then
  echo "systemd is not running here: skipped systemctl restart nginx"
else
  systemctl daemon-reload
  if ${firstFilesMissing(s)}; then
    echo "nginx restart deferred: this role's apply step first creates the files nginx includes, then restarts it"
  else
    systemctl restart nginx
  fi
fi`;
}

// mtail reads its programs and arguments at start: a restart (its counters start again, which
// Prometheus's rate() takes as a reset), also after a failed change when the bundle puts the files back.
const restartMtail = `if ! [ -d /run/systemd/system ]; then
  echo "systemd is not running here: skipped systemctl restart mtail"
else
  systemctl daemon-reload
  systemctl restart mtail
fi`;

/** A unit sandbox (drop-in) of files/. */
function dropIn(name: string): string {
  return fs.readFileSync(path.join(PROXY_FILES_DIR, name), "utf8");
}

function applyScript(s: ProxySettings): string {
  const apply = renderSnippet("apply.sh", { debian_default_site: NGINX_FILES.debianDefaultSite }, seedSettings(s));
  if (s.tls.mode !== "letsencrypt") return apply;
  const letsencrypt = renderSnippet("letsencrypt-certificate.sh", {
    acme_email: s.tls.acmeEmail,
    acme_names: proxyHostnames(s).all,
    acme_webroot: ACME.webroot,
    acme_cert_name: ACME.certName,
    acme_lineage: ACME.lineage,
    acme_deploy_hook: ACME.deployHook,
    acme_names_stamp: ACME.namesStamp,
    installed_certificate: LAYOUT.tls.certificate,
  });
  return `${apply}${letsencrypt}`;
}

function healthCheck(): string {
  return renderSnippet("health-check.sh", {
    must_exist: [LAYOUT.nginx.upstream, LAYOUT.nginx.release, LAYOUT.tls.certificate, LAYOUT.tls.privateKey, LAYOUT.nginx.maintenancePage],
    private_key: LAYOUT.tls.privateKey,
    status_url: NGINX_STATUS.url,
    mtail_url: MTAIL.url,
  });
}

/**
 * The nginx host role: the request path Cloudflare -> nginx -> app. TLS (Origin CA with
 * authenticated origin pulls, or Let's Encrypt), the real client address, request ids, a JSON access
 * log, rate-limited auth paths, the maintenance page, the www/apex redirect and stub_status.
 * Throws SettingsError listing every problem when the settings are invalid.
 */
export function proxyRole(settings: ProxySettings): HostRole {
  refuseProblems("proxy", proxySettingsProblems(settings));
  const reload = reloadHandler(settings);
  const letsencrypt = settings.tls.mode === "letsencrypt";

  const directories: RoleDirectory[] = [
    { path: LAYOUT.etc, mode: "0755" },
    { path: LAYOUT.secrets, mode: "0700" },
    { path: "/etc/leaninfra/tls", mode: "0755" },
    { path: "/etc/leaninfra/nginx", mode: "0755" },
    { path: "/var/www/leaninfra", mode: "0755" },
    { path: path.dirname(SYSTEMD_DROP_INS.nginx), mode: "0755" },
    { path: MTAIL.progsDir, mode: "0755" },
    { path: path.dirname(MTAIL.dropIn), mode: "0755" },
    ...(letsencrypt
      ? [
          { path: path.dirname(SYSTEMD_DROP_INS.certbot), mode: "0755" },
          // certbot's own directories, with the modes certbot gives them, exist before its first run:
          // its sandbox can only make writable what exists.
          { path: "/etc/letsencrypt", mode: "0755" },
          { path: "/var/lib/letsencrypt", mode: "0755" },
          { path: "/var/log/letsencrypt", mode: "0700" },
          { path: ACME.webroot, mode: "0755" },
          { path: LAYOUT.state, mode: "0755" },
          { path: "/var/lib/leaninfra/proxy", mode: "0755" },
        ]
      : []),
  ];

  const files: RoleFile[] = [
    { path: MTAIL.program, mode: "0644", content: renderMtailProgram(NGINX_FILES.accessLog), onChange: restartMtail },
    { path: MTAIL.dropIn, mode: "0644", content: renderMtailDropIn(NGINX_FILES.accessLog), onChange: restartMtail },
    { path: NGINX_FILES.httpConf, mode: "0644", content: renderNginxHttpConf(settings), onChange: reload },
    { path: NGINX_FILES.siteConf, mode: "0644", content: renderNginxSiteConf(settings), onChange: reload },
    { path: LAYOUT.nginx.maintenancePage, mode: "0644", content: renderMaintenancePage(settings) },
    { path: SYSTEMD_DROP_INS.nginx, mode: "0644", content: dropIn("nginx.service.conf"), onChange: restartHandler(settings) },
  ];
  if (settings.tls.mode === "cloudflare") {
    files.push(
      { path: LAYOUT.tls.certificate, mode: "0644", content: settings.tls.certificatePem, onChange: reload },
      { path: LAYOUT.tls.privateKey, mode: "0600", content: settings.tls.privateKeyPem, onChange: reload },
      { path: LAYOUT.tls.originPullCa, mode: "0644", content: settings.tls.originPullCaPem, onChange: reload },
    );
  } else {
    files.push(
      { path: ACME.deployHook, mode: "0755", content: renderCertbotDeployHook() },
      // certbot.service is a oneshot the timer starts: the next run reads the new sandbox.
      { path: SYSTEMD_DROP_INS.certbot, mode: "0644", content: dropIn("certbot.service.conf"), onChange: systemctlHandler("daemon-reload") },
    );
  }

  return {
    name: "proxy",
    description: letsencrypt
      ? "nginx in front of the app: TLS from Let's Encrypt (certbot), request ids, JSON access log (file and journal), request metrics (mtail), auth rate limit, maintenance page"
      : "nginx in front of the app behind Cloudflare: Origin CA TLS, authenticated origin pulls, real client address, request ids, JSON access log (file and journal), request metrics (mtail), auth rate limit, maintenance page",
    // logrotate runs Debian's /etc/logrotate.d/nginx: the access log mtail reads is rotated daily.
    packages: ["nginx", "curl", "mtail", "logrotate", ...(letsencrypt ? ["certbot", "openssl"] : [])],
    directories,
    files,
    validate: renderSnippet("validate.sh", { mtail_progs: MTAIL.progsDir }, seedSettings(settings)),
    apply: applyScript(settings),
    healthCheck: healthCheck(),
  };
}

/** The proxy's inputs from the stack's cloud components (wired in infra/). */
export type ProxyInputs = {
  /** Undefined when cdnProxy is false: nginx then gets its certificate from Let's Encrypt. */
  originTls: OriginTls | undefined;
  cloudflareRanges: CdnRanges;
};

export const role = defineRole({
  name: "proxy",
  after: ["base"],
  budget: {
    monthlyCost: { amount: 0, currency: "EUR", what: "Runs on the server: nginx and mtail (about 40 MiB RAM); Cloudflare's Free plan in front costs nothing." },
    secrets: [
      { name: "origin certificate key", livesIn: "Pulumi state (tls PrivateKey edge-origin-key); on the server in /etc/leaninfra/secrets, root-only" },
      { name: "Let's Encrypt account and key (acmeEmail mode only)", livesIn: "on the server under /etc/letsencrypt, root-only" },
    ],
    alerts: ["SiteDown", "CertificateExpiresSoon", "HighErrorRate", "HighLatency", "TargetDown"],
    failurePoints: [
      "nginx down: the site is down (SiteDown pages).",
      "The origin certificate expired: Cloudflare refuses the origin with 526 (CertificateExpiresSoon pages 14 days ahead).",
      "Cloudflare adds address ranges: requests from them are refused at the firewall until `pulumi up` reads the new list.",
    ],
  },
  settings: proxySettingsSchema,
  inputs: {
    originTls: {
      from: "stack",
      description:
        "Cloudflare's Origin CA certificate for the domain's names, its private key and the origin-pull CA (authenticated origin pulls); undefined when cdnProxy is false",
    },
    cloudflareRanges: {
      from: "stack",
      description: "Cloudflare's published IPv4 and IPv6 ranges: behind the proxy, nginx believes CF-Connecting-IP from these senders only",
    },
  },
  render: (s, inputs: ProxyInputs) => {
    if (s.cdnProxy && !inputs.originTls) {
      refuseProblems("proxy", ["originTls is missing: with cdnProxy true nginx serves Cloudflare's Origin CA certificate, which the stack issues (accepted: the Edge's originTls)"]);
    }
    return proxyRole({
      domain: s.domain,
      canonicalHost: s.canonicalHost,
      staticHostname: s.staticHostname,
      staticPathPrefixes: s.staticPathPrefixes,
      extraHostnames: s.extraHostnames,
      cdnProxy: s.cdnProxy,
      cloudflareRanges: inputs.cloudflareRanges,
      tls: s.cdnProxy && inputs.originTls ? { mode: "cloudflare", ...inputs.originTls } : { mode: "letsencrypt", acmeEmail: s.acmeEmail },
      authPaths: s.authPaths,
      authRateLimitPerMinute: s.authRateLimitPerMinute,
      clientMaxBodyMb: s.clientMaxBodyMb,
      sloRouteGroups: s.sloRouteGroups,
    });
  },
});
