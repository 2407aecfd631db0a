import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import test from "node:test";
import { parse } from "yaml";
import { renderRoleBundle } from "../../components/host/bundle";
import { RoleSettings, SettingsError, placeholderInputs } from "../../components/host/define";
import {
  MONITORING_PATHS,
  MonitoringSettings,
  SECRET_FILES,
  monitoringRole,
  monitoringSettingsProblems,
  prometheusRetentionSizeMb,
  role as monitoringDefinition,
} from "../../components/monitoring";
import { HostRole } from "../../components/host/role";
import { POSTGRES_MONITOR_USER, renderPostgresHba } from "../../components/postgres/config";
import { TEST_FACTS, TEST_MONITORING_SETTINGS, TEST_REDIS_PASSWORD } from "../lib/facts";
import { assertShellcheckClean } from "../lib/shellcheck";

const REDIS_PASSWORD = TEST_REDIS_PASSWORD;
const settings = (over: Partial<MonitoringSettings> = {}): MonitoringSettings => ({ ...TEST_MONITORING_SETTINGS, ...over });
const EMAIL = { alertReceiver: "email", alertEmailTo: "owner@example.com", alertEmailFrom: "alerts@example.com", alertSmtpHost: "smtp.example.net:587", alertSmtpUser: "alerts", alertSmtpPassword: "SmtpSecret-1" } as const;
const TELEGRAM = { alertReceiver: "telegram", alertTelegramBotToken: "123456789:AAH-abcdefghijklmnopqrstuvwxyz012345", alertTelegramChatId: "-1001234567890" } as const;

const file = (role: HostRole, p: string) => {
  const found = role.files.find((f) => f.path === p);
  assert.ok(found, `${p} is rendered`);
  return found;
};
const yamlOf = (role: HostRole, p: string) => parse(file(role, p).content);
const problemsOf = (fn: () => unknown): string[] => {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof SettingsError, String(error));
    return error.problems;
  }
  assert.fail("no SettingsError");
};

test("every service of the role listens on 127.0.0.1 only, Alertmanager without a cluster port, and Prometheus scrapes loopback only", () => {
  const role = monitoringRole(settings());
  const listens: string[] = [];
  for (const f of role.files.filter((f) => f.path.startsWith("/etc/default/"))) {
    for (const m of f.content.matchAll(/(?:listen-address|LISTEN_ADDRESS)[= ]"?([^\s"]*)/g)) listens.push(`${path.basename(f.path)} ${m[1]}`);
  }
  // Prometheus, Alertmanager (web and the emptied cluster flag), postgres, nginx, blackbox, pgbackrest, redis.
  assert.equal(listens.length, 8, listens.join("\n"));
  for (const l of listens) assert.match(l, /^prometheus-alertmanager $|^\S+ 127\.0\.0\.1:\d+$/, l);
  assert.ok(listens.includes("prometheus-alertmanager "), "--cluster.listen-address= is empty: no gossip port");
  const prom = yamlOf(role, MONITORING_PATHS.prometheusYml);
  assert.equal(prom.global.scrape_interval, "15s");
  for (const job of prom.scrape_configs) {
    const address = job.relabel_configs ? job.relabel_configs.find((r: { target_label: string }) => r.target_label === "__address__").replacement : job.static_configs[0].targets[0];
    assert.match(address, /^127\.0\.0\.1:\d+$/, `${job.job_name} is scraped on loopback`);
  }
  assert.deepEqual(
    prom.scrape_configs.map((j: { job_name: string }) => j.job_name),
    ["prometheus", "alertmanager", "node", "postgres", "nginx", "mtail", "pgbackrest", "redis", "victorialogs", "blackbox-site", "blackbox-origin-cert"],
  );
  assert.deepEqual(prom.alerting.alertmanagers[0].static_configs[0].targets, ["127.0.0.1:9093"]);
});

test("retention: the SLO window's days, and a fifth of the data volume unless prometheusRetentionSizeGb says otherwise; the TSDB on the volume", () => {
  const args = (s: MonitoringSettings) => file(monitoringRole(s), MONITORING_PATHS.defaults("prometheus")).content;
  assert.match(args(settings()), /--storage\.tsdb\.retention\.time=35d --storage\.tsdb\.retention\.size=8192MB/);
  assert.match(args(settings({ prometheusRetentionDays: 60, prometheusRetentionSizeGb: 3 })), /retention\.time=60d --storage\.tsdb\.retention\.size=3072MB/);
  assert.match(args(settings()), /--storage\.tsdb\.path=\/srv\/data\/prometheus /);
  assert.equal(prometheusRetentionSizeMb(0.5, 0), 256, "at least 256 MB");
  assert.deepEqual(problemsOf(() => monitoringRole(settings({ prometheusRetentionDays: 20 }))).map((p) => p.split(" ")[0]), ["prometheusRetentionDays"]);
  assert.deepEqual(problemsOf(() => monitoringRole(settings({ prometheusRetentionSizeGb: 30 }))).map((p) => p.split(" ")[0]), ["prometheusRetentionSizeGb"]);
});

