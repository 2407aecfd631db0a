import test from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { MTAIL, NGINX_FILES, ProxySettings, REQUEST_METRICS, proxyRole } from "../../components/proxy";
import { renderRoleBundle } from "../../components/host/bundle";
import { show, withDebianRoot } from "../lib/debian-root";

const settings: ProxySettings = {
  domain: "example.com",
  canonicalHost: "apex",
  staticHostname: "",
  staticPathPrefixes: ["/static/"],
  extraHostnames: [],
  cdnProxy: false,
  cloudflareRanges: { ipv4Cidrs: [], ipv6Cidrs: [] },
  tls: { mode: "letsencrypt", acmeEmail: "owner@example.com" },
  authPaths: ["/login"],
  authRateLimitPerMinute: 600,
  clientMaxBodyMb: 1,
  sloRouteGroups: ["api=/api/", "admin=/api/admin/", "health=/healthz"],
};

/** The app stand-in on the first slot: answers with the status named by the path's last part (200 otherwise), after ?ms= milliseconds. */
const APP = String.raw`import http.server, sys, time, urllib.parse
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        last = url.path.rstrip("/").rsplit("/", 1)[-1]
        status = int(last) if last.isdigit() and 200 <= int(last) <= 599 else 200
        time.sleep(int(urllib.parse.parse_qs(url.query).get("ms", ["0"])[0]) / 1000)
        body = b"ok\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
`;

