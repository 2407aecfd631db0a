import assert from "node:assert/strict";
import test from "node:test";
import { renderRoleBundle } from "../../components/host/bundle";
import {
  REDIS_JOBS,
  REDIS_PATHS,
  RedisJob,
  RedisSettings,
  redisMaxMemoryMb,
  redisPasswordHash,
  redisRole,
  renderRedisAdminCli,
  renderRedisConf,
  renderRedisSystemdDropIn,
} from "../../components/redis";

const PASSWORD = "r3d1s-App-Secret:\\'x9";
const ADMIN_PASSWORD = "r3d1s-Admin-Secret-77";
const settings = (over: Partial<RedisSettings> = {}): RedisSettings => ({
  job: "cache",
  memoryMb: 8192,
  maxMemoryMb: 0,
  password: PASSWORD,
  adminPassword: ADMIN_PASSWORD,
  ...over,
});
const conf = (job: RedisJob, maxMemoryMb = 819) => renderRedisConf({ job, maxMemoryMb, password: PASSWORD, adminPassword: ADMIN_PASSWORD });
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

test("ACL: the app (default user) loses @admin and FLUSHALL everywhere, FLUSHDB except for a cache; admin may run everything", () => {
  const appHash = redisPasswordHash(PASSWORD);
  const adminHash = redisPasswordHash(ADMIN_PASSWORD);
  assert.deepEqual(directive(conf("cache"), "user"), [
    `user default reset on #${appHash} ~* &* +@all -@admin -flushall`,
    `user admin reset on #${adminHash} ~* &* +@all`,
  ]);
  for (const job of ["sessions", "queue"] as const) {
    assert.deepEqual(directive(conf(job), "user")[0], `user default reset on #${appHash} ~* &* +@all -@admin -flushall -flushdb`);
  }
  assert.match(appHash, /^[0-9a-f]{64}$/);
});

test("no password is ever in redis.conf, only SHA-256 hashes", () => {
  for (const job of Object.keys(REDIS_JOBS) as RedisJob[]) {
    const text = conf(job);
    assert.ok(!text.includes(PASSWORD) && !text.includes(ADMIN_PASSWORD), job);
  }
});

test("redisRole: files, modes and the admin password only in its root-only file", () => {
  const role = redisRole(settings({ job: "sessions" }));
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
  for (const job of [undefined, ""]) {
    assert.throws(
      () => redisRole(settings({ job: job as unknown as RedisJob })),
      /redisRole: settings\.job is missing\. Redis runs here only with one named job: cache, sessions or queue \(leaninfra:redisJob\)/,
    );
  }
  assert.throws(() => redisRole(settings({ job: "search" as RedisJob })), /job "search" must be cache, sessions or queue/);
});

test("redisRole lists every problem with its settings at once", () => {
  assert.throws(
    () => redisRole({ job: "queue", memoryMb: 8192, maxMemoryMb: 5000, password: "same-password-1234", adminPassword: "same-password-1234" }),
    (error: Error) => {
      assert.match(error.message, /maxMemoryMb 5000 must be 0 \(derive 819 MB from RAM\) or 1\.\.4096/);
      assert.match(error.message, /adminPassword must differ from password/);
      return true;
    },
  );
  assert.throws(() => redisRole(settings({ password: "has space in it 123" })), /password must be 16 or more printable ASCII characters without spaces/);
  assert.throws(() => redisRole(settings({ memoryMb: 512 })), /memoryMb 512/);
});
