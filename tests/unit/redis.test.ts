import assert from "node:assert/strict";
import test from "node:test";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { renderRoleBundle } from "../../components/host/bundle";
import { SettingsError, StackFacts, placeholderInputs, placeholderPassword } from "../../components/host/define";
import {
  REDIS_JOBS,
  REDIS_JOB_NAMES,
  REDIS_PATHS,
  RedisJob,
  RedisSettings,
  redisMaxMemoryMb,
  redisAppCommandRules,
  redisPasswordHash,
  redisRole,
  role as redisDefinition,
  renderRedisAdminCli,
  renderRedisConf,
  renderRedisSystemdDropIn,
} from "../../components/redis";
import { assertShellcheckClean } from "../lib/shellcheck";
import { TEST_FACTS } from "../lib/facts";

const PASSWORD = "r3d1s-App-Secret:\\'x9";
const ADMIN_PASSWORD = "r3d1s-Admin-Secret-77";
const settings = (over: Partial<RedisSettings> = {}): RedisSettings => ({
  redisJob: "cache",
  memoryMb: 8192,
  redisMaxMemoryMb: 0,
  password: PASSWORD,
  adminPassword: ADMIN_PASSWORD,
  ...over,
});
const conf = (job: RedisJob, maxMemoryMb = 819) => renderRedisConf({ redisJob: job, maxMemoryMb, password: PASSWORD, adminPassword: ADMIN_PASSWORD });
const directives = (text: string) => text.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"));
const directive = (text: string, name: string) => directives(text).filter((l) => l.split(" ")[0] === name);

test("redisMaxMemoryMb: a tenth of RAM (at least 64 MB) at 2, 4, 8, 16 and 32 GB, or the given value", () => {
  assert.deepEqual(
    [2, 4, 8, 16, 32].map((gb) => redisMaxMemoryMb(gb * 1024)),
    [204, 409, 819, 1638, 3276],
  );
  assert.equal(redisMaxMemoryMb(1024), 102);
  assert.equal(redisMaxMemoryMb(8192, 256), 256);
});

test("each job gets its eviction policy and persistence", () => {
  const expected: Record<RedisJob, string[]> = {
    cache: ["maxmemory-policy allkeys-lru", 'save ""', "appendonly no"],
    sessions: ["maxmemory-policy volatile-lru", 'save ""', "appendonly yes", "appendfsync everysec"],
    queue: ["maxmemory-policy noeviction", 'save ""', "appendonly yes", "appendfsync everysec"],
  };
  for (const job of Object.keys(REDIS_JOBS) as RedisJob[]) {
    const text = conf(job);
    for (const line of expected[job]) assert.deepEqual(directive(text, line.split(" ")[0]), [line], `${job}: ${line}`);
    assert.deepEqual(directive(text, "maxmemory"), ["maxmemory 819mb"]);
    assert.match(text, new RegExp(`^# Redis has one job here, ${job}: `, "m"));
  }
  assert.deepEqual(directive(conf("cache"), "appendfsync"), [], "a cache writes nothing to disk");
});

test("redis.conf binds loopback and (optionally) the Docker bridge, with protected mode and the data directory on the volume", () => {
  const text = conf("queue");
  assert.deepEqual(directive(text, "bind"), ["bind 127.0.0.1 -172.17.0.1"]);
  assert.deepEqual(directive(text, "protected-mode"), ["protected-mode yes"]);
  assert.deepEqual(directive(text, "port"), ["port 6379"]);
  assert.deepEqual(directive(text, "dir"), ["dir /srv/data/redis"]);
  assert.deepEqual(directive(text, "daemonize"), ["daemonize no"]);
  assert.deepEqual(directive(text, "requirepass"), [], "the ACL default user carries the password");
});

