import * as fs from "node:fs";
import * as path from "node:path";
import { LAYOUT } from "../host/layout";
import { shellAssignment } from "../host/script";
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
  /**
   * SENTRY_DSN and SENTRY_ENVIRONMENT (sentryDsn): apart from the env files, which the restore drill's
   * container gets too, so the drill never reports its copy's errors as production's.
   */
  sentryEnvFile: `${LAYOUT.secrets}/app-sentry.env`,
  /** The deploy history (one release per line) that image pruning reads. */
  stateDir: `${LAYOUT.state}/app`,
  metricsFile: `${LAYOUT.textfileDir}/leaninfra_app.prom`,
});

/** Seconds `docker stop` waits for the old release to exit after SIGTERM before killing it. */
export const STOP_TIMEOUT_SECONDS = 30;

/** The deploy script's source: a static file, installed as it is. */
export const DEPLOY_SCRIPT_FILE = path.join(__dirname, "files", "leaninfra-deploy.sh");

const MANAGED = 'Managed by LeanInfra (role "app"); change the app settings of the stack and run pulumi up, not this file.';

/** The deploy script, exactly as it lands in /usr/local/sbin. */
export function deployScript(): string {
  return fs.readFileSync(DEPLOY_SCRIPT_FILE, "utf8");
}

/** The plain env file: one KEY=value per line, as `docker run --env-file` reads it (no quoting). */
export function renderEnvFile(settings: AppSettings): string {
  return [`# ${MANAGED}`, "# Plain settings of the app container (docker --env-file: KEY=value, taken literally).", ...settings.appEnv, ""].join("\n");
}

/** The secret env file: appSecretEnv, DATABASE_URL and REDIS_URL (when set). Root-only on the host. */
export function renderSecretEnvFile(settings: AppSettings): string {
  const lines = [`# ${MANAGED}`, "# Secret settings of the app container (docker --env-file: KEY=value, taken literally).", ...secretEnvEntries(settings.appSecretEnv).map((e) => e.text)];
  lines.push(`DATABASE_URL=${settings.databaseUrl}`);
  if (settings.redisUrl) lines.push(`REDIS_URL=${settings.redisUrl}`);
  return `${lines.join("\n")}\n`;
}

/** The error reporting env file: SENTRY_DSN and SENTRY_ENVIRONMENT with sentryDsn, else comments only. Root-only on the host. */
export function renderSentryEnvFile(settings: AppSettings): string {
  const lines = [`# ${MANAGED}`, "# Error reporting of the app container (sentryDsn); the deploy adds SENTRY_RELEASE, the release it starts."];
  if (settings.sentryDsn) {
    lines.push(`SENTRY_DSN=${settings.sentryDsn}`);
    if (settings.stack) lines.push(`SENTRY_ENVIRONMENT=${settings.stack}`);
  }
  return `${lines.join("\n")}\n`;
}

/** The settings leaninfra-deploy sources: bash assignments, every value single-quoted. */
export function renderDeployConfig(settings: AppSettings): string {
  return [
    `# ${MANAGED}`,
    `# Read by ${APP_PATHS.deployScript}; sourced by bash.`,
    shellAssignment("image", settings.appImage),
    shellAssignment("release", settings.appTag),
    `# Registry to log in to when the image is not on this host ('' = Docker Hub); no user = no login.`,
    shellAssignment("registry_host", registryHost(settings.appImage)),
    shellAssignment("registry_user", settings.appRegistryUser),
    shellAssignment("registry_password_file", APP_PATHS.registryPasswordFile),
    shellAssignment("env_files", [APP_PATHS.envFile, APP_PATHS.secretEnvFile]),
    "# Error reporting (sentryDsn): SENTRY_DSN and SENTRY_ENVIRONMENT, for the app's containers only ('' = none).",
    shellAssignment("sentry_env_file", settings.sentryDsn ? APP_PATHS.sentryEnvFile : ""),
    shellAssignment("container_port", settings.appPort),
    shellAssignment("health_path", settings.appHealthPath),
    shellAssignment("health_timeout_seconds", settings.appHealthTimeoutSeconds),
    shellAssignment("drain_seconds", settings.appDrainSeconds),
    shellAssignment("stop_timeout_seconds", STOP_TIMEOUT_SECONDS),
    shellAssignment("keep_images", settings.appKeepImages),
    shellAssignment("migration_command", settings.appMigrationCommand),
    "# The container's limits: memory (MB, no swap beyond it), processes, and the capabilities it keeps (none by default).",
    shellAssignment("memory_mb", settings.appMemoryMb),
    shellAssignment("pids_limit", settings.appPidsLimit),
    shellAssignment("capabilities", settings.appCapabilities),
    shellAssignment("host_alias", LAYOUT.dockerHostName),
    shellAssignment("blue_port", LAYOUT.app.slotPorts.blue),
    shellAssignment("green_port", LAYOUT.app.slotPorts.green),
    shellAssignment("upstream_file", LAYOUT.nginx.upstream),
    shellAssignment("release_file", LAYOUT.nginx.release),
    shellAssignment("deploy_log", LAYOUT.app.deployLog),
    shellAssignment("metrics_file", APP_PATHS.metricsFile),
    shellAssignment("state_dir", APP_PATHS.stateDir),
    "",
  ].join("\n");
}
