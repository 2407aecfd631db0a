import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  APP_PATHS,
  AppSettings,
  DEPLOY_SCRIPT_FILE,
  appRole,
  appSettingsProblems,
  deployScript,
  registryHost,
  renderDeployConfig,
  renderEnvFile,
  renderSecretEnvFile,
  renderSentryEnvFile,
  role as appDefinition,
  sentryDsnProblem,
} from "../../components/app";
import { DOCKER_PATHS } from "../../components/docker";
import { SettingsError, StackFacts, placeholderInputs, placeholderPassword } from "../../components/host/define";
import { bundleDigest, renderRoleBundle } from "../../components/host/bundle";
import { LAYOUT } from "../../components/host/layout";
import { assertShellcheckClean } from "../lib/shellcheck";
import { TEST_FACTS } from "../lib/facts";

const DB_PASSWORD = "db-pw-91c3e7a0-never-print";
const REGISTRY_PASSWORD = "reg-pw-2b7f0d55-never-print";
const API_TOKEN = "tok-5d8e1a9c-never-print";
const SENTRY_KEY = "5e7c0ffee1d0never9print";
const SENTRY_DSN = `https://${SENTRY_KEY}@o1.ingest.sentry.io/42`;

function settings(overrides: Partial<AppSettings> = {}): AppSettings {
  return {
    appImage: "ghcr.io/acme/shop",
    appTag: "1.8.4",
    appRegistryUser: "acme-bot",
    appRegistryPassword: REGISTRY_PASSWORD,
    appEnv: ["GREETING=hello world", "FEATURE_X=on"],
    appSecretEnv: `# comment\n\nAPI_TOKEN=${API_TOKEN}\nMAIL_URL=smtp://k@mail.example.com/2\n`,
    sentryDsn: SENTRY_DSN,
    stack: "test",
    databaseUrl: `postgresql://app:${DB_PASSWORD}@host.docker.internal:5432/app`,
    redisUrl: "redis://host.docker.internal:6379/0",
    appPort: 8000,
    appHealthPath: "/healthz",
    appHealthTimeoutSeconds: 60,
    appDrainSeconds: 10,
    appKeepImages: 3,
    appMigrationCommand: ["sh", "-c", "npm run migrate -- --name 'it''s $HOME'"],
    appMemoryMb: 1536,
    appPidsLimit: 512,
    appCapabilities: ["SETUID", "SETGID"],
    ...overrides,
  };
}

const shellcheck = assertShellcheckClean;
const REPO_ROOT = path.resolve(__dirname, "../..");

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
  assert.equal(file(a, APP_PATHS.deployScript).content, fs.readFileSync(path.join(__dirname, "../../components/app/files/leaninfra-deploy.sh"), "utf8"));
  assert.equal(DEPLOY_SCRIPT_FILE, path.resolve(__dirname, "../../components/app/files/leaninfra-deploy.sh"));
  assert.notEqual(renderRoleBundle(a), renderRoleBundle(appRole(settings({ appTag: "1.8.5" }))), "a new tag must change the bundle (and so trigger the Host)");
});

test("the app role does not own Docker's daemon.json (the docker role does)", () => {
  assert.equal(appRole(settings()).files.some((f) => f.path === DOCKER_PATHS.daemonJson), false, "one owner per file");
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
  assert.equal(file(appRole(settings({ appRegistryUser: "", appRegistryPassword: "" })), APP_PATHS.registryPasswordFile).content, "");
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
  for (const secret of [DB_PASSWORD, REGISTRY_PASSWORD, API_TOKEN, SENTRY_KEY]) assert.ok(!header.includes(secret) && !role.description.includes(secret));
});

