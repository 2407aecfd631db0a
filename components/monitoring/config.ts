import { stringify } from "yaml";
import { LAYOUT } from "../host/layout";
import { POSTGRES_MONITOR_USER } from "../postgres/config";

const HEADER = `# Managed by LeanInfra (role "monitoring"); edit components/monitoring/ in the repository, not this file.`;

/** Every service of the role listens here only: nothing of it is reachable from outside the VM. */
export const LOOPBACK = "127.0.0.1";

/** The ports of the metrics path (the contract); each on LOOPBACK. */
export const MONITORING_PORTS = Object.freeze({
  prometheus: 9090,
  alertmanager: 9093,
  node: 9100,
  postgres: 9187,
  nginx: 9113,
  blackbox: 9115,
  pgbackrest: 9854,
  redis: 9121,
  mtail: 3903,
  victorialogs: 9428,
});

/** Debian 13's packages, one per service; the Redis exporter only with Redis. */
export const MONITORING_PACKAGES = Object.freeze({
  prometheus: "prometheus",
  alertmanager: "prometheus-alertmanager",
  postgres: "prometheus-postgres-exporter",
  nginx: "prometheus-nginx-exporter",
  blackbox: "prometheus-blackbox-exporter",
  pgbackrest: "prometheus-pgbackrest-exporter",
  redis: "prometheus-redis-exporter",
});

export type MonitoredService = keyof typeof MONITORING_PACKAGES;

/** The PostgreSQL role postgres_exporter logs in as (pg_monitor, SCRAM, local socket only): the postgres role's pg_hba.conf names it. */
export { POSTGRES_MONITOR_USER };

export const MONITORING_PATHS = Object.freeze({
  prometheusYml: "/etc/prometheus/prometheus.yml",
  /** One rules file per role that has alerts (components/<role>/alerts.yml), and the SLO rules. */
  rulesDir: "/etc/prometheus/rules",
  alertmanagerYml: "/etc/prometheus/alertmanager.yml",
  /** Debian's template directory. */
  templatesDir: "/etc/prometheus/alertmanager_templates",
  template: "/etc/prometheus/alertmanager_templates/leaninfra.tmpl",
  blackboxYml: "/etc/prometheus/blackbox.yml",
  /** Alertmanager's secrets (SMTP password, bot token, webhook and heartbeat URLs): root:prometheus 0640 files it reads. */
  secretsDir: "/etc/prometheus/secrets",
  /** On the data volume: the metrics survive a rebuilt server, and their size cap is a share of the volume. */
  tsdb: `${LAYOUT.data}/prometheus`,
  alertmanagerData: "/var/lib/prometheus/alertmanager",
  /** Debian's /etc/default/<package> files: each service's ARGS (and, for two exporters, credentials). */
  defaults: (service: MonitoredService) => `/etc/default/${MONITORING_PACKAGES[service]}`,
  dropIn: (service: MonitoredService) => `/etc/systemd/system/${MONITORING_PACKAGES[service]}.service.d/leaninfra.conf`,
});

/** Alertmanager's secret files, by the config key they hold. */
export const SECRET_FILES = Object.freeze({
  alertSmtpPassword: `${MONITORING_PATHS.secretsDir}/smtp-password`,
  alertTelegramBotToken: `${MONITORING_PATHS.secretsDir}/telegram-bot-token`,
  alertWebhookUrl: `${MONITORING_PATHS.secretsDir}/webhook-url`,
  heartbeatUrl: `${MONITORING_PATHS.secretsDir}/heartbeat-url`,
});

/** The blackbox modules: the public URL as a visitor gets it, and the certificate nginx serves. */
export const BLACKBOX_MODULES = Object.freeze({ site: "leaninfra_site", originCert: "leaninfra_origin_cert" });

/** How often the pgBackRest exporter asks the bucket (`pgbackrest info` lists the repository): backups change daily. */
export const PGBACKREST_SCRAPE_INTERVAL = "5m";