test("ACL: the app (default user) loses @admin, scripting but the job's Lua, FLUSHALL, KEYS, SWAPDB, MIGRATE, RESTORE; FLUSHDB only on a cache; admin may run everything", () => {
  const appHash = redisPasswordHash(PASSWORD);
  const adminHash = redisPasswordHash(ADMIN_PASSWORD);
  const never = "-flushall -keys -swapdb -migrate -restore -restore-asking";
  const lua = "+eval +evalsha +eval_ro +evalsha_ro +script|load +script|exists";
  // Written out per job: the rules Redis gets, in the order it applies them (a later rule wins).
  const expected: Record<RedisJob, string> = {
    cache: `+@all -@admin -@scripting ${lua} ${never}`,
    sessions: `+@all -@admin -@scripting ${never} -flushdb`,
    queue: `+@all -@admin -@scripting ${lua} ${never} -flushdb`,
  };
  for (const job of REDIS_JOB_NAMES) {
    assert.deepEqual(directive(conf(job), "user"), [`user default reset on #${appHash} ~* &* ${expected[job]}`, `user admin reset on #${adminHash} ~* &* +@all`], job);
    assert.equal(redisAppCommandRules(job), expected[job]);
    assert.equal(REDIS_JOBS[job].scripts, expected[job].includes("+eval "), `${job}: the profile's scripts flag is what the rules say`);
  }
  assert.match(appHash, /^[0-9a-f]{64}$/);
});

