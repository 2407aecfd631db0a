import test from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { parse } from "yaml";
import cloudflareIps from "../../infra/data/cloudflare-ips.json";
import { renderRoleBundle } from "../../components/host/bundle";
import { ProxySettings, proxyRole } from "../../components/proxy";
import {
  DASHBOARD_UIDS,
  GRAFANA_APT,
  GRAFANA_PATHS,
  TEST_VARIABLES,
  dashboardQueries,
  grafanaRole,
  logsDashboard,
  ownerDashboard,
  renderDashboards,
  renderDatasources,
} from "../../components/grafana";
import { show, withDebianRoot } from "../lib/debian-root";
import { victoriaLogsBinary } from "../lib/victorialogs";

const OBJECTIVE = { sloObjectivePercent: 99.9, sloLatencyMs: 500 };

/** A free loopback port (the roots share the host's network). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

type Panel = { id?: number; type?: string; title?: string; gridPos?: { h: number; w: number; x: number; y: number }; datasource?: { uid?: string; type?: string }; targets?: { refId?: string; expr?: string; datasource?: { uid?: string; type?: string } }[] };

test("the generated dashboards hold what Grafana's dashboard schema requires, and every data source uid is a provisioned one", (t) => {
  const provisioned = new Map<string, string>(parse(renderDatasources()).datasources.map((d: { uid: string; type: string }) => [d.uid, d.type]));
  const files = renderDashboards(OBJECTIVE);
  assert.deepEqual(Object.keys(files).sort(), [`${DASHBOARD_UIDS.logs}.json`, `${DASHBOARD_UIDS.owner}.json`]);
  for (const [name, text] of Object.entries(files)) {
    const d = JSON.parse(text);
    assert.equal(`${d.uid}.json`, name);
    assert.match(d.uid, /^[A-Za-z0-9_-]{1,40}$/, "Grafana's uid: at most 40 of these characters");
    assert.equal(typeof d.title, "string");
    assert.ok(Number.isInteger(d.schemaVersion) && d.schemaVersion >= 39, `${name}: schemaVersion ${d.schemaVersion} (Grafana 11 writes 39 and up)`);
    assert.equal(d.id, undefined, "provisioned dashboards carry no database id");
    const panels: Panel[] = d.panels;
    assert.ok(panels.length > 0);
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, `${name}: panel ids are unique`);
    const cells = new Set<string>();
    for (const p of panels) {
      const where = `${name} panel ${JSON.stringify(p.title)}`;
      assert.ok(Number.isInteger(p.id), `${where}: id`);
      assert.ok(["timeseries", "stat", "logs"].includes(p.type!), `${where}: type ${p.type}`);
      const g = p.gridPos!;
      assert.ok([g.h, g.w, g.x, g.y].every(Number.isInteger) && g.w >= 1 && g.x >= 0 && g.x + g.w <= 24 && g.h >= 1, `${where}: gridPos ${JSON.stringify(g)} within 24 columns`);
      for (let x = g.x; x < g.x + g.w; x++) {
        for (let y = g.y; y < g.y + g.h; y++) {
          assert.ok(!cells.has(`${x},${y}`), `${where}: overlaps another panel at ${x},${y}`);
          cells.add(`${x},${y}`);
        }
      }
      assert.equal(provisioned.get(p.datasource!.uid!), p.datasource!.type, `${where}: data source ${JSON.stringify(p.datasource)} is provisioned`);
      assert.ok(p.targets!.length > 0, `${where}: has queries`);
      const refIds = p.targets!.map((q) => q.refId);
      assert.equal(new Set(refIds).size, refIds.length, `${where}: refIds unique`);
      for (const q of p.targets!) {
        assert.match(q.refId ?? "", /^[A-Z]$/, `${where}: refId`);
        assert.ok(q.expr && q.expr.trim() !== "", `${where}: expr`);
        assert.deepEqual(q.datasource, p.datasource, `${where}: the query's data source is the panel's`);
      }
    }
    for (const a of d.annotations?.list ?? []) {
      assert.equal(provisioned.get(a.datasource.uid), a.datasource.type, `${name} annotation ${a.name}: data source provisioned`);
    }
    // Every variable a query uses is defined (or Grafana's own).
    const defined = new Set<string>((d.templating?.list ?? []).map((v: { name: string }) => v.name));
    for (const used of text.matchAll(/\$(\w+)/g)) {
      assert.ok(used[1].startsWith("__") || defined.has(used[1]), `${name}: $${used[1]} is not a variable of the dashboard`);
    }
  }
  const queries = dashboardQueries(OBJECTIVE);
  const targets = [ownerDashboard(OBJECTIVE), logsDashboard()].flatMap((d) => (d.panels as Panel[]).flatMap((p) => p.targets ?? []));
  assert.equal(queries.length, targets.length + 1, "every panel query and the deploy annotation");
  assert.ok(queries.every((q) => !/\$/.test(q.expr)), "template variables replaced");
  assert.ok(queries.some((q) => q.datasource === "victorialogs" && q.expr.includes(TEST_VARIABLES.$request_id)));
  t.diagnostic("Grafana's own schema is not checked: the SDK ships no JSON schema or validator, and Grafana cannot be installed here (no route to apt.grafana.com); the fields Grafana requires are checked above");
});

const PROXY: ProxySettings = {
  domain: "example.com",
  canonicalHost: "apex",
  staticHostname: "",
  staticPathPrefixes: ["/assets/"],
  extraHostnames: [],
  cdnProxy: true,
  cloudflareRanges: { ipv4Cidrs: [...cloudflareIps.ipv4Cidrs], ipv6Cidrs: [...cloudflareIps.ipv6Cidrs] },
  // A certificate for the names, made in the root before nginx -t (the proxy role only installs what it is given).
  tls: { mode: "cloudflare", certificatePem: "", privateKeyPem: "", originPullCaPem: "" },
  authPaths: ["/login"],
  authRateLimitPerMinute: 30,
  clientMaxBodyMb: 25,
};

/** Series for every metric the owner's page reads, one sample each 15 s over the hour before `end`, as OpenMetrics text. */
function openMetrics(end: number): string {
  const start = end - 3600;
  const times: number[] = [];
  for (let t = start; t <= end; t += 15) times.push(t);
  const lines: string[] = [];
  const labels = (l: Record<string, string>) => `{${Object.entries(l).map(([k, v]) => `${k}="${v}"`).join(",")}}`;
  lines.push("# TYPE leaninfra_http_requests counter");
  for (const route of ["api", "other"]) {
    for (const [code, perSecond] of [["2xx", 10], ["5xx", 0.01]] as const) {
      for (const t of times) lines.push(`leaninfra_http_requests_total${labels({ route, code })} ${(perSecond * (t - start)).toFixed(3)} ${t}`);
    }
  }
  // 40 % of requests within 50 ms, 70 % within 100 ms ...: p50 lies between 50 and 100 ms.
  const cumulative: [string, number][] = [["0.05", 0.4], ["0.1", 0.7], ["0.25", 0.85], ["0.5", 0.93], ["1", 0.97], ["2.5", 0.99], ["5", 0.995], ["10", 0.999], ["+Inf", 1]];
  lines.push("# TYPE leaninfra_http_request_duration_seconds histogram");
  for (const route of ["api", "other"]) {
    for (const t of times) {
      const count = 10 * (t - start);
      for (const [le, share] of cumulative) lines.push(`leaninfra_http_request_duration_seconds_bucket${labels({ route, le })} ${Math.round(count * share)} ${t}`);
      lines.push(`leaninfra_http_request_duration_seconds_sum${labels({ route })} ${(count * 0.12).toFixed(3)} ${t}`);
      lines.push(`leaninfra_http_request_duration_seconds_count${labels({ route })} ${count} ${t}`);
    }
  }
  const gauge = (name: string, l: Record<string, string>, value: (t: number) => number) => {
    lines.push(`# TYPE ${name} gauge`);
    for (const t of times) lines.push(`${name}${Object.keys(l).length ? labels(l) : ""} ${value(t)} ${t}`);
  };
  gauge("pg_database_size_bytes", { datname: "app" }, (t) => 50_000_000 + (t - start) * 1000);
  gauge("redis_memory_used_bytes", {}, () => 12_000_000);
  gauge("redis_memory_max_bytes", {}, () => 1_073_741_824);
  gauge("leaninfra_backup_last_success_timestamp_seconds", { type: "full" }, () => start - 7200);
  gauge("leaninfra_drill_last_success_timestamp_seconds", {}, () => start - 86400);
  // A deploy one minute before the end: the annotation's changes() sees it.
  gauge("leaninfra_app_deploy_timestamp_seconds", {}, (t) => (t < end - 60 ? start - 600 : end - 60));
  lines.push("# EOF");
  return `${lines.join("\n")}\n`;
}

