import test from "node:test";
import assert from "node:assert/strict";
import { DOCKER_PATHS, dockerRole, renderDaemonJson, role as dockerDefinition } from "../../components/docker";
import { renderRoleBundle } from "../../components/host/bundle";
import { LAYOUT } from "../../components/host/layout";
import { assertShellcheckClean } from "../lib/shellcheck";

const file = (p: string) => {
  const found = dockerRole().files.find((f) => f.path === p);
  assert.ok(found, `the role has no file ${p}`);
  return found;
};

test("the docker role: packages, daemon.json pinned to the layout's bridge, validated by dockerd, restart on change", () => {
  const docker = dockerRole();
  assert.equal(docker.name, "docker");
  assert.deepEqual(docker.packages, ["docker.io", "docker-cli", "tini"]);
  assert.deepEqual(JSON.parse(renderDaemonJson()), { bip: "172.17.0.1/16", "log-driver": "journald", "live-restore": true });
  assert.equal(`${LAYOUT.dockerBridge.address}/16`, "172.17.0.1/16");
  assert.equal(DOCKER_PATHS.daemonJson, "/etc/docker/daemon.json");
  assert.equal(file(DOCKER_PATHS.daemonJson).content, renderDaemonJson());
  assert.equal(file(DOCKER_PATHS.daemonJson).onChange?.includes("systemctl restart docker"), true);
  assert.match(docker.validate ?? "", /dockerd --validate --config-file=\/etc\/docker\/daemon\.json/);
  assert.match(docker.healthCheck ?? "", /docker0/);
});

test("the docker definition: no config keys, after base, renders dockerRole", () => {
  assert.equal(dockerDefinition.name, "docker");
  assert.deepEqual(dockerDefinition.after, ["base"]);
  assert.deepEqual(Object.keys(dockerDefinition.settings.shape), []);
  assert.equal(dockerDefinition.enabled, undefined, "always on");
  assert.deepEqual(dockerDefinition.render({} as never, {}), dockerRole());
});

test("shellcheck passes the docker role's bundle", () => {
  assertShellcheckClean("the docker bundle", renderRoleBundle(dockerRole()));
});
