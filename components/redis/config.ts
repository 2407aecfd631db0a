import { createHash } from "node:crypto";
import { LAYOUT } from "../host/layout";

/**
 * Debian 13 ships both redis-server 8.0 (Redis Ltd., AGPLv3 among its licence choices) and
 * valkey-server 8.1 (the BSD fork). LeanInfra uses redis-server: the design and the essay name Redis,
 * the owner knows it, prometheus-redis-exporter speaks to it, and running it unmodified puts no
 * AGPL duty on the product. Valkey is protocol-compatible; switching means another package,
 * /etc/valkey/valkey.conf and the valkey-server unit.
 */
export const REDIS_PACKAGE = "redis-server";
export const REDIS_PORT = 6379;
/** The ACL user that may run every command: for the owner (sudo leaninfra-redis-cli) and LeanInfra's checks. */
export const REDIS_ADMIN_USER = "admin";

export const REDIS_PATHS = Object.freeze({
  config: "/etc/redis/redis.conf",
  /** On the data volume, so a queue's or sessions' AOF survives a rebuilt server. */
  dataDir: `${LAYOUT.data}/redis`,
  unit: "redis-server",
  systemdDropIn: "/etc/systemd/system/redis-server.service.d/leaninfra.conf",
  adminPassword: `${LAYOUT.secrets}/redis-admin.password`,
  adminCli: "/usr/local/sbin/leaninfra-redis-cli",
});

export interface RedisJobProfile {
  /** What the job is, in one line for the config file. */
  summary: string;
  /** Its eviction and persistence in a few words, for the redisJob key's description. */
  brief: string;
  maxmemoryPolicy: "allkeys-lru" | "volatile-lru" | "noeviction";
  /** none: lost on restart, as a cache may be; aof: every write appended, fsync'd every second. */
  persistence: "none" | "aof";
  /**
   * Lua scripts for the app: EVAL, EVALSHA, their read-only forms, SCRIPT LOAD and SCRIPT EXISTS, for a job
   * whose client libraries are built on them; FUNCTION, FCALL and the rest of SCRIPT never (REDIS_APP_ACL).
   */
  scripts: boolean;
  /** Why the job needs scripts, or does without them: the ACL's comment in redis.conf says it. */
  scriptsBecause: string;
  /** Commands the app's (default) user may not run on this job, beyond what it may never run (REDIS_APP_ACL). */
  deniedCommands: string[];
}

/**
 * One job per Redis, each with the eviction, persistence and commands that job needs. FLUSHDB only for a
 * cache, where clearing it is an ordinary operation (e.g. Django's cache.clear()); Lua scripts for a cache
 * and a queue, whose libraries run them, not for sessions, whose stores only read and write keys.
 */
export const REDIS_JOBS = Object.freeze({
  cache: {
    summary: "cache: any key may be evicted (least recently used first) and nothing is written to disk",
    brief: "evicts, no persistence",
    maxmemoryPolicy: "allkeys-lru",
    persistence: "none",
    scripts: true,
    scriptsBecause: "cache libraries count, rate-limit and lock with Lua scripts (django-redis's incr, rate-limit-redis, Laravel's cache locks)",
    deniedCommands: [],
  },
  sessions: {
    summary: "sessions: only keys with a TTL are evicted (least recently used first), kept on disk in the AOF",
    brief: "persistent, evicts only expiring keys",
    maxmemoryPolicy: "volatile-lru",
    persistence: "aof",
    scripts: false,
    scriptsBecause: "session stores read and write whole keys with a TTL (GET, SET EX, EXPIRE, DEL, SCAN) and run no script",
    deniedCommands: ["flushdb"],
  },
  queue: {
    summary: "queue: nothing is ever evicted (writes fail with OOM when full), kept on disk in the AOF",
    brief: "persistent, never evicts",
    maxmemoryPolicy: "noeviction",
    persistence: "aof",
    scripts: true,
    scriptsBecause: "queue libraries move jobs between lists and sets atomically with Lua scripts (BullMQ, Sidekiq)",
    deniedCommands: ["flushdb"],
  },
} satisfies Record<string, RedisJobProfile>);

/** A job Redis can have: a key of REDIS_JOBS. */
export type RedisJob = keyof typeof REDIS_JOBS;

/** The jobs in REDIS_JOBS' order: the one list every check and message reads. */
export const REDIS_JOB_NAMES = Object.freeze(Object.keys(REDIS_JOBS) as RedisJob[]);

