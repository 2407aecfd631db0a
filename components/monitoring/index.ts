import * as fs from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import { BACKUPS } from "../backups/layout";
import { canonicalName } from "../edge/rules";
import { defineRole, placeholderPassword, refuseProblems } from "../host/define";
import { DOMAIN_NAME, GENERATED_SECRET } from "../host/names";
import { HostRole, RoleFile } from "../host/role";
import { renderScript } from "../host/script";
import { postgresPasswordVerifier } from "../postgres/config";
import { NGINX_STATUS } from "../proxy/nginx";
import {
  ALERT_RECEIVERS,
  AlertReceiver,
  MONITORING_PACKAGES,
  MONITORING_PATHS as M,
  MONITORING_PORTS,
  MonitoredService,
  POSTGRES_MONITOR_USER,
  SECRET_FILES,
  prometheusRetentionSizeMb,
  renderAlertTemplate,
  renderAlertmanagerDefaults,
  renderAlertmanagerYml,
  renderBlackboxDefaults,
  renderBlackboxYml,
  renderDropIn,
  renderNginxExporterDefaults,
  renderPgbackrestExporterDefaults,
  renderPostgresExporterDefaults,
  renderPrometheusDefaults,
  renderPrometheusYml,
  renderRedisExporterDefaults,
} from "./config";
import { MIN_OBJECTIVE_PERCENT, SLO_LATENCY_BUCKETS_SECONDS, appErrorLinesProblems, renderAppErrorLinesRules, renderSloRules, sloSettingsProblems } from "./slo";

export * from "./config";

const COMPONENTS = path.resolve(__dirname, "..");

/** Every setting the monitoring role renders from: its config keys, the stack facts it reads, its inputs. */
export interface MonitoringSettings {
  fqdn: string;
  domain: string;
  canonicalHost: "apex" | "www";
  volumeSizeGb: number;
  prometheusRetentionDays: number;
  /** 0: a fifth of the data volume. */
  prometheusRetentionSizeGb: number;
  alertReceiver: AlertReceiver;
  alertEmailTo: string;
  alertEmailFrom: string;
  alertSmtpHost: string;
  alertSmtpUser: string;
  alertTelegramChatId: string;
  sloObjectivePercent: number;
  sloLatencyMs: number;
  appErrorLinesPerMinute: number;
  /** Secret config: "" when unset. */
  alertSmtpPassword: string;
  alertTelegramBotToken: string;
  alertWebhookUrl: string;
  heartbeatUrl: string;
  /** postgres_exporter's generated password (POSTGRES_MONITOR_USER). */
  postgresPassword: string;
  postgresPort: number;
  /** The redis role's offer; undefined without Redis. */
  redisUrl?: string;
  /** The app role's offer; undefined without the app (then the public URL is not probed). */
  appHealthPath?: string;
  /** Rule files of the roles, by role name (components/<role>/alerts.yml); default: read from the repository for the roles that run. */
  roleAlerts?: Readonly<Record<string, string>>;
}

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
/** host:port of an SMTP server: a DNS name (lower case) or an IPv4 address, and a port from 1 to 65535. */
function isSmtpHostPort(value: string): boolean {
  const m = /^([^:]+):(\d{1,5})$/.exec(value);
  if (!m) return false;
  const port = Number(m[2]);
  const ipv4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(m[1]);
  return (DOMAIN_NAME.test(m[1]) || ipv4) && port >= 1 && port <= 65535;
}
const TELEGRAM_TOKEN = /^\d+:[A-Za-z0-9_-]{20,}$/;
const TELEGRAM_CHAT = /^-?\d{1,20}$/;

function httpUrlProblem(value: string): string | undefined {
  if (/\s/.test(value)) return "holds white space";
  try {
    const url = new URL(value);
    if (url.protocol !== "https:" && url.protocol !== "http:") return `is a ${url.protocol} URL`;
  } catch {
    return "is not a URL";
  }
  return undefined;
}