test("sentryDsn: SENTRY_DSN and SENTRY_ENVIRONMENT in their own root-only file, named in deploy.conf apart from the env files (the restore drill reads those); without it nothing is set", () => {
  const role = appRole(settings());
  assert.ok(APP_PATHS.sentryEnvFile.startsWith(`${LAYOUT.secrets}/`));
  const sentry = file(role, APP_PATHS.sentryEnvFile);
  assert.equal(sentry.mode, "0600");
  assert.match(sentry.content, new RegExp(`^SENTRY_DSN=${SENTRY_DSN.replace(/[./]/g, "\\$&")}\nSENTRY_ENVIRONMENT=test\n$`, "m"));
  assert.equal(sentry.content, renderSentryEnvFile(settings()));
  assert.match(renderDeployConfig(settings()), new RegExp(`^sentry_env_file='${APP_PATHS.sentryEnvFile}'$`, "m"));
  assert.match(renderDeployConfig(settings()), new RegExp(`^env_files=\\('${LAYOUT.secrets}/app\\.env' '${LAYOUT.secrets}/app-secrets\\.env'\\)$`, "m"), "the DSN file is not one of the env files");
  for (const f of [APP_PATHS.envFile, APP_PATHS.secretEnvFile]) assert.doesNotMatch(file(role, f).content, /SENTRY/);
  assert.ok(!renderDeployConfig(settings()).includes(SENTRY_KEY), "deploy.conf names the file, never the DSN");

  for (const none of [settings({ sentryDsn: "" }), settings({ sentryDsn: undefined })]) {
    const r = appRole(none);
    assert.doesNotMatch(file(r, APP_PATHS.sentryEnvFile).content, /^[A-Z]/m, "comments only, so removing the key removes the DSN from the host");
    assert.match(renderDeployConfig(none), /^sentry_env_file=''$/m);
  }
  // The script: the file's env, and SENTRY_RELEASE (the tag) beside RELEASE, only with the file.
  const script = deployScript();
  assert.match(script, /if \[\[ -n \$sentry_env_file \]\]; then files\+=\("\$sentry_env_file"\); fi/);
  assert.match(script, /if \[\[ -n \$sentry_env_file \]\]; then release_options\+=\(--env "SENTRY_RELEASE=\$\(log_name "\$1"\)"\); fi/);
  assert.equal(script.match(/release_opts "\$want"\n/g)?.length, 2, "the migration and the service both get the release's options");
  assert.match(script, /--log-driver journald --log-opt labels=leaninfra\.release/);
});