const addr = (port: number) => `${LOOPBACK}:${port}`;

// ---------------------------------------------------------------------------------------------------
// Prometheus

export interface PrometheusSettings {
  /** The public URL blackbox-site probes (https://<canonical host><appHealthPath>); undefined without the app. */
  siteUrl?: string;
  /** The name the origin certificate is served for (the canonical host). */
  siteServerName: string;
  /** Whether Redis runs (then its exporter does). */
  redis: boolean;
  /** Rule files on the host (absolute paths), in order. */
  ruleFiles: readonly string[];
  /** external_labels.host: names the server in every alert. */
  fqdn: string;
}

/** A blackbox job: Prometheus asks the exporter on loopback to probe the target with the module. */
function blackboxJob(jobName: string, module: string, target: string) {
  return {
    job_name: jobName,
    metrics_path: "/probe",
    params: { module: [module] },
    static_configs: [{ targets: [target] }],
    relabel_configs: [
      { source_labels: ["__address__"], target_label: "__param_target" },
      { source_labels: ["__param_target"], target_label: "instance" },
      { target_label: "__address__", replacement: addr(MONITORING_PORTS.blackbox) },
    ],
  };
}

const staticJob = (jobName: string, port: number, extra: Record<string, unknown> = {}) => ({
  job_name: jobName,
  ...extra,
  static_configs: [{ targets: [addr(port)] }],
});

/** prometheus.yml: every job of the contract on loopback, every 15 s; alerts to the local Alertmanager. */
export function renderPrometheusYml(s: PrometheusSettings): string {
  const p = MONITORING_PORTS;
  const config = {
    global: { scrape_interval: "15s", evaluation_interval: "15s", scrape_timeout: "10s", external_labels: { host: s.fqdn } },
    alerting: { alertmanagers: [{ static_configs: [{ targets: [addr(p.alertmanager)] }] }] },
    rule_files: [...s.ruleFiles],
    scrape_configs: [
      staticJob("prometheus", p.prometheus),
      staticJob("alertmanager", p.alertmanager),
      staticJob("node", p.node),
      staticJob("postgres", p.postgres),
      staticJob("nginx", p.nginx),
      staticJob("mtail", p.mtail),
      // pgbackrest info reads the bucket: every 5 minutes is plenty for daily backups, and costs little.
      staticJob("pgbackrest", p.pgbackrest, { scrape_interval: PGBACKREST_SCRAPE_INTERVAL, scrape_timeout: "2m" }),
      ...(s.redis ? [staticJob("redis", p.redis)] : []),
      staticJob("victorialogs", p.victorialogs),
      ...(s.siteUrl ? [blackboxJob("blackbox-site", BLACKBOX_MODULES.site, s.siteUrl)] : []),
      blackboxJob("blackbox-origin-cert", BLACKBOX_MODULES.originCert, `${LOOPBACK}:443`),
    ],
  };
  return `${HEADER}
# Prometheus: scrapes every exporter of this host on loopback every 15 s and evaluates the alert rules
# (one file per role, and the SLO rules rendered from config); alerts go to Alertmanager on loopback.
${stringify(config, { lineWidth: 0 })}`;
}

/** Prometheus's size cap in MB: the key, or a fifth of the data volume (PostgreSQL and its WAL queue need the rest), at least 256 MB. */
export function prometheusRetentionSizeMb(volumeSizeGb: number, prometheusRetentionSizeGb: number): number {
  if (prometheusRetentionSizeGb > 0) return Math.round(prometheusRetentionSizeGb * 1024);
  return Math.max(256, Math.floor(volumeSizeGb * 1024 * 0.2));
}

