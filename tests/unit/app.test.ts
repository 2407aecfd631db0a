import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  APP_PATHS,
  AppSettings,
  appRole,
  dockerRole,
  appSettingsProblems,
  deployScript,
  registryHost,
  renderDaemonJson,
  renderDeployConfig,
  renderEnvFile,
  renderSecretEnvFile,
} from "../../components/app";
import { bundleDigest, renderRoleBundle } from "../../components/host/bundle";
import { LAYOUT } from "../../components/host/layout";
import { assertShellcheckClean } from "../lib/shellcheck";

const DB_PASSWORD = "db-pw-91c3e7a0-never-print";
const REGISTRY_PASSWORD = "reg-pw-2b7f0d55-never-print";
const API_TOKEN = "tok-5d8e1a9c-never-print";

function settings(overrides: Partial<AppSettings> = {}): AppSettings {
  return {
    image: "ghcr.io/acme/shop",
    tag: "1.8.4",
    registryUser: "acme-bot",
    registryPassword: REGISTRY_PASSWORD,
    env: ["GREETING=hello world", "FEATURE_X=on"],
    secretEnv: `# comment\n\nAPI_TOKEN=${API_TOKEN}\nSENTRY_DSN=https://k@o1.ingest.sentry.io/2\n`,
    databaseUrl: `postgresql://app:${DB_PASSWORD}@host.docker.internal:5432/app`,
    redisUrl: "redis://host.docker.internal:6379/0",
    containerPort: 8000,
    healthPath: "/healthz",
    healthTimeoutSeconds: 60,
    drainSeconds: 10,
    keepImages: 3,
    migrationCommand: ["sh", "-c", "npm run migrate -- --name 'it''s $HOME'"],
    ...overrides,
  };
}

const shellcheck = assertShellcheckClean;

const file = (role: ReturnType<typeof appRole>, p: string) => {
  const found = role.files.find((f) => f.path === p);
  assert.ok(found, `the role has no file ${p}`);
  return found;
};

test("the app role and its deploy script render to identical text every time", () => {
  const a = appRole(settings());
  const b = appRole(settings());
  assert.deepEqual(a, b);
  assert.equal(renderRoleBundle(a), renderRoleBundle(b));
  assert.equal(bundleDigest(renderRoleBundle(a)), bundleDigest(renderRoleBundle(appRole(settings()))));
  assert.equal(deployScript(), deployScript());
  assert.equal(file(a, APP_PATHS.deployScript).content, fs.readFileSync(path.join(__dirname, "../../components/app/leaninfra-deploy.sh"), "utf8"));
  assert.notEqual(renderRoleBundle(a), renderRoleBundle(appRole(settings({ tag: "1.8.5" }))), "a new tag must change the bundle (and so trigger the Host)");
});

test("the docker role: packages, daemon.json pinned to the layout's bridge, validated by dockerd, restart on change", () => {
  const docker = dockerRole();
  assert.equal(docker.name, "docker");
  assert.deepEqual(docker.packages, ["docker.io", "docker-cli", "tini"]);
  assert.deepEqual(JSON.parse(renderDaemonJson()), { bip: "172.17.0.1/16", "log-driver": "journald", "live-restore": true });
  assert.equal(`${LAYOUT.dockerBridge.address}/16`, "172.17.0.1/16");
  assert.equal(file(docker, APP_PATHS.dockerDaemonJson).onChange?.includes("systemctl restart docker"), true);
  assert.match(docker.validate ?? "", /dockerd --validate --config-file=\/etc\/docker\/daemon\.json/);
  assert.match(docker.healthCheck ?? "", /docker0/);
  assert.equal(appRole(settings()).files.some((f) => f.path === APP_PATHS.dockerDaemonJson), false, "one owner per file");
});