test("sentryDsnProblem: https://<key>@<host>/<project id> accepted, anything else refused without quoting the DSN", () => {
  for (const ok of ["https://abc123@o1.ingest.sentry.io/42", "https://abc:def@sentry.example.com/7", "https://k1@sentry.example.com:8443/sentry/12", "https://e0f@glitchtip.example.org/1"]) {
    assert.equal(sentryDsnProblem(ok), undefined, ok);
  }
  const bad: Array<[string, RegExp]> = [
    ["http://abc@o1.ingest.sentry.io/42", /scheme "http:", not https:/],
    ["https://o1.ingest.sentry.io/42", /no public key/],
    ["https://abc@o1.ingest.sentry.io/", /does not end with \/<project id>/],
    ["https://abc@o1.ingest.sentry.io/project", /does not end with \/<project id>/],
    ["https://abc@o1.ingest.sentry.io/42?x=1", /query or fragment/],
    ["https://a%20b@o1.ingest.sentry.io/42", /key that is not letters and digits/],
    ["abc@o1.ingest.sentry.io/42", /is not a URL/],
    ["https://abc@o1.ingest.sentry.io/42 ", /without spaces/],
  ];
  for (const [dsn, expected] of bad) {
    const problem = sentryDsnProblem(dsn) ?? "";
    assert.match(problem, expected, dsn);
    assert.ok(!problem.includes("abc"), `the DSN is never quoted: ${problem}`);
  }
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
printf '[%s]' "\${env_files[@]}"; echo
printf '[%s]\\n' "$sentry_env_file"
printf '%s %s [%s]\\n' "$memory_mb" "$pids_limit" "\${capabilities[*]}"`;
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
        `[${LAYOUT.secrets}/app-sentry.env]`,
        "1536 512 [SETUID SETGID]",
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
  shellcheck("components/app/files/leaninfra-deploy.sh", deployScript());
  shellcheck("the app bundle", renderRoleBundle(appRole(settings())));
  shellcheck("the app bundle without registry, redis or migration", renderRoleBundle(appRole(settings({ appRegistryUser: "", appRegistryPassword: "", redisUrl: undefined, appMigrationCommand: [] }))));
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
  assert.deepEqual(appSettingsProblems(settings({ appRegistryUser: "", appRegistryPassword: "", redisUrl: undefined, appMigrationCommand: [], appEnv: [], appSecretEnv: "" })), []);
  assert.deepEqual(appSettingsProblems(settings({ appImage: "acme/shop" })), []);
  assert.deepEqual(appSettingsProblems(settings({ appImage: "localhost:5000/shop", appDrainSeconds: 0, appKeepImages: 1 })), []);
  assert.deepEqual(appSettingsProblems(settings({ appTag: `1.8.4@sha256:${"0123456789abcdef".repeat(4)}`, appCapabilities: [] })), []);
});

const BAD: [string, Partial<AppSettings>, RegExp][] = [
  ["image with a tag", { appImage: "ghcr.io/acme/shop:1.0" }, /^appImage .*carries a tag/],
  ["image with uppercase", { appImage: "ghcr.io/Acme/shop" }, /^appImage .*not a Docker repository name/],
  ["image with a digest", { appImage: "acme/shop@sha256:abc" }, /^appImage .*has a digest/],
  ["empty image", { appImage: "" }, /^appImage must be an image repository/],
  ["tag with a space", { appTag: "1.0 beta" }, /^appTag "1\.0 beta" is not a Docker tag/],
  ["tag starting with a dot", { appTag: ".hidden" }, /^appTag /],
  ["tag starting with a dash", { appTag: "-v" }, /^appTag "-v" is not a Docker tag/],
  ["digest too short", { appTag: "1.0@sha256:abc" }, /^appTag "1\.0@sha256:abc" is not a Docker tag, or a tag pinned to a digest/],
  ["digest in uppercase", { appTag: `1.0@sha256:${"A".repeat(64)}` }, /^appTag /],
  ["digest without tag", { appTag: `@sha256:${"a".repeat(64)}` }, /^appTag /],
  ["image starting with a dash", { appImage: "-acme/shop" }, /^appImage /],
  ["memory below 64 MB", { appMemoryMb: 32 }, /^appMemoryMb 32 must be a whole number of MB, at least 64/],
  ["pids limit 0", { appPidsLimit: 0 }, /^appPidsLimit 0 must be a whole number, 16 to 65536/],
  ["capability outside Docker's default set", { appCapabilities: ["SYS_ADMIN"] }, /^appCapabilities\[0\] "SYS_ADMIN" is not one of Docker's default capabilities \(accepted: AUDIT_WRITE, CHOWN/],
  ["capability with its CAP_ prefix", { appCapabilities: ["CAP_CHOWN"] }, /^appCapabilities\[0\] "CAP_CHOWN" is not one of/],
  ["capability twice", { appCapabilities: ["CHOWN", "CHOWN"] }, /^appCapabilities\[1\] "CHOWN" is listed twice/],
  ["user without password", { appRegistryPassword: "" }, /^appRegistryPassword goes together with appRegistryUser/],
  ["password without user", { appRegistryUser: "" }, /^appRegistryUser goes together with appRegistryPassword/],
  ["user with a space", { appRegistryUser: "acme bot" }, /^appRegistryUser "acme bot" must be a user name without spaces/],
  ["password with a newline", { appRegistryPassword: "a\nb" }, /^appRegistryPassword must be one line/],
  ["env entry without =", { appEnv: ["GREETING"] }, /^appEnv\[0\] "GREETING" is not KEY=value/],
  ["env key with a dash", { appEnv: ["OK=1", "MY-KEY=1"] }, /^appEnv\[1\] /],
  ["env value with a newline", { appEnv: ["A=1\n2"] }, /^appEnv\[0\] .*control characters or newlines/],
  ["env setting RELEASE", { appEnv: ["RELEASE=x"] }, /^appEnv\[0\] sets RELEASE, which LeanInfra provides itself/],
  ["env key twice", { appEnv: ["A=1", "A=2"] }, /^appEnv\[1\] sets A, which appEnv\[0\] already sets/],
  ["secretEnv overriding DATABASE_URL", { appSecretEnv: "X=1\nDATABASE_URL=postgresql://x@y/z" }, /^appSecretEnv line 2 sets DATABASE_URL, which LeanInfra provides itself/],
  ["secretEnv key also in env", { appEnv: ["API_TOKEN=plain"] }, /^appSecretEnv line 3 sets API_TOKEN, which appEnv\[0\] already sets/],
  ["secretEnv line without =", { appSecretEnv: "just-a-token-value" }, /^appSecretEnv line 1 is not KEY=value/],
  ["database URL with another scheme", { databaseUrl: "mysql://app@db/app" }, /^databaseUrl has scheme "mysql:"/],
  ["database URL with a space", { databaseUrl: "postgresql://app:p w@h/app" }, /^databaseUrl must be a URL without spaces/],
  ["redis URL with another scheme", { redisUrl: "http://cache:6379" }, /^redisUrl has scheme "http:"/],
  ["port 0", { appPort: 0 }, /^appPort 0 must be a port number/],
  ["port as text", { appPort: "8000" as unknown as number }, /^appPort "8000" must be a port number/],
  ["health path without /", { appHealthPath: "healthz" }, /^appHealthPath "healthz" must be a URL path/],
  ["health path with a quote", { appHealthPath: "/h'z" }, /^appHealthPath /],
  ["health timeout 0", { appHealthTimeoutSeconds: 0 }, /^appHealthTimeoutSeconds 0 must be a whole number of seconds, 1 to 3600/],
  ["drain 1.5 s", { appDrainSeconds: 1.5 }, /^appDrainSeconds 1\.5 must be a whole number/],
  ["keep no images", { appKeepImages: 0 }, /^appKeepImages 0 must be a whole number, 1 to 100/],
  ["migration not a list", { appMigrationCommand: "npm run migrate" as unknown as string[] }, /^appMigrationCommand must be a list of arguments/],
  ["migration with an empty argument", { appMigrationCommand: ["npm", ""] }, /^appMigrationCommand\[1\] must be a non-empty one-line string/],
  ["Sentry DSN over http", { sentryDsn: `http://${SENTRY_KEY}@o1.ingest.sentry.io/42` }, /^sentryDsn has scheme "http:", not https: .*\(accepted: https:\/\/<public key>@<host>\/<project id>, e\.g\. .*; the value is secret and not shown\)$/],
  ["Sentry DSN without project id", { sentryDsn: `https://${SENTRY_KEY}@o1.ingest.sentry.io` }, /^sentryDsn does not end with \/<project id> \(digits\)/],
  ["Sentry DSN without key", { sentryDsn: "https://o1.ingest.sentry.io/42" }, /^sentryDsn names no public key/],
  ["SENTRY_DSN in appSecretEnv", { appSecretEnv: `SENTRY_DSN=${SENTRY_DSN}` }, /^appSecretEnv line 1 sets SENTRY_DSN, which the deploy sets from the secret leaninfra:sentryDsn/],
  ["SENTRY_RELEASE in appEnv", { appEnv: ["SENTRY_RELEASE=x"] }, /^appEnv\[0\] sets SENTRY_RELEASE, which the deploy sets from the secret leaninfra:sentryDsn/],
  ["SENTRY_ENVIRONMENT in appEnv", { appEnv: ["SENTRY_ENVIRONMENT=prod"] }, /^appEnv\[0\] sets SENTRY_ENVIRONMENT/],
];

/** The stack-wide facts render gets beside the app's slice (the app reads none of them). */
const FACTS: StackFacts = { ...TEST_FACTS, stack: "test", staticPathPrefixes: [], volumeSizeGb: 10, memoryMb: 4096, vcpus: 2 };

/** The definition's render, called the way the stack calls it: the slice with the facts, and the inputs. */
function renderDefinition(s: AppSettings) {
  const { databaseUrl, redisUrl, appSecretEnv, appRegistryPassword, sentryDsn, stack: _stack, ...slice } = s;
  return appDefinition.render({ ...slice, ...FACTS }, { databaseUrl, redisUrl, appSecretEnv, appRegistryPassword, sentryDsn });
}

for (const [what, overrides, expected] of BAD) {
  test(`settings validation names the config key: ${what}`, () => {
    const problems = appSettingsProblems(settings(overrides));
    assert.ok(problems.some((p) => expected.test(p)), `expected a problem matching ${expected}, got:\n${problems.join("\n")}`);
    for (const build of [appRole, renderDefinition]) {
      assert.throws(
        () => build(settings(overrides)),
        (error: Error) => error instanceof SettingsError && error.role === "app" && /^app settings have \d+ problems?:\n {2}- /.test(error.message) && error.problems.some((p) => expected.test(p)),
      );
    }
    for (const p of problems) {
      assert.match(p, /^(app[A-Z][A-Za-z]*|databaseUrl|redisUrl|sentryDsn)(\[\d+\]| line \d+)? /, `a problem must start with the config key: ${p}`);
      for (const secret of [DB_PASSWORD, REGISTRY_PASSWORD, API_TOKEN, SENTRY_KEY]) assert.ok(!p.includes(secret), `a problem quotes a secret: ${p}`);
    }
  });
}

test("an empty appMigrationCommand means no migration", () => {
  assert.deepEqual(appSettingsProblems(settings({ appMigrationCommand: [] })), []);
  assert.match(renderDeployConfig(settings({ appMigrationCommand: [] })), /^migration_command=\(\)$/m);
});

test("a secretEnv line is never quoted back in a problem", () => {
  const problems = appSettingsProblems(settings({ appSecretEnv: "sk_live_51Hx-pasted-without-key\nTOKEN=a\u0007b" }));
  assert.equal(problems.length, 2, problems.join("\n"));
  for (const p of problems) assert.ok(!p.includes("sk_live") && !p.includes("a\u0007b"), p);
});

test("every problem is reported at once", () => {
  const problems = appSettingsProblems(settings({ appTag: "bad tag", appPort: 70000, appKeepImages: 0, appHealthPath: "x" }));
  assert.deepEqual(problems.map((p) => p.split(" ")[0]), ["appTag", "appPort", "appHealthPath", "appKeepImages"]);
});

test("the app definition: its config keys with defaults and descriptions, on when appImage is set, after postgres and proxy", () => {
  assert.equal(appDefinition.name, "app");
  assert.deepEqual(appDefinition.after, ["postgres", "proxy"]);
  assert.deepEqual(Object.keys(appDefinition.settings.shape), [
    "appImage", "appTag", "appPort", "appHealthPath", "appHealthTimeoutSeconds", "appDrainSeconds", "appKeepImages", "appEnv", "appMigrationCommand", "appRegistryUser",
    "appMemoryMb", "appPidsLimit", "appCapabilities",
  ]);
  const defaults = appDefinition.settings.parse({});
  assert.deepEqual(defaults, {
    appImage: "", appTag: "latest", appPort: 8080, appHealthPath: "/healthz", appHealthTimeoutSeconds: 90, appDrainSeconds: 15, appKeepImages: 5, appEnv: [], appMigrationCommand: [], appRegistryUser: "",
    appMemoryMb: 0, appPidsLimit: 1024, appCapabilities: [],
  });
  assert.equal(appDefinition.enabled?.({ ...defaults, ...FACTS }), false, "no image, no app");
  assert.equal(appDefinition.enabled?.({ ...defaults, appImage: "ghcr.io/acme/shop", ...FACTS }), true);
  assert.equal(appDefinition.settings.safeParse({ appKeepImages: 1 }).success, false);
  assert.equal(appDefinition.settings.safeParse({ appImage: "ghcr.io/acme/shop:1.2" }).success, false);
  assert.deepEqual(appDefinition.inputs?.databaseUrl, { from: "role", role: "postgres", offer: "databaseUrl" });
  assert.deepEqual(appDefinition.inputs?.redisUrl, { from: "role", role: "redis", offer: "redisUrl" });
  assert.equal(appDefinition.inputs?.appSecretEnv.from, "secretConfig");
  assert.equal(appDefinition.inputs?.appRegistryPassword.from, "secretConfig");
  assert.deepEqual({ ...appDefinition.inputs?.sentryDsn, description: "" }, { from: "secretConfig", key: "sentryDsn", description: "" });
});

test("the app definition renders the same role as appRole, from placeholders too", () => {
  assert.equal(renderRoleBundle(renderDefinition(settings())), renderRoleBundle(appRole(settings())));
  const slice = { ...appDefinition.settings.parse({ appImage: "ghcr.io/acme/shop", appTag: "1.0.0" }), ...FACTS };
  const offers = new Map([["postgres", { databaseUrl: `postgresql://app:${placeholderPassword("postgres-app-password")}@host.docker.internal:5432/app` }]]);
  const inputs = placeholderInputs(appDefinition as never, slice, offers, {});
  assert.deepEqual(inputs, { databaseUrl: offers.get("postgres")?.databaseUrl, redisUrl: undefined, appSecretEnv: "", appRegistryPassword: "", sentryDsn: "" });
  const role = appDefinition.render(slice, inputs as never);
  assert.doesNotMatch(role.files.find((f) => f.path === APP_PATHS.secretEnvFile)?.content ?? "", /REDIS_URL/, "no Redis, no REDIS_URL");
  // A registry user gets a placeholder password, so the config check passes without the secret.
  const withUser = { ...slice, appRegistryUser: "deploy" };
  const userInputs = placeholderInputs(appDefinition as never, withUser, offers, {});
  assert.equal(userInputs.appRegistryPassword, placeholderPassword("app-registry-password"));
  assert.doesNotThrow(() => appDefinition.render(withUser, userInputs as never));
  // The clear secret, when known, is what the check sees.
  assert.throws(() => appDefinition.render(withUser, placeholderInputs(appDefinition as never, withUser, offers, {}, { appRegistryPassword: "" }) as never), SettingsError);
});

test("the role's files/*.sh are shellcheck-clean on their own (shellcheck -x from the repository root)", () => {
  const dir = path.dirname(DEPLOY_SCRIPT_FILE);
  const scripts = fs.readdirSync(dir).filter((f) => f.endsWith(".sh"));
  assert.ok(scripts.includes("leaninfra-deploy.sh"));
  for (const script of scripts) {
    const result = spawnSync("shellcheck", ["-x", "-s", "bash", path.relative(REPO_ROOT, path.join(dir, script))], { cwd: REPO_ROOT, encoding: "utf8" });
    assert.ok(!result.error, `shellcheck could not run: ${result.error?.message}`);
    assert.equal(result.status, 0, `${script}:\n${result.stdout}${result.stderr}`);
  }
});

test("the app container's memory: 0 is half of the server's, and more than the server can spare is refused by key", () => {
  const slice = { ...appDefinition.settings.parse({ appImage: "ghcr.io/acme/shop" }), ...FACTS };
  const inputs = { databaseUrl: settings().databaseUrl, redisUrl: undefined, appSecretEnv: "", appRegistryPassword: "" };
  const conf = (role: ReturnType<typeof appRole>) => file(role, APP_PATHS.deployConf).content;
  assert.match(conf(appDefinition.render(slice, inputs)), /^memory_mb=2048$/m, "4096 MB server, appMemoryMb 0: 2048 MB");
  assert.match(conf(appDefinition.render({ ...slice, appMemoryMb: 3584 }, inputs)), /^memory_mb=3584$/m);
  assert.throws(
    () => appDefinition.render({ ...slice, appMemoryMb: 3585 }, inputs),
    (e: Error) => e instanceof SettingsError && /^appMemoryMb 3585 is more than this server can give the app \(accepted: at most 3584 MB: the server's 4096 MB less 512 MB/.test(e.problems[0]),
  );
  assert.match(conf(appRole(settings({ appCapabilities: [] }))), /^capabilities=\(\)$/m, "no capability unless declared");
});