export function renderPrometheusDefaults(retentionDays: number, retentionSizeMb: number): string {
  return `${HEADER}
# Arguments of Debian's prometheus.service. Loopback only (reach the UI through an SSH tunnel); the
# TSDB on the data volume, kept ${retentionDays} days (the 30-day SLO window and a margin) and at most
# ${retentionSizeMb} MB, whichever comes first.
ARGS="--config.file=${MONITORING_PATHS.prometheusYml} --web.listen-address=${addr(MONITORING_PORTS.prometheus)} --storage.tsdb.path=${MONITORING_PATHS.tsdb} --storage.tsdb.retention.time=${retentionDays}d --storage.tsdb.retention.size=${retentionSizeMb}MB --web.external-url=http://${addr(MONITORING_PORTS.prometheus)}/"
`;
}

// ---------------------------------------------------------------------------------------------------
// Alertmanager

export type AlertReceiver = "email" | "telegram" | "webhook";
export const ALERT_RECEIVERS: readonly AlertReceiver[] = Object.freeze(["email", "telegram", "webhook"]);

export interface AlertmanagerSettings {
  alertReceiver: AlertReceiver;
  alertEmailTo: string;
  alertEmailFrom: string;
  /** host:port */
  alertSmtpHost: string;
  alertSmtpUser: string;
  alertTelegramChatId: string;
  /** Whether a heartbeat URL is set: the Watchdog goes there, else to a receiver that sends nothing. */
  heartbeat: boolean;
}

/** Alertmanager's timing for one person: pages every 4 h until fixed, tickets once a day. */
export const ALERT_TIMING = Object.freeze({ groupWait: "30s", groupInterval: "5m", pageRepeat: "4h", ticketRepeat: "24h", watchdog: "1m", watchdogRepeat: "50s" });

function ownerReceiver(s: AlertmanagerSettings) {
  switch (s.alertReceiver) {
    case "email":
      return {
        name: "owner",
        email_configs: [
          {
            to: s.alertEmailTo,
            from: s.alertEmailFrom,
            smarthost: s.alertSmtpHost,
            ...(s.alertSmtpUser ? { auth_username: s.alertSmtpUser, auth_password_file: SECRET_FILES.alertSmtpPassword } : {}),
            require_tls: true,
            send_resolved: true,
            headers: { Subject: '{{ template "leaninfra.title" . }}' },
            text: '{{ template "leaninfra.text" . }}',
            // Plain text only: an empty html part makes Alertmanager send text/plain.
            html: "",
          },
        ],
      };
    case "telegram":
      return {
        name: "owner",
        telegram_configs: [
          {
            bot_token_file: SECRET_FILES.alertTelegramBotToken,
            chat_id: Number(s.alertTelegramChatId),
            // Plain text: annotations are not HTML-escaped, so Telegram's HTML mode could refuse a message.
            parse_mode: "",
            message: '{{ template "leaninfra.text" . }}',
            send_resolved: true,
          },
        ],
      };
    case "webhook":
      // Alertmanager's JSON (every alert with its labels and annotations): ntfy, Slack-compatible bridges, any JSON endpoint.
      return { name: "owner", webhook_configs: [{ url_file: SECRET_FILES.alertWebhookUrl, send_resolved: true }] };
  }
}