/** A Prometheus text exposition as "name{labels as printed}" -> value, comments dropped. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    out.set(m[1], Number(m[2]));
  }
  return out;
}

const { requests, duration, unmatched } = REQUEST_METRICS;

test("request metrics: the real nginx with the rendered config logs requests, the real mtail with the rendered program counts them by route and status class with the contract's buckets, hostile paths included", { timeout: 20 * 60_000 }, async () => {
  await withDebianRoot((root) => {
    const started = Date.now();
    const applied = root.run("bash -s", { stdin: renderRoleBundle(proxyRole(settings)) });
    assert.equal(applied.code, 0, show(applied));
    assert.match(applied.stdout, /^\[proxy\] installed package mtail$/m);
    console.log(`# proxy bundle applied (nginx and mtail installed) in ${Date.now() - started} ms`);
    const version = root.run("mtail --version 2>&1 | head -n 1");
    console.log(`# ${version.stdout.trim()}`);
    assert.match(version.stdout, /mtail version 3\.0\.\d+/);

    // mtail's own compiler on the rendered program; a broken copy is refused.
    const compiled = root.run(`mtail --compile_only --logtostderr --progs ${MTAIL.progsDir} --address 127.0.0.1 --port 0 2>&1`);
    assert.equal(compiled.code, 0, show(compiled));
    assert.match(compiled.stdout, /Loaded program leaninfra-nginx\.mtail/);
    const broken = root.run(`mkdir -p /root/broken && sed 's/buckets 0.05/buckets x/' ${MTAIL.program} >/root/broken/b.mtail && mtail --compile_only --logtostderr --progs /root/broken --address 127.0.0.1 --port 0 2>&1`);
    assert.notEqual(broken.code, 0, show(broken));
    assert.match(broken.stdout, /compile failed for b\.mtail/);

    // systemd's parser on Debian's unit with the role's drop-in.
    const verify = root.run(`systemd-analyze verify --man=no mtail.service 2>&1; systemd-analyze cat-config ${MTAIL.dropIn} >/dev/null`);
    console.log(`# systemd-analyze verify mtail.service: ${verify.stdout.trim() || "no findings"}`);
    assert.doesNotMatch(verify.stdout, /leaninfra\.conf|Unknown key|Failed to parse|Invalid/, verify.stdout);

    fs.writeFileSync(root.hostPath("/root/app.py"), APP);
    const hostile = String.raw`/api/","route":"admin","status":200,"request_time":0.001,\"x\\"`;
    fs.writeFileSync(root.hostPath("/root/hostile-path"), hostile);
    const longPath = `/api/${"a".repeat(6000)}`;
    fs.writeFileSync(root.hostPath("/root/long-path"), longPath);
    const script = String.raw`set -u
python3 /root/app.py 8001 >/dev/null 2>&1 &
app=$!
for i in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:8001/ready && break; sleep 0.1; done
nginx
for i in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:8080/stub_status && break; sleep 0.1; done
r=(--resolve example.com:443:127.0.0.1 --resolve example.com:80:127.0.0.1 -k -s -o /dev/null)
get() { curl "${"$"}{r[@]}" -w '%{http_code}\n' "$@" >>/root/codes; }
for i in 1 2 3; do get https://example.com/api/items; done
get 'https://example.com/api/slow?ms=300'
get 'https://example.com/api/slow?ms=1200'
get https://example.com/api/broken/500
get https://example.com/api/admin/users/404
get https://example.com/api/admin/users
get https://example.com/static/app.css
get https://example.com/healthz
get https://example.com/some/page
get https://example.com/some/gone/410
get --path-as-is "https://example.com$(cat /root/hostile-path)"
get -A '","route":"admin","status":200,"request_time":0.001,' https://example.com/api/agent
get "https://example.com$(cat /root/long-path)"
get http://example.com/api/items
get -H 'Host: unknown.example.net' http://127.0.0.1/api/items
# The app is gone: nginx's maintenance page, 503, still the route of the request.
kill $app; wait $app 2>/dev/null
get https://example.com/api/down
nginx -s quit
for i in $(seq 50); do [ -e /run/nginx.pid ] || break; sleep 0.1; done
echo done`;
    const run = root.run(script, { nspawnArgs: ["--private-network"], timeoutMs: 3 * 60_000 });
    assert.equal(run.code, 0, show(run));
    const codes = fs.readFileSync(root.hostPath("/root/codes"), "utf8").trim().split("\n");
    assert.deepEqual(codes, ["200", "200", "200", "200", "200", "500", "404", "200", "200", "200", "200", "410", "200", "200", "200", "301", "000", "503"], codes.join(" "));

    const log = fs.readFileSync(root.hostPath(NGINX_FILES.accessLog), "utf8");
    const entries = log.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(entries.length, 18, log);
    const routes = entries.map((e) => `${e.route} ${e.status}`);
    assert.deepEqual(routes, [
      "api 200", "api 200", "api 200", "api 200", "api 200", "api 500", "admin 404", "admin 200", "static 200", "health 200", "other 200", "other 410",
      "api 200", "api 200", "api 200", "not_app 301", "not_app 444", "api 503",
    ]);
    assert.equal(entries[12].path, hostile, "the hostile path is logged as sent, escaped as JSON");
    assert.match(log.split("\n")[12], /^\{"time":"[^"]*","route":"api","status":200,"request_time":\d+\.\d{3},/);

    // mtail reads the whole file once (--one_shot) and prints what Prometheus would scrape.
    const oneShot = (file: string) => {
      const r = root.run(`mtail --one_shot --one_shot_format prometheus --emit_prog_label=false --progs ${MTAIL.progsDir} --logs ${file} --address 127.0.0.1 --port 0 2>/dev/null`);
      assert.equal(r.code, 0, show(r));
      return r.stdout;
    };
    const text = oneShot(NGINX_FILES.accessLog);
    const m = samples(text);
    const count = (route: string, code: string) => m.get(`${requests}{code="${code}",route="${route}"}`);
    assert.equal(count("api", "2xx"), 8, text);
    assert.equal(count("api", "5xx"), 2, text);
    assert.equal(count("admin", "4xx"), 1, text);
    assert.equal(count("admin", "2xx"), 1, `the hostile path and user agent do not count as admin:\n${text}`);
    assert.equal(count("static", "2xx"), 1);
    assert.equal(count("health", "2xx"), 1);
    assert.equal(count("other", "2xx"), 1);
    assert.equal(count("other", "4xx"), 1);
    assert.equal([...m.keys()].filter((k) => k.startsWith(`${requests}{`)).length, 8, `no other series (not_app is not counted):\n${text}`);
    assert.doesNotMatch(text, /not_app|prog=/);
    assert.equal(m.get(unmatched), 0, text);

    // The histogram: every bucket of the contract, le printed as mtail prints it.
    const le = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"];
    const buckets = [...text.matchAll(new RegExp(`^${duration}_bucket\\{route="api",le="([^"]+)"\\} (\\d+)$`, "gm"))];
    assert.deepEqual(buckets.map((b) => b[1]), le, text);
    const api = Object.fromEntries(buckets.map((b) => [b[1], Number(b[2])]));
    assert.equal(api["+Inf"], 10);
    assert.equal(m.get(`${duration}_count{route="api"}`), 10);
    assert.equal(api["0.25"], 8, "the 300 ms and 1200 ms requests are slower than 0.25 s");
    assert.equal(api["0.5"], 9, "the 300 ms request is within 0.5 s");
    assert.equal(api["1"], 9);
    assert.equal(api["2.5"], 10, "the 1200 ms request is within 2.5 s");
    const sum = m.get(`${duration}_sum{route="api"}`) ?? 0;
    assert.ok(sum >= 1.5 && sum < 3, `sum ${sum}`);
    console.log(`# mtail printed le="${le.join('", "')}", no prog label; api: ${JSON.stringify(api)}, sum ${sum}`);

    // A line in another format is counted apart, never as a request.
    fs.appendFileSync(root.hostPath(NGINX_FILES.accessLog), '{"time":"2026-12-01T00:00:00+00:00","request_id":"x","route":"api","status":200}\nnot json\n');
    const after = samples(oneShot(NGINX_FILES.accessLog));
    assert.equal(after.get(unmatched), 2);
    assert.equal(after.get(`${requests}{code="2xx",route="api"}`), 8);

    // As mtail.service runs it (the drop-in's arguments): /metrics on loopback, and lines written
    // after a rotation (rename, nginx reopens a new file) are counted too.
    const daemon = String.raw`set -u
exec_start=$(sed -n 's/^ExecStart=\(.\+\)$/\1/p' ${MTAIL.dropIn})
python3 /root/app.py 8001 >/dev/null 2>&1 &
app=$!
for i in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:8001/ready && break; sleep 0.1; done
: >${NGINX_FILES.accessLog}
nginx
for i in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:8080/stub_status && break; sleep 0.1; done
$exec_start 2>/root/mtail.err &
mtail=$!
for i in $(seq 100); do curl -fs -o /dev/null ${MTAIL.url} && break; sleep 0.1; done
ss -ltnH | awk '{print $4}' | grep ':${MTAIL.port}$' >/root/listening
r=(--resolve example.com:443:127.0.0.1 -k -s -o /dev/null)
curl "${"$"}{r[@]}" https://example.com/api/before-rotation
sleep 1
mv ${NGINX_FILES.accessLog} ${NGINX_FILES.accessLog}.1
nginx -s reopen
sleep 1
curl "${"$"}{r[@]}" https://example.com/api/after-rotation/500
curl "${"$"}{r[@]}" https://example.com/healthz
for i in $(seq 50); do
  curl -fs ${MTAIL.url} >/root/metrics
  grep -q '^${requests}{code="5xx",route="api"} 1$' /root/metrics && grep -q '^${requests}{code="2xx",route="health"} 1$' /root/metrics && break
  sleep 0.2
done
kill $mtail $app
nginx -s quit
echo done`;
    const served = root.run(daemon, { nspawnArgs: ["--private-network"], timeoutMs: 2 * 60_000 });
    assert.equal(served.code, 0, show(served));
    assert.equal(fs.readFileSync(root.hostPath("/root/listening"), "utf8").trim(), `${MTAIL.address}:${MTAIL.port}`, "mtail listens on loopback only");
    const scraped = fs.readFileSync(root.hostPath("/root/metrics"), "utf8");
    const s = samples(scraped);
    const mtailErr = fs.readFileSync(root.hostPath("/root/mtail.err"), "utf8");
    assert.equal(s.get(`${requests}{code="2xx",route="api"}`), 1, `${scraped}\n${mtailErr}`);
    assert.equal(s.get(`${requests}{code="5xx",route="api"}`), 1, `the line after the rotation is counted:\n${scraped}\n${mtailErr}`);
    assert.equal(s.get(`${requests}{code="2xx",route="health"}`), 1, scraped);
    assert.ok(s.has(`${duration}_bucket{route="api",le="0.05"}`), "the scraped exposition has the same le text as --one_shot");
    const ours = scraped.split("\n").filter((l) => l.startsWith("leaninfra_"));
    assert.ok(ours.length >= 14, scraped);
    assert.ok(!ours.some((l) => l.includes('prog="')), `no prog label on the request metrics (mtail's own mtail_* metrics keep theirs):\n${ours.join("\n")}`);
  });
});