/** "a, b or c", as a message lists choices. */
export function orList(words: readonly string[]): string {
  return words.length < 2 ? words.join("") : `${words.slice(0, -1).join(", ")} or ${words[words.length - 1]}`;
}

/** "cache, sessions or queue": the jobs as a message lists them. */
export const REDIS_JOB_LIST = orList(REDIS_JOB_NAMES);

export function isRedisJob(value: unknown): value is RedisJob {
  return typeof value === "string" && Object.prototype.hasOwnProperty.call(REDIS_JOBS, value);
}

/**
 * What the app's user may never run, whatever its job. Its rules start from every command (+@all) and lose:
 * - @admin: CONFIG, DEBUG, SHUTDOWN, MODULE, ACL changes, MONITOR, SAVE, REPLICAOF, CLIENT LIST and KILL...;
 * - @scripting: FUNCTION and FCALL (code stored in the server, kept in its AOF and run by anyone), SCRIPT FLUSH,
 *   KILL and DEBUG, and EVAL too unless the job has `scripts` (REDIS_SCRIPT_COMMANDS are then given back);
 * - FLUSHALL (every database at once), KEYS (one blocking walk over every key: SCAN does it in steps), SWAPDB,
 *   MIGRATE, RESTORE and RESTORE-ASKING (keys sent to another server, or written from a serialized payload).
 * Not the whole @dangerous category: the rest of it is INFO, which BullMQ and Sidekiq read at connect (the
 * server's version, BullMQ also its maxmemory-policy), and SORT, which reads only keys the user may read anyway.
 * A script's redis.call is checked against the same rules, so EVAL does not give back KEYS or FLUSHALL.
 */
export const REDIS_APP_DENIED = Object.freeze({
  categories: ["admin", "scripting"],
  commands: ["flushall", "keys", "swapdb", "migrate", "restore", "restore-asking"],
});

/** Lua scripts as client libraries run them (EVALSHA, EVAL when the server lost it, SCRIPT LOAD or EXISTS first). */
export const REDIS_SCRIPT_COMMANDS = Object.freeze(["eval", "evalsha", "eval_ro", "evalsha_ro", "script|load", "script|exists"]);

/** The app user's command rules for a job, in the order Redis applies them (a later rule wins). */
export function redisAppCommandRules(job: RedisJob): string {
  const profile = REDIS_JOBS[job];
  return [
    "+@all",
    ...REDIS_APP_DENIED.categories.map((c) => `-@${c}`),
    ...(profile.scripts ? REDIS_SCRIPT_COMMANDS.map((c) => `+${c}`) : []),
    ...[...REDIS_APP_DENIED.commands, ...profile.deniedCommands].map((c) => `-${c}`),
  ].join(" ");
}

/**
 * Redis's maxmemory in MB. Given (> 0) it is used as is; 0 derives a tenth of the server's RAM, at
 * least 64 MB: PostgreSQL takes a quarter for shared_buffers and up to another quarter for queries,
 * the app (two releases during a deploy) and monitoring need theirs, and the page cache gets the rest.
 * A tenth also leaves room for the copy-on-write fork of an AOF rewrite, so the kernel's default
 * overcommit heuristic suffices (vm.overcommit_memory stays 0, which PostgreSQL prefers).
 * 2, 4, 8, 16, 32 GB give 204, 409, 819, 1638, 3276 MB.
 */
export function redisMaxMemoryMb(memoryMb: number, maxMemoryMb = 0): number {
  if (maxMemoryMb > 0) return maxMemoryMb;
  return Math.max(64, Math.floor(memoryMb / 10));
}

/** How Redis stores a password in an ACL rule: '#' and its SHA-256, so redis.conf holds no password. */
export function redisPasswordHash(password: string): string {
  return createHash("sha256").update(password, "utf8").digest("hex");
}

export interface RedisConfSettings {
  redisJob: RedisJob;
  /** maxmemory in MB as Redis gets it: redisMaxMemoryMb, or what redisMaxMemoryMb() derives for 0. */
  maxMemoryMb: number;
  password: string;
  adminPassword: string;
}

/** A "# - " list item of a config comment, wrapped at 110 columns. */
function bullet(text: string): string {
  const lines = [""];
  for (const word of text.split(" ")) {
    if (lines[lines.length - 1] && lines[lines.length - 1].length + word.length + 5 > 110) lines.push("");
    lines[lines.length - 1] += (lines[lines.length - 1] ? " " : "") + word;
  }
  return lines.map((line, i) => `${i === 0 ? "# - " : "#   "}${line}`).join("\n");
}

