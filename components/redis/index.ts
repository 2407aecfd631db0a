import * as path from "node:path";
import { z } from "zod";
import { defineRole, refuseProblems } from "../host/define";
import { LAYOUT } from "../host/layout";
import { GENERATED_SECRET } from "../host/names";
import { HostRole } from "../host/role";
import { renderScript } from "../host/script";
import {
  REDIS_ADMIN_USER,
  REDIS_JOBS,
  REDIS_JOB_LIST,
  REDIS_JOB_NAMES,
  REDIS_PACKAGE,
  REDIS_PATHS as R,
  REDIS_PORT,
  RedisJob,
  isRedisJob,
  orList,
  redisMaxMemoryMb,
  renderRedisAdminCli,
  renderRedisConf,
  renderRedisSystemdDropIn,
} from "./config";

export * from "./config";

/** The redisJob key: one of the jobs, or none (no Redis). */
export type RedisJobSetting = RedisJob | "none";

export interface RedisSettings {
  /** Redis's one job; none (no Redis) is refused here: the role runs only with a job. */
  redisJob: RedisJobSetting;
  /** RAM of the server type in MB (prices.json memoryGb * 1024). */
  memoryMb: number;
  /** maxmemory in MB; 0 derives it from memoryMb (see redisMaxMemoryMb). */
  redisMaxMemoryMb: number;
  /** The app's password (the ACL default user): a generated secret, stored only as its SHA-256. */
  password: string;
  /** The admin user's password: a second generated secret, in a root-only file for leaninfra-redis-cli. */
  adminPassword: string;
}

/** Problems with the settings, each starting with its config key; empty when the role can be rendered. */
export function redisSettingsProblems(s: RedisSettings): string[] {
  const problems: string[] = [];
  const add = (key: string, message: string) => problems.push(`${key} ${message}`);
  const job: unknown = s.redisJob;
  if (job === undefined || job === "" || job === "none") {
    add(
      "redisJob",
      `is missing (${JSON.stringify(job ?? "")}). Redis runs here only with one named job: ${REDIS_JOB_LIST} (leaninfra:redisJob). ` +
        "Add Redis when you can point to that job; until then redisJob stays none (no Redis).",
    );
  } else if (!isRedisJob(job)) {
    add("redisJob", `${JSON.stringify(job)} must be ${REDIS_JOB_LIST} (or none: no Redis)`);
  }
  if (!Number.isInteger(s.memoryMb) || s.memoryMb < 1024) add("memoryMb", `${s.memoryMb} must be the server's RAM in MB, at least 1024`);
  const half = Math.floor(s.memoryMb / 2);
  if (!Number.isInteger(s.redisMaxMemoryMb) || s.redisMaxMemoryMb < 0 || s.redisMaxMemoryMb > half) {
    add(
      "redisMaxMemoryMb",
      `${s.redisMaxMemoryMb} must be 0 (derive ${redisMaxMemoryMb(s.memoryMb)} MB from RAM) or 1..${half}: more than half of the ` +
        `server's ${s.memoryMb} MB leaves too little for PostgreSQL and the app`,
    );
  }
  // Printable ASCII without spaces: safe in a redis:// URL once percent-encoded, and in the root-only file.
  for (const key of ["password", "adminPassword"] as const) {
    if (typeof s[key] !== "string" || !GENERATED_SECRET.test(s[key])) {
      add(key, "must be 16 or more printable ASCII characters without spaces (generate it with @pulumi/random RandomPassword)");
    }
  }
  if (typeof s.password === "string" && s.password === s.adminPassword) add("adminPassword", "must differ from password");
  return problems;
}

// A restart applies redis.conf and the drop-in (Redis has no reload); daemon-reload first for the drop-in.
const restartRedis = `if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl restart ${R.unit}
else
  echo "systemd is not running here: skipped systemctl restart ${R.unit}"
fi`;

/** The role's scripts: validate, apply and health-check, each a snippet file with its settings block. */
const script = (name: string, settings: Parameters<typeof renderScript>[1]) => renderScript(path.join(__dirname, "files", name), settings);

/**
 * Redis for exactly one job (cache, sessions or queue): Debian 13's redis-server on loopback and the
 * Docker bridge, password-protected, with the eviction and persistence of its job. Refuses bad settings
 * with a SettingsError.
 */
