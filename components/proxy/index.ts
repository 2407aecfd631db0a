import { isIP } from "node:net";
import { LAYOUT } from "../host/layout";
import { HostRole, RoleDirectory, RoleFile } from "../host/role";
import {
  ACME,
  FIRST_RELEASE_LINE,
  FIRST_UPSTREAM_LINE,
  NGINX_FILES,
  NGINX_STATUS,
  ProxySettings,
  proxyHostnames,
  renderCertbotDeployHook,
  renderMaintenancePage,
  renderNginxHttpConf,
  renderNginxSiteConf,
} from "./nginx";

export * from "./nginx";

const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$/;
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
// Path prefixes land in nginx `location` lines: a plain alphabet keeps them literal.
const AUTH_PATH = /^\/[A-Za-z0-9._~\/-]*$/;
const EMAIL = /^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$/;

function cidrProblem(cidr: unknown, family: 4 | 6): string | undefined {
  if (typeof cidr !== "string") return "is not a string";
  const [address, prefix, ...rest] = cidr.split("/");
  const max = family === 4 ? 32 : 128;
  if (rest.length > 0 || isIP(address) !== family || !/^\d{1,3}$/.test(prefix ?? "") || Number(prefix) > max) {
    return `${JSON.stringify(cidr)} is not an IPv${family} CIDR (e.g. ${family === 4 ? "173.245.48.0/20" : "2400:cb00::/32"})`;
  }
  return undefined;
}

/** Problems with the proxy's settings, each naming the field; empty when the role can be rendered. */
export function proxySettingsProblems(s: ProxySettings): string[] {
  const problems: string[] = [];
  const add = (field: string, message: string) => problems.push(`${field} ${message}`);

  if (typeof s.domain !== "string" || !DOMAIN.test(s.domain)) add("domain", `${JSON.stringify(s.domain)} is not a lowercase domain name (e.g. example.com)`);
  if (s.canonicalHost !== "apex" && s.canonicalHost !== "www") add("canonicalHost", `${JSON.stringify(s.canonicalHost)} must be "apex" or "www"`);
  if (s.staticHostname !== "" && (!LABEL.test(s.staticHostname) || s.staticHostname === "www")) {
    add("staticHostname", `${JSON.stringify(s.staticHostname)} must be "" or a host name label other than www (e.g. static)`);
  }
  s.extraHostnames.forEach((label, i) => {
    if (!LABEL.test(label)) add(`extraHostnames[${i}]`, `${JSON.stringify(label)} is not a host name label (e.g. grafana)`);
    else if (label === "www" || label === s.staticHostname || s.extraHostnames.indexOf(label) !== i) {
      add(`extraHostnames[${i}]`, `"${label}" is already served (www, the static host, or listed twice)`);
    }
  });

  if (s.proxied) {
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
    if (!s.proxied) add("tls.mode", '"cloudflare" needs proxied: true (only Cloudflare presents the origin-pull client certificate)');
    const pem = (field: string, value: string, kind: RegExp, example: string) => {
      if (typeof value !== "string" || !kind.test(value)) add(`tls.${field}`, `is not a PEM ${example}`);
    };
    pem("certificatePem", s.tls.certificatePem, /-----BEGIN CERTIFICATE-----/, "certificate (-----BEGIN CERTIFICATE-----)");
    pem("privateKeyPem", s.tls.privateKeyPem, /-----BEGIN (RSA |EC )?PRIVATE KEY-----/, "private key (-----BEGIN PRIVATE KEY-----)");
    pem("originPullCaPem", s.tls.originPullCaPem, /-----BEGIN CERTIFICATE-----/, "CA certificate (-----BEGIN CERTIFICATE-----)");
  } else if (s.tls.mode === "letsencrypt") {
    if (typeof s.tls.acmeEmail !== "string" || !EMAIL.test(s.tls.acmeEmail)) {
      add("tls.acmeEmail", `${JSON.stringify(s.tls.acmeEmail)} is not an e-mail address (Let's Encrypt needs one, e.g. owner@example.com)`);
    }
  } else {
    add("tls.mode", `${JSON.stringify((s.tls as { mode: unknown }).mode)} must be "cloudflare" or "letsencrypt"`);
  }

  s.authPaths.forEach((p, i) => {
    if (!AUTH_PATH.test(p)) add(`authPaths[${i}]`, `${JSON.stringify(p)} is not a path prefix (e.g. /login)`);
    else if (p === "/") add(`authPaths[${i}]`, `"/" would rate-limit the whole site (accepted: the login and auth prefixes, e.g. /login)`);
    else if (s.authPaths.indexOf(p) !== i) add(`authPaths[${i}]`, `"${p}" is listed twice`);
  });
  if (!Number.isInteger(s.authRateLimitPerMinute) || s.authRateLimitPerMinute < 1 || s.authRateLimitPerMinute > 6000) {
    add("authRateLimitPerMinute", `${s.authRateLimitPerMinute} must be a whole number from 1 to 6000`);
  }
  if (!Number.isInteger(s.clientMaxBodyMb) || s.clientMaxBodyMb < 1 || s.clientMaxBodyMb > 1024) {
    add("clientMaxBodyMb", `${s.clientMaxBodyMb} must be a whole number from 1 to 1024`);
  }
  return problems;
}

