import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import cloudflareIps from "../../infra/data/cloudflare-ips.json";
import {
  ACCESS_LOG_FIELDS,
  ACME,
  CdnRanges,
  NGINX_FILES,
  NGINX_STATUS,
  OriginTls,
  ProxyInputs,
  ProxySettings,
  authBurst,
  proxyHostnames,
  proxyRole,
  proxySettingsProblems,
  renderCertbotDeployHook,
  renderMaintenancePage,
  renderNginxHttpConf,
  renderNginxSiteConf,
  role,
  SYSTEMD_DROP_INS,
  MTAIL,
  NGINX_JOURNAL_TAGS,
  REQUEST_DURATION_BUCKETS_SECONDS,
  REQUEST_METRICS,
  ROUTES,
  parseSloRouteGroups,
  renderMtailDropIn,
  renderMtailProgram,
  renderRouteMap,
  sloRouteGroupProblems,
} from "../../components/proxy";
import { fillTemplate } from "../../components/proxy/template";
import { renderRoleBundle, roleProblems } from "../../components/host/bundle";
import { SettingsError, StackFacts } from "../../components/host/define";
import { EMAIL_ADDRESS } from "../../components/host/names";
import { LAYOUT } from "../../components/host/layout";
import { assertShellcheckClean } from "../lib/shellcheck";

const PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

const cloudflare: ProxySettings = {
  domain: "example.com",
  canonicalHost: "apex",
  staticHostname: "static",
  staticPathPrefixes: ["/assets/", "/static/"],
  extraHostnames: ["grafana", "status"],
  cdnProxy: true,
  cloudflareRanges: { ipv4Cidrs: [...cloudflareIps.ipv4Cidrs], ipv6Cidrs: [...cloudflareIps.ipv6Cidrs] },
  tls: { mode: "cloudflare", certificatePem: PEM_CERT, privateKeyPem: PEM_KEY, originPullCaPem: PEM_CERT },
  authPaths: ["/login", "/api/auth/"],
  authRateLimitPerMinute: 30,
  clientMaxBodyMb: 25,
};
const letsencrypt: ProxySettings = {
  ...cloudflare,
  cdnProxy: false,
  cloudflareRanges: { ipv4Cidrs: [], ipv6Cidrs: [] },
  tls: { mode: "letsencrypt", acmeEmail: "owner@example.com" },
};

/** The top-level `server { ... }` blocks of a site file, by brace depth. */
function serverBlocks(conf: string): string[] {
  const blocks: string[] = [];
  let depth = 0;
  let current: string[] | undefined;
  for (const line of conf.split("\n")) {
    if (depth === 0 && /^server \{$/.test(line)) current = [];
    if (current) current.push(line);
    depth += (line.match(/\{/g) ?? []).length - (line.match(/\}/g) ?? []).length;
    if (depth === 0 && current) {
      blocks.push(current.join("\n"));
      current = undefined;
    }
  }
  return blocks;
}
const serverNamed = (conf: string, names: string) => {
  const found = serverBlocks(conf).filter((b) => b.includes(`server_name ${names};`));
  assert.equal(found.length, 1, `one server with server_name ${names}`);
  return found[0];
};
/** Lines without comments, so assertions look at directives only. */
const directives = (conf: string) =>
  conf
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));

test("braces balance in every rendered nginx file", () => {
  for (const s of [cloudflare, letsencrypt]) {
    for (const conf of [renderNginxHttpConf(s), renderNginxSiteConf(s)]) {
      assert.equal((conf.match(/\{/g) ?? []).length, (conf.match(/\}/g) ?? []).length);
      for (const line of directives(conf)) assert.match(line, /[;{}]$|^'.*'$|^log_format leaninfra_json escape=json$/, `unterminated directive: ${line}`);
    }
  }
});

test("behind Cloudflare: set_real_ip_from for every published range, and CF-Connecting-IP", () => {
  const http = renderNginxHttpConf(cloudflare);
  const ranges = [...cloudflareIps.ipv4Cidrs, ...cloudflareIps.ipv6Cidrs];
  assert.ok(ranges.length > 10);
  const lines = directives(http).filter((l) => l.startsWith("set_real_ip_from "));
  assert.deepEqual(lines, ranges.map((r) => `set_real_ip_from ${r};`));
  assert.ok(directives(http).includes("real_ip_header CF-Connecting-IP;"));
  const plain = renderNginxHttpConf(letsencrypt);
  assert.doesNotMatch(plain, /set_real_ip_from|real_ip_header/, "without the proxy a client's header is never believed");
});

test("TLS: 1.2 and 1.3 only, HTTP/2, certificate paths from LAYOUT; client certificates only in Cloudflare mode", () => {
  const http = directives(renderNginxHttpConf(cloudflare));
  assert.ok(http.includes("ssl_protocols TLSv1.2 TLSv1.3;"));
  assert.ok(http.includes("http2 on;"));
  assert.ok(http.includes(`ssl_certificate ${LAYOUT.tls.certificate};`));
  assert.ok(http.includes(`ssl_certificate_key ${LAYOUT.tls.privateKey};`));
  assert.ok(LAYOUT.tls.privateKey.startsWith(`${LAYOUT.secrets}/`));
  assert.ok(http.includes("ssl_verify_client on;"));
  assert.ok(http.includes(`ssl_client_certificate ${LAYOUT.tls.originPullCa};`));
  const le = renderNginxHttpConf(letsencrypt);
  assert.doesNotMatch(le, /ssl_verify_client|ssl_client_certificate/);
  assert.match(le, new RegExp(`ssl_certificate ${LAYOUT.tls.certificate};`));
  // Proxied but with Let's Encrypt: the real address, and still no client certificate.
  const mixed = renderNginxHttpConf({ ...letsencrypt, cdnProxy: true, cloudflareRanges: cloudflare.cloudflareRanges });
  assert.match(mixed, /real_ip_header CF-Connecting-IP;/);
  assert.doesNotMatch(mixed, /ssl_verify_client/);
});