export function redisRole(settings: RedisSettings): HostRole {
  refuseProblems("redis", redisSettingsProblems(settings));
  const job = settings.redisJob as RedisJob;
  const maxMemoryMb = redisMaxMemoryMb(settings.memoryMb, settings.redisMaxMemoryMb);
  return {
    name: "redis",
    description: `Redis for one job (${job}), maxmemory ${maxMemoryMb} MB, loopback and Docker only, password required`,
    // iproute2: ip and ss, to notice a Docker bridge that appeared after Redis started.
    packages: [REDIS_PACKAGE, "iproute2"],
    directories: [
      { path: LAYOUT.secrets, mode: "0700" },
      { path: R.dataDir, mode: "0750", owner: "redis" },
      { path: "/etc/systemd/system/redis-server.service.d", mode: "0755" },
    ],
    files: [
      { path: R.systemdDropIn, mode: "0644", content: renderRedisSystemdDropIn(), onChange: restartRedis },
      {
        path: R.config,
        mode: "0640",
        group: "redis",
        content: renderRedisConf({ redisJob: job, maxMemoryMb, password: settings.password, adminPassword: settings.adminPassword }),
        onChange: restartRedis,
      },
      { path: R.adminPassword, mode: "0600", content: settings.adminPassword },
      { path: R.adminCli, mode: "0755", content: renderRedisAdminCli() },
    ],
    validate: script("validate.sh", { config: R.config }),
    apply: script("apply.sh", { unit: R.unit, port: REDIS_PORT, docker_bridge: LAYOUT.dockerBridge.address }),
    healthCheck: script("health-check.sh", {
      config: R.config,
      unit: R.unit,
      admin_cli: R.adminCli,
      admin_user: REDIS_ADMIN_USER,
      policy: REDIS_JOBS[job].maxmemoryPolicy,
    }),
  };
}

/** The redis role: off unless redisJob names a job; two generated passwords; offers the app its URL. */
export const role = defineRole({
  name: "redis",
  after: ["base", "docker"],
  budget: {
    monthlyCost: { amount: 0, currency: "EUR", what: "Runs on the server: Redis with maxmemory capped (redisMaxMemoryMb, by default a share of RAM)." },
    secrets: [
      { name: "redis-app-password", livesIn: "Pulumi state (RandomPassword); on the server as its SHA-256 in Redis's ACL, and in the app's root-only env file" },
      { name: "redis-admin-password", livesIn: "Pulumi state (RandomPassword); on the server in a root-only file for leaninfra-redis-cli" },
    ],
    alerts: ["RedisMemoryNearCap", "TargetDown", "SystemdUnitFailed"],
    failurePoints: [
      "Redis down: its one job (redisJob) fails: sessions log users out, a cache misses, a queue stops taking work.",
      "maxmemory reached: keys are evicted or writes refused, as the job's eviction policy says.",
    ],
  },
  settings: z.object({
    redisJob: z
      .enum(["none", ...REDIS_JOB_NAMES])
      .default("none")
      .describe(
        `Redis's one job: none (no Redis; add Redis only when you can name its one job), ${orList(REDIS_JOB_NAMES.map((job) => `${job} (${REDIS_JOBS[job].brief})`))}.`,
      ),
    redisMaxMemoryMb: z
      .number()
      .int()
      .min(0)
      .max(1048576)
      .default(0)
      .describe("Redis maxmemory in MB; 0 derives it from the server's memory."),
  }),
  enabled: (s) => s.redisJob !== "none",
  inputs: {
    password: { from: "password", resource: "redis-app-password" },
    adminPassword: { from: "password", resource: "redis-admin-password" },
  },
  offers: (s, { password }: { password: string; adminPassword: string }) => ({
    redisUrl: `redis://default:${password}@${LAYOUT.dockerHostName}:${REDIS_PORT}/0`,
    redisPort: String(REDIS_PORT),
  }),
  render: (s, { password, adminPassword }: { password: string; adminPassword: string }) =>
    redisRole({ redisJob: s.redisJob, memoryMb: s.memoryMb, redisMaxMemoryMb: s.redisMaxMemoryMb, password, adminPassword }),
});