/** alertmanager.yml: one receiver for every page and ticket, tickets quiet while a page fires, the Watchdog to the heartbeat. */
export function renderAlertmanagerYml(s: AlertmanagerSettings): string {
  const t = ALERT_TIMING;
  const config = {
    route: {
      receiver: "owner",
      group_by: ["alertname"],
      group_wait: t.groupWait,
      group_interval: t.groupInterval,
      repeat_interval: t.ticketRepeat,
      routes: [
        {
          matchers: ['alertname="Watchdog"'],
          receiver: "heartbeat",
          group_wait: "0s",
          // Alertmanager looks every group_interval and resends once repeat_interval has passed since the
          // last send: a repeat of exactly 1m is just short of due at the next look, and would send every 2 minutes.
          group_interval: t.watchdog,
          repeat_interval: t.watchdogRepeat,
        },
        { matchers: ['severity="page"'], receiver: "owner", repeat_interval: t.pageRepeat },
        { matchers: ['severity="ticket"'], receiver: "owner", repeat_interval: t.ticketRepeat },
      ],
    },
    // One person, one thing at a time: while anything pages, the tickets wait.
    inhibit_rules: [{ source_matchers: ['severity="page"'], target_matchers: ['severity="ticket"'] }],
    receivers: [
      ownerReceiver(s),
      s.heartbeat
        ? { name: "heartbeat", webhook_configs: [{ url_file: SECRET_FILES.heartbeatUrl, send_resolved: false }] }
        : { name: "heartbeat" },
    ],
    templates: [MONITORING_PATHS.template],
  };
  return `${HEADER}
# Alertmanager: ONE receiver ("owner", ${s.alertReceiver}) for every alert; pages repeat every ${t.pageRepeat}, tickets every
# ${t.ticketRepeat}, and tickets are held back while a page fires. The always-firing Watchdog goes every minute to
# ${s.heartbeat ? "the heartbeat URL (a dead man's switch: when it stops, the outside service tells you)" : "no one: set leaninfra:heartbeatUrl to have an outside service notice when alerting stops"}.
# Secrets are read from ${MONITORING_PATHS.secretsDir} (root:prometheus 0640), never written here.
${stringify(config, { lineWidth: 0 })}`;
}

/** The messages: each alert's summary, description (the affected thing) and runbook anchor. */
export function renderAlertTemplate(): string {
  return `${HEADER.replace(/^#/, "{{/*")} */}}
{{ define "leaninfra.title" }}[{{ .Status | toUpper }}{{ if eq .Status "firing" }} {{ .Alerts.Firing | len }}{{ end }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.severity }}) on {{ .CommonLabels.host }}{{ end }}
{{ define "leaninfra.text" }}{{ range .Alerts }}{{ .Status | toUpper }} {{ .Labels.alertname }} ({{ .Labels.severity }})
Summary: {{ .Annotations.summary }}
Description: {{ .Annotations.description }}
Runbook: {{ .Annotations.runbook }}
Since: {{ .StartsAt.Format "2006-01-02 15:04:05 MST" }}

{{ end }}{{ end }}
`;
}

export function renderAlertmanagerDefaults(): string {
  return `${HEADER}
# Arguments of Debian's prometheus-alertmanager.service: loopback only, and no cluster (an empty
# --cluster.listen-address: one server has no peers, and the default would listen on every interface).
ARGS="--config.file=${MONITORING_PATHS.alertmanagerYml} --storage.path=${MONITORING_PATHS.alertmanagerData} --web.listen-address=${addr(MONITORING_PORTS.alertmanager)} --web.external-url=http://${addr(MONITORING_PORTS.alertmanager)}/ --cluster.listen-address="
`;
}

// ---------------------------------------------------------------------------------------------------
// Exporters

/** blackbox.yml: the site as a visitor gets it (TLS verified, 2xx), and the certificate nginx serves. */
export function renderBlackboxYml(siteServerName: string): string {
  const config = {
    modules: {
      [BLACKBOX_MODULES.site]: {
        prober: "http",
        timeout: "10s",
        http: { preferred_ip_protocol: "ip4", fail_if_not_ssl: true, follow_redirects: false, valid_status_codes: [200, 204] },
      },
      // The origin's certificate on loopback, for its expiry (probe_ssl_earliest_cert_expiry). Not verified:
      // a Cloudflare Origin CA certificate is trusted only by Cloudflare, which checks it (Full strict).
      // nginx may ask for Cloudflare's client certificate; the handshake still shows the server's certificate.
      [BLACKBOX_MODULES.originCert]: {
        prober: "tcp",
        timeout: "5s",
        tcp: { tls: true, tls_config: { server_name: siteServerName, insecure_skip_verify: true } },
      },
    },
  };
  return `${HEADER}
${stringify(config, { lineWidth: 0 })}`;
}

