import * as path from "node:path";
import { z } from "zod";
import { defineRole, refuseProblems } from "../host/define";
import { LAYOUT } from "../host/layout";
import { GENERATED_SECRET, HOSTNAME_LABEL } from "../host/names";
import { HostRole, RoleFile } from "../host/role";
import { renderScript } from "../host/script";
import { renderDashboards } from "./dashboards";
import {
  GRAFANA_ADDRESS,
  GRAFANA_APT,
  GRAFANA_FILES_DIR,
  GRAFANA_PATHS as G,
  GRAFANA_UNIT,
  VICTORIALOGS_PLUGIN,
  renderDashboardProviders,
  renderDatasources,
  renderGrafanaDropIn,
  renderGrafanaEnvironment,
  renderGrafanaIni,
  renderGrafanaNginxConf,
} from "./render";

export * from "./dashboards";
export * from "./render";

/** The grafana role's config keys (Pulumi.<stack>.yaml). */
export const grafanaSettingsSchema = z.object({
  grafana: z.boolean().default(true).describe("Run Grafana OSS (from Grafana's signed apt repository) with LeanInfra's dashboards, behind nginx and Grafana's login."),
  grafanaHostname: z
    .string()
    .regex(HOSTNAME_LABEL, { message: "is not a host name label (accepted: a-z, 0-9 and '-', e.g. grafana)" })
    .default("grafana")
    .describe("Grafana's name under domain (grafana.<domain>), proxied through Cloudflare like the site's names."),
});

export interface GrafanaSettings {
  grafana: boolean;
  grafanaHostname: string;
  domain: string;
  /** Behind Cloudflare's proxy, the Origin CA certificate covers *.<domain>: Grafana gets its own name. */
  cdnProxy: boolean;
  /** The names the site already serves: Grafana's may not be one of them. */
  staticHostname: string;
  extraHostnames: readonly string[];
  /** The monitoring role's SLO (its sloObjectivePercent and sloLatencyMs): the error-budget panel. */
  sloObjectivePercent: number | undefined;
  sloLatencyMs: number | undefined;
  adminPassword: string;
  secretKey: string;
}

/**
 * The labels under domain that Grafana needs pointing at the server (the Edge's DNS records): its
 * hostname when it is on and served through Cloudflare, else none.
 */
export function grafanaEdgeLabels(s: { grafana?: unknown; grafanaHostname?: unknown; cdnProxy: boolean }): string[] {
  return s.grafana === true && s.cdnProxy && typeof s.grafanaHostname === "string" ? [s.grafanaHostname] : [];
}

/** Whether nginx serves Grafana on its own name: on, and behind Cloudflare (whose Origin CA certificate covers the name). */
function servedOnItsName(s: GrafanaSettings): boolean {
  return grafanaEdgeLabels(s).length > 0;
}

/** Problems with the settings, each starting with its config key; empty when the role can be rendered. */
export function grafanaSettingsProblems(s: GrafanaSettings): string[] {
  const problems: string[] = [];
  const add = (key: string, message: string) => problems.push(`${key} ${message}`);
  if (!s.grafana) return problems;
  if (typeof s.grafanaHostname !== "string" || !HOSTNAME_LABEL.test(s.grafanaHostname)) {
    add("grafanaHostname", `${JSON.stringify(s.grafanaHostname)} is not a host name label (accepted: a-z, 0-9 and '-', e.g. grafana)`);
  } else if (s.extraHostnames.includes(s.grafanaHostname)) {
    // nginx would hold two servers for the name: the proxy's placeholder (404) and Grafana's.
    add(
      "grafanaHostname",
      `"${s.grafanaHostname}" is also listed in extraHostnames, whose names answer 404: the grafana role points ${s.grafanaHostname}.${s.domain} at the server and serves it itself (accepted: remove "${s.grafanaHostname}" from extraHostnames, or another grafanaHostname)`,
    );
  } else if (s.grafanaHostname === "www" || s.grafanaHostname === s.staticHostname) {
    add("grafanaHostname", `"${s.grafanaHostname}" is already one of the site's names (www or staticHostname; accepted: another label, e.g. grafana)`);
  }
  const objective = s.sloObjectivePercent;
  if (typeof objective !== "number" || !(objective > 0 && objective < 100)) {
    add(
      "sloObjectivePercent",
      `${JSON.stringify(objective)} is not an objective between 0 and 100: Grafana's error-budget panel reads the monitoring role's sloObjectivePercent (accepted: the monitoring role in infra/roles.ts, or grafana false)`,
    );
  }
  if (typeof s.sloLatencyMs !== "number" || !(s.sloLatencyMs > 0)) {
    add(
      "sloLatencyMs",
      `${JSON.stringify(s.sloLatencyMs)} is not a latency in ms: Grafana's error-budget panel reads the monitoring role's sloLatencyMs (accepted: the monitoring role in infra/roles.ts, or grafana false)`,
    );
  }
  for (const key of ["adminPassword", "secretKey"] as const) {
    if (typeof s[key] !== "string" || !GENERATED_SECRET.test(s[key])) {
      add(key, "must be 16 or more printable ASCII characters without spaces (generate it with @pulumi/random RandomPassword)");
    }
  }
  return problems;
}

