import test from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import cloudflareIps from "../../infra/data/cloudflare-ips.json";
import * as path from "node:path";
import { ACCESS_LOG_FIELDS, ACME, MTAIL, NGINX_FILES, NGINX_JOURNAL_TAGS, ProxySettings, REQUEST_METRICS, proxyHostnames, proxyRole, renderMaintenancePage } from "../../components/proxy";
import { renderRoleBundle } from "../../components/host/bundle";
import { LAYOUT } from "../../components/host/layout";
import { DebianRoot, RunResult, show, withDebianRoot } from "../lib/debian-root";
import { TestPki } from "../lib/test-pki";
import { BootedRoot, must, withBootedRoot } from "../lib/booted-root";
import { applyRole } from "../fixtures/test-app/scenario";

const NAMES = ["example.com", "www.example.com", "static.example.com", "grafana.example.com"];
const RELEASE = "2026.11.28-abc123";
const lastLine = (r: RunResult) => r.stdout.trimEnd().split("\n").pop() ?? "";

/** The test PKI, and a way to put its files into a root at /root/tls. */
function makeTestPki() {
  const pki = new TestPki(NAMES);
  return {
    read: (name: string) => pki.read(name),
    copyInto: (root: DebianRoot) => {
      for (const name of ["site-ca.pem", "site.pem", "site.key", "client.pem", "client.key", "rogue.pem", "rogue.key"]) root.copyIn(pki.path(name), `/root/tls/${name}`);
    },
    dispose: () => pki.dispose(),
  };
}

function settingsFor(pki: ReturnType<typeof makeTestPki>): ProxySettings {
  return {
    domain: "example.com",
    canonicalHost: "apex",
    staticHostname: "static",
    staticPathPrefixes: ["/assets/", "/static/"],
    extraHostnames: ["grafana"],
    cdnProxy: true,
    // The probes come from loopback: 127.0.0.1 stands in for a Cloudflare edge, 127.0.0.2 does not.
    cloudflareRanges: { ipv4Cidrs: [...cloudflareIps.ipv4Cidrs, "127.0.0.1/32"], ipv6Cidrs: [...cloudflareIps.ipv6Cidrs] },
    tls: { mode: "cloudflare", certificatePem: pki.read("site.pem"), privateKeyPem: pki.read("site.key"), originPullCaPem: pki.read("origin-pull-ca.pem") },
    authPaths: ["/login", "/api/auth/"],
    // burst = ceil(6/6) = 1: two requests pass at once, the third gets 429 (the next slot is 10 s away).
    authRateLimitPerMinute: 6,
    clientMaxBodyMb: 1,
  };
}

/** The same site without the CDN proxy: Let's Encrypt through certbot, no Cloudflare ranges. */
function letsEncryptSettingsFor(pki: ReturnType<typeof makeTestPki>): ProxySettings {
  return { ...settingsFor(pki), cdnProxy: false, tls: { mode: "letsencrypt", acmeEmail: "owner@example.com" }, cloudflareRanges: { ipv4Cidrs: [], ipv6Cidrs: [] } };
}

/** The app stand-in: answers every request with what it received, as JSON. */
const APP = String.raw`import http.server, json, sys
port = int(sys.argv[1])
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        doc = {"app": "leaninfra-test-app", "port": port, "method": self.command, "path": self.path,
               "headers": {k.lower(): v for k, v in self.headers.items()}}
        if self.path.endswith("/big"):
            doc["padding"] = "leaninfra " * 200
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-ID", "set-by-the-app")
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
`;

/** Shell helpers for a probe run: the app, nginx, and `probe NAME CURL-ARGS...` writing NAME.{result,headers,body,err}. */
const PROBE_LIB = String.raw`set -u
out=/root/probe
rm -rf "$out"; mkdir -p "$out"
resolve=()
for name in ${NAMES.join(" ")} unknown.example.com; do
  resolve+=(--resolve "$name:443:127.0.0.1" --resolve "$name:80:127.0.0.1")
done
tls=(--cacert /root/tls/site-ca.pem)
cf=(--cert /root/tls/client.pem --key /root/tls/client.key)
probe() {
  local name=$1; shift
  local rc=0
  curl -sS --max-time 10 -o "$out/$name.body" -D "$out/$name.headers" -w '%{http_code} %{http_version}' \
    "${"$"}{resolve[@]}" "$@" >"$out/$name.result" 2>"$out/$name.err" || rc=$?
  echo " $rc" >>"$out/$name.result"
}
wait_for() {
  local i
  for i in $(seq 100); do
    if curl -fs -o /dev/null "$1"; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2
  return 1
}
start_app() {
  python3 /root/app.py "$1" >/dev/null 2>&1 &
  app_pid=$!
  wait_for "http://127.0.0.1:$1/ready"
}
start_nginx() {
  nginx
  wait_for http://127.0.0.1:8080/stub_status
}
`;