/** The whole /etc/redis/redis.conf: short enough to read in one screen. */
export function renderRedisConf(s: RedisConfSettings): string {
  const job = REDIS_JOBS[s.redisJob];
  const persistence =
    job.persistence === "none"
      ? `# A cache is rebuilt from the database: no RDB snapshots, no AOF.
save ""
appendonly no`
      : `# Every write goes to the append-only file, fsync'd once a second (at most a second lost in a crash);
# RDB snapshots are off: the AOF (with its RDB preamble) is the one copy on disk.
save ""
appendonly yes
appendfsync everysec
appendfilename "appendonly.aof"
appenddirname "appendonlydir"
aof-use-rdb-preamble yes`;
  const upper = (commands: readonly string[], last: "and" | "or") => {
    const words = commands.map((c) => c.toUpperCase().replace("|", " "));
    return `${words.slice(0, -1).join(", ")} ${last} ${words[words.length - 1]}`;
  };
  const scripts = job.scripts
    ? `FUNCTION, FCALL and SCRIPT FLUSH, KILL or DEBUG; scripts are allowed (${upper(REDIS_SCRIPT_COMMANDS, "and")}): ${job.scriptsBecause};`
    : `the scripting ones (EVAL, EVALSHA, SCRIPT, FUNCTION, FCALL): ${job.scriptsBecause};`;
  const denied = `${upper([...REDIS_APP_DENIED.commands, ...job.deniedCommands], "or")} (SCAN walks the keys without blocking Redis).`;
  return `# Managed by LeanInfra (role "redis"); edit the role in the repository, not this file.
# Redis has one job here, ${job.summary}.

# Loopback and the Docker bridge for the app's container. "-": an address that does not exist yet (the
# bridge before Docker starts) is skipped instead of stopping Redis; the systemd drop-in orders it after Docker.
bind 127.0.0.1 -${LAYOUT.dockerBridge.address}
protected-mode yes
port ${REDIS_PORT}
tcp-backlog 511
timeout 0
tcp-keepalive 300
daemonize no
pidfile /run/redis/redis-server.pid
loglevel notice
logfile /var/log/redis/redis-server.log
databases 16
always-show-logo no
dir ${REDIS_PATHS.dataDir}

maxmemory ${s.maxMemoryMb}mb
maxmemory-policy ${job.maxmemoryPolicy}

${persistence}

# Users. Passwords are stored as SHA-256 (#...), never in clear. The app logs in as "default" with its
# password alone (redis://:PASSWORD@host:${REDIS_PORT}) and may run every command but:
# - the @admin ones (CONFIG, DEBUG, SHUTDOWN, MODULE, ACL changes, MONITOR, SAVE, CLIENT LIST...);
${bullet(scripts)}
${bullet(denied)}
# A script's commands are checked against the same rules.
# "${REDIS_ADMIN_USER}" may run everything: sudo leaninfra-redis-cli on the server.
user default reset on #${redisPasswordHash(s.password)} ~* &* ${redisAppCommandRules(s.redisJob)}
user ${REDIS_ADMIN_USER} reset on #${redisPasswordHash(s.adminPassword)} ~* &* +@all
`;
}

/** Start after Docker and with the data volume mounted; allow writes to the data directory. */
export function renderRedisSystemdDropIn(): string {
  return `# Managed by LeanInfra (role "redis"); edit the role in the repository, not this file.
[Unit]
# The Docker bridge (${LAYOUT.dockerBridge.address}) must exist before Redis binds its addresses.
After=docker.service
# The data directory is on the volume: never start against an empty mount point on the root disk.
RequiresMountsFor=${REDIS_PATHS.dataDir}

[Service]
# Debian's unit makes the file system read-only (ProtectSystem=strict) except Redis's own directories.
ReadWritePaths=${REDIS_PATHS.dataDir}
`;
}

/** redis-cli as the admin user, for root only: the password comes from a root-only file via the environment. */
export function renderRedisAdminCli(): string {
  return `#!/bin/sh
# Managed by LeanInfra (role "redis"). redis-cli as Redis's "${REDIS_ADMIN_USER}" user, which may run every
# command (CONFIG, FLUSHALL, INFO...), unlike the app. Root only, e.g.: sudo leaninfra-redis-cli INFO memory
set -eu
REDISCLI_AUTH=$(cat ${REDIS_PATHS.adminPassword})
export REDISCLI_AUTH
exec redis-cli -h 127.0.0.1 -p ${REDIS_PORT} --user ${REDIS_ADMIN_USER} "$@"
`;
}
