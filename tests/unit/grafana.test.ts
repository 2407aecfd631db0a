import assert from "node:assert/strict";
import test from "node:test";
import { parse } from "yaml";
import { renderRoleBundle } from "../../components/host/bundle";
import { SettingsError } from "../../components/host/define";
import {
  DATASOURCES,
  GRAFANA_APT,
  GRAFANA_PATHS,
  GrafanaSettings,
  grafanaEdgeLabels,
  grafanaRole,
  grafanaSettingsSchema,
  renderDashboardProviders,
  renderDatasources,
  renderGrafanaDropIn,
  renderGrafanaIni,
  renderGrafanaNginxConf,
  role as grafanaDefinition,
} from "../../components/grafana";
import * as pulumi from "@pulumi/pulumi";
import * as monitoring from "../../components/monitoring";
import { validateConfig } from "../../infra/config";
import { runWithMocks } from "../../infra/mock-run";
import { ROLES } from "../../infra/roles";
import { buildStack } from "../../infra/stack";
import { MINIMAL_CONFIG, mockCloudOutputs } from "../lib/mock-cloud";
import { assertShellcheckClean } from "../lib/shellcheck";
import { TEST_FACTS } from "../lib/facts";

const ADMIN_PASSWORD = "Gr4fanaAdminPassw0rdGeneratedBy1234";
const SECRET_KEY = "Gr4fanaSecretKeyGeneratedBy12345678";

const settings = (over: Partial<GrafanaSettings> = {}): GrafanaSettings => ({
  grafana: true,
  grafanaHostname: "grafana",
  domain: "example.com",
  cdnProxy: true,
  staticHostname: "",
  extraHostnames: [],
  sloObjectivePercent: 99.9,
  sloLatencyMs: 500,
  adminPassword: ADMIN_PASSWORD,
  secretKey: SECRET_KEY,
  ...over,
});

/** grafana.ini as Grafana reads it: section -> key -> value (no continuation lines or quoting in ours). */
function parseIni(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  let section = "";
  for (const line of text.split("\n")) {
    const header = /^\[([^\]]+)\]$/.exec(line);
    if (header) out[(section = header[1])] = {};
    const pair = /^([a-z_]+) = ?(.*)$/.exec(line);
    if (pair) out[section][pair[1]] = pair[2];
  }
  return out;
}