test("the app role: modes, secrets in root-only files, apply and health check", () => {
  const role = appRole(settings());
  assert.equal(role.name, "app");
  assert.deepEqual(role.packages, ["curl"]);
  assert.equal(file(role, APP_PATHS.deployScript).mode, "0755");
  for (const secret of [APP_PATHS.envFile, APP_PATHS.secretEnvFile, APP_PATHS.registryPasswordFile]) {
    assert.ok(secret.startsWith(`${LAYOUT.secrets}/`), `${secret} must be under ${LAYOUT.secrets}`);
    assert.equal(file(role, secret).mode, "0600");
  }
  assert.equal(file(role, APP_PATHS.registryPasswordFile).content, REGISTRY_PASSWORD);
  assert.equal(file(appRole(settings({ registryUser: undefined, registryPassword: undefined })), APP_PATHS.registryPasswordFile).content, "");
  assert.match(role.validate ?? "", /bash -n \/usr\/local\/sbin\/leaninfra-deploy/);
  assert.match(role.apply ?? "", /leaninfra-deploy --check >\/dev\/null \|\| status=\$\?/);
  assert.equal(role.healthCheck, `${APP_PATHS.deployScript} --health`);

  const secretEnv = renderSecretEnvFile(settings());
  assert.match(secretEnv, new RegExp(`^API_TOKEN=${API_TOKEN}$`, "m"));
  assert.match(secretEnv, new RegExp(`^DATABASE_URL=postgresql://app:${DB_PASSWORD}@host\\.docker\\.internal:5432/app$`, "m"));
  assert.match(secretEnv, /^REDIS_URL=redis:\/\/host\.docker\.internal:6379\/0$/m);
  assert.doesNotMatch(secretEnv, /^# comment$/m, "the user's comment lines are dropped");
  assert.doesNotMatch(renderSecretEnvFile(settings({ redisUrl: undefined })), /REDIS_URL/);
  assert.match(renderEnvFile(settings()), /^GREETING=hello world\nFEATURE_X=on\n$/m);
  assert.doesNotMatch(renderEnvFile(settings()), new RegExp(API_TOKEN));

  const bundle = renderRoleBundle(role);
  const header = bundle.split("\nset -Eeuo pipefail")[0];
  for (const secret of [DB_PASSWORD, REGISTRY_PASSWORD, API_TOKEN]) assert.ok(!header.includes(secret) && !role.description.includes(secret));
});

test("deploy.conf, sourced by real bash, gives the deploy script exactly the settings and the layout", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-app-conf-"));
  try {
    const conf = path.join(dir, "deploy.conf");
    fs.writeFileSync(conf, renderDeployConfig(settings()));
    const script = `set -euo pipefail; source "$1"
printf '%s\\n' "$image" "$release" "$registry_host" "$registry_user" "$container_port" "$health_path" "$health_timeout_seconds" \\
  "$drain_seconds" "$keep_images" "$host_alias" "$blue_port" "$green_port" "$upstream_file" "$release_file" "$deploy_log" "$metrics_file"
printf '[%s]' "\${migration_command[@]}"; echo
printf '[%s]' "\${env_files[@]}"; echo`;
    const result = spawnSync("bash", ["-c", script, "bash", conf], { encoding: "utf8" });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(
      result.stdout,
      [
        "ghcr.io/acme/shop", "1.8.4", "ghcr.io", "acme-bot", "8000", "/healthz", "60", "10", "3", LAYOUT.dockerHostName,
        String(LAYOUT.app.slotPorts.blue), String(LAYOUT.app.slotPorts.green), LAYOUT.nginx.upstream, LAYOUT.nginx.release,
        LAYOUT.app.deployLog, `${LAYOUT.textfileDir}/leaninfra_app.prom`,
        "[sh][-c][npm run migrate -- --name 'it''s $HOME']",
        `[${LAYOUT.secrets}/app.env][${LAYOUT.secrets}/app-secrets.env]`,
        "",
      ].join("\n"),
    );
    assert.ok(!renderDeployConfig(settings()).includes(REGISTRY_PASSWORD), "the registry password stays in its own 0600 file");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("the deploy script: bash, strict mode, reads the role's deploy.conf, prints each step", () => {
  const script = deployScript();
  assert.match(script, /^#!\/usr\/bin\/env bash\n/);
  assert.match(script, /^set -euo pipefail$/m);
  assert.match(script, new RegExp(`^readonly conf=${APP_PATHS.deployConf.replace(/\./g, "\\.")}$`, "m"), "the script reads the file the role writes");
  for (const step of ["pulling ", "running the migration", "starting \\$new_name", "health ok: ", "pointing nginx at slot", "checking the nginx configuration", "reloading nginx", "draining: ", "stopping app-"]) {
    assert.match(script, new RegExp(`say "${step}`), `no step line for ${step}`);
  }
  const syntax = spawnSync("bash", ["-n"], { input: script, encoding: "utf8" });
  assert.equal(syntax.status, 0, syntax.stderr);
});

test("shellcheck passes the deploy script and the app role's bundle", () => {
  shellcheck("components/app/leaninfra-deploy.sh", deployScript());
  shellcheck("the app bundle", renderRoleBundle(appRole(settings())));
  shellcheck("the app bundle without registry, redis or migration", renderRoleBundle(appRole(settings({ registryUser: undefined, registryPassword: undefined, redisUrl: undefined, migrationCommand: undefined }))));
});

test("registryHost finds the registry to log in to", () => {
  assert.equal(registryHost("ghcr.io/acme/shop"), "ghcr.io");
  assert.equal(registryHost("127.0.0.1:5000/shop"), "127.0.0.1:5000");
  assert.equal(registryHost("localhost/shop"), "localhost");
  assert.equal(registryHost("acme/shop"), "");
  assert.equal(registryHost("shop"), "");
});

test("valid settings have no problems", () => {
  assert.deepEqual(appSettingsProblems(settings()), []);
  assert.deepEqual(appSettingsProblems(settings({ registryUser: undefined, registryPassword: undefined, redisUrl: undefined, migrationCommand: undefined, env: [], secretEnv: "" })), []);
  assert.deepEqual(appSettingsProblems(settings({ image: "acme/shop" })), []);
  assert.deepEqual(appSettingsProblems(settings({ image: "localhost:5000/shop", drainSeconds: 0, keepImages: 1 })), []);
});

const BAD: [string, Partial<AppSettings>, RegExp][] = [
  ["image with a tag", { image: "ghcr.io/acme/shop:1.0" }, /^image: .*carries a tag/],
  ["image with uppercase", { image: "ghcr.io/Acme/shop" }, /^image: .*not a Docker repository name/],
  ["image with a digest", { image: "acme/shop@sha256:abc" }, /^image: .*has a digest/],
  ["empty image", { image: "" }, /^image: must be an image repository/],
  ["tag with a space", { tag: "1.0 beta" }, /^tag: "1\.0 beta" is not a Docker tag/],
  ["tag starting with a dot", { tag: ".hidden" }, /^tag: /],
  ["user without password", { registryPassword: undefined }, /^registryPassword: registryUser and registryPassword go together/],
  ["password without user", { registryUser: undefined }, /^registryUser: registryUser and registryPassword go together/],
  ["password with a newline", { registryPassword: "a\nb" }, /^registryPassword: must be one line/],
  ["env entry without =", { env: ["GREETING"] }, /^env\[0\]: "GREETING" is not KEY=value/],
  ["env key with a dash", { env: ["OK=1", "MY-KEY=1"] }, /^env\[1\]: /],
  ["env value with a newline", { env: ["A=1\n2"] }, /^env\[0\]: .*control characters or newlines/],
  ["env setting RELEASE", { env: ["RELEASE=x"] }, /^env\[0\]: RELEASE is set by the deploy itself/],
  ["env key twice", { env: ["A=1", "A=2"] }, /^env\[1\]: A is already set by env\[0\]/],
  ["secretEnv overriding DATABASE_URL", { secretEnv: "X=1\nDATABASE_URL=postgresql://x@y/z" }, /^secretEnv line 2: DATABASE_URL is set by the deploy itself/],
  ["secretEnv key also in env", { env: ["API_TOKEN=plain"] }, /^secretEnv line 3: API_TOKEN is already set by env\[0\]/],
  ["secretEnv line without =", { secretEnv: "just-a-token-value" }, /^secretEnv line 1: this line is not KEY=value/],
  ["database URL with another scheme", { databaseUrl: "mysql://app@db/app" }, /^databaseUrl: has scheme "mysql:"/],
  ["database URL with a space", { databaseUrl: "postgresql://app:p w@h/app" }, /^databaseUrl: must be a URL without spaces/],
  ["redis URL with another scheme", { redisUrl: "http://cache:6379" }, /^redisUrl: has scheme "http:"/],
  ["port 0", { containerPort: 0 }, /^containerPort: 0 must be a port number/],
  ["port as text", { containerPort: "8000" as unknown as number }, /^containerPort: "8000" must be a port number/],
  ["health path without /", { healthPath: "healthz" }, /^healthPath: "healthz" must be a URL path/],
  ["health path with a quote", { healthPath: "/h'z" }, /^healthPath: /],
  ["health timeout 0", { healthTimeoutSeconds: 0 }, /^healthTimeoutSeconds: 0 must be a whole number of seconds, 1 to 3600/],
  ["drain 1.5 s", { drainSeconds: 1.5 }, /^drainSeconds: 1\.5 must be a whole number/],
  ["keep no images", { keepImages: 0 }, /^keepImages: 0 must be a whole number, 1 to 100/],
  ["empty migration", { migrationCommand: [] }, /^migrationCommand: must be a non-empty list/],
  ["migration with an empty argument", { migrationCommand: ["npm", ""] }, /^migrationCommand\[1\]: must be a non-empty one-line string/],
];

for (const [what, overrides, expected] of BAD) {
  test(`settings validation names the field: ${what}`, () => {
    const problems = appSettingsProblems(settings(overrides));
    assert.ok(problems.some((p) => expected.test(p)), `expected a problem matching ${expected}, got:\n${problems.join("\n")}`);
    assert.throws(() => appRole(settings(overrides)), (error: Error) => /^App settings have \d+ problem\(s\):\n {2}- /.test(error.message) && expected.test(error.message.split("\n  - ").find((l) => expected.test(l)) ?? ""));
    for (const p of problems) {
      for (const secret of [DB_PASSWORD, REGISTRY_PASSWORD, API_TOKEN]) assert.ok(!p.includes(secret), `a problem quotes a secret: ${p}`);
    }
  });
}

test("a secretEnv line is never quoted back in a problem", () => {
  const problems = appSettingsProblems(settings({ secretEnv: "sk_live_51Hx-pasted-without-key\nTOKEN=a\u0007b" }));
  assert.equal(problems.length, 2, problems.join("\n"));
  for (const p of problems) assert.ok(!p.includes("sk_live") && !p.includes("a\u0007b"), p);
});

test("every problem is reported at once", () => {
  const problems = appSettingsProblems(settings({ tag: "bad tag", containerPort: 70000, keepImages: 0, healthPath: "x" }));
  assert.deepEqual(problems.map((p) => p.split(":")[0]), ["tag", "containerPort", "healthPath", "keepImages"]);
});