export function renderBlackboxDefaults(): string {
  return `${HEADER}
ARGS="--config.file=${MONITORING_PATHS.blackboxYml} --web.listen-address=${addr(MONITORING_PORTS.blackbox)}"
`;
}

/** The scrape URI of nginx's stub_status (the proxy role's NGINX_STATUS). */
export function renderNginxExporterDefaults(stubStatusUrl: string): string {
  return `${HEADER}
ARGS="--web.listen-address=${addr(MONITORING_PORTS.nginx)} --nginx.scrape-uri=${stubStatusUrl}"
`;
}

/** postgres_exporter over the local socket as POSTGRES_MONITOR_USER (root-only file: it holds the password). */
export function renderPostgresExporterDefaults(port: number, password: string): string {
  return `${HEADER}
# Root-only: systemd reads it for the exporter. The role ${POSTGRES_MONITOR_USER} (pg_monitor) logs in with
# SCRAM over the local socket; pg_hba.conf lets it in nowhere else.
DATA_SOURCE_NAME="host=/run/postgresql port=${port} dbname=postgres user=${POSTGRES_MONITOR_USER} password=${password} sslmode=disable"
ARGS="--web.listen-address=${addr(MONITORING_PORTS.postgres)}"
`;
}

/** The pgBackRest exporter: `pgbackrest info` as postgres (Debian's unit), which may read pgbackrest.conf. */
export function renderPgbackrestExporterDefaults(pgbackrestConf: string): string {
  return `${HEADER}
ARGS="--web.listen-address=${addr(MONITORING_PORTS.pgbackrest)} --backrest.config=${pgbackrestConf}"
`;
}

/** redis_exporter reads its flags from the environment; the app's user may run INFO (root-only file: the password). */
export function renderRedisExporterDefaults(redisPort: number, password: string): string {
  return `${HEADER}
# Root-only: systemd reads it for the exporter, which logs in as the app's user (INFO only is needed).
REDIS_EXPORTER_WEB_LISTEN_ADDRESS=${addr(MONITORING_PORTS.redis)}
REDIS_ADDR=redis://${LOOPBACK}:${redisPort}
REDIS_USER=default
REDIS_PASSWORD=${password}
ARGS=""
`;
}

// ---------------------------------------------------------------------------------------------------
// systemd

/** The sandbox of the exporters that only read over the network or a socket. */
const EXPORTER_SANDBOX = `NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
# A call outside these fails with EPERM instead of killing the service (Go raises its file limit at start).
SystemCallErrorNumber=EPERM
UMask=0077`;

/** The drop-in for one service's unit: Debian's unit, sandboxed; writable only where it keeps data. */
export function renderDropIn(service: MonitoredService): string {
  const lines: string[] = [HEADER];
  switch (service) {
    case "prometheus":
      lines.push(
        "# Prometheus writes only its TSDB on the data volume, and starts only with the volume mounted.",
        "[Unit]",
        `RequiresMountsFor=${MONITORING_PATHS.tsdb}`,
        "[Service]",
        EXPORTER_SANDBOX,
        `ReadWritePaths=${MONITORING_PATHS.tsdb}`,
      );
      break;
    case "alertmanager":
      lines.push("# Alertmanager writes only its silences and notification log.", "[Service]", EXPORTER_SANDBOX, `ReadWritePaths=${MONITORING_PATHS.alertmanagerData}`);
      break;
    case "pgbackrest":
      // pgbackrest info writes its log and lock files; it runs as postgres (Debian's unit) to read pgbackrest.conf.
      lines.push(
        "# pgbackrest info as postgres: reads pgbackrest.conf, writes only its log and lock files.",
        "[Service]",
        EXPORTER_SANDBOX,
        "ReadWritePaths=-/var/log/pgbackrest -/var/lib/pgbackrest",
      );
      break;
    default:
      lines.push("# Reads over loopback or a socket; writes nothing.", "[Service]", EXPORTER_SANDBOX);
  }
  return `${lines.join("\n")}\n`;
}