/** One single-quoted shell word. */
function shq(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

// Why the systemd checks: the test roots run without systemd as PID 1, and say so instead of failing.
const SYSTEMD = "[ -d /run/systemd/system ]";

/**
 * Files the role creates once and never overwrites: the deploy owns the upstream and release lines,
 * certbot's hook the Let's Encrypt certificate. `seed_first_files` creates the missing ones, printing
 * one line for each and listing their paths in the `seeded` array.
 */
function seedFunction(s: ProxySettings): string {
  const names = proxyHostnames(s);
  const lines = [
    "seeded=()",
    "seed_line() {",
    '  if [ -e "$1" ]; then return 0; fi',
    '  printf \'%s\\n\' "$2" >"$1.leaninfra-new"',
    '  chmod 0644 "$1.leaninfra-new"',
    '  mv -fT "$1.leaninfra-new" "$1"',
    '  seeded+=("$1")',
    '  echo "created $1 ($2): the deploy rewrites it from now on"',
    "}",
    "seed_first_files() {",
    `  seed_line ${LAYOUT.nginx.upstream} ${shq(FIRST_UPSTREAM_LINE)}`,
    "  # shellcheck disable=SC2016 # an nginx variable, written literally",
    `  seed_line ${LAYOUT.nginx.release} ${shq(FIRST_RELEASE_LINE)}`,
  ];
  if (s.tls.mode === "letsencrypt") {
    const san = names.all.map((n) => `DNS:${n}`).join(",");
    lines.push(
      `  local cert=${LAYOUT.tls.certificate} key=${LAYOUT.tls.privateKey} out`,
      '  if [ -e "$cert" ] && [ -e "$key" ]; then return 0; fi',
      '  if [ -e "$cert" ] || [ -e "$key" ]; then',
      '    echo "only one of $cert and $key exists; move it away, then run again" >&2',
      "    return 1",
      "  fi",
      "  # nginx cannot start without a certificate: a self-signed placeholder until certbot's first one.",
      '  if ! out=$(umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \\',
      `    -subj ${shq(`/CN=${names.canonical}`)} -addext ${shq(`subjectAltName=${san}`)} \\`,
      '    -keyout "$key.leaninfra-new" -out "$cert.leaninfra-new" 2>&1); then',
      '    echo "$out" >&2',
      "    return 1",
      "  fi",
      '  chmod 0600 "$key.leaninfra-new"',
      '  chmod 0644 "$cert.leaninfra-new"',
      '  mv -fT "$key.leaninfra-new" "$key"',
      '  mv -fT "$cert.leaninfra-new" "$cert"',
      '  seeded+=("$cert" "$key")',
      `  echo "created a self-signed placeholder certificate $cert (key $key) until Let's Encrypt's first one"`,
    );
  }
  lines.push("}");
  return lines.join("\n");
}

// The bundle reloads nginx after validation; on a fresh host the deploy-owned files do not exist
// yet, so the reload waits for apply, which creates them and reloads.
function reloadHandler(s: ProxySettings): string {
  const needed = [LAYOUT.nginx.upstream, LAYOUT.nginx.release, ...(s.tls.mode === "letsencrypt" ? [LAYOUT.tls.certificate] : [])];
  return `if ! ${SYSTEMD}; then
  echo "systemd is not running here: skipped systemctl reload nginx"
elif ${needed.map((p) => `[ ! -e ${p} ]`).join(" || ")}; then
  echo "nginx reload deferred: this role's apply step first creates the files nginx includes"
else
  # reload-or-restart also starts nginx when it is not running.
  systemctl reload-or-restart nginx
fi`;
}

// nginx -t as nginx will read the config after apply: files apply would create are stood in for,
// then removed, so validation leaves nothing behind.
function validateScript(s: ProxySettings): string {
  return `${seedFunction(s)}
trap 'if ((\${#seeded[@]})); then rm -f -- "\${seeded[@]}"; fi' EXIT
seed_first_files >/dev/null
nginx -t`;
}

function applyScript(s: ProxySettings): string {
  const names = proxyHostnames(s);
  const parts = [
    seedFunction(s),
    "seed_first_files",
    `if [ -e ${NGINX_FILES.debianDefaultSite} ] || [ -L ${NGINX_FILES.debianDefaultSite} ]; then
  rm -f ${NGINX_FILES.debianDefaultSite}
  echo "removed ${NGINX_FILES.debianDefaultSite} (Debian's default site)"
fi`,
    `if ((\${#seeded[@]})); then
  if ${SYSTEMD}; then
    nginx -t -q >&2
    systemctl reload-or-restart nginx >&2
  else
    echo "systemd is not running here: skipped systemctl reload nginx" >&2
  fi
fi`,
  ];
  if (s.tls.mode === "letsencrypt") {
    const domains = names.all.map((n) => `-d ${n}`).join(" ");
    parts.push(`# Let's Encrypt: nginx now serves ${ACME.webroot} on port 80; certbot's timer renews, the hook installs.
want=${shq(names.all.join("\n"))}
have=$(cat ${ACME.namesStamp} 2>/dev/null || true)
if [ "$want" != "$have" ] || [ ! -s ${ACME.lineage}/fullchain.pem ]; then
  if ${SYSTEMD}; then
    if ! certbot certonly --non-interactive --agree-tos --no-eff-email --email ${shq(s.tls.acmeEmail)} \\
      --webroot --webroot-path ${ACME.webroot} --cert-name ${ACME.certName} --deploy-hook ${ACME.deployHook} \\
      ${domains} >&2; then
      echo "certbot could not get a certificate for ${names.all.join(", ")}: do their DNS records point at this server, and is port 80 open? (/var/log/letsencrypt/letsencrypt.log)" >&2
      exit 1
    fi
    printf '%s\\n' "$want" >${ACME.namesStamp}.new
    mv -fT ${ACME.namesStamp}.new ${ACME.namesStamp}
    echo "obtained a Let's Encrypt certificate for ${names.all.join(", ")} (certbot.timer renews it)"
  else
    echo "systemd is not running here: nginx is not serving, skipped certbot certonly for ${names.all.join(", ")}" >&2
  fi
fi
# The hook installs each new certificate; this repairs a copy that differs (e.g. a hook that failed).
if [ -s ${ACME.lineage}/fullchain.pem ] && ! cmp -s ${ACME.lineage}/fullchain.pem ${LAYOUT.tls.certificate}; then
  RENEWED_LINEAGE=${ACME.lineage} ${ACME.deployHook} >&2
  echo "installed the Let's Encrypt certificate of ${ACME.lineage} for nginx"
fi`);
  }
  return parts.join("\n");
}

function healthCheck(s: ProxySettings): string {
  const mustExist = [LAYOUT.nginx.upstream, LAYOUT.nginx.release, LAYOUT.tls.certificate, LAYOUT.tls.privateKey, LAYOUT.nginx.maintenancePage];
  return `bad=0
for f in ${mustExist.join(" ")}; do
  if [ ! -s "$f" ]; then echo "$f is missing or empty" >&2; bad=1; fi
done
if [ "$(stat -c '%a %U' ${LAYOUT.tls.privateKey} 2>/dev/null)" != "600 root" ]; then
  echo "${LAYOUT.tls.privateKey} must be mode 600, owned by root" >&2
  bad=1
fi
if ! nginx -t -q; then echo "nginx -t fails (output above)" >&2; bad=1; fi
if ${SYSTEMD}; then
  if ! systemctl is-active --quiet nginx; then
    echo "nginx is not running (systemctl status nginx; journalctl -u nginx)" >&2
    bad=1
  else
    # A reload is a signal: nginx opens new listeners a moment after systemctl returns.
    answered=0
    for _ in $(seq 20); do
      if curl -fsS --max-time 5 -o /dev/null ${NGINX_STATUS.url} 2>/dev/null; then answered=1; break; fi
      sleep 0.5
    done
    if ((!answered)); then
      curl -fsS --max-time 5 -o /dev/null ${NGINX_STATUS.url} >&2 || true
      echo "nginx does not answer on ${NGINX_STATUS.url} (tried for 10 s)" >&2
      bad=1
    fi
  fi
fi
exit "$bad"`;
}

/**
 * The nginx host role: the request path Cloudflare -> nginx -> app. TLS (Origin CA with
 * authenticated origin pulls, or Let's Encrypt), the real client address, request ids, a JSON access
 * log, rate-limited auth paths, the maintenance page, the www/apex redirect and stub_status.
 * Throws an Error listing every problem when the settings are invalid.
 */
export function proxyRole(settings: ProxySettings): HostRole {
  const problems = proxySettingsProblems(settings);
  if (problems.length > 0) {
    throw new Error(`proxyRole: invalid settings:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
  const reload = reloadHandler(settings);
  const letsencrypt = settings.tls.mode === "letsencrypt";

  const directories: RoleDirectory[] = [
    { path: LAYOUT.etc, mode: "0755" },
    { path: LAYOUT.secrets, mode: "0700" },
    { path: "/etc/leaninfra/tls", mode: "0755" },
    { path: "/etc/leaninfra/nginx", mode: "0755" },
    { path: "/var/www/leaninfra", mode: "0755" },
    ...(letsencrypt
      ? [
          { path: ACME.webroot, mode: "0755" },
          { path: LAYOUT.state, mode: "0755" },
          { path: "/var/lib/leaninfra/proxy", mode: "0755" },
        ]
      : []),
  ];

  const files: RoleFile[] = [
    { path: NGINX_FILES.httpConf, mode: "0644", content: renderNginxHttpConf(settings), onChange: reload },
    { path: NGINX_FILES.siteConf, mode: "0644", content: renderNginxSiteConf(settings), onChange: reload },
    { path: LAYOUT.nginx.maintenancePage, mode: "0644", content: renderMaintenancePage(settings) },
  ];
  if (settings.tls.mode === "cloudflare") {
    files.push(
      { path: LAYOUT.tls.certificate, mode: "0644", content: settings.tls.certificatePem, onChange: reload },
      { path: LAYOUT.tls.privateKey, mode: "0600", content: settings.tls.privateKeyPem, onChange: reload },
      { path: LAYOUT.tls.originPullCa, mode: "0644", content: settings.tls.originPullCaPem, onChange: reload },
    );
  } else {
    files.push({ path: ACME.deployHook, mode: "0755", content: renderCertbotDeployHook() });
  }

  return {
    name: "proxy",
    description: letsencrypt
      ? "nginx in front of the app: TLS from Let's Encrypt (certbot), request ids, JSON access log, auth rate limit, maintenance page"
      : "nginx in front of the app behind Cloudflare: Origin CA TLS, authenticated origin pulls, real client address, request ids, JSON access log, auth rate limit, maintenance page",
    packages: ["nginx", "curl", ...(letsencrypt ? ["certbot", "openssl"] : [])],
    directories,
    files,
    validate: validateScript(settings),
    apply: applyScript(settings),
    healthCheck: healthCheck(settings),
  };
}
