import * as fs from "node:fs";
import * as path from "node:path";
import { stringify } from "yaml";
import { LAYOUT } from "../host/layout";
import { AUTH_ZONE, NOT_APP_ROUTE_LINE } from "../proxy/nginx";
import { fillTemplate as fillProxyTemplate } from "../proxy/template";

/** The grafana role's templates and scripts. */
export const GRAFANA_FILES_DIR = path.join(__dirname, "files");

/** Grafana's address: loopback only, nginx in front. */
export const GRAFANA_ADDRESS = Object.freeze({ address: "127.0.0.1", port: 3000 });

/** Where the role puts Grafana's configuration: outside /etc/grafana and /var/lib/grafana, whose modes and owners the package's postinst resets on every install and upgrade. */
export const GRAFANA_PATHS = Object.freeze({
  dir: "/etc/leaninfra/grafana",
  ini: "/etc/leaninfra/grafana/grafana.ini",
  environment: "/etc/leaninfra/grafana/grafana-server.env",
  provisioning: "/etc/leaninfra/grafana/provisioning",
  datasources: "/etc/leaninfra/grafana/provisioning/datasources/leaninfra.yaml",
  dashboardProviders: "/etc/leaninfra/grafana/provisioning/dashboards/leaninfra.yaml",
  /** Grafana reads its other provisioning kinds from these too; empty is fine. */
  emptyProvisioningDirs: ["plugins", "alerting", "access-control"].map((kind) => `/etc/leaninfra/grafana/provisioning/${kind}`),
  dashboards: "/etc/leaninfra/grafana/dashboards",
  adminPassword: `${LAYOUT.secrets}/grafana-admin-password`,
  secretKey: `${LAYOUT.secrets}/grafana-secret-key`,
  dropIn: "/etc/systemd/system/grafana-server.service.d/leaninfra.conf",
  nginx: "/etc/nginx/conf.d/grafana.conf",
});

/** The unit the package installs, and the credentials the drop-in hands it (LoadCredential names). */
export const GRAFANA_UNIT = "grafana-server";
const CREDENTIALS_DIR = `/run/credentials/${GRAFANA_UNIT}.service`;

/** Grafana's signed apt repository and the fingerprint its key must have (https://apt.grafana.com). */
export const GRAFANA_APT = Object.freeze({
  keyUrl: "https://apt.grafana.com/gpg.key",
  fingerprint: "B53AE77BADB630A683046005963FA27710458545",
  keyring: "/etc/apt/keyrings/grafana.asc",
  sources: "/etc/apt/sources.list.d/grafana.sources",
  uri: "https://apt.grafana.com",
  suite: "stable",
  component: "main",
  packageName: "grafana",
});

/**
 * The VictoriaLogs data source plugin (Apache-2.0, signed by Grafana; not in Debian): installed by apply
 * with `grafana cli plugins install`, pinned.
 */
export const VICTORIALOGS_PLUGIN = Object.freeze({ id: "victoriametrics-logs-datasource", version: "0.21.0" });

/** The data sources, with fixed uids the dashboards refer to. */
export const DATASOURCES = Object.freeze({
  prometheus: { uid: "leaninfra-prometheus", name: "Prometheus", type: "prometheus", url: "http://127.0.0.1:9090" },
  victorialogs: { uid: "leaninfra-victorialogs", name: "VictoriaLogs", type: VICTORIALOGS_PLUGIN.id, url: "http://127.0.0.1:9428" },
});

/** Login attempts one address may make at once before the auth zone's rate (authRateLimitPerMinute) applies. */
export const GRAFANA_LOGIN_BURST = 5;

/** Grafana's memory cap (systemd MemoryMax): it idles near 100 MiB. */
export const GRAFANA_MEMORY_MAX_MB = 512;

const MARKER = /\{\{([a-z_]+)\}\}/g;
const TEMPLATE_NOTE = /^ *#:.*\n/gm;