test("the JSON access log has every field, escaped as JSON, and is the log of every request", () => {
  const http = renderNginxHttpConf(cloudflare);
  const start = http.indexOf("log_format leaninfra_json escape=json");
  assert.ok(start > 0);
  const format = http.slice(start, http.indexOf(";\n", start));
  const template = [...format.matchAll(/'([^']*)'/g)].map((m) => m[1]).join("");
  const sample = template.replace(/\$[a-z_0-9]+/g, (v) => (["$status", "$body_bytes_sent", "$request_time"].includes(v) ? "1" : "v"));
  const parsed = JSON.parse(sample) as Record<string, unknown>;
  const keys = ["time", "route", "request_id", "method", "host", "path", "status", "bytes", "request_time", "upstream_response_time", "upstream", "release"];
  for (const key of keys) assert.ok(key in parsed, `log field ${key}`);
  assert.deepEqual(Object.keys(parsed), ACCESS_LOG_FIELDS.map(([k]) => k));
  for (const v of ["$time_iso8601", "$leaninfra_route", "$leaninfra_request_id", "$request_method", "$host", "$status", "$body_bytes_sent", "$request_time", "$upstream_response_time", "$upstream_addr", "$leaninfra_release"]) {
    assert.ok(template.includes(v), v);
  }
  assert.ok(directives(http).includes(`access_log ${NGINX_FILES.accessLog} leaninfra_json;`));
});

