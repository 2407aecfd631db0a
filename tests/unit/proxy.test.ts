import test from "node:test";
import assert from "node:assert/strict";
import cloudflareIps from "../../infra/data/cloudflare-ips.json";
import {
  ACCESS_LOG_FIELDS,
  ACME,
  NGINX_FILES,
  NGINX_STATUS,
  ProxySettings,
  authBurst,
  proxyHostnames,
  proxyRole,
  proxySettingsProblems,
  renderCertbotDeployHook,
  renderNginxHttpConf,
  renderNginxSiteConf,
} from "../../components/proxy";
import { renderRoleBundle, roleProblems } from "../../components/host/bundle";
import { LAYOUT } from "../../components/host/layout";

const PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

const cloudflare: ProxySettings = {
  domain: "example.com",
  canonicalHost: "apex",
  staticHostname: "static",
  extraHostnames: ["grafana", "status"],
  proxied: true,
  cloudflareRanges: { ipv4Cidrs: [...cloudflareIps.ipv4Cidrs], ipv6Cidrs: [...cloudflareIps.ipv6Cidrs] },
  tls: { mode: "cloudflare", certificatePem: PEM_CERT, privateKeyPem: PEM_KEY, originPullCaPem: PEM_CERT },
  authPaths: ["/login", "/api/auth/"],
  authRateLimitPerMinute: 30,
  clientMaxBodyMb: 25,
};
const letsencrypt: ProxySettings = {
  ...cloudflare,
  proxied: false,
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
  const mixed = renderNginxHttpConf({ ...letsencrypt, proxied: true, cloudflareRanges: cloudflare.cloudflareRanges });
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
  const keys = ["time", "request_id", "method", "host", "path", "status", "bytes", "request_time", "upstream_response_time", "upstream", "release"];
  for (const key of keys) assert.ok(key in parsed, `log field ${key}`);
  assert.deepEqual(Object.keys(parsed), ACCESS_LOG_FIELDS.map(([k]) => k));
  for (const v of ["$time_iso8601", "$leaninfra_request_id", "$request_method", "$host", "$status", "$body_bytes_sent", "$request_time", "$upstream_response_time", "$upstream_addr", "$leaninfra_release"]) {
    assert.ok(template.includes(v), v);
  }
  assert.ok(directives(http).includes(`access_log ${NGINX_FILES.accessLog} leaninfra_json;`));
});