interface Probe {
  code: number;
  httpVersion: string;
  curlExit: number;
  headers: Record<string, string[]>;
  body: string;
  err: string;
}

function readProbe(root: DebianRoot, name: string): Probe {
  const base = root.hostPath(`/root/probe/${name}`);
  const [code, httpVersion, curlExit] = fs.readFileSync(`${base}.result`, "utf8").trim().split(/\s+/);
  const headers: Record<string, string[]> = {};
  const rawHeaders = fs.existsSync(`${base}.headers`) ? fs.readFileSync(`${base}.headers`, "utf8") : "";
  for (const line of rawHeaders.split(/\r?\n/)) {
    const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
    if (m) (headers[m[1].toLowerCase()] ??= []).push(m[2]);
  }
  // curl writes no body file when nothing came back.
  const body = fs.existsSync(`${base}.body`) ? fs.readFileSync(`${base}.body`, "utf8") : "";
  return { code: Number(code), httpVersion, curlExit: Number(curlExit), headers, body, err: fs.readFileSync(`${base}.err`, "utf8") };
}

const header = (p: Probe, name: string) => (p.headers[name] ?? []).join(", ");
const appSaw = (p: Probe) => JSON.parse(p.body) as { port: number; method: string; path: string; headers: Record<string, string> };
const describe = (name: string, p: Probe) => `${name}: ${p.code} (curl exit ${p.curlExit}) ${JSON.stringify(p.headers)}\n${p.body.slice(0, 400)}\n${p.err}`;

function applyBundle(root: DebianRoot, bundle: string): RunResult {
  const started = Date.now();
  const result = root.run("bash -s", { stdin: bundle });
  console.log(`proxy bundle ran in ${Date.now() - started} ms, exit ${result.code}, last line: ${lastLine(result)}`);
  return result;
}