/** Problems with the settings, each starting with its config key; empty when the role can be rendered. */
export function monitoringSettingsProblems(s: MonitoringSettings): string[] {
  const problems: string[] = [];
  const add = (key: string, message: string) => problems.push(`${key} ${message}`);
  const given = (v: unknown) => JSON.stringify(v ?? "");
  if (!ALERT_RECEIVERS.includes(s.alertReceiver)) add("alertReceiver", `${given(s.alertReceiver)} must be one of ${ALERT_RECEIVERS.join(", ")}`);
  if (s.alertReceiver === "email") {
    if (!EMAIL.test(s.alertEmailTo)) add("alertEmailTo", `${given(s.alertEmailTo)} must be the e-mail address alerts go to (alertReceiver is email)`);
    if (!EMAIL.test(s.alertEmailFrom)) add("alertEmailFrom", `${given(s.alertEmailFrom)} must be the sender's e-mail address (alertReceiver is email)`);
    if (!isSmtpHostPort(s.alertSmtpHost)) {
      add("alertSmtpHost", `${given(s.alertSmtpHost)} must be the SMTP server as host:port (a lower-case DNS name or IPv4 address, a port from 1 to 65535), e.g. smtp.example.net:587 (alertReceiver is email)`);
    }
    if (s.alertSmtpUser && !s.alertSmtpPassword) {
      add("alertSmtpPassword", "is not set, but alertSmtpUser is: pulumi config set --secret leaninfra:alertSmtpPassword ...");
    }
  }
  if (s.alertReceiver === "telegram") {
    if (!TELEGRAM_TOKEN.test(s.alertTelegramBotToken)) {
      add("alertTelegramBotToken", `${s.alertTelegramBotToken ? "is not a bot token (123456:ABC...)" : "is not set"}: the token @BotFather gave you (pulumi config set --secret leaninfra:alertTelegramBotToken ...)`);
    }
    if (!TELEGRAM_CHAT.test(s.alertTelegramChatId)) add("alertTelegramChatId", `${given(s.alertTelegramChatId)} must be the numeric chat id alerts go to (alertReceiver is telegram)`);
  }
  if (s.alertReceiver === "webhook") {
    const problem = s.alertWebhookUrl ? httpUrlProblem(s.alertWebhookUrl) : "is not set";
    if (problem) add("alertWebhookUrl", `${problem}: the http(s) URL alerts are posted to (pulumi config set --secret leaninfra:alertWebhookUrl https://...)`);
  }
  if (s.heartbeatUrl) {
    const problem = httpUrlProblem(s.heartbeatUrl);
    if (problem) add("heartbeatUrl", `${problem}: the http(s) URL of a dead man's switch the Watchdog posts to every minute`);
  }
  for (const key of ["alertSmtpPassword", "alertTelegramBotToken"] as const) {
    if (/[\r\n]/.test(s[key])) add(key, "holds a line break");
  }
  if (!Number.isInteger(s.prometheusRetentionDays) || s.prometheusRetentionDays < 31 || s.prometheusRetentionDays > 3650) {
    add("prometheusRetentionDays", `${given(s.prometheusRetentionDays)} must be 31..3650 days: the SLO's 30-day window must fit`);
  }
  if (!(s.prometheusRetentionSizeGb >= 0) || s.prometheusRetentionSizeGb > s.volumeSizeGb / 2) {
    add("prometheusRetentionSizeGb", `${given(s.prometheusRetentionSizeGb)} must be 0 (a fifth of the ${s.volumeSizeGb} GB volume) or at most half the volume`);
  }
  problems.push(...sloSettingsProblems(s).map((p) => p.replace(/^leaninfra:(\w+): /, "$1 ")));
  problems.push(...appErrorLinesProblems(s).map((p) => p.replace(/^leaninfra:(\w+): /, "$1 ")));
  if (typeof s.postgresPassword !== "string" || !/^[A-Za-z0-9_-]{16,}$/.test(s.postgresPassword)) {
    add("postgresPassword", "must be 16 or more letters and digits (generate it with @pulumi/random RandomPassword)");
  }
  if (s.redisUrl !== undefined && redisFromUrl(s.redisUrl) === undefined) add("redisUrl", "is not a redis:// URL with a password (the redis role's offer)");
  return problems;
}