const script = (name: string, settings: Parameters<typeof renderScript>[1]) => renderScript(path.join(GRAFANA_FILES_DIR, name), settings);

// Restarts Grafana on a config change once the package is there; on the first run apply starts it.
const restartGrafana = `if ! [ -d /run/systemd/system ]; then
  echo "systemd is not running here: skipped systemctl restart ${GRAFANA_UNIT}"
elif systemctl cat ${GRAFANA_UNIT}.service >/dev/null 2>&1; then
  systemctl daemon-reload
  systemctl try-restart ${GRAFANA_UNIT}
else
  echo "${GRAFANA_UNIT} is not installed yet: this role's apply step installs and starts it"
fi`;

// nginx reads the new server only after nginx -t: a broken file never reaches the running nginx.
const reloadNginx = `nginx -t
if [ -d /run/systemd/system ]; then
  systemctl reload nginx
else
  echo "systemd is not running here: skipped systemctl reload nginx"
fi`;

function applySettings(s: GrafanaSettings) {
  return {
    grafana: s.grafana ? 1 : 0,
    served: servedOnItsName(s) ? 1 : 0,
    key_url: GRAFANA_APT.keyUrl,
    fingerprint: GRAFANA_APT.fingerprint,
    keyring: GRAFANA_APT.keyring,
    sources: GRAFANA_APT.sources,
    repo_uri: GRAFANA_APT.uri,
    repo_suite: GRAFANA_APT.suite,
    repo_component: GRAFANA_APT.component,
    package: GRAFANA_APT.packageName,
    unit: GRAFANA_UNIT,
    plugin_id: VICTORIALOGS_PLUGIN.id,
    plugin_version: VICTORIALOGS_PLUGIN.version,
    plugins_dir: "/var/lib/grafana/plugins",
    nginx_conf: G.nginx,
  };
}

/**
 * Grafana OSS on loopback with provisioned data sources (fixed uids) and generated dashboards; nginx
 * serves it at grafana.<domain> behind Cloudflare. With grafana false the role removes its nginx server
 * and stops the service. Refuses bad settings with a SettingsError.
 */