test("proxy role (Cloudflare mode): applies twice, then nginx serves the whole request path", { timeout: 20 * 60_000 }, async () => {
  const pki = makeTestPki();
  try {
    const settings = settingsFor(pki);
    const role = proxyRole(settings);
    const bundle = renderRoleBundle(role);
    const siteConf = role.files.find((f) => f.path === NGINX_FILES.siteConf)!;
    const broken = renderRoleBundle({
      ...role,
      files: role.files.map((f) => (f === siteConf ? { ...f, content: `${f.content}leaninfra_broken_directive on;\n` } : f)),
    });

    await withDebianRoot((root) => {
      const first = applyBundle(root, bundle);
      assert.equal(first.code, 0, show(first));
      assert.match(lastLine(first), /^\[proxy\] \d+ change\(s\)$/, show(first));
      assert.match(first.stdout, /^\[proxy\] installed package nginx$/m);
      assert.match(first.stdout, /^\[proxy\] created file \/etc\/leaninfra\/secrets\/site\.key \(600 root:root\)$/m);
      assert.match(first.stdout, /^\[proxy\] {3}systemd is not running here: skipped systemctl reload nginx$/m);
      assert.match(first.stdout, /^\[proxy\] created \/etc\/leaninfra\/nginx\/upstream\.conf \(server 127\.0\.0\.1:8001;\)/m);
      assert.match(first.stdout, /^\[proxy\] created \/etc\/leaninfra\/nginx\/release\.conf \(set \$leaninfra_release "none";\)/m);
      assert.match(first.stdout, /^\[proxy\] removed \/etc\/nginx\/sites-enabled\/default \(Debian's default site\)$/m);
      for (const line of first.stdout.trimEnd().split("\n")) assert.match(line, /^\[proxy\] /, `unprefixed output: ${line}`);
      assert.ok(!first.stdout.includes("PRIVATE KEY") && !first.stderr.includes("PRIVATE KEY"), "the key must never be printed");
      assert.equal(fs.statSync(root.hostPath(LAYOUT.tls.privateKey)).mode & 0o777, 0o600);
      assert.equal(fs.statSync(root.hostPath(LAYOUT.secrets)).mode & 0o777, 0o700);
      assert.equal(fs.readFileSync(root.hostPath(LAYOUT.nginx.upstream), "utf8"), "server 127.0.0.1:8001;\n");
      assert.ok(!fs.existsSync(root.hostPath(NGINX_FILES.debianDefaultSite)));

      // A deploy rewrites its two files (next slot, new release); the role must leave them alone.
      fs.writeFileSync(root.hostPath(LAYOUT.nginx.upstream), "server 127.0.0.1:8002;\n");
      fs.writeFileSync(root.hostPath(LAYOUT.nginx.release), `set $leaninfra_release "${RELEASE}";\n`);
      const second = applyBundle(root, bundle);
      assert.equal(second.code, 0, show(second));
      assert.equal(second.stdout, "[proxy] no changes\n", show(second));
      assert.equal(fs.readFileSync(root.hostPath(LAYOUT.nginx.upstream), "utf8"), "server 127.0.0.1:8002;\n", "the deploy owns upstream.conf");
      assert.equal(fs.readFileSync(root.hostPath(LAYOUT.nginx.release), "utf8"), `set $leaninfra_release "${RELEASE}";\n`);

      const goodSite = fs.readFileSync(root.hostPath(NGINX_FILES.siteConf), "utf8");
      pki.copyInto(root);
      fs.writeFileSync(root.hostPath("/root/app.py"), APP);
      fs.writeFileSync(root.hostPath("/root/broken.sh"), broken);

      // One run with its own network namespace (standard ports, nothing shared with the host): the app
      // on the deploy's slot, nginx, every probe, the app stopped, then a broken role applied while serving.
      const script = `${PROBE_LIB}
head -c 2097152 /dev/zero >/root/big.bin
start_app 8002
start_nginx
probe ok "\${tls[@]}" "\${cf[@]}" 'https://example.com/hello?token=s3cr3t-query'
probe given_id "\${tls[@]}" "\${cf[@]}" -H 'X-Request-ID: req-test-123' https://example.com/given
probe bad_id "\${tls[@]}" "\${cf[@]}" -H 'X-Request-ID: not a token;' https://example.com/bad-id
probe no_cert "\${tls[@]}" https://example.com/
probe rogue_cert "\${tls[@]}" --cert /root/tls/rogue.pem --key /root/tls/rogue.key https://example.com/
probe www "\${tls[@]}" "\${cf[@]}" 'https://www.example.com/some/path?q=1&r=2'
probe static "\${tls[@]}" "\${cf[@]}" https://static.example.com/assets/app.css
probe static_page "\${tls[@]}" "\${cf[@]}" https://static.example.com/account
probe static_auth "\${tls[@]}" "\${cf[@]}" https://static.example.com/login
probe extra "\${tls[@]}" "\${cf[@]}" https://grafana.example.com/
probe unknown_sni "\${tls[@]}" "\${cf[@]}" https://unknown.example.com/
probe ip_https -k "\${cf[@]}" https://127.0.0.1/
probe ip_http http://127.0.0.1/
probe unknown_http -H 'Host: unknown.example.net' http://127.0.0.1/
probe http_redirect 'http://example.com/x?y=1'
probe gzip "\${tls[@]}" "\${cf[@]}" -H 'Accept-Encoding: gzip' https://example.com/assets/big
probe gzip_static_host "\${tls[@]}" "\${cf[@]}" -H 'Accept-Encoding: gzip' https://static.example.com/static/big
probe no_gzip "\${tls[@]}" "\${cf[@]}" -H 'Accept-Encoding: gzip' https://example.com/big
probe too_large "\${tls[@]}" "\${cf[@]}" --data-binary @/root/big.bin https://example.com/upload
for i in 1 2 3 4; do
  probe auth_a_$i "\${tls[@]}" "\${cf[@]}" -H 'CF-Connecting-IP: 203.0.113.7' https://example.com/login
done
probe auth_a_api "\${tls[@]}" "\${cf[@]}" -H 'CF-Connecting-IP: 203.0.113.7' https://example.com/api/auth/token
probe auth_b "\${tls[@]}" "\${cf[@]}" -H 'CF-Connecting-IP: 203.0.113.8' https://example.com/login
probe trusted "\${tls[@]}" "\${cf[@]}" -H 'CF-Connecting-IP: 198.51.100.1' -H 'X-Request-ID: from-trusted' https://example.com/who
probe untrusted "\${tls[@]}" "\${cf[@]}" --interface 127.0.0.2 -H 'CF-Connecting-IP: 198.51.100.1' -H 'X-Request-ID: from-untrusted' https://example.com/who
probe stub http://127.0.0.1:8080/stub_status
ss -ltnpH | awk '/"nginx"/ {print $4}' | sort >"$out/listening"
kill "$app_pid"; wait "$app_pid" 2>/dev/null
probe down_get "\${tls[@]}" "\${cf[@]}" -H 'X-Request-ID: while-down' https://example.com/page
probe down_post "\${tls[@]}" "\${cf[@]}" --data 'a=b' https://example.com/form
start_app 8002
bash /root/broken.sh >"$out/broken.stdout" 2>"$out/broken.stderr"; echo $? >"$out/broken.code"
nginx -s reload; echo $? >"$out/reload.code"
sleep 1
probe after_broken "\${tls[@]}" "\${cf[@]}" https://example.com/still-serving
nginx -s quit
kill "$app_pid"
echo probes-done`;
      const started = Date.now();
      const run = root.run(script, { nspawnArgs: ["--private-network"], timeoutMs: 5 * 60_000 });
      console.log(`probe run took ${Date.now() - started} ms`);
      assert.equal(run.code, 0, show(run));
      assert.match(run.stdout, /probes-done/, show(run));
      const p = (name: string) => readProbe(root, name);

      const ok = p("ok");
      assert.equal(ok.code, 200, describe("ok", ok));
      assert.equal(ok.httpVersion, "2", "HTTP/2 on 443");
      const okApp = appSaw(ok);
      assert.equal(okApp.port, 8002, "nginx must use the deploy's upstream line");
      assert.match(header(ok, "x-request-id"), /^[0-9a-f]{32}$/, "a generated request id is returned");
      assert.equal(okApp.headers["x-request-id"], header(ok, "x-request-id"), "the app gets the same id");
      assert.equal(okApp.headers["x-forwarded-proto"], "https");
      assert.equal(okApp.headers["host"], "example.com");
      assert.equal(okApp.path, "/hello?token=s3cr3t-query");
      assert.equal(header(ok, "strict-transport-security"), "max-age=31536000");
      assert.equal(header(ok, "x-content-type-options"), "nosniff");
      assert.equal(header(ok, "referrer-policy"), "strict-origin-when-cross-origin");
      assert.equal(header(ok, "x-frame-options"), "SAMEORIGIN");

      const given = p("given_id");
      assert.equal(given.code, 200, describe("given_id", given));
      assert.equal(header(given, "x-request-id"), "req-test-123", "the client's id is kept, and only nginx's header is returned");
      assert.equal(appSaw(given).headers["x-request-id"], "req-test-123");
      const badId = p("bad_id");
      assert.match(header(badId, "x-request-id"), /^[0-9a-f]{32}$/, "a malformed id is replaced");

      for (const name of ["no_cert", "rogue_cert"]) {
        const refused = p(name);
        assert.equal(refused.code, 400, describe(name, refused));
        assert.match(refused.body, /SSL certificate/, describe(name, refused));
      }

      const www = p("www");
      assert.equal(www.code, 301, describe("www", www));
      assert.equal(header(www, "location"), "https://example.com/some/path?q=1&r=2");
      const stat = p("static");
      assert.equal(stat.code, 200, describe("static", stat));
      assert.equal(appSaw(stat).headers["host"], "static.example.com");
      // Cloudflare caches everything on the static host: a page of the app must not answer there.
      for (const name of ["static_page", "static_auth"]) assert.equal(p(name).code, 404, describe(name, p(name)));
      assert.equal(p("extra").code, 404);

      // Unknown names and IP literals: no TLS handshake (curl 35), no HTTP answer (444: curl 52).
      for (const [name, curlExit] of [["unknown_sni", 35], ["ip_https", 35], ["ip_http", 52], ["unknown_http", 52]] as const) {
        const dropped = p(name);
        assert.equal(dropped.code, 0, describe(name, dropped));
        assert.equal(dropped.curlExit, curlExit, describe(name, dropped));
      }
      const http = p("http_redirect");
      assert.equal(http.code, 301, describe("http_redirect", http));
      assert.equal(header(http, "location"), "https://example.com/x?y=1");

      // Static files are compressed; the app's own answers are not (BREACH).
      for (const name of ["gzip", "gzip_static_host"]) {
        const gzip = p(name);
        assert.equal(gzip.code, 200);
        assert.equal(header(gzip, "content-encoding"), "gzip", describe(name, gzip));
      }
      const plain = p("no_gzip");
      assert.equal(plain.code, 200);
      assert.equal(header(plain, "content-encoding"), "", describe("no_gzip", plain));
      assert.match(plain.body, /leaninfra leaninfra/, "the same large answer, uncompressed");
      assert.equal(p("too_large").code, 413, "client_max_body_size 1m refuses 2 MB");

      assert.deepEqual([1, 2, 3, 4].map((i) => p(`auth_a_${i}`).code), [200, 200, 429, 429], "burst 1: two pass, then 429");
      assert.equal(p("auth_a_api").code, 429, "every auth prefix shares the client's budget");
      assert.equal(p("auth_b").code, 200, "another client address has its own budget");
      assert.equal(appSaw(p("trusted")).headers["x-forwarded-for"], "198.51.100.1", "CF-Connecting-IP from a Cloudflare range");
      assert.equal(appSaw(p("untrusted")).headers["x-forwarded-for"], "127.0.0.2", "CF-Connecting-IP from elsewhere is ignored");

      const stub = p("stub");
      assert.equal(stub.code, 200);
      assert.match(stub.body, /^Active connections: \d+/);
      const listening = fs.readFileSync(root.hostPath("/root/probe/listening"), "utf8").trim().split("\n");
      assert.deepEqual(listening, ["0.0.0.0:443", "0.0.0.0:80", "127.0.0.1:8080", "[::]:443", "[::]:80"], "nginx listens on 80 and 443, and on loopback only for stub_status");

      const maintenance = renderMaintenancePage(settings);
      for (const name of ["down_get", "down_post"]) {
        const down = p(name);
        assert.equal(down.code, 503, describe(name, down));
        assert.equal(header(down, "retry-after"), "30");
        assert.equal(header(down, "cache-control"), "no-store");
        assert.equal(header(down, "strict-transport-security"), "max-age=31536000", "security headers on the maintenance page too");
        assert.equal(down.body, maintenance);
      }
      assert.equal(header(p("down_get"), "x-request-id"), "while-down");

      const brokenCode = Number(fs.readFileSync(root.hostPath("/root/probe/broken.code"), "utf8"));
      const brokenErr = fs.readFileSync(root.hostPath("/root/probe/broken.stderr"), "utf8");
      assert.notEqual(brokenCode, 0, brokenErr);
      assert.match(brokenErr, /unknown directive "leaninfra_broken_directive"/);
      assert.match(brokenErr, /^\[proxy\] restored \/etc\/nginx\/conf\.d\/leaninfra\.conf to its previous version$/m);
      assert.match(brokenErr, /^\[proxy\] FAILED during validate: validation failed/m);
      assert.equal(fs.readFileSync(root.hostPath(NGINX_FILES.siteConf), "utf8"), goodSite, "the previous config is back");
      assert.equal(fs.readFileSync(root.hostPath("/root/probe/reload.code"), "utf8").trim(), "0");
      const after = p("after_broken");
      assert.equal(after.code, 200, describe("after_broken", after));
      assert.equal(appSaw(after).path, "/still-serving");

      // The JSON access log: every line parses and has every field.
      const lines = fs.readFileSync(root.hostPath(NGINX_FILES.accessLog), "utf8").trim().split("\n");
      const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
      for (const entry of entries) assert.deepEqual(Object.keys(entry), ACCESS_LOG_FIELDS.map(([key]) => key));
      assert.ok(!lines.some((l) => l.includes("s3cr3t-query")), "query strings stay out of the log");
      const byId = (id: string) => entries.find((e) => e.request_id === id);
      const givenLine = byId("req-test-123");
      assert.ok(givenLine, `no log line for req-test-123 in:\n${lines.join("\n")}`);
      assert.equal(givenLine.method, "GET");
      assert.equal(givenLine.host, "example.com");
      assert.equal(givenLine.path, "/given");
      assert.equal(givenLine.status, 200);
      assert.equal(typeof givenLine.bytes, "number");
      assert.ok((givenLine.bytes as number) > 0);
      assert.equal(typeof givenLine.request_time, "number");
      assert.match(String(givenLine.upstream_response_time), /^\d+\.\d{3}$/);
      assert.equal(givenLine.upstream, "127.0.0.1:8002");
      assert.equal(givenLine.release, RELEASE);
      assert.equal(givenLine.protocol, "HTTP/2.0");
      assert.equal(byId("from-trusted")?.client, "198.51.100.1");
      assert.equal(byId("from-untrusted")?.client, "127.0.0.2");
      assert.equal(byId("while-down")?.status, 503);
      assert.equal(byId(header(ok, "x-request-id"))?.path, "/hello");
      assert.equal(entries.filter((e) => e.status === 429).length, 3);
      // The route group of each request: the app's by path (static prefixes, other), not_app where nginx answers alone.
      const routeOf = (host: string, path: string) => entries.find((e) => e.host === host && e.path === path)?.route;
      assert.equal(givenLine.route, "other");
      assert.equal(routeOf("example.com", "/assets/big"), "static");
      assert.equal(routeOf("static.example.com", "/assets/app.css"), "static");
      assert.equal(routeOf("static.example.com", "/account"), "not_app", "the static host's 404 is nginx's");
      assert.equal(routeOf("www.example.com", "/some/path"), "not_app", "the www redirect");
      assert.equal(routeOf("grafana.example.com", "/"), "not_app", "an extra name's 404");
      assert.equal(routeOf("example.com", "/x"), "not_app", "the http-to-https redirect");
      assert.equal(byId("while-down")?.route, "other", "the maintenance page keeps the request's route");
      for (const e of entries) assert.match(String(e.route), /^(other|static|not_app)$/, JSON.stringify(e));
    });
  } finally {
    pki.dispose();
  }
});

test("proxy role (Let's Encrypt mode): placeholder certificate, ACME webroot, certbot deploy hook", { timeout: 20 * 60_000 }, async () => {
  const pki = makeTestPki();
  try {
    const settings = letsEncryptSettingsFor(pki);
    const bundle = renderRoleBundle(proxyRole(settings));
    await withDebianRoot((root) => {
      const first = applyBundle(root, bundle);
      assert.equal(first.code, 0, show(first));
      assert.match(first.stdout, /^\[proxy\] installed package certbot$/m);
      assert.match(first.stdout, /^\[proxy\] created a self-signed placeholder certificate \/etc\/leaninfra\/tls\/site\.crt/m);
      assert.match(first.stderr, /skipped certbot certonly for example\.com, www\.example\.com, static\.example\.com, grafana\.example\.com/, show(first));
      const second = applyBundle(root, bundle);
      assert.equal(second.code, 0, show(second));
      assert.equal(second.stdout, "[proxy] no changes\n", show(second));

      const placeholder = root.run(`openssl x509 -in ${LAYOUT.tls.certificate} -noout -subject -issuer -ext subjectAltName && stat -c '%a %U' ${LAYOUT.tls.privateKey}`);
      assert.equal(placeholder.code, 0, show(placeholder));
      assert.match(placeholder.stdout, /^subject=CN ?= ?example\.com$/m);
      assert.match(placeholder.stdout, /^issuer=CN ?= ?example\.com$/m, "self-signed");
      assert.match(placeholder.stdout, /DNS:example\.com, DNS:www\.example\.com, DNS:static\.example\.com, DNS:grafana\.example\.com/);
      assert.match(placeholder.stdout, /^600 root$/m);
      const timer = root.run("systemctl is-enabled certbot.timer");
      assert.equal(timer.stdout, "enabled\n", `Debian's certbot.timer renews: ${show(timer)}`);
      assert.equal(fs.statSync(root.hostPath(ACME.deployHook)).mode & 0o777, 0o755);

      pki.copyInto(root);
      fs.writeFileSync(root.hostPath("/root/app.py"), APP);
      const script = `${PROBE_LIB}
start_app 8001
start_nginx
mkdir -p ${ACME.webroot}/.well-known/acme-challenge
echo token-content-42 >${ACME.webroot}/.well-known/acme-challenge/token42
probe acme 'http://example.com/.well-known/acme-challenge/token42'
probe acme_www 'http://www.example.com/.well-known/acme-challenge/token42'
probe acme_missing 'http://example.com/.well-known/acme-challenge/nope'
probe http_redirect 'http://example.com/page?q=1'
probe placeholder -k https://example.com/hello
probe placeholder_verify "\${tls[@]}" https://example.com/hello
# What certbot leaves after an issuance, with the test CA's certificate standing in for Let's Encrypt's.
mkdir -p ${ACME.lineage}
cp /root/tls/site.pem ${ACME.lineage}/fullchain.pem
cp /root/tls/site.key ${ACME.lineage}/privkey.pem
RENEWED_LINEAGE=${ACME.lineage} ${ACME.deployHook} >"$out/hook.stdout" 2>"$out/hook.stderr"; echo $? >"$out/hook.code"
stat -c '%a %U' ${LAYOUT.tls.certificate} ${LAYOUT.tls.privateKey} >"$out/hook.modes"
nginx -s reload
sleep 1
probe issued "\${tls[@]}" https://example.com/hello
nginx -s quit
kill "$app_pid"
echo probes-done`;
      const run = root.run(script, { nspawnArgs: ["--private-network"], timeoutMs: 5 * 60_000 });
      assert.equal(run.code, 0, show(run));
      assert.match(run.stdout, /probes-done/, show(run));
      const p = (name: string) => readProbe(root, name);

      for (const name of ["acme", "acme_www"]) {
        const acme = p(name);
        assert.equal(acme.code, 200, describe(name, acme));
        assert.equal(acme.body, "token-content-42\n");
      }
      assert.equal(p("acme_missing").code, 404);
      const redirect = p("http_redirect");
      assert.equal(redirect.code, 301);
      assert.equal(header(redirect, "location"), "https://example.com/page?q=1");
      const placeholderProbe = p("placeholder");
      assert.equal(placeholderProbe.code, 200, `no client certificate needed without Cloudflare: ${describe("placeholder", placeholderProbe)}`);
      assert.equal(appSaw(placeholderProbe).port, 8001, "the role's first upstream line");
      assert.equal(p("placeholder_verify").curlExit, 60, "the placeholder is not trusted by anyone");

      const hookCode = fs.readFileSync(root.hostPath("/root/probe/hook.code"), "utf8").trim();
      assert.equal(hookCode, "0", fs.readFileSync(root.hostPath("/root/probe/hook.stderr"), "utf8"));
      assert.match(fs.readFileSync(root.hostPath("/root/probe/hook.stdout"), "utf8"), /^installed the certificate of \/etc\/letsencrypt\/live\/leaninfra/m);
      assert.equal(fs.readFileSync(root.hostPath("/root/probe/hook.modes"), "utf8"), "644 root\n600 root\n");
      const issued = p("issued");
      assert.equal(issued.code, 200, `after the hook nginx serves the issued certificate: ${describe("issued", issued)}`);

      const third = applyBundle(root, bundle);
      assert.equal(third.code, 0, show(third));
      assert.equal(third.stdout, "[proxy] no changes\n", `the installed certificate matches the lineage: ${show(third)}`);
      // A certificate copy that differs from certbot's (a failed hook) is put right by the next run.
      fs.writeFileSync(root.hostPath(LAYOUT.tls.certificate), pki.read("client.pem"));
      const repair = applyBundle(root, bundle);
      assert.equal(repair.code, 0, show(repair));
      assert.match(repair.stdout, /^\[proxy\] installed the Let's Encrypt certificate of \/etc\/letsencrypt\/live\/leaninfra for nginx$/m, show(repair));
      assert.equal(fs.readFileSync(root.hostPath(LAYOUT.tls.certificate), "utf8"), pki.read("site.pem"));
    });
  } finally {
    pki.dispose();
  }
});

/**
 * The sandboxes under systemd, Let's Encrypt mode: nginx starts and reloads inside its own, and a
 * renewal run of certbot.service (Debian's unit with the role's drop-in) has its deploy hook install
 * a new certificate and reload nginx, which then serves it. certbot has no ACME server here: the
 * lineage stands in for an issuance, and the test adds the hook to the unit's run as certbot would.
 */
test("proxy role under systemd: nginx runs and reloads in its sandbox, certbot.service's deploy hook installs a certificate and reloads nginx", { timeout: 25 * 60_000 }, async () => {
  const pki = makeTestPki();
  try {
    const settings = letsEncryptSettingsFor(pki);
    const role = proxyRole(settings);
    const servedFingerprint = (r: BootedRoot) =>
      must(r, `openssl s_client -connect 127.0.0.1:443 -servername example.com </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256`).trim();
    const fileFingerprint = (r: BootedRoot, file: string) => must(r, `openssl x509 -in ${file} -noout -fingerprint -sha256`).trim();

    await withBootedRoot({}, async (root) => {
      // What an earlier issuance left (the lineage and the names it covers): apply installs it, no ACME call.
      root.run(`mkdir -p ${ACME.lineage} ${path.dirname(ACME.namesStamp)} /root/tls`);
      fs.writeFileSync(root.hostPath(`${ACME.lineage}/fullchain.pem`), pki.read("site.pem"));
      fs.writeFileSync(root.hostPath(`${ACME.lineage}/privkey.pem`), pki.read("site.key"));
      fs.writeFileSync(root.hostPath(ACME.namesStamp), `${proxyHostnames(settings).all.join("\n")}\n`);

      const applied = await applyRole(root, role);
      assert.equal(applied.code, 0, show(applied));
      assert.equal(must(root, "systemctl is-active nginx").trim(), "active");
      assert.match(must(root, "systemctl show -p DropInPaths --value nginx certbot"), /nginx\.service\.d\/leaninfra-hardening\.conf[\s\S]*certbot\.service\.d\/leaninfra-hardening\.conf/);
      assert.equal(must(root, "systemctl show -p NoNewPrivileges --value nginx; systemctl show -p ProtectSystem --value nginx").trim(), "yes\nstrict", "nginx runs in the sandbox");
      assert.equal(servedFingerprint(root), fileFingerprint(root, `${ACME.lineage}/fullchain.pem`));
      must(root, "systemctl reload nginx && systemctl is-active nginx");

      // A renewal: a new certificate in the lineage, certbot.service runs (certbot renew, then the hook).
      const renewed = new TestPki(["example.com", "www.example.com"]);
      try {
        fs.writeFileSync(root.hostPath(`${ACME.lineage}/fullchain.pem`), renewed.read("site.pem"));
        fs.writeFileSync(root.hostPath(`${ACME.lineage}/privkey.pem`), renewed.read("site.key"));
      } finally {
        renewed.dispose();
      }
      must(root, `mkdir -p /run/systemd/system/certbot.service.d && printf '[Service]\\nExecStart=/usr/bin/env RENEWED_LINEAGE=${ACME.lineage} ${ACME.deployHook}\\n' >/run/systemd/system/certbot.service.d/zz-test-hook.conf && systemctl daemon-reload`);
      const mainPid = must(root, "systemctl show -p MainPID --value nginx").trim();
      const run = root.run("systemctl start certbot.service; code=$?; journalctl -u certbot.service --no-pager -o cat | tail -n 20; exit $code");
      console.log(`certbot.service in its sandbox: exit ${run.code}\n${run.stdout.trim()}`);
      assert.equal(run.code, 0, show(run));
      assert.match(run.stdout, /installed the certificate of \/etc\/letsencrypt\/live\/leaninfra/);
      assert.match(run.stdout, /reloaded nginx/);
      assert.equal(must(root, "systemctl show -p MainPID --value nginx").trim(), mainPid, "a reload, not a restart");
      const installed = fileFingerprint(root, LAYOUT.tls.certificate);
      assert.equal(installed, fileFingerprint(root, `${ACME.lineage}/fullchain.pem`));
      let served = "";
      for (let i = 0; i < 20 && served !== installed; i++) {
        served = servedFingerprint(root);
        if (served !== installed) await new Promise((r) => setTimeout(r, 250));
      }
      assert.equal(served, installed, "nginx serves the renewed certificate");

      // The request metrics and the journal: mtail.service runs with the role's drop-in (loopback, its
      // sandbox), nginx's access lines reach the journal as JSON from inside nginx's sandbox, and a
      // rotation by Debian's logrotate config loses nothing for mtail.
      assert.equal(must(root, "systemctl is-active mtail; systemctl is-enabled mtail").trim(), "active\nenabled");
      assert.match(must(root, "systemctl show -p DropInPaths --value mtail"), /mtail\.service\.d\/leaninfra\.conf/);
      assert.equal(must(root, "systemctl show -p User --value mtail; systemctl show -p NoNewPrivileges --value mtail; systemctl show -p MemoryMax --value mtail").trim(), `mtail\nyes\n${128 * 1024 * 1024}`);
      assert.equal(must(root, `ss -ltnpH | awk '/"mtail"/ {print $4}'`).trim(), `${MTAIL.address}:${MTAIL.port}`, "mtail listens on loopback only");
      // The renewed certificate's CA is not the test PKI's: the TLS side is tested above.
      const resolve = "--resolve example.com:443:127.0.0.1 --insecure";
      const longPath = `/journal-long/${"x".repeat(5000)}`;
      must(root, `curl -s -o /dev/null ${resolve} -H 'X-Request-ID: journal-probe-1' https://example.com/journal-probe; curl -s -o /dev/null ${resolve} -H 'X-Request-ID: journal-probe-2' https://example.com${longPath}`);
      // --all: without it journalctl -o json prints a field of 4096 bytes or more as null.
      const journalLines = async (id: string) => {
        for (let i = 0; i < 40; i++) {
          const out = must(root, `journalctl --no-pager --all -o json -t ${NGINX_JOURNAL_TAGS.access} | grep -F '${id}' || true`).trim();
          if (out) return out.split("\n").map((l) => JSON.parse(l) as Record<string, string>);
          await new Promise((r) => setTimeout(r, 250));
        }
        return [];
      };
      const [probe] = await journalLines("journal-probe-1");
      assert.ok(probe, "the access line is in the journal");
      assert.equal(probe.SYSLOG_IDENTIFIER, NGINX_JOURNAL_TAGS.access);
      const line = JSON.parse(probe.MESSAGE) as Record<string, unknown>;
      assert.deepEqual(Object.keys(line), ACCESS_LOG_FIELDS.map(([key]) => key));
      assert.deepEqual([line.request_id, line.route, line.status, line.release, line.path], ["journal-probe-1", "other", 503, "none", "/journal-probe"]);
      const [long] = await journalLines("journal-probe-2");
      assert.equal((JSON.parse(long?.MESSAGE ?? "{}") as Record<string, unknown>).path, longPath, "a 5000-character path arrives whole");
      console.log(`  nginx's access line in the journal: ${probe.MESSAGE.length} characters, the long one ${long.MESSAGE.length}`);

      const series = new RegExp(`^${REQUEST_METRICS.requests}\\{code="5xx",route="other"\\} (\\d+)$`, "m");
      const fiveHundreds = async (atLeast: number) => {
        let text = "";
        for (let i = 0; i < 40; i++) {
          text = must(root, `curl -fsS ${MTAIL.url}`);
          if (Number(series.exec(text)?.[1] ?? 0) >= atLeast) break;
          await new Promise((r) => setTimeout(r, 250));
        }
        return { text, count: Number(series.exec(text)?.[1] ?? 0) };
      };
      // No app behind nginx here: both probes were answered 503 by the maintenance page.
      const before = await fiveHundreds(2);
      assert.ok(before.count >= 2, before.text);
      assert.match(before.text, new RegExp(`^${REQUEST_METRICS.duration}_bucket\\{route="other",le="0\\.5"\\} \\d+$`, "m"));
      const rotated = root.run(`logrotate --force /etc/logrotate.d/nginx && ls ${NGINX_FILES.accessLog}.1 && sleep 1 && curl -s -o /dev/null ${resolve} https://example.com/after-rotation && sleep 0.5 && cat ${NGINX_FILES.accessLog}`);
      assert.equal(rotated.code, 0, show(rotated));
      assert.match(rotated.stdout, /"path":"\/after-rotation"/, "nginx writes to the new file after logrotate");
      const after = await fiveHundreds(before.count + 1);
      assert.equal(after.count, before.count + 1, `mtail counts the line written after the rotation:\n${after.text}`);
    });
  } finally {
    pki.dispose();
  }
});