/** The Redis port and the app user's password from the redis role's offer. */
function redisFromUrl(url: string): { port: number; password: string } | undefined {
  try {
    const u = new URL(url);
    if (u.protocol !== "redis:" || !u.password || !GENERATED_SECRET.test(decodeURIComponent(u.password))) return undefined;
    return { port: Number(u.port || 6379), password: decodeURIComponent(u.password) };
  } catch {
    return undefined;
  }
}

/**
 * The roles' alert rules (components/<role>/alerts.yml) for the roles that run: Redis's and the app's only
 * with them. A role without the file has no alerts of its own.
 */
export function readRoleAlerts(running: { redis: boolean; app: boolean }): Record<string, string> {
  const rules: Record<string, string> = {};
  for (const role of fs.readdirSync(COMPONENTS).sort()) {
    if ((role === "redis" && !running.redis) || (role === "app" && !running.app)) continue;
    const file = path.join(COMPONENTS, role, "alerts.yml");
    if (fs.existsSync(file)) rules[role] = fs.readFileSync(file, "utf8");
  }
  return rules;
}

const unitOf = (service: MonitoredService) => MONITORING_PACKAGES[service];

/** A changed file of one service: daemon-reload (drop-ins) and restart, or reload; skipped where systemd is not PID 1. */
function handler(service: MonitoredService, action: "restart" | "reload"): string {
  const unit = unitOf(service);
  const command = action === "restart" ? `systemctl daemon-reload\n  systemctl restart ${unit}` : `systemctl try-reload-or-restart ${unit}`;
  return `if [ -d /run/systemd/system ]; then\n  ${command}\nelse\n  echo "systemd is not running here: skipped the ${action} of ${unit}"\nfi`;
}

/** The role's scripts: validate, apply and health-check, each a snippet file with its settings block. */
const script = (name: string, settings: Parameters<typeof renderScript>[1]) => renderScript(path.join(__dirname, "files", name), settings);

/**
 * Prometheus, Alertmanager and the exporters from Debian 13, all on loopback: metrics of the host,
 * PostgreSQL, nginx, pgBackRest, Redis (when it runs), the public URL and the origin certificate; the
 * roles' alert rules and the SLO rules; ONE receiver for every alert and a heartbeat for the Watchdog.
 */