test("the probes: the public URL at the app's health path on the canonical host, the origin certificate on 127.0.0.1:443 by the site's name", () => {
  const targets = (s: MonitoringSettings) =>
    Object.fromEntries(yamlOf(monitoringRole(s), MONITORING_PATHS.prometheusYml).scrape_configs.filter((j: { job_name: string }) => j.job_name.startsWith("blackbox")).map((j: { job_name: string; static_configs: { targets: string[] }[] }) => [j.job_name, j.static_configs[0].targets[0]]));
  assert.deepEqual(targets(settings()), { "blackbox-site": "https://example.com/healthz", "blackbox-origin-cert": "127.0.0.1:443" });
  assert.deepEqual(targets(settings({ canonicalHost: "www", appHealthPath: "/up" })), { "blackbox-site": "https://www.example.com/up", "blackbox-origin-cert": "127.0.0.1:443" });
  assert.deepEqual(targets(settings({ appHealthPath: undefined })), { "blackbox-origin-cert": "127.0.0.1:443" }, "without the app there is no health path to probe");
  const blackbox = yamlOf(monitoringRole(settings({ canonicalHost: "www" })), MONITORING_PATHS.blackboxYml);
  assert.equal(blackbox.modules.leaninfra_origin_cert.tcp.tls_config.server_name, "www.example.com");
  assert.equal(blackbox.modules.leaninfra_site.http.fail_if_not_ssl, true);
});

test("Redis: its exporter and job only with Redis, logging in on loopback with the app user's password from a root-only file", () => {
  const on = monitoringRole(settings());
  const env = file(on, MONITORING_PATHS.defaults("redis"));
  assert.equal(env.mode, "0600");
  assert.match(env.content, /^REDIS_ADDR=redis:\/\/127\.0\.0\.1:6379$/m);
  assert.match(env.content, new RegExp(`^REDIS_PASSWORD=${REDIS_PASSWORD}$`, "m"));
  assert.ok(on.packages.includes("prometheus-redis-exporter"));
  const off = monitoringRole(settings({ redisUrl: undefined }));
  assert.ok(!off.packages.includes("prometheus-redis-exporter"));
  assert.ok(!off.files.some((f) => f.path.includes("redis-exporter")));
  const prom = yamlOf(off, MONITORING_PATHS.prometheusYml);
  assert.ok(!prom.scrape_configs.some((j: { job_name: string }) => j.job_name === "redis"));
  assert.ok(!prom.rule_files.includes(`${MONITORING_PATHS.rulesDir}/redis.yml`), "no Redis alerts without Redis");
});

test("rule files: each role's alerts.yml in the repository, the SLO rules and the app error lines, each written under /etc/prometheus/rules", () => {
  const role = monitoringRole(settings());
  const prom = yamlOf(role, MONITORING_PATHS.prometheusYml);
  const components = path.join(__dirname, "../../components");
  const withAlerts = fs.readdirSync(components).filter((r) => fs.existsSync(path.join(components, r, "alerts.yml"))).sort();
  assert.deepEqual(prom.rule_files, [...withAlerts.map((r) => `${MONITORING_PATHS.rulesDir}/${r}.yml`), `${MONITORING_PATHS.rulesDir}/slo.yml`, `${MONITORING_PATHS.rulesDir}/app-error-lines.yml`]);
  for (const r of withAlerts) assert.equal(file(role, `${MONITORING_PATHS.rulesDir}/${r}.yml`).content, fs.readFileSync(path.join(components, r, "alerts.yml"), "utf8"));
  const slo = yamlOf(monitoringRole(settings({ sloObjectivePercent: 99.5, sloLatencyMs: 250 })), `${MONITORING_PATHS.rulesDir}/slo.yml`);
  const text = JSON.stringify(slo);
  assert.match(text, /le=\\"0\.25\\"/, "the latency SLO reads the 250 ms bucket");
  assert.match(text, /> 0\.072/, "14.4 x 0.5 % budget");
});

