import { z } from "zod";
import { defineRole } from "../host/define";
import { LAYOUT } from "../host/layout";
import { HostRole, systemctlHandler } from "../host/role";

/** Where the docker role's files live on the VM. */
export const DOCKER_PATHS = Object.freeze({
  daemonJson: "/etc/docker/daemon.json",
});

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

// live-restore keeps the app's containers running while dockerd restarts for a new daemon.json.
const restartDocker = systemctlHandler("restart docker");

// Without systemd (the test roots) dockerd is not started by the package; there is nothing to probe.
const healthCheck = `if [ -d /run/systemd/system ]; then
  systemctl is-active --quiet docker || { echo "docker is not running (systemctl status docker)" >&2; exit 1; }
  ip -4 addr show docker0 | grep -qF 'inet ${LAYOUT.dockerBridge.address}/' || { echo "docker0 does not have ${LAYOUT.dockerBridge.address}" >&2; exit 1; }
fi`;

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
    files: [{ path: DOCKER_PATHS.daemonJson, mode: "0644", content: renderDaemonJson(), onChange: restartDocker }],
    validate: `dockerd --validate --config-file=${DOCKER_PATHS.daemonJson} >/dev/null`,
    healthCheck,
  };
}

export const role = defineRole({
  name: "docker",
  after: ["base"],
  budget: {
    monthlyCost: { amount: 0, currency: "EUR", what: "Runs on the server: Debian's docker.io (dockerd and containerd)." },
    secrets: [],
    alerts: ["SystemdUnitFailed", "DeployFailed", "SiteDown"],
    failurePoints: [
      "dockerd stopped or failing: the app's container stops and nginx answers 502 until it is back.",
      "The bridge network gone: the app cannot reach PostgreSQL or Redis on it.",
    ],
  },
  settings: z.object({}),
  render: () => dockerRole(),
});
