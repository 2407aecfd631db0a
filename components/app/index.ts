import { SettingsError, defineRole, placeholderPassword, refuseProblems } from "../host/define";
import { LAYOUT } from "../host/layout";
import { HostRole } from "../host/role";
import { APP_PATHS, deployScript, renderDeployConfig, renderEnvFile, renderSecretEnvFile, renderSentryEnvFile } from "./render";
import { AppInputs, AppSettings, HOST_RESERVED_MEMORY_MB, appMemoryLimitMb, appSettingsProblems, appSettingsSchema } from "./settings";

export { APP_PATHS, DEPLOY_SCRIPT_FILE, STOP_TIMEOUT_SECONDS, deployScript, renderDeployConfig, renderEnvFile, renderSecretEnvFile, renderSentryEnvFile } from "./render";
export {
  AppInputs,
  AppSettings,
  DOCKER_DEFAULT_CAPABILITIES,
  HOST_RESERVED_MEMORY_MB,
  SENTRY_ENV,
  appMemoryLimitMb,
  appSettingsProblems,
  appSettingsSchema,
  registryHost,
  secretEnvEntries,
  sentryDsnProblem,
} from "./settings";

const validate = `bash -n ${APP_PATHS.deployScript}
bash -n ${APP_PATHS.deployConf}`;

// Deploys only when the wanted release (or its settings) is not what serves: a second run prints nothing.
// The deploy's own step lines go to stderr: shown, not counted; the one stdout line is the change.
const apply = `status=0
${APP_PATHS.deployScript} --check >/dev/null || status=$?
if [ "$status" -eq 0 ]; then exit 0; fi
if [ "$status" -ne 3 ]; then
  echo "${APP_PATHS.deployScript} --check failed (exit $status)" >&2
  exit "$status"
fi
${APP_PATHS.deployScript} >&2
echo "deployed: $(${APP_PATHS.deployScript} --status)"`;

/**
 * The product's container: the app's env files, and leaninfra-deploy, which puts a release behind nginx
 * with zero downtime (blue/green slots on LAYOUT.app.slotPorts). Needs the docker role, and the proxy
 * role (nginx with LAYOUT.nginx.upstream and LAYOUT.nginx.release included).
 * Throws SettingsError naming the config key of every invalid setting.
 */
export function appRole(settings: AppSettings): HostRole {
  refuseProblems("app", appSettingsProblems(settings));
  return {
    name: "app",
    description: `the app container ${settings.appImage}:${settings.appTag} behind nginx, deployed blue/green with zero downtime`,
    packages: ["curl"],
    directories: [
      { path: APP_PATHS.configDir, mode: "0755" },
      { path: LAYOUT.secrets, mode: "0700" },
      { path: APP_PATHS.stateDir, mode: "0700" },
      { path: LAYOUT.textfileDir, mode: "0755" },
    ],
    files: [
      { path: APP_PATHS.deployScript, mode: "0755", content: deployScript() },
      { path: APP_PATHS.deployConf, mode: "0644", content: renderDeployConfig(settings) },
      { path: APP_PATHS.envFile, mode: "0600", content: renderEnvFile(settings) },
      { path: APP_PATHS.secretEnvFile, mode: "0600", content: renderSecretEnvFile(settings) },
      // Comments only without sentryDsn, so removing it from the stack removes it from the host.
      { path: APP_PATHS.sentryEnvFile, mode: "0600", content: renderSentryEnvFile(settings) },
      // Empty without registry credentials, so removing them from the stack removes them from the host.
      { path: APP_PATHS.registryPasswordFile, mode: "0600", content: settings.appRegistryPassword },
    ],
    validate,
    apply,
    healthCheck: `${APP_PATHS.deployScript} --health`,
  };
}

export const role = defineRole<typeof appSettingsSchema, AppInputs>({
  name: "app",
  after: ["postgres", "proxy"],
  budget: {
    monthlyCost: { amount: 0, currency: "EUR", what: "Runs on the server: the app's container, capped at appMemoryMb (default half the RAM). Its registry and error tracking are billed by their providers (INVENTORY.md)." },
    secrets: [
      { name: "appSecretEnv", livesIn: "encrypted stack config; on the server in /etc/leaninfra/secrets/app-secrets.env, root-only" },
      { name: "appRegistryPassword", livesIn: "encrypted stack config; on the server in Docker's root-only login store" },
      { name: "sentryDsn", livesIn: "encrypted stack config; on the server in /etc/leaninfra/secrets/app-sentry.env, root-only" },
    ],
    alerts: ["DeployFailed", "HighErrorRate", "HighLatency", "AppErrorLines", "SiteDown"],
    failurePoints: [
      "A release that fails its health check or migration: the deploy stops and the previous release keeps serving (DeployFailed).",
      "A release that passes its health check but fails users: the burn-rate pages fire; roll back to the previous appTag.",
      "The registry unreachable: a new release cannot be pulled; the serving one keeps running.",
    ],
  },
  settings: appSettingsSchema,
  enabled: (s) => s.appImage !== "",
  inputs: {
    databaseUrl: { from: "role", role: "postgres", offer: "databaseUrl" },
    redisUrl: { from: "role", role: "redis", offer: "redisUrl" },
    appSecretEnv: {
      from: "secretConfig",
      key: "appSecretEnv",
      description: "Secret environment of the app, one KEY=value a line (e.g. SESSION_SECRET=...). Optional; set it encrypted: pulumi config set --secret leaninfra:appSecretEnv ...",
    },
    appRegistryPassword: {
      from: "secretConfig",
      key: "appRegistryPassword",
      description: "Password or token for appRegistryUser's private registry. Optional; set it encrypted: pulumi config set --secret leaninfra:appRegistryPassword ...",
      placeholder: (s) => (s.appRegistryUser ? placeholderPassword("app-registry-password") : ""),
    },
    sentryDsn: {
      from: "secretConfig",
      key: "sentryDsn",
      description:
        "DSN of a Sentry project (or a Sentry-compatible service), https://<public key>@<host>/<project id>: the app's containers get SENTRY_DSN, SENTRY_RELEASE (the release) and SENTRY_ENVIRONMENT (the stack). Optional; set it encrypted: pulumi config set --secret leaninfra:sentryDsn ...",
    },
  },
  // The monitoring role probes the public URL at the health path.
  offers: (s) => ({ appHealthPath: s.appHealthPath }),
  render: (s, inputs) => {
    const appMemoryMb = appMemoryLimitMb(s.appMemoryMb, s.memoryMb);
    const most = s.memoryMb - HOST_RESERVED_MEMORY_MB;
    if (s.appMemoryMb > 0 && s.appMemoryMb > most) {
      throw new SettingsError("app", [
        `appMemoryMb ${s.appMemoryMb} is more than this server can give the app (accepted: at most ${most} MB: the server's ${s.memoryMb} MB less ${HOST_RESERVED_MEMORY_MB} MB for the system, PostgreSQL and nginx; 0 for half of it)`,
      ]);
    }
    return appRole({
      appImage: s.appImage,
      appTag: s.appTag,
      appPort: s.appPort,
      appHealthPath: s.appHealthPath,
      appHealthTimeoutSeconds: s.appHealthTimeoutSeconds,
      appDrainSeconds: s.appDrainSeconds,
      appKeepImages: s.appKeepImages,
      appEnv: s.appEnv,
      appMigrationCommand: s.appMigrationCommand,
      appRegistryUser: s.appRegistryUser,
      appMemoryMb,
      appPidsLimit: s.appPidsLimit,
      appCapabilities: s.appCapabilities,
      stack: s.stack,
      ...inputs,
    });
  },
});