export function monitoringRole(s: MonitoringSettings): HostRole {
  refuseProblems("monitoring", monitoringSettingsProblems(s));
  const redis = s.redisUrl !== undefined ? redisFromUrl(s.redisUrl) : undefined;
  const site = canonicalName({ domain: s.domain, canonicalHost: s.canonicalHost, extraHostnames: [], staticHostname: "" });
  const roleAlerts = s.roleAlerts ?? readRoleAlerts({ redis: redis !== undefined, app: s.appHealthPath !== undefined });
  const ruleFiles: { path: string; content: string }[] = [
    ...Object.entries(roleAlerts).map(([role, content]) => ({ path: `${M.rulesDir}/${role}.yml`, content })),
    { path: `${M.rulesDir}/slo.yml`, content: renderSloRules(s) },
    { path: `${M.rulesDir}/app-error-lines.yml`, content: renderAppErrorLinesRules(s) },
  ];
  const services: MonitoredService[] = ["prometheus", "alertmanager", "postgres", "nginx", "blackbox", "pgbackrest", ...(redis ? (["redis"] as const) : [])];
  const defaults: Record<MonitoredService, { content: string; mode: string }> = {
    prometheus: { content: renderPrometheusDefaults(s.prometheusRetentionDays, prometheusRetentionSizeMb(s.volumeSizeGb, s.prometheusRetentionSizeGb)), mode: "0644" },
    alertmanager: { content: renderAlertmanagerDefaults(), mode: "0644" },
    postgres: { content: renderPostgresExporterDefaults(s.postgresPort, s.postgresPassword), mode: "0600" },
    nginx: { content: renderNginxExporterDefaults(NGINX_STATUS.url), mode: "0644" },
    blackbox: { content: renderBlackboxDefaults(), mode: "0644" },
    pgbackrest: { content: renderPgbackrestExporterDefaults(BACKUPS.pgbackrestConf), mode: "0644" },
    redis: { content: redis ? renderRedisExporterDefaults(redis.port, redis.password) : "", mode: "0600" },
  };
  const secret = (key: keyof typeof SECRET_FILES, value: string): RoleFile => ({
    path: SECRET_FILES[key],
    mode: "0640",
    group: "prometheus",
    content: value,
    onChange: handler("alertmanager", "reload"),
  });
  const files: RoleFile[] = [
    ...services.flatMap((service) => [
      { path: M.defaults(service), mode: defaults[service].mode, content: defaults[service].content, onChange: handler(service, "restart") },
      { path: M.dropIn(service), mode: "0644", content: renderDropIn(service), onChange: handler(service, "restart") },
    ]),
    {
      path: M.prometheusYml,
      mode: "0644",
      content: renderPrometheusYml({
        siteUrl: s.appHealthPath !== undefined ? `https://${site}${s.appHealthPath}` : undefined,
        siteServerName: site,
        redis: redis !== undefined,
        ruleFiles: ruleFiles.map((f) => f.path),
        fqdn: s.fqdn,
      }),
      onChange: handler("prometheus", "reload"),
    },
    ...ruleFiles.map((f) => ({ ...f, mode: "0644", onChange: handler("prometheus", "reload") })),
    { path: M.blackboxYml, mode: "0644", content: renderBlackboxYml(site), onChange: handler("blackbox", "reload") },
    // Every secret file is written, "" when its key is unused: switching receivers leaves no old secret behind.
    secret("alertSmtpPassword", s.alertReceiver === "email" ? s.alertSmtpPassword : ""),
    secret("alertTelegramBotToken", s.alertReceiver === "telegram" ? s.alertTelegramBotToken : ""),
    secret("alertWebhookUrl", s.alertReceiver === "webhook" ? s.alertWebhookUrl : ""),
    secret("heartbeatUrl", s.heartbeatUrl),
    { path: M.template, mode: "0644", content: renderAlertTemplate(), onChange: handler("alertmanager", "reload") },
    {
      path: M.alertmanagerYml,
      mode: "0644",
      content: renderAlertmanagerYml({
        alertReceiver: s.alertReceiver,
        alertEmailTo: s.alertEmailTo,
        alertEmailFrom: s.alertEmailFrom,
        alertSmtpHost: s.alertSmtpHost,
        alertSmtpUser: s.alertSmtpUser,
        alertTelegramChatId: s.alertTelegramChatId,
        heartbeat: s.heartbeatUrl !== "",
      }),
      onChange: handler("alertmanager", "reload"),
    },
  ];
  const units = services.map(unitOf);
  return {
    name: "monitoring",
    description: `Prometheus (${s.prometheusRetentionDays} days), Alertmanager (${s.alertReceiver}) and ${services.length - 2} exporters on loopback; SLO ${s.sloObjectivePercent} %, ${s.sloLatencyMs} ms`,
    // curl: the health check's readiness probes.
    packages: [...services.map((service) => MONITORING_PACKAGES[service]), "curl"],
    directories: [
      { path: M.rulesDir, mode: "0755" },
      { path: M.secretsDir, mode: "0750", group: "prometheus" },
      { path: M.tsdb, mode: "0750", owner: "prometheus" },
      { path: M.alertmanagerData, mode: "0750", owner: "prometheus" },
      ...services.map((service) => ({ path: path.dirname(M.dropIn(service)), mode: "0755" })),
    ],
    files,
    validate: script("validate.sh", {
      prometheus_yml: M.prometheusYml,
      alertmanager_yml: M.alertmanagerYml,
      blackbox_yml: M.blackboxYml,
      units: units.map((u) => `${u}.service`),
    }),
    apply: script("apply.sh", {
      units,
      postgres_port: s.postgresPort,
      monitor_user: POSTGRES_MONITOR_USER,
      verifier: postgresPasswordVerifier(POSTGRES_MONITOR_USER, s.postgresPassword),
    }),
    healthCheck: script("health-check.sh", {
      units,
      prometheus_url: `http://127.0.0.1:${MONITORING_PORTS.prometheus}`,
      alertmanager_url: `http://127.0.0.1:${MONITORING_PORTS.alertmanager}`,
    }),
  };
}