test("alertmanager.yml: one receiver per kind, secrets only in root:prometheus 0640 files, timing for one person, tickets inhibited by pages, the Watchdog to the heartbeat", () => {
  const kinds = {
    webhook: settings(),
    email: settings(EMAIL),
    telegram: settings(TELEGRAM),
  };
  for (const [kind, s] of Object.entries(kinds)) {
    const role = monitoringRole(s);
    const am = yamlOf(role, MONITORING_PATHS.alertmanagerYml);
    const text = file(role, MONITORING_PATHS.alertmanagerYml).content;
    const owner = am.receivers.find((r: { name: string }) => r.name === "owner");
    const configKeys = Object.keys(owner).filter((k) => k !== "name");
    assert.deepEqual(configKeys, [`${kind}_configs`], `${kind}: one kind of config`);
    assert.equal(owner[`${kind}_configs`].length, 1);
    for (const secret of [s.alertWebhookUrl, s.alertSmtpPassword, s.alertTelegramBotToken, s.heartbeatUrl].filter(Boolean)) {
      assert.ok(!text.includes(secret), `${kind}: no secret in alertmanager.yml`);
    }
    for (const [key, p] of Object.entries(SECRET_FILES)) {
      const f = file(role, p);
      assert.equal(f.mode, "0640");
      assert.equal(f.group, "prometheus");
      const used = key === "heartbeatUrl" || (key === "alertWebhookUrl" && kind === "webhook") || (key === "alertSmtpPassword" && kind === "email") || (key === "alertTelegramBotToken" && kind === "telegram");
      assert.equal(f.content, used ? s[key as keyof MonitoringSettings] : "", `${kind}: ${key}`);
    }
    assert.equal(am.route.receiver, "owner");
    assert.deepEqual([am.route.group_wait, am.route.group_interval], ["30s", "5m"]);
    const [watchdog, page, ticket] = am.route.routes;
    assert.deepEqual(watchdog, { matchers: ['alertname="Watchdog"'], receiver: "heartbeat", group_wait: "0s", group_interval: "1m", repeat_interval: "50s" });
    assert.deepEqual([page.matchers, page.receiver, page.repeat_interval], [['severity="page"'], "owner", "4h"]);
    assert.deepEqual([ticket.matchers, ticket.receiver, ticket.repeat_interval], [['severity="ticket"'], "owner", "24h"]);
    assert.deepEqual(am.inhibit_rules, [{ source_matchers: ['severity="page"'], target_matchers: ['severity="ticket"'] }]);
    assert.deepEqual(am.receivers.find((r: { name: string }) => r.name === "heartbeat").webhook_configs, [{ url_file: SECRET_FILES.heartbeatUrl, send_resolved: false }]);
  }
  const email = yamlOf(monitoringRole(kinds.email), MONITORING_PATHS.alertmanagerYml).receivers[0].email_configs[0];
  assert.deepEqual([email.to, email.from, email.smarthost, email.auth_username, email.auth_password_file], ["owner@example.com", "alerts@example.com", "smtp.example.net:587", "alerts", SECRET_FILES.alertSmtpPassword]);
  assert.equal(yamlOf(monitoringRole(kinds.telegram), MONITORING_PATHS.alertmanagerYml).receivers[0].telegram_configs[0].chat_id, -1001234567890);
  const silent = yamlOf(monitoringRole(settings({ heartbeatUrl: "" })), MONITORING_PATHS.alertmanagerYml);
  assert.deepEqual(silent.receivers.find((r: { name: string }) => r.name === "heartbeat"), { name: "heartbeat" }, "without a heartbeat URL the Watchdog goes nowhere");
  const template = file(monitoringRole(settings()), MONITORING_PATHS.template).content;
  for (const field of ["summary", "description", "runbook"]) assert.match(template, new RegExp(`\\.Annotations\\.${field}`));
});

