import type { StackFacts } from "../../components/host/define";
import type { MonitoringSettings } from "../../components/monitoring";

/** The stack-wide facts a role's render gets beside its slice, as the example stack has them; tests override what they exercise. */
export const TEST_FACTS: StackFacts = Object.freeze({
  stack: "prod",
  domain: "example.com",
  hostname: "app",
  fqdn: "app.example.com",
  adminUser: "ops",
  canonicalHost: "apex",
  extraHostnames: [],
  staticHostname: "",
  staticPathPrefixes: ["/assets/", "/static/"],
  cdnProxy: true,
  volumeSizeGb: 20,
  backupRetentionDays: 35,
  backupLockDays: 14,
  memoryMb: 8192,
  vcpus: 4,
  serverType: "cx32",
});

/** The app's Redis password in TEST_MONITORING_SETTINGS' redisUrl. */
export const TEST_REDIS_PASSWORD = "RdAppPassword0123456789";

/** The monitoring role's settings as the example stack has them (webhook receiver, Redis and the app on). */
export const TEST_MONITORING_SETTINGS: Readonly<MonitoringSettings> = Object.freeze({
  fqdn: "app.example.com",
  domain: "example.com",
  canonicalHost: "apex",
  volumeSizeGb: 40,
  prometheusRetentionDays: 35,
  prometheusRetentionSizeGb: 0,
  alertReceiver: "webhook",
  alertEmailTo: "",
  alertEmailFrom: "",
  alertSmtpHost: "",
  alertSmtpUser: "",
  alertTelegramChatId: "",
  sloObjectivePercent: 99.9,
  sloLatencyMs: 500,
  appErrorLinesPerMinute: 10,
  alertSmtpPassword: "",
  alertTelegramBotToken: "",
  alertWebhookUrl: "https://ntfy.example.net/ops-alerts",
  heartbeatUrl: "https://hc.example.net/ping/abc",
  postgresPassword: "MonitorPassword0123456789",
  postgresPort: 5432,
  redisUrl: `redis://default:${TEST_REDIS_PASSWORD}@host.docker.internal:6379/0`,
  appHealthPath: "/healthz",
});