const ALLOWED_LATENCIES_MS = SLO_LATENCY_BUCKETS_SECONDS.map((b) => Math.round(b * 1000));

export type MonitoringInputs = {
  postgresPassword: string;
  postgresPort: string;
  redisUrl: string | undefined;
  appHealthPath: string | undefined;
  alertSmtpPassword: string;
  alertTelegramBotToken: string;
  alertWebhookUrl: string;
  heartbeatUrl: string;
};

/** The monitoring role: metrics, alert rules and the one alert route; after every role it watches. */
export const role = defineRole({
  name: "monitoring",
  after: ["postgres", "proxy", "backups"],
  budget: {
    monthlyCost: {
      amount: 0,
      currency: "EUR",
      what: "Runs on the server: Prometheus, Alertmanager and the exporters (about 260 MiB RAM, Prometheus's data a share of the volume). The alert channel and the heartbeat check are billed by their providers.",
    },
    secrets: [
      { name: "monitoring-postgres-password", livesIn: "Pulumi state (RandomPassword); on the server in postgres_exporter's root-only settings" },
      { name: "alertWebhookUrl, alertSmtpPassword or alertTelegramBotToken (alertReceiver's)", livesIn: "encrypted stack config; on the server in files only Alertmanager reads" },
      { name: "heartbeatUrl", livesIn: "encrypted stack config; on the server in a file only Alertmanager reads" },
    ],
    alerts: ["Watchdog", "TargetDown", "RuleEvaluationFailing", "HighErrorRate", "HighLatency", "AppErrorLines"],
    failurePoints: [
      "Prometheus or Alertmanager down: nothing pages; the Watchdog stops reaching heartbeatUrl, whose service tells you.",
      "The receiver's URL or token wrong: alerts are not delivered, and the heartbeat does not notice (test the route after changing it).",
      "An exporter down: its alerts go blind (TargetDown).",
    ],
  },
  settings: z.object({
    prometheusRetentionDays: z
      .number()
      .int()
      .min(31)
      .max(3650)
      .default(35)
      .describe("How many days Prometheus keeps metrics: at least the SLO's 30-day window (default 35)."),
    prometheusRetentionSizeGb: z
      .number()
      .min(0)
      .default(0)
      .describe("At most this many GB of metrics on the data volume (oldest dropped first); 0: a fifth of volumeSizeGb."),
    alertReceiver: z
      .enum(ALERT_RECEIVERS as [AlertReceiver, ...AlertReceiver[]])
      .default("webhook")
      .describe(
        "Where every alert goes, one receiver: email (alertEmailTo, alertEmailFrom, alertSmtpHost, alertSmtpUser, secret alertSmtpPassword), telegram (secret alertTelegramBotToken, alertTelegramChatId) or webhook (secret alertWebhookUrl: ntfy or any endpoint taking Alertmanager's JSON).",
      ),
    alertEmailTo: z.string().default("").describe("E-mail address alerts go to (alertReceiver email)."),
    alertEmailFrom: z.string().default("").describe("Sender address of alert e-mails (alertReceiver email)."),
    alertSmtpHost: z.string().default("").describe("SMTP server as host:port, e.g. smtp.example.net:587; STARTTLS or TLS required (alertReceiver email)."),
    alertSmtpUser: z.string().default("").describe("SMTP login; its password is the secret alertSmtpPassword. Empty: no login (alertReceiver email)."),
    alertTelegramChatId: z.string().default("").describe("Numeric Telegram chat id alerts go to (alertReceiver telegram)."),
    sloObjectivePercent: z
      .number()
      .min(MIN_OBJECTIVE_PERCENT)
      .max(99.99)
      .default(99.9)
      .describe("The share of good requests (not 5xx, not slower than sloLatencyMs) promised over 30 days, in percent; the burn-rate alerts page on it."),
    sloLatencyMs: z
      .number()
      .int()
      .refine((v) => ALLOWED_LATENCIES_MS.includes(v), { message: `is not a request duration bucket (accepted: ${ALLOWED_LATENCIES_MS.join(", ")})` })
      .default(500)
      .describe(`A request slower than this many ms counts against the SLO; one of ${ALLOWED_LATENCIES_MS.join(", ")}.`),
    appErrorLinesPerMinute: z
      .number()
      .positive()
      .default(10)
      .describe("Page when the app writes more error lines a minute than this to its log (averaged over 5 minutes)."),
  }),
  inputs: {
    postgresPassword: { from: "password", resource: "monitoring-postgres-password" },
    postgresPort: { from: "role", role: "postgres", offer: "postgresPort" },
    redisUrl: { from: "role", role: "redis", offer: "redisUrl" },
    appHealthPath: { from: "role", role: "app", offer: "appHealthPath" },
    alertSmtpPassword: {
      from: "secretConfig",
      key: "alertSmtpPassword",
      description: "Password of alertSmtpUser on alertSmtpHost (alertReceiver email). Set it encrypted: pulumi config set --secret leaninfra:alertSmtpPassword ...",
      placeholder: (s) => (s.alertReceiver === "email" && s.alertSmtpUser ? placeholderPassword("alert-smtp-password") : ""),
    },
    alertTelegramBotToken: {
      from: "secretConfig",
      key: "alertTelegramBotToken",
      description: "Token of the Telegram bot that sends alerts (alertReceiver telegram). Set it encrypted: pulumi config set --secret leaninfra:alertTelegramBotToken ...",
      placeholder: (s) => (s.alertReceiver === "telegram" ? "123456789:placeholder-bot-token-set-on-pulumi-up" : ""),
    },
    alertWebhookUrl: {
      from: "secretConfig",
      key: "alertWebhookUrl",
      description: "URL every alert is posted to as Alertmanager's JSON, e.g. an ntfy topic (alertReceiver webhook). Set it encrypted: pulumi config set --secret leaninfra:alertWebhookUrl https://...",
      placeholder: (s) => (s.alertReceiver === "webhook" ? "https://alerts.invalid/placeholder-set-leaninfra-alertWebhookUrl" : ""),
    },
    heartbeatUrl: {
      from: "secretConfig",
      key: "heartbeatUrl",
      description: "Dead man's switch: a URL (e.g. a healthchecks.io check) the always-firing Watchdog alert is posted to every minute; it tells you when alerting stops. Set it encrypted: pulumi config set --secret leaninfra:heartbeatUrl https://...",
    },
  },
  render: (s, inputs: MonitoringInputs) =>
    monitoringRole({
      fqdn: s.fqdn,
      domain: s.domain,
      canonicalHost: s.canonicalHost,
      volumeSizeGb: s.volumeSizeGb,
      prometheusRetentionDays: s.prometheusRetentionDays,
      prometheusRetentionSizeGb: s.prometheusRetentionSizeGb,
      alertReceiver: s.alertReceiver,
      alertEmailTo: s.alertEmailTo,
      alertEmailFrom: s.alertEmailFrom,
      alertSmtpHost: s.alertSmtpHost,
      alertSmtpUser: s.alertSmtpUser,
      alertTelegramChatId: s.alertTelegramChatId,
      sloObjectivePercent: s.sloObjectivePercent,
      sloLatencyMs: s.sloLatencyMs,
      appErrorLinesPerMinute: s.appErrorLinesPerMinute,
      alertSmtpPassword: inputs.alertSmtpPassword,
      alertTelegramBotToken: inputs.alertTelegramBotToken,
      alertWebhookUrl: inputs.alertWebhookUrl,
      heartbeatUrl: inputs.heartbeatUrl,
      postgresPassword: inputs.postgresPassword,
      postgresPort: Number(inputs.postgresPort),
      redisUrl: inputs.redisUrl,
      appHealthPath: inputs.appHealthPath,
    }),
});
