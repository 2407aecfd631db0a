import { LAYOUT } from "../host/layout";
import { HostRole } from "../host/role";
import {
  REDIS_ADMIN_USER,
  REDIS_JOBS,
  REDIS_PACKAGE,
  REDIS_PATHS as R,
  REDIS_PORT,
  RedisJob,
  isRedisJob,
  redisMaxMemoryMb,
  renderRedisAdminCli,
  renderRedisConf,
  renderRedisSystemdDropIn,
} from "./config";

export * from "./config";

export interface RedisSettings {
  /** Redis's one job (leaninfra:redisJob); there is no Redis without one. */
  job: RedisJob;
  /** RAM of the server type in MB (prices.json memoryGb * 1024). */
  memoryMb: number;
  /** maxmemory in MB; 0 derives it from memoryMb (leaninfra:redisMaxMemoryMb, see redisMaxMemoryMb). */
  maxMemoryMb: number;
  /** The app's password (the ACL default user): a generated secret, stored only as its SHA-256. */
  password: string;
  /** The admin user's password: a second generated secret, in a root-only file for leaninfra-redis-cli. */
  adminPassword: string;
}

// Printable ASCII without spaces: safe in a redis:// URL once percent-encoded, and in the root-only file.
const PASSWORD = /^[\x21-\x7e]{16,1024}$/;

/** Problems with the settings, each naming the field; empty when the role can be rendered. */
export function redisSettingsProblems(s: RedisSettings): string[] {
  const problems: string[] = [];
  const add = (field: string, message: string) => problems.push(`${field} ${message}`);
  if (!isRedisJob(s.job)) add("job", `${JSON.stringify(s.job)} must be cache, sessions or queue`);
  if (!Number.isInteger(s.memoryMb) || s.memoryMb < 1024) add("memoryMb", `${s.memoryMb} must be the server's RAM in MB, at least 1024`);
  const half = Math.floor(s.memoryMb / 2);
  if (!Number.isInteger(s.maxMemoryMb) || s.maxMemoryMb < 0 || s.maxMemoryMb > half) {
    add(
      "maxMemoryMb",
      `${s.maxMemoryMb} must be 0 (derive ${redisMaxMemoryMb(s.memoryMb)} MB from RAM) or 1..${half}: more than half of the ` +
        `server's ${s.memoryMb} MB leaves too little for PostgreSQL and the app`,
    );
  }
  for (const key of ["password", "adminPassword"] as const) {
    if (typeof s[key] !== "string" || !PASSWORD.test(s[key])) {
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

// Redis itself reads the new file: a throwaway server on a private socket, no TCP port, in a temp dir.
const validate = `cd /
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chown redis:redis "$tmp"
runuser -u redis -- redis-server ${R.config} --port 0 --unixsocket "$tmp/check.sock" --dir "$tmp" \\
  --pidfile "$tmp/redis.pid" --logfile "$tmp/redis.log" --daemonize no >"$tmp/out" 2>&1 &
pid=$!
for _ in $(seq 100); do
  if [ -S "$tmp/check.sock" ] || ! kill -0 "$pid" 2>/dev/null; then break; fi
  sleep 0.1
done
ok=0
if [ -S "$tmp/check.sock" ]; then ok=1; fi
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
if [ "$ok" != 1 ]; then
  cat "$tmp/out" "$tmp/redis.log" >&2 2>/dev/null || true
  echo "redis-server does not start with ${R.config} (its output above)" >&2
  exit 1
fi`;

// On the VM: enabled, running, and on the Docker bridge when that exists. The test roots have no systemd.
const apply = `if [ -d /run/systemd/system ]; then
  if ! systemctl is-enabled --quiet ${R.unit}; then
    systemctl enable --quiet ${R.unit}
    echo "enabled ${R.unit} at boot"
  fi
  if ! systemctl is-active --quiet ${R.unit}; then
    systemctl start ${R.unit}
    echo "started ${R.unit}"
  fi
  if ip -4 -o addr show 2>/dev/null | grep -q ' ${LAYOUT.dockerBridge.address}/' &&
    ! ss -H -l -t -n "sport = :${REDIS_PORT}" | awk '{ print $4 }' | grep -qx "${LAYOUT.dockerBridge.address}:${REDIS_PORT}"; then
    systemctl restart ${R.unit}
    echo "restarted ${R.unit} to listen on the Docker bridge ${LAYOUT.dockerBridge.address} (it started before the bridge existed)"
  fi
fi`;

function healthCheck(job: RedisJob): string {
  const policy = REDIS_JOBS[job].maxmemoryPolicy;
  return `test -s ${R.config}
if [ -d /run/systemd/system ]; then
  if ! systemctl is-active --quiet ${R.unit}; then
    echo "${R.unit} is not running: systemctl status ${R.unit}; /var/log/redis/redis-server.log" >&2
    exit 1
  fi
  pong=$(${R.adminCli} PING)
  if [ "$pong" != PONG ]; then
    echo "Redis does not answer PING as ${REDIS_ADMIN_USER}: $pong" >&2
    exit 1
  fi
  policy=$(${R.adminCli} CONFIG GET maxmemory-policy | sed -n 2p)
  if [ "$policy" != ${policy} ]; then
    echo "the running Redis has maxmemory-policy $policy, not ${policy}: it did not restart with ${R.config} (systemctl restart ${R.unit})" >&2
    exit 1
  fi
fi`;
}

/**
 * Redis for exactly one job (cache, sessions or queue): Debian 13's redis-server on loopback and the
 * Docker bridge, password-protected, with the eviction and persistence of its job.
 */
export function redisRole(settings: RedisSettings): HostRole {
  if (settings.job === undefined || (settings.job as string) === "") {
    throw new Error(
      "redisRole: settings.job is missing. Redis runs here only with one named job: cache, sessions or queue " +
        "(leaninfra:redisJob). Add Redis when you can point to that job; until then leave leaninfra:redisEnabled false.",
    );
  }
  const problems = redisSettingsProblems(settings);
  if (problems.length > 0) {
    throw new Error(`redisRole: invalid settings:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
  const maxMemoryMb = redisMaxMemoryMb(settings.memoryMb, settings.maxMemoryMb);
  return {
    name: "redis",
    description: `Redis for one job (${settings.job}), maxmemory ${maxMemoryMb} MB, loopback and Docker only, password required`,
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
        content: renderRedisConf({ job: settings.job, maxMemoryMb, password: settings.password, adminPassword: settings.adminPassword }),
        onChange: restartRedis,
      },
      { path: R.adminPassword, mode: "0600", content: settings.adminPassword },
      { path: R.adminCli, mode: "0755", content: renderRedisAdminCli() },
    ],
    validate,
    apply,
    healthCheck: healthCheck(settings.job),
  };
}