test("request id: the client's sane X-Request-ID or nginx's own, passed to the app and returned", () => {
  const http = renderNginxHttpConf(cloudflare);
  assert.match(http, /map \$http_x_request_id \$leaninfra_request_id \{\n\s+default \$request_id;\n\s+"~\^\[A-Za-z0-9\._:\+=\/@-\]\{1,128\}\$" \$http_x_request_id;/);
  const site = serverNamed(renderNginxSiteConf(cloudflare), "example.com");
  assert.match(site, /proxy_set_header X-Request-ID \$leaninfra_request_id;/);
  assert.match(site, /proxy_hide_header X-Request-ID;/);
  assert.match(site, /add_header X-Request-ID \$leaninfra_request_id always;/);
});

test("auth paths: a limit_req zone on the real client address and one rate-limited location per prefix, 429", () => {
  const http = directives(renderNginxHttpConf(cloudflare));
  assert.ok(http.includes("limit_req_zone $binary_remote_addr zone=leaninfra_auth:10m rate=30r/m;"));
  assert.ok(http.includes("limit_req_status 429;"));
  const site = serverNamed(renderNginxSiteConf(cloudflare), "example.com");
  for (const prefix of cloudflare.authPaths) {
    assert.match(site, new RegExp(`location \\^~ ${prefix.replace(/\//g, "\\/")} \\{\\n\\s+limit_req zone=leaninfra_auth burst=5 nodelay;\\n\\s+proxy_pass http://leaninfra_app;\\n\\s+\\}`));
  }
  assert.equal((site.match(/limit_req zone=/g) ?? []).length, 2);
  assert.equal(authBurst(30), 5);
  assert.equal(authBurst(6), 1);
  assert.equal(authBurst(1), 1);
  assert.equal(authBurst(6000), 1000);
  const none = renderNginxSiteConf({ ...cloudflare, authPaths: [] });
  assert.doesNotMatch(none, /limit_req zone=/);
});

test("the other name redirects (301) to the canonical one with path and query, both ways", () => {
  const apex = serverNamed(renderNginxSiteConf(cloudflare), "www.example.com");
  assert.match(apex, /return 301 https:\/\/example\.com\$request_uri;/);
  const wwwSettings = { ...cloudflare, canonicalHost: "www" as const };
  const www = renderNginxSiteConf(wwwSettings);
  assert.match(serverNamed(www, "example.com"), /return 301 https:\/\/www\.example\.com\$request_uri;/);
  assert.match(serverNamed(www, "www.example.com"), /proxy_pass http:\/\/leaninfra_app;/);
  assert.deepEqual([proxyHostnames(wwwSettings).canonical, proxyHostnames(wwwSettings).static], ["www.example.com", "static.example.com"]);
  assert.match(serverNamed(www, "static.example.com"), /location \/ \{\n\s+set \$leaninfra_route not_app;\n\s+return 404;/);
});

test("the static host serves only the static path prefixes (Cloudflare caches everything there), extra names answer 404, without them there is no such server", () => {
  const conf = renderNginxSiteConf(cloudflare);
  assert.match(serverNamed(conf, "example.com"), /location \/ \{\n\s+proxy_pass http:\/\/leaninfra_app;/);
  const statics = serverNamed(conf, "static.example.com");
  for (const prefix of cloudflare.staticPathPrefixes) {
    assert.match(statics, new RegExp(`location \\^~ ${prefix.replace(/\//g, "\\/")} \\{\\n\\s+gzip on;\\n\\s+proxy_pass http://leaninfra_app;\\n\\s+\\}`));
  }
  assert.match(statics, /location \/ \{\n\s+set \$leaninfra_route not_app;\n\s+return 404;\n\s+\}/, "any other path: 404, never the app (and not counted as the app's)");
  assert.doesNotMatch(statics, /limit_req|\/login/, "no auth path on the static host");
  assert.match(statics, /error_page 502 503 504 =503/, "the maintenance page there too");
  const extra = serverNamed(conf, "grafana.example.com status.example.com");
  assert.match(extra, /return 404;/);
  assert.doesNotMatch(extra, /proxy_pass/);
  const bare = renderNginxSiteConf({ ...cloudflare, staticHostname: "", extraHostnames: [] });
  serverNamed(bare, "example.com");
  assert.doesNotMatch(bare, /return 404;\n\}/);
  assert.equal(serverBlocks(bare).length, 5);
});

test("a default server drops unknown names and IP literals: 444, and no TLS handshake", () => {
  const defaults = serverBlocks(renderNginxSiteConf(cloudflare)).filter((b) => b.includes("default_server"));
  assert.equal(defaults.length, 1);
  const def = defaults[0];
  assert.match(def, /server_name _;/);
  for (const listen of ["listen 80 default_server;", "listen [::]:80 default_server;", "listen 443 ssl default_server;", "listen [::]:443 ssl default_server;"]) {
    assert.ok(def.includes(listen), listen);
  }
  assert.match(def, /ssl_reject_handshake on;/);
  assert.match(def, /return 444;/);
  assert.equal((renderNginxSiteConf(cloudflare).match(/default_server/g) ?? []).length, 4, "one default server");
});

test("port 80 redirects to https; only Let's Encrypt mode serves ACME challenges from the webroot", () => {
  const cf = renderNginxSiteConf(cloudflare);
  const port80 = serverNamed(cf, proxyHostnames(cloudflare).all.join(" "));
  assert.match(port80, /listen 80;/);
  assert.match(port80, /return 301 https:\/\/\$host\$request_uri;/);
  assert.doesNotMatch(cf, /acme-challenge/);
  const le = serverNamed(renderNginxSiteConf(letsencrypt), proxyHostnames(letsencrypt).all.join(" "));
  assert.match(le, new RegExp(`location \\^~ /\\.well-known/acme-challenge/ \\{\\n\\s+root ${ACME.webroot};`));
});

test("every server includes the deploy's release line before anything returns; the upstream comes from the deploy's file", () => {
  const conf = renderNginxSiteConf(cloudflare);
  assert.match(conf, new RegExp(`upstream leaninfra_app \\{\\n(\\s+#.*\\n)?\\s+include ${LAYOUT.nginx.upstream};\\n\\s+keepalive 16;`));
  const blocks = serverBlocks(conf);
  assert.equal(blocks.length, 7);
  for (const block of blocks) {
    if (block.includes("stub_status")) {
      assert.match(block, /access_log off;/);
      continue;
    }
    const include = block.indexOf(`include ${LAYOUT.nginx.release};`);
    assert.ok(include > 0, `release not included in:\n${block}`);
    const firstReturn = block.search(/return \d/);
    if (firstReturn >= 0) assert.ok(include < firstReturn, `release must be set before return in:\n${block}`);
  }
});

test("stub_status listens on loopback only, on the exported port", () => {
  assert.deepEqual({ ...NGINX_STATUS }, { address: "127.0.0.1", port: 8080, path: "/stub_status", url: "http://127.0.0.1:8080/stub_status" });
  const ports = [...Object.values(LAYOUT.app.slotPorts), 9100];
  assert.ok(!ports.includes(NGINX_STATUS.port), "no collision with the app's slots or node_exporter");
  const conf = renderNginxSiteConf(cloudflare);
  const status = serverBlocks(conf).find((b) => b.includes("stub_status;"))!;
  assert.deepEqual(directives(status).filter((l) => l.startsWith("listen")), ["listen 127.0.0.1:8080;"]);
  assert.match(status, /location = \/stub_status \{\n\s+stub_status;/);
  assert.equal((conf.match(/stub_status;/g) ?? []).length, 1);
});

test("the maintenance page answers 502/503/504 with 503 and Retry-After, and keeps the security headers", () => {
  const site = serverNamed(renderNginxSiteConf(cloudflare), "example.com");
  assert.match(site, /proxy_intercept_errors on;/);
  assert.match(site, /error_page 502 503 504 =503 \/__leaninfra\/maintenance\.html;/);
  const location = site.slice(site.indexOf("location = /__leaninfra/maintenance.html"));
  assert.match(location, /internal;/);
  assert.match(location, new RegExp(`alias ${LAYOUT.nginx.maintenancePage};`));
  assert.match(location, /add_header Retry-After 30 always;/);
  assert.match(location, /add_header Strict-Transport-Security "max-age=31536000" always;/);
});

test("security headers, gzip and the body size limit", () => {
  const site = serverNamed(renderNginxSiteConf(cloudflare), "example.com");
  for (const h of ['Strict-Transport-Security "max-age=31536000"', 'X-Content-Type-Options "nosniff"', 'Referrer-Policy "strict-origin-when-cross-origin"', 'X-Frame-Options "SAMEORIGIN"']) {
    assert.ok(site.includes(`add_header ${h} always;`), h);
  }
  const http = directives(renderNginxHttpConf({ ...cloudflare, clientMaxBodyMb: 7 }));
  // BREACH: the app's answers are never compressed by nginx; the static path prefixes are, on every server that has them.
  assert.ok(http.includes("gzip off;"));
  assert.ok(!http.includes("gzip on;"));
  for (const name of ["example.com", "static.example.com"]) {
    const server = serverNamed(renderNginxSiteConf(cloudflare), name);
    assert.equal(server.match(/gzip on;/g)?.length, cloudflare.staticPathPrefixes.length, name);
    for (const prefix of cloudflare.staticPathPrefixes) assert.ok(server.includes(`location ^~ ${prefix} {\n        gzip on;\n        proxy_pass http://leaninfra_app;`), `${name} ${prefix}`);
    assert.match(server, /location \/ \{\n\s+(proxy_pass http:\/\/leaninfra_app|set \$leaninfra_route not_app;\n\s+return 404);\n\s+\}/, "no gzip for the rest");
  }
  assert.ok(http.some((l) => l.startsWith("gzip_types ") && l.includes("application/json") && l.includes("text/css") && l.includes("application/javascript")));
  assert.ok(http.includes("client_max_body_size 7m;"));
  assert.ok(http.includes("include /etc/nginx/conf.d/*.conf;"));
  assert.ok(!http.some((l) => l.includes("sites-enabled")), "Debian's sites-enabled is not read");
});

test("proxyRole (Cloudflare): files at LAYOUT paths, the key 0600, nginx -t as validation, a guarded reload", () => {
  const role = proxyRole(cloudflare);
  assert.deepEqual(roleProblems(role), []);
  assert.equal(role.name, "proxy");
  assert.deepEqual(role.packages, ["nginx", "curl", "mtail", "logrotate"]);
  const file = (p: string) => role.files.find((f) => f.path === p);
  assert.equal(file(LAYOUT.tls.privateKey)?.mode, "0600");
  assert.equal(file(LAYOUT.tls.privateKey)?.content, PEM_KEY);
  assert.equal(file(LAYOUT.tls.certificate)?.content, PEM_CERT);
  assert.equal(file(LAYOUT.tls.originPullCa)?.mode, "0644");
  assert.equal(file(NGINX_FILES.httpConf)?.content, renderNginxHttpConf(cloudflare));
  assert.equal(file(NGINX_FILES.siteConf)?.content, renderNginxSiteConf(cloudflare));
  assert.ok(file(LAYOUT.nginx.maintenancePage));
  assert.equal(file(LAYOUT.nginx.upstream), undefined, "the deploy owns upstream.conf: never a managed file");
  assert.equal(file(LAYOUT.nginx.release), undefined, "the deploy owns release.conf: never a managed file");
  assert.equal(role.directories.find((d) => d.path === LAYOUT.secrets)?.mode, "0700");
  assert.match(role.validate ?? "", /^nginx -t$/m);
  const reload = file(NGINX_FILES.siteConf)?.onChange ?? "";
  assert.match(reload, /^if ! \[ -d \/run\/systemd\/system \]; then\n\s+echo "systemd is not running here: skipped systemctl reload nginx"/);
  assert.match(reload, /systemctl reload-or-restart nginx/);
  // The seeded files and Debian's default site are the snippet files' rendered settings.
  const apply = role.apply ?? "";
  assert.match(apply, /^readonly upstream_line='server 127\.0\.0\.1:8001;'\nreadonly upstream_file='\/etc\/leaninfra\/nginx\/upstream\.conf'$/m);
  assert.match(apply, /^readonly release_line='set \$leaninfra_release "none";'\nreadonly release_file='\/etc\/leaninfra\/nginx\/release\.conf'$/m);
  assert.match(apply, /^  seed_line "\$upstream_file" "\$upstream_line"\n  seed_line "\$release_file" "\$release_line"$/m);
  assert.match(apply, /^readonly debian_default_site='\/etc\/nginx\/sites-enabled\/default'$/m);
  assert.match(apply, /^  rm -f "\$debian_default_site"$/m);
  assert.doesNotMatch(apply, /certbot/);
  assert.doesNotMatch(renderRoleBundle(role).split("\n").slice(0, 10).join("\n"), /PRIVATE KEY/, "the header names files, never their content");
});

test("proxyRole (Let's Encrypt): certbot, a placeholder, webroot issuance for every name, the deploy hook", () => {
  const role = proxyRole(letsencrypt);
  assert.deepEqual(roleProblems(role), []);
  assert.deepEqual(role.packages, ["nginx", "curl", "mtail", "logrotate", "certbot", "openssl"]);
  assert.equal(role.files.find((f) => f.path === LAYOUT.tls.privateKey), undefined, "certbot's hook owns the key");
  assert.equal(role.files.find((f) => f.path === LAYOUT.tls.originPullCa), undefined);
  assert.equal(role.files.find((f) => f.path === ACME.deployHook)?.mode, "0755");
  assert.ok(role.directories.some((d) => d.path === ACME.webroot));
  const apply = role.apply ?? "";
  // certbot's arguments: the rendered settings of files/letsencrypt-certificate.sh, and the command using them.
  assert.match(apply, /^readonly acme_email='owner@example\.com'$/m);
  assert.match(apply, /^readonly acme_webroot='\/var\/www\/letsencrypt'\nreadonly acme_cert_name='leaninfra'\n/m);
  assert.match(apply, /^readonly acme_deploy_hook='\/etc\/leaninfra\/certbot-deploy-hook\.sh'$/m);
  // Each value joined to its option: argparse never takes a value starting with "-" for an option.
  assert.match(apply, /certbot certonly --non-interactive --agree-tos --no-eff-email "--email=\$acme_email" \\\n/);
  assert.match(apply, /--webroot "--webroot-path=\$acme_webroot" "--cert-name=\$acme_cert_name" "--deploy-hook=\$acme_deploy_hook" \\\n\s+"\$\{domains\[@\]\}"/);
  assert.match(apply, /^readonly -a acme_names=\('example\.com' 'www\.example\.com' 'static\.example\.com' 'grafana\.example\.com' 'status\.example\.com'\)$/m);
  assert.match(apply, /for name in "\$\{acme_names\[@\]\}"; do domains\+=\("--domains=\$name"\); done/);
  assert.doesNotMatch(apply, /certbot[^\n]*(--email|--webroot-path|--cert-name|--deploy-hook|-d) "/, "no value as a separate word");
  assert.match(apply, /openssl req -x509/);
  assert.match(role.validate ?? "", /openssl req -x509/, "validation stands in a placeholder when none exists yet");
  const hook = renderCertbotDeployHook();
  assert.match(hook, /^#!\/usr\/bin\/env bash\n/);
  assert.match(hook, new RegExp(`install -m 0600 -o root -g root -T -- "\\$lineage/privkey.pem" "\\$key.new"`));
  assert.match(hook, /^readonly key='\/etc\/leaninfra\/secrets\/site\.key'$/m);
  assert.match(hook, /if \[\[ -d \/run\/systemd\/system \]\]; then\n\s+nginx -t -q\n\s+systemctl reload nginx/);
});

test("invalid settings are refused with every problem, each naming its field", () => {
  const bad: ProxySettings = {
    ...cloudflare,
    domain: "Example..com",
    staticHostname: "www",
    extraHostnames: ["grafana", "grafana", "-bad"],
    cloudflareRanges: { ipv4Cidrs: ["173.245.48.0/33", "2400:cb00::/32"], ipv6Cidrs: ["2400:cb00::/129", "1.2.3.4/8"] },
    tls: { mode: "cloudflare", certificatePem: "not a pem", privateKeyPem: PEM_CERT, originPullCaPem: PEM_CERT },
    authPaths: ["/login", "/", "/login", "login", "/a b"],
    authRateLimitPerMinute: 0,
    clientMaxBodyMb: 1.5,
  };
  const problems = proxySettingsProblems(bad);
  const fields = problems.map((p) => p.split(" ")[0]);
  assert.deepEqual(fields, [
    "domain",
    "staticHostname",
    "extraHostnames[1]",
    "extraHostnames[2]",
    "cloudflareRanges.ipv4Cidrs[0]",
    "cloudflareRanges.ipv4Cidrs[1]",
    "cloudflareRanges.ipv6Cidrs[0]",
    "cloudflareRanges.ipv6Cidrs[1]",
    "originTls.certificatePem",
    "originTls.privateKeyPem",
    "authPaths[1]",
    "authPaths[2]",
    "authPaths[3]",
    "authPaths[4]",
    "authRateLimitPerMinute",
    "clientMaxBodyMb",
  ]);
  assert.throws(
    () => proxyRole(bad),
    (e: Error) => e instanceof SettingsError && e.message.startsWith("proxy settings have 16 problems:\n  - domain ") && e.message.includes("authPaths[1]") && e.problems.length === 16,
  );

  assert.deepEqual(proxySettingsProblems(cloudflare), []);
  assert.deepEqual(proxySettingsProblems(letsencrypt), []);
  assert.match(proxySettingsProblems({ ...cloudflare, cdnProxy: false }).join("\n"), /^originTls is set but cdnProxy is false/);
  assert.match(proxySettingsProblems({ ...cloudflare, cloudflareRanges: { ipv4Cidrs: [], ipv6Cidrs: [] } }).join("\n"), /^cloudflareRanges is empty/);
  assert.match(proxySettingsProblems({ ...letsencrypt, tls: { mode: "letsencrypt", acmeEmail: "o'neil@x" } }).join("\n"), /^acmeEmail "o'neil@x" /);
});

const FACTS: Omit<StackFacts, "cdnProxy" | "staticHostname" | "extraHostnames"> = {
  stack: "unit",
  domain: "example.com",
  hostname: "app",
  fqdn: "app.example.com",
  adminUser: "ops",
  canonicalHost: "apex",
  staticPathPrefixes: ["/assets/", "/static/"],
  volumeSizeGb: 20,
  backupRetentionDays: 35,
  backupLockDays: 14,
  memoryMb: 8192,
  vcpus: 4,
  serverType: "cx32",
};
const ORIGIN_TLS: OriginTls = { certificatePem: PEM_CERT, privateKeyPem: PEM_KEY, originPullCaPem: PEM_CERT };
const RANGES: CdnRanges = { ipv4Cidrs: [...cloudflareIps.ipv4Cidrs], ipv6Cidrs: [...cloudflareIps.ipv6Cidrs] };
type Slice = Partial<z.input<typeof role.settings>>;
/** The definition's settings: the slice parsed (defaults filled) and the stack's facts, as the stack passes them. */
function defined(slice: Slice, facts: Partial<StackFacts> = {}) {
  return { ...FACTS, staticHostname: "static", extraHostnames: ["grafana", "status"], cdnProxy: true, ...facts, ...role.settings.parse(slice) };
}

test("the proxy's definition: its config keys with defaults and descriptions, after base, inputs from the stack", () => {
  assert.equal(role.name, "proxy");
  assert.deepEqual(role.after, ["base"]);
  assert.deepEqual(Object.keys(role.settings.shape), ["authPaths", "authRateLimitPerMinute", "clientMaxBodyMb", "acmeEmail", "sloRouteGroups"]);
  assert.deepEqual(role.settings.parse({}), { authPaths: ["/login", "/api/auth/"], authRateLimitPerMinute: 30, clientMaxBodyMb: 25, acmeEmail: "", sloRouteGroups: [] });
  for (const [key, schema] of Object.entries(role.settings.shape)) assert.ok((schema as z.ZodType).description, `${key} is described`);
  assert.deepEqual(Object.keys(role.inputs ?? {}), ["originTls", "cloudflareRanges"]);
  for (const input of Object.values(role.inputs ?? {})) assert.equal(input.from, "stack");
  // The slice and the proxy check an e-mail address with one pattern: what the config takes, nginx's role takes.
  for (const email of ["owner@example.com", "o'neil@x", "o'neil@example.com", "a b@example.com", "ops+le@mail.example.org", "x@y"]) {
    const sliceTakes = role.settings.safeParse({ acmeEmail: email }).success;
    assert.equal(sliceTakes, EMAIL_ADDRESS.test(email), email);
    assert.equal(proxySettingsProblems({ ...letsencrypt, tls: { mode: "letsencrypt", acmeEmail: email } }).length === 0, sliceTakes, email);
  }
  assert.equal(role.settings.safeParse({ authPaths: ["login"] }).success, false);
  assert.equal(role.settings.safeParse({ clientMaxBodyMb: 1025 }).success, false);
});

test("render gives proxyRole's role: Origin CA TLS behind Cloudflare, Let's Encrypt with acmeEmail without it", () => {
  const behind = role.render(defined({}), { originTls: ORIGIN_TLS, cloudflareRanges: RANGES });
  assert.deepEqual(behind, proxyRole(cloudflare));
  const direct = role.render(defined({ acmeEmail: "owner@example.com" }, { cdnProxy: false }), { originTls: undefined, cloudflareRanges: { ipv4Cidrs: [], ipv6Cidrs: [] } });
  assert.deepEqual(direct, proxyRole(letsencrypt));
  // Without the proxy the Origin CA is not used even when given, and Cloudflare's ranges are not believed.
  const given = role.render(defined({ acmeEmail: "owner@example.com" }, { cdnProxy: false }), { originTls: ORIGIN_TLS, cloudflareRanges: RANGES });
  assert.deepEqual(given, proxyRole({ ...letsencrypt, cloudflareRanges: RANGES }));
  assert.doesNotMatch(given.files.map((f) => f.content).join("\n"), /set_real_ip_from|BEGIN PRIVATE KEY/);
});

test("render refuses each bad value with SettingsError, the problem starting with its key", () => {
  const cases: Array<{ slice?: Slice; facts?: Partial<StackFacts>; inputs?: Partial<ProxyInputs>; problem: string | RegExp }> = [
    {
      facts: { cdnProxy: false },
      problem: `acmeEmail "" is required when cdnProxy is false: nginx then gets its certificate from Let's Encrypt, which needs a contact address`,
    },
    { slice: { authPaths: ["/login", "/"] }, problem: `authPaths[1] "/" would rate-limit the whole site (accepted: the login and auth prefixes, e.g. /login)` },
    { slice: { authPaths: ["/login", "/api/auth/", "/login"] }, problem: `authPaths[2] "/login" is listed twice` },
    { facts: { domain: "1.2.3.4" }, problem: /^domain "1\.2\.3\.4" is not a lowercase domain name \(accepted: / },
    { facts: { domain: "Example.com" }, problem: /^domain "Example\.com" / },
    { facts: { canonicalHost: "both" as "apex" }, problem: /^canonicalHost "both" .*\(accepted: apex or www\)$/ },
    { facts: { staticHostname: "www" }, problem: /^staticHostname "www" .*\(accepted: / },
    { facts: { extraHostnames: ["grafana", "-bad"] }, problem: /^extraHostnames\[1\] "-bad" is not a host name label \(accepted: / },
    { facts: { extraHostnames: ["static"] }, problem: /^extraHostnames\[0\] "static" is already served / },
    { slice: { authRateLimitPerMinute: 0 } as Slice, problem: /^authRateLimitPerMinute 0 is not a whole number from 1 to 6000/ },
    { slice: { clientMaxBodyMb: 2000 } as Slice, problem: /^clientMaxBodyMb 2000 is not a whole number from 1 to 1024/ },
    { facts: { cdnProxy: false }, slice: { acmeEmail: "owner@example.com", authPaths: ["login"] } as Slice, problem: /^authPaths\[0\] "login" is not a path prefix/ },
    { inputs: { originTls: undefined }, problem: /^originTls is missing: / },
    { inputs: { originTls: { ...ORIGIN_TLS, certificatePem: "not a pem" } }, problem: /^originTls\.certificatePem is not a PEM certificate/ },
    { inputs: { originTls: { ...ORIGIN_TLS, privateKeyPem: PEM_CERT } }, problem: /^originTls\.privateKeyPem is not a PEM private key/ },
    { inputs: { cloudflareRanges: { ipv4Cidrs: [], ipv6Cidrs: [] } }, problem: /^cloudflareRanges is empty: / },
    { inputs: { cloudflareRanges: { ipv4Cidrs: ["173.245.48.0/33"], ipv6Cidrs: [] } }, problem: /^cloudflareRanges\.ipv4Cidrs\[0\] "173\.245\.48\.0\/33" is not an IPv4 CIDR/ },
  ];
  for (const c of cases) {
    // The zod slice would refuse some of these first; render must refuse them on its own too.
    const settings = { ...defined({}, c.facts), ...c.slice };
    const inputs: ProxyInputs = { originTls: ORIGIN_TLS, cloudflareRanges: RANGES, ...c.inputs };
    assert.throws(
      () => role.render(settings, inputs),
      (e: Error) => {
        assert.ok(e instanceof SettingsError, `a SettingsError, not ${e.name}: ${e.message}`);
        assert.equal(e.role, "proxy");
        assert.equal(e.problems.length, 1, e.message);
        if (typeof c.problem === "string") assert.equal(e.problems[0], c.problem);
        else assert.match(e.problems[0], c.problem);
        return true;
      },
    );
  }
});

const REPO = path.join(__dirname, "..", "..");
const FILES = path.join(REPO, "components", "proxy", "files");

test("shellcheck passes every script of files/ on its own, and the rendered snippets and hook", () => {
  const scripts = fs.readdirSync(FILES).filter((f) => f.endsWith(".sh"));
  assert.deepEqual(scripts.sort(), ["apply.sh", "certbot-deploy-hook.sh", "health-check.sh", "letsencrypt-certificate.sh", "seed-first-files.sh", "validate.sh"]);
  for (const file of scripts) {
    const result = spawnSync("shellcheck", ["-x", "-s", "bash", path.join("components", "proxy", "files", file)], { cwd: REPO, encoding: "utf8" });
    if (result.error) assert.fail(`shellcheck could not run (${result.error.message})`);
    assert.equal(result.status, 0, `shellcheck found problems in components/proxy/files/${file}:\n${result.stdout}${result.stderr}`);
  }
  for (const [mode, settings] of Object.entries({ cloudflare, letsencrypt })) {
    const r = proxyRole(settings);
    for (const [step, snippet] of Object.entries({ validate: r.validate, apply: r.apply, healthCheck: r.healthCheck })) {
      assert.ok(snippet, `${mode} ${step}`);
      assert.doesNotMatch(snippet, /@include|@settings-|shellcheck shell=/, `${mode} ${step}: every file part rendered`);
      assertShellcheckClean(`the ${mode} ${step} snippet`, snippet);
    }
  }
  const hook = renderCertbotDeployHook();
  assert.doesNotMatch(hook, /@lib|@settings-/);
  assert.match(hook, /^set -Eeuo pipefail$/m, "the shared library's header");
  assertShellcheckClean("the rendered certbot deploy hook", hook);
});

test("templates: notes (#:) never reach the host, every marker is filled, and a missing or unused value is an error", () => {
  for (const s of [cloudflare, letsencrypt]) {
    for (const text of [renderNginxHttpConf(s), renderNginxSiteConf(s), renderMaintenancePage(s)]) {
      assert.doesNotMatch(text, /\{\{|\}\}|^\s*#:/m);
    }
  }
  assert.match(renderMaintenancePage({ domain: "shop.example.org" }), /<title>Back in a moment - shop\.example\.org<\/title>/);
  assert.throws(() => fillTemplate("maintenance.html", {}), /maintenance\.html: no value for \{\{domain\}\}/);
  assert.throws(() => fillTemplate("maintenance.html", { domain: "example.com", extra: "x" }), /no marker for \{\{extra\}\}/);
  assert.throws(() => fillTemplate("maintenance.html", { domain: ["a", "b"] }), /\{\{domain\}\} is inside a line/);
  // A marker alone on its line takes lines, indented like it; no lines remove it.
  const http = renderNginxHttpConf(cloudflare);
  assert.match(http, /\n    http2 on;\n    # Cloudflare's Origin CA certificate/);
  assert.match(renderNginxHttpConf(letsencrypt), /\n    ssl_certificate_key \/etc\/leaninfra\/secrets\/site\.key;\n\n    # The request id/);
});

/** A systemd drop-in's [Service] settings: key -> every value it is given, in order. */
function serviceSettings(text: string): Map<string, string[]> {
  const lines = text.split("\n").filter((l) => l !== "" && !l.startsWith("#"));
  assert.equal(lines[0], "[Service]", "one [Service] section");
  const settings = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    assert.ok(m, `a Key=value line: ${line}`);
    settings.set(m[1], [...(settings.get(m[1]) ?? []), m[2]]);
  }
  return settings;
}

test("nginx's and certbot's sandboxes: read-only system but what each writes, no new privileges, only the capabilities they use", () => {
  const cf = proxyRole(cloudflare);
  const le = proxyRole(letsencrypt);
  const nginx = cf.files.find((f) => f.path === SYSTEMD_DROP_INS.nginx);
  assert.ok(nginx, "the nginx drop-in in both modes");
  assert.ok(le.files.some((f) => f.path === SYSTEMD_DROP_INS.nginx));
  assert.ok(cf.directories.some((d) => d.path === "/etc/systemd/system/nginx.service.d"));
  const n = serviceSettings(nginx.content);
  assert.deepEqual(n.get("NoNewPrivileges"), ["yes"]);
  assert.deepEqual(n.get("ProtectSystem"), ["strict"]);
  assert.deepEqual(n.get("ProtectHome"), ["yes"]);
  assert.deepEqual(n.get("PrivateTmp"), ["yes"]);
  // The master binds 80/443, opens www-data's logs, signals and starts workers as www-data.
  assert.deepEqual(n.get("CapabilityBoundingSet")?.[0].split(" ").sort(), ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETGID", "CAP_SETUID"]);
  assert.deepEqual(n.get("ReadWritePaths")?.[0].split(" "), ["/var/log/nginx", "/var/lib/nginx", "/run"]);
  assert.ok(!n.get("ReadWritePaths")?.[0].includes("/etc"), "nginx never writes its config or keys");
  // A sandbox applies to a new process only: the handler restarts nginx, and waits on a fresh host.
  assert.match(nginx.onChange ?? "", /systemctl daemon-reload\n/);
  assert.match(nginx.onChange ?? "", /\n\s+systemctl restart nginx\n/);
  assert.match(nginx.onChange ?? "", /\[ ! -e \/etc\/leaninfra\/nginx\/upstream\.conf \]/);
  assert.match(cf.apply ?? "", /^\s+systemctl restart nginx >&2$/m, "the first start after the first files is a restart, so the sandbox applies");

  assert.equal(cf.files.find((f) => f.path === SYSTEMD_DROP_INS.certbot), undefined, "no certbot behind Cloudflare");
  const certbot = le.files.find((f) => f.path === SYSTEMD_DROP_INS.certbot);
  assert.ok(certbot);
  assert.ok(le.directories.some((d) => d.path === "/etc/systemd/system/certbot.service.d"));
  const c = serviceSettings(certbot.content);
  assert.deepEqual(c.get("CapabilityBoundingSet")?.[0].split(" ").sort(), ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_NET_BIND_SERVICE"]);
  assert.deepEqual(c.get("NoNewPrivileges"), ["yes"]);
  assert.deepEqual(c.get("ProtectSystem"), ["strict"]);
  // certbot's state, the webroot's challenges, and what the deploy hook writes (nginx -t opens the logs).
  const writable = c.get("ReadWritePaths")?.[0].split(" ") ?? [];
  for (const dir of ["/etc/letsencrypt", "/var/lib/letsencrypt", "/var/log/letsencrypt", ACME.webroot, path.dirname(LAYOUT.tls.certificate), path.dirname(LAYOUT.tls.privateKey), "/var/log/nginx"]) {
    assert.ok(writable.includes(dir), `certbot.service may write ${dir}`);
  }
  assert.match(certbot.onChange ?? "", /systemctl daemon-reload/);
  // systemd refuses to start a unit whose ReadWritePaths do not exist: each is the role's, or nginx's package's.
  const fromPackages = ["/var/log/nginx", "/var/lib/nginx", "/run"];
  for (const [role, settings] of [[cf, n], [le, c]] as const) {
    for (const dir of settings.get("ReadWritePaths")?.[0].split(" ") ?? []) {
      assert.ok(fromPackages.includes(dir) || role.directories.some((d) => d.path === dir), `${dir} exists before the unit starts`);
    }
  }
  assert.equal(le.directories.find((d) => d.path === "/var/log/letsencrypt")?.mode, "0700", "certbot's own mode: no fix-up churn");
});

test("sloRouteGroups: name=/prefix entries, a name repeating for more prefixes; bad names, prefixes, reserved names, duplicates and too many groups refused with the key and index", () => {
  const statics = ["/assets/", "/static/"];
  assert.deepEqual(sloRouteGroupProblems(["api=/api/", "checkout=/cart/", "checkout=/checkout", "health=/healthz"], statics), []);
  assert.deepEqual(parseSloRouteGroups(["api=/api/", "checkout=/cart/", "api=/v1/"]), [
    { name: "api", prefixes: ["/api/", "/v1/"] },
    { name: "checkout", prefixes: ["/cart/"] },
  ]);
  const refused: Array<[string[], RegExp]> = [
    [["/api/"], /^sloRouteGroups\[0\] "\/api\/" is not name=\/prefix \(accepted: e\.g\. "api=\/api\/"/],
    [["API=/api/"], /^sloRouteGroups\[0\] "API=\/api\/": "API" is not a group name \(accepted: a-z, 0-9 and _/],
    [["my-api=/api/"], /"my-api" is not a group name/],
    [["other=/x/"], /^sloRouteGroups\[0\] "other=\/x\/": "other" is a group nginx sets itself \(other, static, not_app; accepted: another name\)$/],
    [["not_app=/x/"], /"not_app" is a group nginx sets itself/],
    [["static=/x/"], /"static" is a group nginx sets itself/],
    [["api=api/"], /"api\/" is not a path prefix \(accepted: starts with "\/"/],
    [["api=/a pi/"], /"\/a pi\/" is not a path prefix/],
    [["api=/(x|y)/"], /is not a path prefix/],
    [["api=/"], /"\/" would put every request in one group/],
    [["api=/assets/"], /\/assets\/ is a static path prefix, already the group "static"/],
    [["api=/api/", "v2=/api/"], /^sloRouteGroups\[1\] "v2=\/api\/": \/api\/ is already in sloRouteGroups\[0\] \(accepted: each prefix once\)$/],
    [Array.from({ length: 11 }, (_, i) => `g${i}=/g${i}/`), /^sloRouteGroups names 11 groups \(g0, g1, .*g10; accepted: at most 10: each is a label of every request series\)$/],
    [Array.from({ length: 51 }, (_, i) => `api=/p${i}/`), /^sloRouteGroups has 51 entries \(accepted: at most 50\)$/],
  ];
  for (const [entries, expected] of refused) {
    const problems = sloRouteGroupProblems(entries, statics);
    assert.equal(problems.length, 1, `${JSON.stringify(entries)}: ${problems.join("; ")}`);
    assert.match(problems[0], expected);
  }
  assert.deepEqual(sloRouteGroupProblems(Array.from({ length: 10 }, (_, i) => `g${i}=/g${i}/`), statics), [], "ten groups are accepted");
  // Through the role's render: a SettingsError naming the key.
  assert.throws(() => proxyRole({ ...cloudflare, sloRouteGroups: ["other=/x/"] }), (e: unknown) => e instanceof SettingsError && /sloRouteGroups\[0\]/.test(e.message));
});

test("the route map: default other, static prefixes and the groups longest first (dots escaped), the route logged, not_app in every server that answers without the app", () => {
  const map = renderRouteMap(parseSloRouteGroups(["api=/api/", "admin=/api/admin/", "docs=/docs.v2/"]), ["/static/"]);
  assert.deepEqual(map, [
    "map $leaninfra_path $leaninfra_route {",
    "    default other;",
    '    "~^/api/admin/" admin;',
    '    "~^/docs\\.v2/" docs;',
    '    "~^/static/" static;',
    '    "~^/api/" api;',
    "}",
  ]);
  const http = renderNginxHttpConf({ ...cloudflare, sloRouteGroups: ["api=/api/"] });
  assert.ok(http.includes(["    map $leaninfra_path $leaninfra_route {", "        default other;", '        "~^/assets/" static;', '        "~^/static/" static;', '        "~^/api/" api;', "    }"].join("\n")), http);
  assert.deepEqual(renderRouteMap([], []), ["map $leaninfra_path $leaninfra_route {", "    default other;", "}"], "no groups: every request of the app is other");
  // Servers without the app: the port-80 redirects, the default server, the www/apex redirect, the extra names, the static host's 404.
  const site = renderNginxSiteConf(cloudflare);
  const blocks = serverBlocks(site);
  for (const block of blocks) {
    const servesApp = /proxy_pass http:\/\/leaninfra_app/.test(block);
    const stub = block.includes("stub_status");
    if (stub) assert.doesNotMatch(block, /leaninfra_route/);
    else if (!servesApp) assert.match(block, /^    set \$leaninfra_route not_app;$/m, block);
  }
  assert.doesNotMatch(serverNamed(site, "example.com"), /leaninfra_route/, "the site's requests keep their route group");
  // set runs in order in the rewrite phase: before any return of the same block.
  for (const block of blocks.filter((b) => b.includes("not_app"))) {
    assert.ok(block.indexOf("set $leaninfra_route not_app;") < block.lastIndexOf("return "), block);
  }
  assert.equal(ROUTES.notApp, "not_app");
});

test("nginx's access and error logs also go to the journal (tags nginx_access, nginx_error), the file stays for mtail", () => {
  const http = directives(renderNginxHttpConf(cloudflare));
  assert.ok(http.includes(`access_log ${NGINX_FILES.accessLog} leaninfra_json;`));
  assert.ok(http.includes(`access_log syslog:server=unix:/dev/log,tag=${NGINX_JOURNAL_TAGS.access},nohostname leaninfra_json;`));
  assert.ok(http.includes(`error_log ${NGINX_FILES.errorLog};`));
  assert.ok(http.includes(`error_log syslog:server=unix:/dev/log,tag=${NGINX_JOURNAL_TAGS.error},nohostname;`));
  // nginx's syslog tags: letters, digits and underscores, at most 32.
  for (const tag of Object.values(NGINX_JOURNAL_TAGS)) assert.match(tag, /^[A-Za-z0-9_]{1,32}$/);
});

test("the access log's first fields come from a fixed alphabet (time, route, status, request_time): mtail's pattern reads only them", () => {
  assert.deepEqual(ACCESS_LOG_FIELDS.slice(0, 4).map(([k, v]) => [k, v]), [
    ["time", "$time_iso8601"],
    ["route", "$leaninfra_route"],
    ["status", "$status"],
    ["request_time", "$request_time"],
  ]);
  const program = renderMtailProgram(NGINX_FILES.accessLog);
  const pattern = /^\/(\^\\\{.*,)\/ \{$/m.exec(program);
  assert.ok(pattern, program);
  assert.equal(pattern[1], '^\\{"time":"[^"]*","route":"(?P<route>[a-z0-9_]+)","status":(?P<class>[0-9])[0-9][0-9],"request_time":(?P<seconds>[0-9]+\\.[0-9]+),');
  // The pattern (as a JavaScript regex, named groups written (?<name>)) against the format with sample values.
  const re = new RegExp(pattern[1].replace(/\(\?P</g, "(?<"));
  const line = '{"time":"2026-12-01T10:00:00+00:00","route":"api","status":503,"request_time":0.250,"request_id":"x","path":"/\\"route\\":\\"admin\\",\\"status\\":200,"}';
  assert.deepEqual({ ...re.exec(line)?.groups }, { route: "api", class: "5", seconds: "0.250" });
  assert.equal(re.exec('{"time":"t","request_id":"x","route":"api","status":200,"request_time":0.1,'), null, "another field order does not match");
});

test("the mtail program: the contract's metrics and buckets, not_app and 1xx not counted, unreadable lines counted apart", () => {
  assert.deepEqual([...REQUEST_DURATION_BUCKETS_SECONDS], [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);
  assert.deepEqual({ ...REQUEST_METRICS }, { requests: "leaninfra_http_requests_total", duration: "leaninfra_http_request_duration_seconds", unmatched: "leaninfra_http_log_lines_unmatched_total" });
  const program = renderMtailProgram(NGINX_FILES.accessLog);
  assert.match(program, /^counter leaninfra_http_requests_total by route, code$/m);
  assert.match(program, /^histogram leaninfra_http_request_duration_seconds by route buckets 0\.05, 0\.1, 0\.25, 0\.5, 1, 2\.5, 5, 10$/m);
  assert.match(program, /^counter leaninfra_http_log_lines_unmatched_total$/m);
  assert.match(program, /^  \$route != "not_app" && \$class >= 2 && \$class <= 5 \{$/m);
  assert.match(program, /^    leaninfra_http_requests_total\[\$route\]\[\$class \+ "xx"\]\+\+$/m);
  assert.match(program, /^# Managed by LeanInfra \(role "proxy"\)/m);
  assert.doesNotMatch(program, /\{\{|#:/, "every template marker and note is gone");
});

test("proxyRole runs mtail: its program and drop-in (loopback, no prog label, sandbox), compiled in validation, restarted on change, enabled by apply, checked by the health check", () => {
  const r = proxyRole(cloudflare);
  const file = (p: string) => r.files.find((f) => f.path === p);
  assert.equal(file(MTAIL.program)?.content, renderMtailProgram(NGINX_FILES.accessLog));
  assert.equal(MTAIL.program, "/etc/mtail/leaninfra-nginx.mtail");
  const dropIn = file(MTAIL.dropIn)?.content ?? "";
  assert.equal(dropIn, renderMtailDropIn(NGINX_FILES.accessLog));
  assert.match(dropIn, /^ExecCondition=\nExecStart=\nExecStart=\/usr\/bin\/mtail --progs \/etc\/mtail --logs \/var\/log\/nginx\/access\.log --address 127\.0\.0\.1 --port 3903 --emit_prog_label=false --logtostderr$/m);
  assert.match(dropIn, /^MemoryMax=128M$/m);
  assert.match(dropIn, /^CapabilityBoundingSet=$/m);
  assert.match(dropIn, /^RestrictAddressFamilies=AF_INET AF_INET6$/m);
  for (const f of [file(MTAIL.program), file(MTAIL.dropIn)]) assert.match(f?.onChange ?? "", /systemctl daemon-reload\n\s+systemctl restart mtail/);
  assert.match(r.validate ?? "", /^readonly mtail_progs='\/etc\/mtail'$/m);
  assert.match(r.validate ?? "", /mtail --compile_only --logtostderr --progs "\$mtail_progs" --address 127\.0\.0\.1 --port 0/);
  assert.match(r.apply ?? "", /systemctl enable mtail/);
  assert.match(r.healthCheck ?? "", /^readonly mtail_url='http:\/\/127\.0\.0\.1:3903\/metrics'$/m);
  assert.ok(r.directories.some((d) => d.path === "/etc/systemd/system/mtail.service.d"));
});