test("redis.conf says per job which commands the app may not run, and why it has Lua scripts or not", () => {
  const comment = (job: RedisJob) => conf(job).split("\n").filter((l) => l.startsWith("# ")).join("\n").replace(/\n# {3}/g, " ");
  for (const job of REDIS_JOB_NAMES) {
    const text = comment(job);
    assert.ok(text.includes(REDIS_JOBS[job].scriptsBecause), `${job}: ${text}`);
    assert.match(text, /^# - FLUSHALL, KEYS, SWAPDB, MIGRATE, RESTORE/m, job);
    assert.equal(/FLUSHDB \(SCAN/.test(text), job !== "cache", `${job}: FLUSHDB listed as denied`);
    for (const line of conf(job).split("\n").filter((l) => /^# ( |-) /.test(l))) assert.ok(line.length <= 110, `${job}: longer than 110 columns: ${line}`);
  }
  assert.match(comment("queue"), /scripts are allowed \(EVAL, EVALSHA, EVAL_RO, EVALSHA_RO, SCRIPT LOAD and SCRIPT EXISTS\): queue libraries/);
  assert.match(comment("sessions"), /^# - the scripting ones \(EVAL, EVALSHA, SCRIPT, FUNCTION, FCALL\): session stores/m);
});

test("no password is ever in redis.conf, only SHA-256 hashes", () => {
  for (const job of Object.keys(REDIS_JOBS) as RedisJob[]) {
    const text = conf(job);
    assert.ok(!text.includes(PASSWORD) && !text.includes(ADMIN_PASSWORD), job);
  }
});

test("redisRole: files, modes and the admin password only in its root-only file", () => {
  const role = redisRole(settings({ redisJob: "sessions" }));
  assert.equal(role.name, "redis");
  assert.deepEqual(role.packages, ["redis-server", "iproute2"]);
  assert.deepEqual(
    role.files.map((f) => `${f.path} ${f.mode} ${f.owner ?? "root"}:${f.group ?? "-"}`),
    [
      "/etc/systemd/system/redis-server.service.d/leaninfra.conf 0644 root:-",
      "/etc/redis/redis.conf 0640 root:redis",
      "/etc/leaninfra/secrets/redis-admin.password 0600 root:-",
      "/usr/local/sbin/leaninfra-redis-cli 0755 root:-",
    ],
  );
  assert.deepEqual(role.directories.find((d) => d.path === REDIS_PATHS.dataDir), { path: "/srv/data/redis", mode: "0750", owner: "redis" });
  const bundle = renderRoleBundle(role);
  assert.ok(!bundle.includes(PASSWORD), "the app's password never reaches the server, only its hash");
  assert.equal(bundle.split(ADMIN_PASSWORD).length - 1, 1, "the admin password once: its file's heredoc");
  for (const f of role.files) {
    if (f.onChange) assert.match(f.onChange, /\[ -d \/run\/systemd\/system \]/, `${f.path}: handlers work without systemd`);
  }
  assert.match(renderRedisSystemdDropIn(), /^After=docker\.service$/m);
  assert.match(renderRedisSystemdDropIn(), /^ReadWritePaths=\/srv\/data\/redis$/m);
  assert.match(renderRedisAdminCli(), /REDISCLI_AUTH=\$\(cat \/etc\/leaninfra\/secrets\/redis-admin\.password\)/);
  assert.match(renderRedisAdminCli(), /--user admin "\$@"$/m);
  assert.match(role.description, /\(sessions\), maxmemory 819 MB/);
});

test("redisRole refuses Redis without a named job, and says why", () => {
  for (const job of [undefined, "", "none"]) {
    assert.throws(
      () => redisRole(settings({ redisJob: job as unknown as RedisJob })),
      /redisJob is missing \((""|"none")\)\. Redis runs here only with one named job: cache, sessions or queue \(leaninfra:redisJob\)/,
    );
  }
  assert.throws(() => redisRole(settings({ redisJob: "search" as RedisJob })), /redisJob "search" must be cache, sessions or queue/);
  assert.throws(() => redisRole(settings({ redisJob: "none" })), SettingsError);
});

test("redisRole lists every problem with its settings at once", () => {
  assert.throws(
    () => redisRole({ redisJob: "queue", memoryMb: 8192, redisMaxMemoryMb: 5000, password: "same-password-1234", adminPassword: "same-password-1234" }),
    (error: Error) => {
      assert.ok(error instanceof SettingsError, `a SettingsError, not ${error.name}`);
      assert.match(error.message, /redisMaxMemoryMb 5000 must be 0 \(derive 819 MB from RAM\) or 1\.\.4096/);
      assert.match(error.message, /adminPassword must differ from password/);
      return true;
    },
  );
  assert.throws(() => redisRole(settings({ password: "has space in it 123" })), /password must be 16 or more printable ASCII characters without spaces/);
  assert.throws(() => redisRole(settings({ memoryMb: 512 })), /memoryMb 512/);
});

const FILES = path.join(__dirname, "../../components/redis/files");

test("the redis role's script files are shellcheck-clean on their own", () => {
  const files = fs.readdirSync(FILES).filter((f) => f.endsWith(".sh"));
  assert.deepEqual(files.sort(), ["apply.sh", "health-check.sh", "validate.sh"]);
  for (const file of files) {
    const result = spawnSync("shellcheck", ["-x", "-s", "bash", path.join("components/redis/files", file)], { cwd: path.join(__dirname, "../.."), encoding: "utf8" });
    if (result.error) assert.fail(`shellcheck could not run (${result.error.message})`);
    assert.equal(result.status, 0, `shellcheck found problems in ${file}:\n${result.stdout}${result.stderr}`);
  }
});

for (const job of REDIS_JOB_NAMES) {
  test(`the redis role's rendered scripts and bundle are shellcheck-clean (job ${job}), and the health check wants the job's policy`, () => {
    const role = redisRole(settings({ redisJob: job, password: "app-p4ss'\"$(x)`y`", adminPassword: "adm-p4ss'\"$(x)`y`" }));
    for (const name of ["validate", "apply", "healthCheck"] as const) {
      assert.doesNotMatch(role[name]!, /@settings-begin|@settings-end/, `${name}: the settings block is rendered`);
      assertShellcheckClean(`the rendered ${name} (${job})`, role[name]!);
    }
    assertShellcheckClean(`the redis bundle (${job})`, renderRoleBundle(role));
    assert.match(role.healthCheck!, new RegExp(`^readonly policy='${REDIS_JOBS[job].maxmemoryPolicy}'$`, "m"));
  });
}

/** The stack-wide facts render gets beside the redis slice (it reads memoryMb). */
const FACTS: StackFacts = { ...TEST_FACTS, stack: "test", staticPathPrefixes: [], volumeSizeGb: 10 };

const sliceWithFacts = (raw: Record<string, unknown> = {}) => ({ ...redisDefinition.settings.parse(raw), ...FACTS });
const INPUTS = { password: placeholderPassword("redis-app-password"), adminPassword: placeholderPassword("redis-admin-password") };

test("the redis definition: redisJob none (no Redis) by default, one list of jobs, two generated passwords", () => {
  assert.equal(redisDefinition.name, "redis");
  assert.deepEqual(redisDefinition.after, ["base", "docker"]);
  assert.deepEqual(redisDefinition.settings.parse({}), { redisJob: "none", redisMaxMemoryMb: 0 });
  assert.deepEqual(redisDefinition.settings.shape.redisJob.unwrap().options, ["none", "cache", "sessions", "queue"]);
  assert.deepEqual(REDIS_JOB_NAMES, Object.keys(REDIS_JOBS));
  const description = redisDefinition.settings.shape.redisJob.description!;
  assert.match(description, /none \(no Redis; add Redis only when you can name its one job\)/);
  for (const job of REDIS_JOB_NAMES) assert.ok(description.includes(`${job} (${REDIS_JOBS[job].brief})`), `${job} is described`);
  assert.ok(redisDefinition.settings.shape.redisMaxMemoryMb.description);
  assert.equal(redisDefinition.settings.safeParse({ redisJob: "pubsub" }).success, false);
  assert.equal(redisDefinition.enabled!(sliceWithFacts()), false, "none: no Redis");
  for (const job of REDIS_JOB_NAMES) assert.equal(redisDefinition.enabled!(sliceWithFacts({ redisJob: job })), true, job);
  assert.deepEqual(redisDefinition.inputs, {
    password: { from: "password", resource: "redis-app-password" },
    adminPassword: { from: "password", resource: "redis-admin-password" },
  });
  const s = sliceWithFacts({ redisJob: "queue" });
  assert.deepEqual(placeholderInputs(redisDefinition as never, s, new Map(), {}), INPUTS);
});

test("the redis definition offers the app's REDIS_URL and port, and renders the role from its slice", () => {
  const s = sliceWithFacts({ redisJob: "queue", redisMaxMemoryMb: 300 });
  assert.deepEqual(redisDefinition.offers!(s, { password: "Secret123", adminPassword: "Admin456" }), {
    redisUrl: "redis://default:Secret123@host.docker.internal:6379/0",
    redisPort: "6379",
  });
  const role = redisDefinition.render(s, INPUTS);
  assert.match(role.description, /\(queue\), maxmemory 300 MB/);
  assert.deepEqual(role, redisRole({ redisJob: "queue", memoryMb: 8192, redisMaxMemoryMb: 300, ...INPUTS }));
});

// Each refusal of render: what the stack's config check reports as leaninfra:<key>.
const REFUSALS: [what: string, raw: Record<string, unknown>, facts: Partial<StackFacts>, inputs: Partial<typeof INPUTS>, key: string, says: string][] = [
  ["a maxmemory above half the RAM", { redisJob: "cache", redisMaxMemoryMb: 5000 }, {}, {}, "redisMaxMemoryMb", "5000 must be 0 (derive 819 MB from RAM) or 1..4096"],
  ["rendering with no job", { redisJob: "none" }, {}, {}, "redisJob", "is missing"],
  ["less RAM than a server has", { redisJob: "cache" }, { memoryMb: 512 }, {}, "memoryMb", "512 must be the server's RAM in MB, at least 1024"],
  ["a short app password", { redisJob: "cache" }, {}, { password: "short" }, "password", "must be 16 or more printable ASCII characters"],
  ["the same password twice", { redisJob: "cache" }, {}, { password: INPUTS.adminPassword }, "adminPassword", "must differ from password"],
];

for (const [what, raw, facts, inputs, key, says] of REFUSALS) {
  test(`the redis definition's render refuses ${what} with a SettingsError starting with ${key}`, () => {
    assert.throws(
      () => redisDefinition.render({ ...sliceWithFacts(raw), ...facts }, { ...INPUTS, ...inputs }),
      (error: Error) => {
        assert.ok(error instanceof SettingsError, `a SettingsError, not ${error.name}: ${error.message}`);
        assert.equal(error.role, "redis");
        assert.ok(error.problems.some((p) => p.startsWith(`${key} `) && p.includes(says)), `${key} ... ${says}: ${error.problems.join("; ")}`);
        for (const problem of error.problems) assert.match(problem, /^(redisJob|redisMaxMemoryMb|memoryMb|password|adminPassword) /, problem);
        return true;
      },
    );
  });
}