test("grafana.ini: loopback on 3000, the public URL, admin from a systemd credential, no sign-up, no anonymous access, no phoning home", () => {
  const ini = parseIni(renderGrafanaIni({ hostname: "grafana.example.com" }));
  assert.equal(ini.server.http_addr, "127.0.0.1");
  assert.equal(ini.server.http_port, "3000");
  assert.equal(ini.server.domain, "grafana.example.com");
  assert.equal(ini.server.root_url, "https://grafana.example.com/");
  assert.equal(ini.security.admin_user, "admin");
  assert.equal(ini.security.admin_password, "$__file{/run/credentials/grafana-server.service/admin_password}");
  assert.equal(ini.security.secret_key, "$__file{/run/credentials/grafana-server.service/secret_key}");
  assert.equal(ini.security.cookie_secure, "true");
  assert.equal(ini.users.allow_sign_up, "false");
  assert.equal(ini["auth.anonymous"].enabled, "false");
  assert.equal(ini.analytics.reporting_enabled, "false");
  assert.equal(ini.analytics.check_for_updates, "false");
  assert.equal(ini.analytics.check_for_plugin_updates, "false");
  assert.doesNotMatch(renderGrafanaIni({ hostname: "grafana.example.com" }), /\{\{|#:/, "every marker filled, template notes dropped");
});

test("the unit's drop-in hands Grafana the root-only secret files as credentials and caps its memory", () => {
  const dropIn = renderGrafanaDropIn();
  assert.match(dropIn, /^\[Service\]$/m);
  assert.match(dropIn, new RegExp(`^LoadCredential=admin_password:${GRAFANA_PATHS.adminPassword}$`, "m"));
  assert.match(dropIn, new RegExp(`^LoadCredential=secret_key:${GRAFANA_PATHS.secretKey}$`, "m"));
  assert.match(dropIn, new RegExp(`^EnvironmentFile=${GRAFANA_PATHS.environment}$`, "m"));
  assert.match(dropIn, /^MemoryMax=\d+M$/m);
});

test("provisioning: two data sources on loopback with fixed uids, pruning the rest; the dashboards provider reads the role's folder", () => {
  const ds = parse(renderDatasources());
  assert.equal(ds.apiVersion, 1);
  assert.equal(ds.prune, true);
  assert.deepEqual(
    ds.datasources.map((d: { uid: string; type: string; url: string }) => [d.uid, d.type, d.url]),
    [
      ["leaninfra-prometheus", "prometheus", "http://127.0.0.1:9090"],
      ["leaninfra-victorialogs", "victoriametrics-logs-datasource", "http://127.0.0.1:9428"],
    ],
  );
  assert.deepEqual(ds.datasources.map((d: { uid: string }) => d.uid), [DATASOURCES.prometheus.uid, DATASOURCES.victorialogs.uid]);
  assert.ok(ds.datasources.every((d: { editable: boolean; access: string }) => d.editable === false && d.access === "proxy"));
  const providers = parse(renderDashboardProviders()).providers;
  assert.equal(providers.length, 1);
  assert.equal(providers[0].type, "file");
  assert.equal(providers[0].options.path, GRAFANA_PATHS.dashboards);
  assert.equal(providers[0].allowUiUpdates, false);
});

test("nginx: one TLS server for the Grafana host, proxied to loopback, WebSockets for Grafana Live, the login rate-limited", () => {
  const conf = renderGrafanaNginxConf({ hostname: "grafana.example.com" });
  assert.match(conf, /^\s+server_name grafana\.example\.com;$/m);
  assert.match(conf, /^\s+listen 443 ssl;$/m);
  assert.doesNotMatch(conf, /listen 80|ssl_certificate/, "port 80 and the certificate stay the proxy role's");
  assert.equal(conf.match(/proxy_pass http:\/\/127\.0\.0\.1:3000;/g)?.length, 3);
  assert.match(conf, /location \/api\/live\/ \{[^}]*proxy_set_header Upgrade \$http_upgrade;[^}]*proxy_set_header Connection \$leaninfra_connection;/);
  assert.match(conf, /location = \/login \{\s+limit_req zone=leaninfra_auth burst=\d+ nodelay;/);
  assert.match(conf, /add_header Strict-Transport-Security/);
  // Grafana's requests stay out of the app's request metrics (the mtail program skips route not_app).
  assert.match(conf, /^\s+set \$leaninfra_route not_app;$/m);
  assert.doesNotMatch(conf, /\{\{|#:/);
});

test("the role: files with their modes, the password only in 0600 files, never in a file others read or the bundle's header", () => {
  const role = grafanaRole(settings());
  const byPath = new Map(role.files.map((f) => [f.path, f]));
  assert.equal(byPath.get(GRAFANA_PATHS.adminPassword)?.mode, "0600");
  assert.equal(byPath.get(GRAFANA_PATHS.adminPassword)?.content, ADMIN_PASSWORD);
  assert.equal(byPath.get(GRAFANA_PATHS.secretKey)?.mode, "0600");
  for (const file of role.files) {
    if (file.mode === "0600") continue;
    assert.ok(!file.content.includes(ADMIN_PASSWORD) && !file.content.includes(SECRET_KEY), `${file.path} (${file.mode}) holds a secret`);
  }
  assert.ok(byPath.has(GRAFANA_PATHS.nginx), "served behind Cloudflare: the nginx server is there");
  assert.match(byPath.get(GRAFANA_PATHS.nginx)!.onChange!, /^nginx -t\n/);
  assert.ok(byPath.has(`${GRAFANA_PATHS.dashboards}/leaninfra-owner.json`) && byPath.has(`${GRAFANA_PATHS.dashboards}/leaninfra-logs.json`));
  assert.ok(role.files.every((f) => !f.path.startsWith("/etc/grafana/") && !f.path.startsWith("/var/lib/grafana/")), "nothing where the package's postinst resets owners and modes");
  assert.deepEqual(role.packages, ["ca-certificates", "curl", "gpg"], "grafana itself is installed by apply, after its key is checked");
  assert.equal(role.validate, "nginx -t");

  const bundle = renderRoleBundle(role);
  const header = bundle.split("\n").filter((l) => l.startsWith("#")).slice(0, 8).join("\n");
  assert.ok(!header.includes(ADMIN_PASSWORD));
  assert.match(role.apply!, new RegExp(`readonly fingerprint='${GRAFANA_APT.fingerprint}'`));
  assert.match(role.apply!, /readonly plugin_version='\d+\.\d+\.\d+'/);
  assertShellcheckClean("grafana bundle", bundle);
});

test("grafana false: no files, no packages, apply removes the nginx server and stops the service; the Edge gets no name", () => {
  const role = grafanaRole(settings({ grafana: false }));
  assert.deepEqual(role.files, []);
  assert.deepEqual(role.packages, []);
  assert.match(role.apply!, /^readonly grafana=0$/m);
  assert.match(role.apply!, /^readonly served=0$/m);
  assert.equal(role.validate, undefined);
  assertShellcheckClean("grafana bundle (off)", renderRoleBundle(role));
  assert.deepEqual(grafanaEdgeLabels({ grafana: false, grafanaHostname: "grafana", cdnProxy: true }), []);
  assert.deepEqual(grafanaEdgeLabels({ grafana: true, grafanaHostname: "dash", cdnProxy: true }), ["dash"]);
});

test("without Cloudflare's proxy Grafana stays on loopback: no nginx server, no DNS name (no certificate covers it)", () => {
  const role = grafanaRole(settings({ cdnProxy: false }));
  assert.ok(!role.files.some((f) => f.path === GRAFANA_PATHS.nginx));
  assert.match(role.apply!, /^readonly grafana=1$/m);
  assert.match(role.apply!, /^readonly served=0$/m);
  assert.match(role.description, /SSH tunnel/);
  assert.deepEqual(grafanaEdgeLabels({ grafana: true, grafanaHostname: "grafana", cdnProxy: false }), []);
});

test("refusals name the key, the value and what is accepted", () => {
  const problems = (over: Partial<GrafanaSettings>) => {
    try {
      grafanaRole(settings(over));
    } catch (error) {
      assert.ok(error instanceof SettingsError);
      return error.problems;
    }
    return [];
  };
  assert.match(problems({ grafanaHostname: "www" })[0], /^grafanaHostname "www" is already one of the site's names .*accepted: another label/);
  assert.match(problems({ grafanaHostname: "static", staticHostname: "static" })[0], /^grafanaHostname "static" is already/);
  assert.match(problems({ grafanaHostname: "dash", extraHostnames: ["dash"] })[0], /^grafanaHostname "dash" is also listed in extraHostnames, whose names answer 404: .*accepted: remove "dash" from extraHostnames, or another grafanaHostname/);
  assert.match(problems({ grafanaHostname: "Grafana!" })[0], /^grafanaHostname "Grafana!" is not a host name label \(accepted: /);
  assert.match(problems({ sloObjectivePercent: undefined })[0], /^sloObjectivePercent undefined is not an objective .*monitoring role/);
  assert.match(problems({ sloObjectivePercent: 100 })[0], /^sloObjectivePercent 100 /);
  assert.match(problems({ sloLatencyMs: undefined })[0], /^sloLatencyMs undefined is not a latency in ms: .*monitoring role's sloLatencyMs/);
  assert.match(problems({ adminPassword: "short" })[0], /^adminPassword must be 16 or more/);
  assert.ok(!problems({ adminPassword: "short" }).join("\n").includes("short\""), "the value of a secret is never quoted");
  assert.deepEqual(problems({ grafana: false, grafanaHostname: "www", sloObjectivePercent: undefined }), [], "off: nothing to check");

  const schema = grafanaSettingsSchema.safeParse({ grafanaHostname: "-bad" });
  assert.equal(schema.success, false);
  assert.deepEqual(grafanaSettingsSchema.parse({}), { grafana: true, grafanaHostname: "grafana" });
});

test("the role definition reads the monitoring role's objective from the settings and renders from its inputs", () => {
  const s = { ...TEST_FACTS, grafana: true, grafanaHostname: "grafana", sloObjectivePercent: 99.5, sloLatencyMs: 250 };
  const role = grafanaDefinition.render(s as never, { adminPassword: ADMIN_PASSWORD, secretKey: SECRET_KEY });
  const owner = JSON.parse(role.files.find((f) => f.path.endsWith("leaninfra-owner.json"))!.content);
  const budget = owner.panels.find((p: { title: string }) => p.title.includes("objective 99.5%"));
  assert.ok(budget, "the error-budget panel names the objective");
  assert.deepEqual(budget.targets.map((t: { legendFormat: string }) => t.legendFormat), ["5xx", "slower than 250 ms"]);
  assert.match(budget.targets[1].expr, /le="0\.25"/, "the latency bound as the bucket mtail prints");
  assert.match(budget.targets[0].expr, /\/ 0\.005$/, "the budget: 100 % - 99.5 %");
  assert.throws(() => grafanaDefinition.render({ ...s, sloObjectivePercent: undefined } as never, { adminPassword: ADMIN_PASSWORD, secretKey: SECRET_KEY }), SettingsError);
  assert.deepEqual(grafanaDefinition.inputs, {
    adminPassword: { from: "password", resource: "grafana-admin-password" },
    secretKey: { from: "password", resource: "grafana-secret-key" },
  });
});

test("the stack with the grafana role: proxied DNS records for grafana.<domain>, the role's bundle, the admin password a secret output; none of it with grafana false or without the proxy", async () => {
  // The monitoring role's receiver (webhook by default) and heartbeat, as `pulumi up` has them.
  const ALERT_SECRETS = { "leaninfra:alertWebhookUrl": "https://alerts.example.net/hook", "leaninfra:heartbeatUrl": "https://heartbeat.example.net/ping" };
  // The stack's roles with the monitoring role (whose objective the dashboards read) and this one.
  const roles = [...ROLES.filter((r) => r.name !== "monitoring" && r.name !== "grafana"), monitoring.role, grafanaDefinition];
  const build = async (raw: Record<string, unknown>) => {
    const cfg = validateConfig("prod", { ...MINIMAL_CONFIG, ...raw }, undefined, { roles });
    const run = await runWithMocks({ project: "leaninfra", stack: "prod", preview: false, config: ALERT_SECRETS, secretKeys: Object.keys(ALERT_SECRETS), computed: mockCloudOutputs, revealSecrets: true }, () =>
      buildStack(cfg, { offline: true, roles }),
    );
    const names = run.resources.filter((r) => r.type === "cloudflare:index/dnsRecord:DnsRecord").map((r) => `${r.inputs.name} ${r.inputs.type} ${r.inputs.proxied}`);
    const bundle = run.resources.find((r) => r.type === "command:remote:Command" && r.name === "host-role-grafana");
    return { names, bundle: String(bundle?.inputs.stdin ?? ""), run };
  };

  const on = await build({});
  assert.ok(on.names.includes("grafana.example.com A true") && on.names.includes("grafana.example.com AAAA true"), on.names.join("\n"));
  assert.match(on.bundle, /server_name grafana\.example\.com;/);
  assert.deepEqual(on.run.result.outputs.hostnames.filter((h: string) => h.startsWith("grafana.")), ["grafana.example.com"]);
  assert.equal(await pulumi.isSecret(on.run.result.outputs.grafanaAdminPassword), true, "the admin password is a secret stack output");

  const renamed = await build({ grafanaHostname: "dash" });
  assert.ok(renamed.names.includes("dash.example.com A true") && !renamed.names.some((n) => n.startsWith("grafana.")));

  const off = await build({ grafana: false });
  assert.ok(!off.names.some((n) => n.startsWith("grafana.")), off.names.join("\n"));
  assert.doesNotMatch(off.bundle, /server_name grafana/);
  assert.match(off.bundle, /readonly grafana=0/);

  const direct = await build({ cdnProxy: false, acmeEmail: "owner@example.com" });
  assert.ok(direct.names.length > 0 && !direct.names.some((n) => n.startsWith("grafana.")), direct.names.join("\n"));
  assert.match(direct.bundle, /readonly grafana=1/);
  assert.match(direct.bundle, /readonly served=0/);

  assert.throws(() => validateConfig("prod", { ...MINIMAL_CONFIG, grafanaHostname: "www" }, undefined, { roles }), /leaninfra:grafanaHostname: "www" is already one of the site's names/);
});