/** A template of files/ filled with one-line values; every marker needs a value and every value a marker. */
function fill(file: string, values: Readonly<Record<string, string | number>>): string {
  const used = new Set<string>();
  const text = fs
    .readFileSync(path.join(GRAFANA_FILES_DIR, file), "utf8")
    .replace(TEMPLATE_NOTE, "")
    .replace(MARKER, (_, name: string) => {
      if (!(name in values)) throw new Error(`components/grafana/files/${file}: no value for {{${name}}}`);
      used.add(name);
      return String(values[name]);
    });
  const unused = Object.keys(values).filter((name) => !used.has(name));
  if (unused.length > 0) throw new Error(`components/grafana/files/${file}: no marker for ${unused.join(", ")}`);
  return text;
}

/** grafana.ini (files/grafana.ini): loopback, the public URL, no sign-up, no anonymous access, no phoning home; secrets by reference. */
export function renderGrafanaIni(s: { hostname: string }): string {
  return fill("grafana.ini", {
    domain: s.hostname,
    port: GRAFANA_ADDRESS.port,
    admin_password: `$__file{${CREDENTIALS_DIR}/admin_password}`,
    secret_key: `$__file{${CREDENTIALS_DIR}/secret_key}`,
  });
}

/** Read after the package's /etc/default/grafana-server, so these two win. */
export function renderGrafanaEnvironment(): string {
  return [
    '# Managed by LeanInfra (role "grafana"): Grafana reads its configuration from here, not /etc/grafana.',
    `CONF_FILE=${GRAFANA_PATHS.ini}`,
    `PROVISIONING_CFG_DIR=${GRAFANA_PATHS.provisioning}`,
    "",
  ].join("\n");
}

/** The unit's drop-in (files/grafana-server.service.conf): the environment file, the credentials, the memory cap. */
export function renderGrafanaDropIn(): string {
  return fill("grafana-server.service.conf", {
    environment_file: GRAFANA_PATHS.environment,
    admin_password_file: GRAFANA_PATHS.adminPassword,
    secret_key_file: GRAFANA_PATHS.secretKey,
    memory_max_mb: GRAFANA_MEMORY_MAX_MB,
  });
}

const HEADER = '# Managed by LeanInfra (role "grafana"); edit the role in the repository, not this file.\n';

/** Provisioned data sources: Prometheus and VictoriaLogs on loopback, fixed uids, not editable in the UI; others pruned. */
export function renderDatasources(): string {
  const { prometheus, victorialogs } = DATASOURCES;
  return (
    HEADER +
    stringify({
      apiVersion: 1,
      prune: true,
      datasources: [
        { name: prometheus.name, uid: prometheus.uid, type: prometheus.type, access: "proxy", url: prometheus.url, isDefault: true, editable: false, jsonData: { httpMethod: "POST", timeInterval: "15s" } },
        { name: victorialogs.name, uid: victorialogs.uid, type: victorialogs.type, access: "proxy", url: victorialogs.url, isDefault: false, editable: false },
      ],
    })
  );
}

/** The dashboards provider: the role's generated JSON files, read-only in the UI. */
export function renderDashboardProviders(): string {
  return (
    HEADER +
    stringify({
      apiVersion: 1,
      providers: [
        {
          name: "leaninfra",
          orgId: 1,
          folder: "LeanInfra",
          type: "file",
          disableDeletion: true,
          allowUiUpdates: false,
          updateIntervalSeconds: 60,
          options: { path: GRAFANA_PATHS.dashboards, foldersFromFilesStructure: false },
        },
      ],
    })
  );
}

/**
 * /etc/nginx/conf.d/grafana.conf (files/grafana-nginx.conf): the Grafana host over TLS with the site's
 * certificate and origin-pull check (set in nginx.conf for every server) and its security headers,
 * proxied to loopback, WebSockets for Grafana Live, the login form rate-limited.
 */
export function renderGrafanaNginxConf(s: { hostname: string }): string {
  const securityHeaders = fillProxyTemplate("security-headers.conf").replace(/\n$/, "").split("\n");
  return fill("grafana-nginx.conf", {
    hostname: s.hostname,
    release_file: LAYOUT.nginx.release,
    not_app_route: NOT_APP_ROUTE_LINE,
    security_headers: securityHeaders.join("\n    "),
    auth_zone: AUTH_ZONE,
    login_burst: GRAFANA_LOGIN_BURST,
    upstream: `${GRAFANA_ADDRESS.address}:${GRAFANA_ADDRESS.port}`,
  });
}
