import { LAYOUT } from "../host/layout";
import { HostRole, systemctlHandler } from "../host/role";
import {
  APP_PATHS,
  deployScript,
  renderDaemonJson,
  renderDeployConfig,
  renderEnvFile,
  renderSecretEnvFile,
} from "./render";
import { AppSettings, assertValidAppSettings } from "./settings";

export { APP_PATHS, STOP_TIMEOUT_SECONDS, deployScript, renderDaemonJson, renderDeployConfig, renderEnvFile, renderSecretEnvFile } from "./render";
export { AppSettings, RESERVED_ENV, appSettingsProblems, assertValidAppSettings, registryHost } from "./settings";

// live-restore keeps the app's containers running while dockerd restarts for a new daemon.json.
const restartDocker = systemctlHandler("restart docker");

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
 * The product's container: Docker from Debian, the app's env files, and leaninfra-deploy, which puts a
 * release behind nginx with zero downtime (blue/green slots on LAYOUT.app.slotPorts). Needs the base
 * role (layout) and the proxy role (nginx with LAYOUT.nginx.upstream and LAYOUT.nginx.release included).
 * Throws an Error naming every invalid field of the settings.
 */
/**
 * Docker with its bridge pinned to LAYOUT.dockerBridge. A role of its own, applied right after base:
 * PostgreSQL and Redis listen on the bridge address, so it must exist before they start.
 */
export function dockerRole(): HostRole {
  return {
    name: "docker",
    description: `Docker with its bridge pinned to ${LAYOUT.dockerBridge.address}, logging to the journal`,
    // Debian's docker.io only recommends its client (docker-cli); tini is the docker-init behind `docker run --init`.
    packages: ["docker.io", "docker-cli", "tini"],
    directories: [{ path: "/etc/docker", mode: "0755" }],
    files: [{ path: APP_PATHS.dockerDaemonJson, mode: "0644", content: renderDaemonJson(), onChange: restartDocker }],
    validate: `dockerd --validate --config-file=${APP_PATHS.dockerDaemonJson} >/dev/null`,
    healthCheck: dockerHealthCheck,
  };
}

// Without systemd (the test roots) dockerd is not started by the package; there is nothing to probe.
const dockerHealthCheck = `if [ -d /run/systemd/system ]; then
  systemctl is-active --quiet docker || { echo "docker is not running (systemctl status docker)" >&2; exit 1; }
  ip -4 addr show docker0 | grep -qF 'inet ${LAYOUT.dockerBridge.address}/' || { echo "docker0 does not have ${LAYOUT.dockerBridge.address}" >&2; exit 1; }
fi`;

export function appRole(settings: AppSettings): HostRole {
  assertValidAppSettings(settings);
  return {
    name: "app",
    description: `the app container ${settings.image}:${settings.tag} behind nginx, deployed blue/green with zero downtime`,
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
      // Empty without registry credentials, so removing them from the stack removes them from the host.
      { path: APP_PATHS.registryPasswordFile, mode: "0600", content: settings.registryPassword ?? "" },
    ],
    validate,
    apply,
    healthCheck: `${APP_PATHS.deployScript} --health`,
  };
}
