import * as fs from "node:fs";
import * as path from "node:path";
import { LAYOUT } from "../host/layout";
import { AppSettings, registryHost, secretEnvEntries } from "./settings";

/** Where the app role's files live on the VM. */
export const APP_PATHS = Object.freeze({
  deployScript: "/usr/local/sbin/leaninfra-deploy",
  /** Read by the deploy script (its path is fixed in the script too). */
  deployConf: "/etc/leaninfra/app/deploy.conf",
  configDir: "/etc/leaninfra/app",
  envFile: `${LAYOUT.secrets}/app.env`,
  secretEnvFile: `${LAYOUT.secrets}/app-secrets.env`,
  registryPasswordFile: `${LAYOUT.secrets}/app-registry-password`,
  dockerDaemonJson: "/etc/docker/daemon.json",
  /** The deploy history (one release per line) that image pruning reads. */
  stateDir: `${LAYOUT.state}/app`,
  metricsFile: `${LAYOUT.textfileDir}/leaninfra_app.prom`,
});

/** Seconds `docker stop` waits for the old release to exit after SIGTERM before killing it. */
export const STOP_TIMEOUT_SECONDS = 30;

const MANAGED = 'Managed by LeanInfra (role "app"); change the app settings of the stack and run pulumi up, not this file.';

/** One single-quoted shell word. */
function shq(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** The deploy script, exactly as it lands in /usr/local/sbin (a static file next to this one). */
export function deployScript(): string {
  return fs.readFileSync(path.join(__dirname, "leaninfra-deploy.sh"), "utf8");
}

/**
 * /etc/docker/daemon.json: the bridge pinned to LAYOUT.dockerBridge (PostgreSQL and Redis listen on
 * its address for the app), container logs into the journal, containers kept running while dockerd restarts.
 */
export function renderDaemonJson(): string {
  const prefix = LAYOUT.dockerBridge.subnet.split("/")[1];
  const config = {
    bip: `${LAYOUT.dockerBridge.address}/${prefix}`,
    "log-driver": "journald",
    "live-restore": true,
  };
  return `${JSON.stringify(config, null, 2)}\n`;
}

/** The plain env file: one KEY=value per line, as `docker run --env-file` reads it (no quoting). */
export function renderEnvFile(settings: AppSettings): string {
  return [`# ${MANAGED}`, "# Plain settings of the app container (docker --env-file: KEY=value, taken literally).", ...settings.env, ""].join("\n");
}

/** The secret env file: secretEnv, DATABASE_URL and REDIS_URL (when set). Root-only on the host. */
export function renderSecretEnvFile(settings: AppSettings): string {
  const lines = [`# ${MANAGED}`, "# Secret settings of the app container (docker --env-file: KEY=value, taken literally).", ...secretEnvEntries(settings.secretEnv).map((e) => e.text)];
  lines.push(`DATABASE_URL=${settings.databaseUrl}`);
  if (settings.redisUrl) lines.push(`REDIS_URL=${settings.redisUrl}`);
  return `${lines.join("\n")}\n`;
}

/** The settings leaninfra-deploy sources: bash assignments, every value single-quoted. */
export function renderDeployConfig(settings: AppSettings): string {
  const assign = (name: string, value: string | number) => `${name}=${typeof value === "number" ? String(value) : shq(value)}`;
  const list = (name: string, values: string[]) => `${name}=(${values.map(shq).join(" ")})`;
  return [
    `# ${MANAGED}`,
    `# Read by ${APP_PATHS.deployScript}; sourced by bash.`,
    assign("image", settings.image),
    assign("release", settings.tag),
    `# Registry to log in to when the image is not on this host ('' = Docker Hub); no user = no login.`,
    assign("registry_host", registryHost(settings.image)),
    assign("registry_user", settings.registryUser ?? ""),
    assign("registry_password_file", APP_PATHS.registryPasswordFile),
    list("env_files", [APP_PATHS.envFile, APP_PATHS.secretEnvFile]),
    assign("container_port", settings.containerPort),
    assign("health_path", settings.healthPath),
    assign("health_timeout_seconds", settings.healthTimeoutSeconds),
    assign("drain_seconds", settings.drainSeconds),
    assign("stop_timeout_seconds", STOP_TIMEOUT_SECONDS),
    assign("keep_images", settings.keepImages),
    list("migration_command", settings.migrationCommand ?? []),
    assign("host_alias", LAYOUT.dockerHostName),
    assign("blue_port", LAYOUT.app.slotPorts.blue),
    assign("green_port", LAYOUT.app.slotPorts.green),
    assign("upstream_file", LAYOUT.nginx.upstream),
    assign("release_file", LAYOUT.nginx.release),
    assign("deploy_log", LAYOUT.app.deployLog),
    assign("metrics_file", APP_PATHS.metricsFile),
    assign("state_dir", APP_PATHS.stateDir),
    "",
  ].join("\n");
}