test("bad combinations are refused with the key named", () => {
  const keys = (over: Partial<MonitoringSettings>) => monitoringSettingsProblems(settings(over)).map((p) => p.split(" ")[0]);
  assert.deepEqual(keys({}), []);
  assert.deepEqual(keys({ ...EMAIL, alertSmtpHost: "" }), ["alertSmtpHost"]);
  assert.deepEqual(keys({ ...EMAIL, alertSmtpHost: "smtp.example.net" }), ["alertSmtpHost"], "host:port");
  for (const bad of ["smtp.example.net:0", "smtp.example.net:99999", "-smtp.example.net:587", "smtp..example.net:587", "SMTP.example.net:587", "[::1]:587"]) {
    assert.deepEqual(keys({ ...EMAIL, alertSmtpHost: bad }), ["alertSmtpHost"], bad);
  }
  for (const good of ["smtp.example.net:465", "192.0.2.25:587"]) assert.deepEqual(keys({ ...EMAIL, alertSmtpHost: good }), [], good);
  assert.deepEqual(keys({ ...EMAIL, alertEmailTo: "owner" }), ["alertEmailTo"]);
  assert.deepEqual(keys({ ...EMAIL, alertSmtpPassword: "" }), ["alertSmtpPassword"], "a login needs its password");
  assert.deepEqual(keys({ ...EMAIL, alertSmtpUser: "", alertSmtpPassword: "" }), [], "no login: no password");
  assert.deepEqual(keys({ ...TELEGRAM, alertTelegramChatId: "" }), ["alertTelegramChatId"]);
  assert.deepEqual(keys({ ...TELEGRAM, alertTelegramBotToken: "" }), ["alertTelegramBotToken"]);
  assert.deepEqual(keys({ alertWebhookUrl: "" }), ["alertWebhookUrl"]);
  assert.deepEqual(keys({ alertWebhookUrl: "ftp://example.net/x" }), ["alertWebhookUrl"]);
  assert.deepEqual(keys({ heartbeatUrl: "not a url" }), ["heartbeatUrl"]);
  assert.deepEqual(keys({ sloLatencyMs: 300 }), ["sloLatencyMs"]);
  assert.deepEqual(keys({ sloObjectivePercent: 100 }), ["sloObjectivePercent"]);
  assert.deepEqual(keys({ appErrorLinesPerMinute: 0 }), ["appErrorLinesPerMinute"]);
  assert.deepEqual(keys({ alertReceiver: "pager" as never }), ["alertReceiver"]);
  const message = problemsOf(() => monitoringRole(settings({ ...TELEGRAM, alertTelegramChatId: "" })))[0];
  assert.match(message, /^alertTelegramChatId "" must be the numeric chat id/);
});

test("the role definition renders from its defaults and placeholders (the offline plan), and refuses a missing webhook URL with real secrets", () => {
  const defaults = monitoringDefinition.settings.parse({});
  const s = { ...TEST_FACTS, ...defaults } as unknown as RoleSettings<typeof monitoringDefinition.settings>;
  const offers = new Map([["postgres", { postgresPort: "5432" }]]);
  const inputs = placeholderInputs(monitoringDefinition as never, s as never, offers, {});
  const role = monitoringDefinition.render(s, inputs as never);
  assert.equal(defaults.alertReceiver, "webhook");
  assert.match(file(role, SECRET_FILES.alertWebhookUrl).content, /^https:\/\/alerts\.invalid\//, "the plan's placeholder URL");
  const real = placeholderInputs(monitoringDefinition as never, s as never, offers, {}, { alertWebhookUrl: "", heartbeatUrl: "" });
  assert.deepEqual(problemsOf(() => monitoringDefinition.render(s, real as never)).map((p) => p.split(" ")[0]), ["alertWebhookUrl"]);
  assert.throws(() => monitoringDefinition.settings.parse({ sloLatencyMs: 300 }), /sloLatencyMs|request duration bucket/);
});

test("PostgreSQL: pg_hba.conf lets the monitor role in on the socket by SCRAM only; apply creates it with pg_monitor from its verifier", () => {
  const hba = renderPostgresHba("app", "app");
  const lines = hba.split("\n").filter((l) => l.includes(POSTGRES_MONITOR_USER) && !l.startsWith("#"));
  assert.deepEqual(lines.map((l) => l.split(/\s+/)), [["local", "postgres", POSTGRES_MONITOR_USER, "scram-sha-256"]]);
  const role = monitoringRole(settings());
  assert.match(role.apply!, /readonly verifier='SCRAM-SHA-256\$4096:/);
  assert.ok(!role.apply!.includes(settings().postgresPassword), "only the verifier reaches the script");
  const env = file(role, MONITORING_PATHS.defaults("postgres"));
  assert.equal(env.mode, "0600");
  assert.match(env.content, /host=\/run\/postgresql port=5432 dbname=postgres user=leaninfra_monitor password=MonitorPassword0123456789/);
});

test("the role's scripts and its bundle pass shellcheck", () => {
  for (const s of [settings(), settings({ ...EMAIL, redisUrl: undefined })]) {
    const role = monitoringRole(s);
    for (const name of ["validate", "apply", "healthCheck"] as const) assertShellcheckClean(`monitoring ${name}`, role[name]!);
    assertShellcheckClean("the monitoring bundle", renderRoleBundle(role));
  }
});