export function grafanaRole(s: GrafanaSettings): HostRole {
  refuseProblems("grafana", grafanaSettingsProblems(s));
  const apply = script("apply.sh", applySettings(s));
  const healthCheck = script("health-check.sh", { grafana: s.grafana ? 1 : 0, unit: GRAFANA_UNIT, health_url: `http://${GRAFANA_ADDRESS.address}:${GRAFANA_ADDRESS.port}/api/health` });
  if (!s.grafana) {
    return {
      name: "grafana",
      description: "Grafana is off (grafana false): its nginx server removed, the service stopped",
      packages: [],
      directories: [],
      files: [],
      apply,
      healthCheck,
    };
  }

  const hostname = `${s.grafanaHostname}.${s.domain}`;
  const served = servedOnItsName(s);
  const dashboards = renderDashboards({ sloObjectivePercent: s.sloObjectivePercent as number, sloLatencyMs: s.sloLatencyMs as number });
  const files: RoleFile[] = [
    { path: G.adminPassword, mode: "0600", content: s.adminPassword, onChange: restartGrafana },
    { path: G.secretKey, mode: "0600", content: s.secretKey, onChange: restartGrafana },
    { path: G.ini, mode: "0644", content: renderGrafanaIni({ hostname }), onChange: restartGrafana },
    { path: G.environment, mode: "0644", content: renderGrafanaEnvironment(), onChange: restartGrafana },
    { path: G.dropIn, mode: "0644", content: renderGrafanaDropIn(), onChange: restartGrafana },
    { path: G.datasources, mode: "0644", content: renderDatasources(), onChange: restartGrafana },
    { path: G.dashboardProviders, mode: "0644", content: renderDashboardProviders(), onChange: restartGrafana },
    // Grafana rereads the dashboards' folder every minute: no restart.
    ...Object.entries(dashboards).map(([name, content]) => ({ path: `${G.dashboards}/${name}`, mode: "0644", content })),
    ...(served ? [{ path: G.nginx, mode: "0644", content: renderGrafanaNginxConf({ hostname }), onChange: reloadNginx }] : []),
  ];
  return {
    name: "grafana",
    description: served
      ? `Grafana OSS on 127.0.0.1:${GRAFANA_ADDRESS.port}, served by nginx at https://${hostname}/ behind Grafana's login; Prometheus and VictoriaLogs data sources, generated dashboards`
      : `Grafana OSS on 127.0.0.1:${GRAFANA_ADDRESS.port} only (without Cloudflare's proxy it has no certificate of its own: reach it through an SSH tunnel); generated dashboards`,
    // curl and gpg fetch and check the repository's key; Grafana itself is installed by apply.
    packages: ["ca-certificates", "curl", "gpg"],
    directories: [
      { path: LAYOUT.etc, mode: "0755" },
      { path: LAYOUT.secrets, mode: "0700" },
      { path: "/etc/apt/keyrings", mode: "0755" },
      { path: G.dir, mode: "0755" },
      { path: G.provisioning, mode: "0755" },
      { path: path.dirname(G.datasources), mode: "0755" },
      { path: path.dirname(G.dashboardProviders), mode: "0755" },
      ...G.emptyProvisioningDirs.map((dir) => ({ path: dir, mode: "0755" })),
      { path: G.dashboards, mode: "0755" },
      { path: path.dirname(G.dropIn), mode: "0755" },
    ],
    files,
    ...(served ? { validate: "nginx -t" } : {}),
    apply,
    healthCheck,
  };
}

/** The grafana role: on by default; two generated secrets; reads the monitoring role's objective. */
export const role = defineRole({
  name: "grafana",
  after: ["base", "proxy"],
  budget: {
    monthlyCost: { amount: 0, currency: "EUR", what: "Runs on the server: Grafana OSS, capped at 512 MiB RAM." },
    secrets: [
      { name: "grafana-admin-password", livesIn: "Pulumi state (RandomPassword; stack output grafanaAdminPassword); on the server as a systemd credential" },
      { name: "grafana-secret-key", livesIn: "Pulumi state (RandomPassword); on the server as a systemd credential" },
    ],
    alerts: ["SystemdUnitFailed"],
    failurePoints: [
      "Grafana down: dashboards are gone; alerting does not depend on it.",
      "apt.grafana.com's key changes: the install or upgrade is refused until the fingerprint is checked again.",
    ],
  },
  settings: grafanaSettingsSchema,
  inputs: {
    adminPassword: { from: "password", resource: "grafana-admin-password" },
    secretKey: { from: "password", resource: "grafana-secret-key" },
  },
  render: (s, { adminPassword, secretKey }: { adminPassword: string; secretKey: string }) => {
    // The SLO is the monitoring role's keys; the settings carry every role's keys.
    const slo = s as unknown as { sloObjectivePercent?: unknown; sloLatencyMs?: unknown };
    return grafanaRole({
      grafana: s.grafana,
      grafanaHostname: s.grafanaHostname,
      domain: s.domain,
      cdnProxy: s.cdnProxy,
      staticHostname: s.staticHostname,
      extraHostnames: s.extraHostnames,
      sloObjectivePercent: typeof slo.sloObjectivePercent === "number" ? slo.sloObjectivePercent : undefined,
      sloLatencyMs: typeof slo.sloLatencyMs === "number" ? slo.sloLatencyMs : undefined,
      adminPassword,
      secretKey,
    });
  },
});