interface PromAnswer {
  status: string;
  error?: string;
  data?: { resultType: string; result: unknown };
}

test("Debian 13's Prometheus runs every PromQL query of the dashboards against backfilled series, without error and with data; nginx -t takes the Grafana server beside the proxy's config; Grafana's apt key is refused when it cannot be fetched or has another fingerprint, and a matching one is installed with a deb822 source; systemd reads the unit's drop-in", { timeout: 30 * 60_000 }, async (t) => {
  const port = await freePort();
  const end = Math.floor(Date.now() / 1000 / 15) * 15 - 120;
  const queries = dashboardQueries(OBJECTIVE).filter((q) => q.datasource === "prometheus");
  // Checks that the checks bite: a syntax error, and a misspelt metric (no data).
  const probes = [
    { name: "syntax error", expr: "sum(rate(leaninfra_http_requests_total[1m])" },
    { name: "misspelt metric", expr: "sum(rate(leaninfra_http_request_total[1m]))" },
  ];
  const all = [...queries.map((q) => q.expr), ...probes.map((p) => p.expr)];

  await withDebianRoot(async (root) => {
    const installed = root.run("apt-get install -y -qq --no-install-recommends prometheus curl openssl gpg gpg-agent >/dev/null && prometheus --version 2>&1 | head -n 1", { timeoutMs: 15 * 60_000 });
    assert.equal(installed.code, 0, show(installed));
    t.diagnostic(`checked with ${installed.stdout.trim()}`);

    fs.mkdirSync(root.hostPath("/root/prom/queries"), { recursive: true });
    fs.writeFileSync(root.hostPath("/root/prom/series.om"), openMetrics(end));
    fs.writeFileSync(root.hostPath("/root/prom/prometheus.yml"), "global:\n  scrape_interval: 15s\nscrape_configs: []\n");
    all.forEach((expr, i) => fs.writeFileSync(root.hostPath(`/root/prom/queries/${String(i).padStart(3, "0")}`), expr));
    const ran = root.run(`set -e
cd /root/prom
promtool tsdb create-blocks-from openmetrics series.om data >/dev/null
prometheus --config.file=prometheus.yml --storage.tsdb.path=data --web.listen-address=127.0.0.1:${port} >prometheus.log 2>&1 &
pid=$!
trap 'kill $pid; wait $pid || true' EXIT
for _ in $(seq 1 60); do curl -fs http://127.0.0.1:${port}/-/ready >/dev/null && break; sleep 1; done
mkdir -p answers
for q in queries/*; do
  curl -sG --max-time 30 --data-urlencode "query@$q" --data-urlencode time=${end} http://127.0.0.1:${port}/api/v1/query >"answers/\${q##*/}"
done`, { timeoutMs: 5 * 60_000 });
    assert.equal(ran.code, 0, `${show(ran)}\n${fs.readFileSync(root.hostPath("/root/prom/prometheus.log"), "utf8").slice(-3000)}`);
    const answer = (i: number): PromAnswer => JSON.parse(fs.readFileSync(root.hostPath(`/root/prom/answers/${String(i).padStart(3, "0")}`), "utf8"));
    const value = (a: PromAnswer): number[] =>
      a.data!.resultType === "scalar" ? [Number((a.data!.result as [number, string])[1])] : (a.data!.result as { value: [number, string] }[]).map((r) => Number(r.value[1]));

    const byTitle = new Map<string, number[]>();
    queries.forEach((q, i) => {
      const a = answer(i);
      assert.equal(a.status, "success", `${q.dashboard} / ${q.panel}: ${q.expr}\n${a.error}`);
      const values = value(a);
      assert.ok(values.length > 0, `${q.dashboard} / ${q.panel}: no data for ${q.expr}`);
      assert.ok(values.every(Number.isFinite), `${q.dashboard} / ${q.panel}: ${values} for ${q.expr}`);
      byTitle.set(`${q.panel}: ${q.expr}`, values);
    });
    t.diagnostic(`${queries.length} PromQL queries answered with data at ${new Date(end * 1000).toISOString()}`);
    const pick = (panel: RegExp, expr: RegExp) => [...byTitle.entries()].find(([k]) => panel.test(k) && expr.test(k))![1];
    // The values are the ones the fed series give: the queries compute what their titles say.
    const ratio = pick(/^Errors/, /5xx/)[0];
    assert.ok(Math.abs(ratio - 0.02 / 20.02) < 1e-5, `5xx ratio ${ratio}`);
    const p50 = pick(/^Latency/, /histogram_quantile\(0\.5,/)[0];
    assert.ok(p50 > 0.05 && p50 <= 0.1, `p50 ${p50}`);
    const p99 = pick(/^Latency/, /histogram_quantile\(0\.99,/)[0];
    assert.ok(p99 > 1 && p99 <= 2.5, `p99 ${p99}`);
    const errorBudget = pick(/^Error budget left/, /code="5xx"/)[0];
    assert.ok(Math.abs(errorBudget - (1 - 0.02 / 20.02 / 0.001)) < 1e-3, `5xx budget left ${errorBudget}`);
    // 7 % of requests slower than 500 ms against a 0.1 % budget: spent 70 times over.
    const latencyBudget = pick(/^Error budget left/, /le="0\.5"/)[0];
    assert.ok(Math.abs(latencyBudget - (1 - 0.07 / 0.001)) < 0.5, `latency budget left ${latencyBudget}`);
    const backupAge = pick(/^Last successful backup/, /./)[0];
    assert.equal(backupAge, end - (end - 3600 - 7200));
    assert.equal(pick(/^annotation Deploys/, /./).length, 1, "the deploy one minute ago");

    const [syntax, misspelt] = [answer(queries.length), answer(queries.length + 1)];
    assert.equal(syntax.status, "error", "a broken query is refused");
    assert.match(syntax.error ?? "", /parse error/);
    assert.equal(misspelt.status, "success");
    assert.equal(value(misspelt).length, 0, "a misspelt metric answers no data: the non-empty check bites");

    // nginx: the proxy role's real config with the Grafana server in conf.d.
    const tls = root.run(`openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=example.com \\
  -addext 'subjectAltName=DNS:example.com,DNS:*.example.com' -keyout /root/key.pem -out /root/cert.pem 2>/dev/null && cat /root/cert.pem && echo '== key ==' && cat /root/key.pem`);
    assert.equal(tls.code, 0, show(tls));
    const [cert, key] = tls.stdout.split("== key ==\n");
    const proxy = renderRoleBundle(proxyRole({ ...PROXY, tls: { mode: "cloudflare", certificatePem: cert, privateKeyPem: key, originPullCaPem: cert } }));
    const applied = root.run("bash -s", { stdin: proxy });
    assert.equal(applied.code, 0, show(applied));

    // The grafana role's bundle: its files land and pass nginx -t; apply then cannot reach Grafana's
    // repository from here and refuses before apt is told about it.
    const role = grafanaRole({
      grafana: true,
      grafanaHostname: "grafana",
      domain: "example.com",
      cdnProxy: true,
      staticHostname: "",
      extraHostnames: [],
      sloObjectivePercent: 99.9,
      sloLatencyMs: 500,
      adminPassword: "Gr4fanaAdminPassw0rdGeneratedBy1234",
      secretKey: "Gr4fanaSecretKeyGeneratedBy12345678",
    });
    const grafana = root.run("bash -s", { stdin: renderRoleBundle(role) });
    t.diagnostic(`grafana bundle here: exit ${grafana.code}: ${(grafana.stdout + grafana.stderr).split("\n").find((l) => l.includes("could not download")) ?? "(no download line)"}`);
    assert.notEqual(grafana.code, 0, show(grafana));
    assert.match(grafana.stdout + grafana.stderr, /could not download Grafana's apt key from https:\/\/apt\.grafana\.com\/gpg\.key/);
    const after = root.run(`test ! -e ${GRAFANA_APT.sources} && test ! -e ${GRAFANA_APT.keyring} && test -s ${GRAFANA_PATHS.nginx} && nginx -t 2>&1 && apt-get update -qq`);
    assert.equal(after.code, 0, `no sources file or key, the server in conf.d, nginx -t and apt-get update fine:\n${show(after)}`);
    assert.doesNotMatch(after.stdout, /\[(warn|emerg|alert|crit)\]/, after.stdout);
    assert.match(after.stdout, /test is successful/);

    const broken = root.run(`cp ${GRAFANA_PATHS.nginx} /root/grafana.conf && sed -i 's/proxy_pass/proxy_passs/' ${GRAFANA_PATHS.nginx}; nginx -t; code=$?; cp /root/grafana.conf ${GRAFANA_PATHS.nginx}; exit $code`);
    assert.notEqual(broken.code, 0, "nginx -t bites on the Grafana server");
    assert.match(broken.stderr, /unknown directive "proxy_passs" in \/etc\/nginx\/conf\.d\/grafana\.conf/);

    // The key check itself, with real gpg: a key of another fingerprint is refused; the network stands in as a copy.
    const wrongKey = root.run(`set -e
export GNUPGHOME=$(mktemp -d)
gpg --batch --quiet --pinentry-mode loopback --passphrase '' --quick-gen-key 'Not Grafana <not@example.com>' ed25519 sign never 2>/dev/null
gpg --batch --armor --export not@example.com >/root/not-grafana.asc
curl() { local out=""; while [ $# -gt 0 ]; do if [ "$1" = -o ]; then out=$2; fi; shift; done; cp /root/not-grafana.asc "$out"; }
export -f curl
cat >/root/apply.sh
set +e
(set -e; source /root/apply.sh); echo "exit $?"
test ! -e ${GRAFANA_APT.keyring} && test ! -e ${GRAFANA_APT.sources} && echo "nothing installed"`, { stdin: role.apply! });
    assert.match(wrongKey.stdout, /exit 1/, show(wrongKey));
    assert.match(wrongKey.stderr, new RegExp(`refused Grafana's apt key from https://apt\\.grafana\\.com/gpg\\.key: its fingerprint is '[0-9A-F]{40}', not ${GRAFANA_APT.fingerprint}`), show(wrongKey));
    assert.match(wrongKey.stdout, /nothing installed/);

    // The accepted path, with the generated key standing in for Grafana's (its fingerprint put in the
    // rendered script): the key and a deb822 source naming it; the package itself is out of reach here,
    // and Debian's own lists still update.
    const accepted = root.run(`export GNUPGHOME=$(mktemp -d)
gpg --batch --import /root/not-grafana.asc 2>/dev/null
fpr=$(gpg --batch --with-colons --show-keys /root/not-grafana.asc | awk -F: '$1 == "fpr" { print $10; exit }')
curl() { local out=""; while [ $# -gt 0 ]; do if [ "$1" = -o ]; then out=$2; fi; shift; done; cp /root/not-grafana.asc "$out"; }
export -f curl
sed "s/^readonly fingerprint=.*/readonly fingerprint='$fpr'/" >/root/apply-accepted.sh
(set -e; source /root/apply-accepted.sh); echo "exit $?"
stat -c '%a %U' ${GRAFANA_APT.keyring}
cat ${GRAFANA_APT.sources}
apt-get update -qq >/dev/null 2>&1; echo "debian update exit $?"`, { stdin: role.apply! });
    assert.match(accepted.stdout, /^installed Grafana's apt key [0-9A-F]{40} as \/etc\/apt\/keyrings\/grafana\.asc$/m, show(accepted));
    assert.match(accepted.stdout, /^wrote \/etc\/apt\/sources\.list\.d\/grafana\.sources$/m);
    assert.match(accepted.stdout, /^644 root$/m);
    assert.match(accepted.stdout, /^Types: deb\nURIs: https:\/\/apt\.grafana\.com\nSuites: stable\nComponents: main\nSigned-By: \/etc\/apt\/keyrings\/grafana\.asc$/m);
    assert.match(accepted.stdout, /^exit 1$/m, "apt cannot reach apt.grafana.com here: the install fails, visibly");
    assert.match(accepted.stderr, /apt-get could not install grafana from https:\/\/apt\.grafana\.com/, show(accepted));
    assert.doesNotMatch(accepted.stdout, /installed grafana|plugin/, "nothing after the failed install ran");
    assert.match(accepted.stdout, /^debian update exit 0$/m, "an unreachable Grafana repository does not stop apt-get update for the other roles");

    // systemd's parser reads the unit's drop-in (on a stand-in grafana-server.service: the package's unit is not installable here).
    fs.writeFileSync(root.hostPath("/etc/systemd/system/grafana-server.service"), "[Unit]\nDescription=stand-in for the grafana package's unit\n[Service]\nExecStart=/bin/true\n");
    const verify = root.run(`systemd-analyze verify --man=no grafana-server.service 2>&1; echo "exit $?"
cp ${GRAFANA_PATHS.dropIn} /root/drop-in && echo 'LoadCredentials=x:/y' >>${GRAFANA_PATHS.dropIn}
systemd-analyze verify --man=no grafana-server.service 2>&1; cp /root/drop-in ${GRAFANA_PATHS.dropIn}`);
    const [clean, misspeltKey] = verify.stdout.split(/^exit \d+$/m);
    assert.doesNotMatch(clean, /leaninfra\.conf|Unknown key|Failed to parse|Invalid/, verify.stdout);
    assert.match(misspeltKey, /leaninfra\.conf:\d+: Unknown key/, `the check bites:\n${verify.stdout}`);
  });
  t.diagnostic("not tested here: installing Grafana from apt.grafana.com, its plugin from grafana.com, and Grafana reading the provisioning and dashboards (no route to either)");
});

test("the logs view's LogsQL runs in VictoriaLogs and finds the lines of one request id, nginx's and the app's, and no other", { timeout: 20 * 60_000 }, async (t) => {
  const binary = victoriaLogsBinary();
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-vl-grafana-"));
  const vl = spawn(binary, [`-httpListenAddr=127.0.0.1:${port}`, `-storageDataPath=${dir}/data`, "-loggerLevel=ERROR"], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  vl.stderr.on("data", (chunk) => (stderr += chunk));
  try {
    const base = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 100; i++) {
      if (await fetch(`${base}/health`).then((r) => r.ok, () => false)) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const id = TEST_VARIABLES.$request_id;
    const now = new Date().toISOString();
    const lines = [
      { _time: now, _msg: JSON.stringify({ time: now, request_id: id, method: "GET", path: "/checkout", status: 500 }), SYSLOG_IDENTIFIER: "nginx" },
      { _time: now, _msg: `ERROR checkout failed request_id=${id} release=v42`, SYSLOG_IDENTIFIER: "app" },
      { _time: now, _msg: JSON.stringify({ time: now, request_id: "leaninfra-test-request-2", status: 200 }), SYSLOG_IDENTIFIER: "nginx" },
    ];
    const ingest = await fetch(`${base}/insert/jsonline?_stream_fields=SYSLOG_IDENTIFIER`, { method: "POST", body: lines.map((l) => JSON.stringify(l)).join("\n") + "\n" });
    assert.equal(ingest.status, 200, await ingest.text());
    await fetch(`${base}/internal/force_flush`);
    const logsQueries = dashboardQueries(OBJECTIVE).filter((q) => q.datasource === "victorialogs");
    assert.equal(logsQueries.length, 1);
    for (const q of logsQueries) {
      const answer = await fetch(`${base}/select/logsql/query`, { method: "POST", body: new URLSearchParams({ query: q.expr }) });
      const text = await answer.text();
      assert.equal(answer.status, 200, `${q.panel}: ${q.expr}\n${text}`);
      const found = text.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as { _msg: string; SYSLOG_IDENTIFIER: string });
      assert.deepEqual(found.map((f) => f.SYSLOG_IDENTIFIER).sort(), ["app", "nginx"], `${q.expr}:\n${text}`);
      assert.ok(found.every((f) => f._msg.includes(id)));
    }
    const broken = await fetch(`${base}/select/logsql/query`, { method: "POST", body: new URLSearchParams({ query: '"unterminated | sort by (_time desc)' }) });
    assert.equal(broken.status, 400, "VictoriaLogs refuses a broken query: the status check bites");
    t.diagnostic(`LogsQL answered by ${path.basename(path.dirname(binary))}; the victoriametrics-logs-datasource plugin itself is not tested here (Grafana is not installable)`);
  } finally {
    vl.kill();
    await new Promise((r) => vl.once("exit", r));
    fs.rmSync(dir, { recursive: true, force: true });
    if (vl.exitCode && vl.exitCode !== 0 && stderr) console.error(stderr.slice(-2000));
  }
});