test("request id: the client's sane X-Request-ID or nginx's own, passed to the app and returned", () => {
  const http = renderNginxHttpConf(cloudflare);
  assert.match(http, /map \$http_x_request_id \$leaninfra_request_id \{\n\s+default \$request_id;\n\s+"~\^\[A-Za-z0-9\._:\+=\/@-\]\{1,128\}\$" \$http_x_request_id;/);
  const site = serverNamed(renderNginxSiteConf(cloudflare), "example.com static.example.com");
  assert.match(site, /proxy_set_header X-Request-ID \$leaninfra_request_id;/);
  assert.match(site, /proxy_hide_header X-Request-ID;/);
  assert.match(site, /add_header X-Request-ID \$leaninfra_request_id always;/);
});

test("auth paths: a limit_req zone on the real client address and one rate-limited location per prefix, 429", () => {
  const http = directives(renderNginxHttpConf(cloudflare));
  assert.ok(http.includes("limit_req_zone $binary_remote_addr zone=leaninfra_auth:10m rate=30r/m;"));
  assert.ok(http.includes("limit_req_status 429;"));
  const site = serverNamed(renderNginxSiteConf(cloudflare), "example.com static.example.com");
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
  assert.match(serverNamed(www, "www.example.com static.example.com"), /proxy_pass http:\/\/leaninfra_app;/);
  assert.deepEqual(proxyHostnames(wwwSettings).served, ["www.example.com", "static.example.com"]);
});

test("the static host is served like the site, extra names answer 404, without them there is no such server", () => {
  const conf = renderNginxSiteConf(cloudflare);
  assert.match(serverNamed(conf, "example.com static.example.com"), /location \/ \{\n\s+proxy_pass http:\/\/leaninfra_app;/);
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
  assert.equal(blocks.length, 6);
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
  const site = serverNamed(renderNginxSiteConf(cloudflare), "example.com static.example.com");
  assert.match(site, /proxy_intercept_errors on;/);
  assert.match(site, /error_page 502 503 504 =503 \/__leaninfra\/maintenance\.html;/);
  const location = site.slice(site.indexOf("location = /__leaninfra/maintenance.html"));
  assert.match(location, /internal;/);
  assert.match(location, new RegExp(`alias ${LAYOUT.nginx.maintenancePage};`));
  assert.match(location, /add_header Retry-After 30 always;/);
  assert.match(location, /add_header Strict-Transport-Security "max-age=31536000" always;/);
});

test("security headers, gzip and the body size limit", () => {
  const site = serverNamed(renderNginxSiteConf(cloudflare), "example.com static.example.com");
  for (const h of ['Strict-Transport-Security "max-age=31536000"', 'X-Content-Type-Options "nosniff"', 'Referrer-Policy "strict-origin-when-cross-origin"', 'X-Frame-Options "SAMEORIGIN"']) {
    assert.ok(site.includes(`add_header ${h} always;`), h);
  }
  const http = directives(renderNginxHttpConf({ ...cloudflare, clientMaxBodyMb: 7 }));
  assert.ok(http.includes("gzip on;"));
  assert.ok(http.some((l) => l.startsWith("gzip_types ") && l.includes("application/json") && l.includes("text/css") && l.includes("application/javascript")));
  assert.ok(http.includes("client_max_body_size 7m;"));
  assert.ok(http.includes("include /etc/nginx/conf.d/*.conf;"));
  assert.ok(!http.some((l) => l.includes("sites-enabled")), "Debian's sites-enabled is not read");
});

test("proxyRole (Cloudflare): files at LAYOUT paths, the key 0600, nginx -t as validation, a guarded reload", () => {
  const role = proxyRole(cloudflare);
  assert.deepEqual(roleProblems(role), []);
  assert.equal(role.name, "proxy");
  assert.deepEqual(role.packages, ["nginx", "curl"]);
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
  assert.match(role.apply ?? "", /seed_line \/etc\/leaninfra\/nginx\/upstream\.conf 'server 127\.0\.0\.1:8001;'/);
  assert.match(role.apply ?? "", /seed_line \/etc\/leaninfra\/nginx\/release\.conf 'set \$leaninfra_release "none";'/);
  assert.match(role.apply ?? "", /rm -f \/etc\/nginx\/sites-enabled\/default/);
  assert.doesNotMatch(role.apply ?? "", /certbot/);
  assert.doesNotMatch(renderRoleBundle(role).split("\n").slice(0, 10).join("\n"), /PRIVATE KEY/, "the header names files, never their content");
});

test("proxyRole (Let's Encrypt): certbot, a placeholder, webroot issuance for every name, the deploy hook", () => {
  const role = proxyRole(letsencrypt);
  assert.deepEqual(roleProblems(role), []);
  assert.deepEqual(role.packages, ["nginx", "curl", "certbot", "openssl"]);
  assert.equal(role.files.find((f) => f.path === LAYOUT.tls.privateKey), undefined, "certbot's hook owns the key");
  assert.equal(role.files.find((f) => f.path === LAYOUT.tls.originPullCa), undefined);
  assert.equal(role.files.find((f) => f.path === ACME.deployHook)?.mode, "0755");
  assert.ok(role.directories.some((d) => d.path === ACME.webroot));
  const apply = role.apply ?? "";
  assert.match(apply, /certbot certonly --non-interactive --agree-tos --no-eff-email --email 'owner@example\.com'/);
  assert.match(apply, /--webroot --webroot-path \/var\/www\/letsencrypt --cert-name leaninfra --deploy-hook \/etc\/leaninfra\/certbot-deploy-hook\.sh/);
  assert.match(apply, /-d example\.com -d www\.example\.com -d static\.example\.com -d grafana\.example\.com -d status\.example\.com/);
  assert.match(apply, /openssl req -x509/);
  assert.match(role.validate ?? "", /openssl req -x509/, "validation stands in a placeholder when none exists yet");
  const hook = renderCertbotDeployHook();
  assert.match(hook, /^#!\/usr\/bin\/env bash\n/);
  assert.match(hook, new RegExp(`install -m 0600 -o root -g root -T -- "\\$lineage/privkey.pem" "\\$key.new"`));
  assert.match(hook, /key=\/etc\/leaninfra\/secrets\/site\.key/);
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
    "tls.certificatePem",
    "tls.privateKeyPem",
    "authPaths[1]",
    "authPaths[2]",
    "authPaths[3]",
    "authPaths[4]",
    "authRateLimitPerMinute",
    "clientMaxBodyMb",
  ]);
  assert.throws(() => proxyRole(bad), (e: Error) => e.message.startsWith("proxyRole: invalid settings:\n  - domain ") && e.message.includes("authPaths[1]"));

  assert.deepEqual(proxySettingsProblems(cloudflare), []);
  assert.deepEqual(proxySettingsProblems(letsencrypt), []);
  assert.match(proxySettingsProblems({ ...cloudflare, proxied: false }).join("\n"), /^tls\.mode "cloudflare" needs proxied: true/);
  assert.match(proxySettingsProblems({ ...cloudflare, cloudflareRanges: { ipv4Cidrs: [], ipv6Cidrs: [] } }).join("\n"), /^cloudflareRanges is empty/);
  assert.match(proxySettingsProblems({ ...letsencrypt, tls: { mode: "letsencrypt", acmeEmail: "o'neil@x" } }).join("\n"), /^tls\.acmeEmail /);
});
