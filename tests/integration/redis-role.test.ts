import test from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { baseRole } from "../../components/base";
import { renderRoleBundle } from "../../components/host/bundle";
import { REDIS_PATHS, RedisJob, RedisSettings, redisMaxMemoryMb, redisRole } from "../../components/redis";
import { RunResult, show, withDebianRoot } from "../lib/debian-root";
import { REDIS_PORT_LOCK, withLock } from "../lib/host-lock";
import { sections } from "../lib/sections";


// Characters a shell or a config file could mangle must arrive intact.
const PASSWORD = `App:${randomBytes(12).toString("hex")}\\'"$x#`;
const ADMIN_PASSWORD = `Adm:${randomBytes(12).toString("hex")}`;

function settings(over: Partial<RedisSettings> = {}): RedisSettings {
  return { redisJob: "sessions", memoryMb: 2048, redisMaxMemoryMb: 0, password: PASSWORD, adminPassword: ADMIN_PASSWORD, ...over };
}


/**
 * Shell helpers: Redis started from the rendered config as systemd would (user redis, /run/redis),
 * in the background of this one run; `app` is redis-cli with the app's password (from the environment).
 */
const prelude = `set -u
cd /
sec() { printf '\\n== %s\\n' "$1"; }
pw=$(cat /root/app.pw)
# redis-cli follows each error with an empty line when not on a terminal: dropped.
app() { REDISCLI_AUTH=$pw redis-cli -p 6379 "$@" 2>&1 | tr -d '\\r' | sed '/^$/d'; }
admin() { ${REDIS_PATHS.adminCli} "$@" 2>&1 | tr -d '\\r'; }
start_redis() {
  install -d -o redis -g redis -m 2755 /run/redis
  runuser -u redis -- redis-server /etc/redis/redis.conf --daemonize yes
  for _ in $(seq 100); do
    if [ "$(admin PING)" = PONG ]; then return 0; fi
    sleep 0.1
  done
  echo "redis did not start"; cat /var/log/redis/redis-server.log; exit 1
}
stop_redis() {
  admin SHUTDOWN >/dev/null || true
  for _ in $(seq 100); do
    if [ ! -e /run/redis/redis-server.pid ]; then return 0; fi
    sleep 0.1
  done
}
# Writes n keys of 1000 bytes, one command each; prints how many succeeded and the distinct errors.
fill() {
  local value
  value=$(head -c 1000 /dev/zero | tr '\\0' v)
  for i in $(seq "$1"); do echo "SET fill:$i $value"; done | app | sort | uniq -c | sed 's/^ *//'
}
conf() { admin CONFIG GET "$1" | sed -n 2p; }
info() { app INFO "$1" | grep "^$2:" | cut -d: -f2; }
# The app's commands the ACL decides on, one "name: answer" line each (an answer's lines joined with '|');
# FLUSHDB last, as it empties a cache.
probe() { printf '%s: %s\n' "$1" "$(shift; app "$@" | paste -sd '|')"; }
acl_probe() {
  local sha
  sha=$(printf %s "return 'loaded'" | sha1sum | cut -c1-40)
  # The queue's AOF may hold the sessions' probe keys (same data directory): start from none.
  app DEL probe:k probe:l >/dev/null
  app SET probe:k v >/dev/null
  app RPUSH probe:l 3 1 2 >/dev/null
  probe eval EVAL "return 'lua'" 0
  probe eval_ro EVAL_RO "return 'ro'" 0
  probe script-load SCRIPT LOAD "return 'loaded'"
  probe evalsha EVALSHA "$sha" 0
  probe evalsha_ro EVALSHA_RO "$sha" 0
  probe script-exists SCRIPT EXISTS "$sha"
  probe script-flush SCRIPT FLUSH
  probe script-kill SCRIPT KILL
  probe function-load FUNCTION LOAD "#!lua name=probe
redis.register_function('probe', function() return 1 end)"
  probe function-list FUNCTION LIST
  probe fcall FCALL probe 0
  probe fcall_ro FCALL_RO probe 0
  probe lua-keys EVAL "return redis.call('KEYS', '*')" 0
  probe keys KEYS '*'
  probe swapdb SWAPDB 0 1
  probe migrate MIGRATE 127.0.0.1 6380 probe:k 0 1000
  probe restore RESTORE probe:r 0 payload
  probe restore-asking RESTORE-ASKING probe:r 0 payload
  probe flushall FLUSHALL
  printf 'info: %s\n' "$(app INFO server | grep -c '^redis_version:')"
  printf 'scan: %s\n' "$(app SCAN 0 MATCH 'probe:*' COUNT 1000 | sort | paste -sd '|')"
  probe sort SORT probe:l
  probe client-setname CLIENT SETNAME probe
  probe flushdb FLUSHDB
}
`;

/** Jobs whose libraries run Lua scripts: they keep EVAL, EVALSHA and SCRIPT LOAD (components/redis/config.ts). */
const LUA: Record<RedisJob, boolean> = { cache: true, sessions: false, queue: true };
const noperm = (command: string) => `NOPERM User default has no permissions to run the '${command}' command`;

/** What acl_probe prints for a job: the app's denied commands fail with NOPERM, the rest work. */
function aclExpected(job: RedisJob): Record<string, string | RegExp> {
  const lua = LUA[job];
  return {
    eval: lua ? "lua" : noperm("eval"),
    eval_ro: lua ? "ro" : noperm("eval_ro"),
    "script-load": lua ? createHash("sha1").update("return 'loaded'").digest("hex") : noperm("script|load"),
    evalsha: lua ? "loaded" : noperm("evalsha"),
    evalsha_ro: lua ? "loaded" : noperm("evalsha_ro"),
    "script-exists": lua ? "1" : noperm("script|exists"),
    "script-flush": noperm("script|flush"),
    "script-kill": noperm("script|kill"),
    "function-load": noperm("function|load"),
    "function-list": noperm("function|list"),
    fcall: noperm("fcall"),
    fcall_ro: noperm("fcall_ro"),
    // A script runs with its caller's rules: EVAL does not give KEYS back.
    "lua-keys": lua ? /^ERR ACL failure in script: User default has no permissions to run the 'keys' command script: / : noperm("eval"),
    keys: noperm("keys"),
    swapdb: noperm("swapdb"),
    migrate: noperm("migrate"),
    restore: noperm("restore"),
    "restore-asking": noperm("restore-asking"),
    flushall: noperm("flushall"),
    info: "1",
    scan: "0|probe:k|probe:l",
    sort: "1|2|3",
    "client-setname": "OK",
    flushdb: job === "cache" ? "OK" : noperm("flushdb"),
  };
}

function assertAcl(job: RedisJob, printed: string): void {
  const answers = Object.fromEntries(printed.split("\n").map((line) => line.split(/: (.*)/s).slice(0, 2)));
  const expected = aclExpected(job);
  assert.deepEqual(Object.keys(answers), Object.keys(expected), `${job}: every probe answered once:\n${printed}`);
  for (const [name, want] of Object.entries(expected)) {
    if (typeof want === "string") assert.equal(answers[name], want, `${job}: ${name}`);
    else assert.match(answers[name], want, `${job}: ${name}`);
  }
}

const noSecret = (r: RunResult) =>
  assert.ok(
    ![PASSWORD, ADMIN_PASSWORD].some((p) => r.stdout.includes(p) || r.stderr.includes(p)),
    `a password was printed:\n${show(r)}`,
  );

test("the redis role runs one job with a password, and its eviction, persistence and the app's commands are the job's", { timeout: 20 * 60_000 }, async () => {
  const sessions = settings();
  // Redis listens on 6379 in the host's network namespace, as in any other root that runs one.
  await withLock(REDIS_PORT_LOCK, 20 * 60_000, () => withDebianRoot((root) => {
    fs.writeFileSync(root.hostPath("/root/base.sh"), renderRoleBundle(baseRole({ adminUser: "ops" })));
    fs.writeFileSync(root.hostPath("/root/redis.sh"), renderRoleBundle(redisRole(sessions)));
    fs.writeFileSync(root.hostPath("/root/redis-cache.sh"), renderRoleBundle(redisRole(settings({ redisJob: "cache", redisMaxMemoryMb: 4 }))));
    fs.writeFileSync(root.hostPath("/root/redis-queue.sh"), renderRoleBundle(redisRole(settings({ redisJob: "queue", redisMaxMemoryMb: 4 }))));
    const broken = redisRole(settings({ redisJob: "queue", redisMaxMemoryMb: 4 }));
    broken.files.find((f) => f.path === REDIS_PATHS.config)!.content += "maxmemory-policy evict-sometimes\n";
    fs.writeFileSync(root.hostPath("/root/redis-broken.sh"), renderRoleBundle(broken));
    fs.writeFileSync(root.hostPath("/root/app.pw"), PASSWORD, { mode: 0o600 });

    let started = Date.now();
    const first = root.run("bash /root/base.sh >/dev/null && bash /root/redis.sh");
    console.log(`base + redis bundles, first run: ${Date.now() - started} ms, exit ${first.code}`);
    assert.equal(first.code, 0, show(first));
    noSecret(first);
    for (const line of [
      "[redis] installed package redis-server",
      "[redis] created directory /srv/data/redis (750 redis:redis)",
      "[redis] updated file /etc/redis/redis.conf (640 root:redis; previous version in /var/lib/leaninfra/backups/redis/etc/redis/redis.conf)",
      "[redis] created file /etc/leaninfra/secrets/redis-admin.password (600 root:root)",
      "[redis]   systemd is not running here: skipped systemctl restart redis-server",
    ]) {
      assert.ok(first.stdout.split("\n").includes(line), `missing line ${JSON.stringify(line)}:\n${show(first)}`);
    }
    assert.match(first.stdout, /^\[redis\] \d+ change\(s\)$/m);

    // The rest on a private network: port 6379 is the root's own, and the Docker bridge does not exist.
    started = Date.now();
    const checks = root.run(
      `${prelude}
sec second-run
bash /root/redis.sh 2>&1; echo "exit=$?"
start_redis
sec listening
ss -H -l -t -n "sport = :6379" | awk '{ print $4 }'
sec no-password
redis-cli -p 6379 PING 2>&1 | tr -d '\\r'
sec wrong-password
REDISCLI_AUTH="wrong-$pw" redis-cli -p 6379 PING 2>&1 | tr -d '\\r'
sec app-ping
app PING
sec app-denied
app CONFIG GET maxmemory; app FLUSHALL; app FLUSHDB; app DEBUG SLEEP 0; app SHUTDOWN
sec sessions-acl
acl_probe
sec info
info memory maxmemory; info memory maxmemory_policy; info persistence aof_enabled
sec config
for name in maxmemory maxmemory-policy appendonly appendfsync save dir; do echo "$name=$(conf "$name")"; done
sec survives-restart
app SET session:1 alice EX 3600 >/dev/null
stop_redis; start_redis
app GET session:1; ls /srv/data/redis
stop_redis
`,
      { nspawnArgs: ["--private-network"] },
    );
    console.log(`second run and sessions checks: ${Date.now() - started} ms`);
    assert.equal(checks.code, 0, show(checks));
    noSecret(checks);
    const out = sections(checks.stdout);
    assert.equal(out["second-run"], "[redis] no changes\nexit=0", show(checks));
    assert.equal(out.listening, "127.0.0.1:6379", "loopback; the missing bridge address is skipped");
    assert.match(out["no-password"], /^NOAUTH Authentication required\.$/m);
    assert.match(out["wrong-password"], /WRONGPASS invalid username-password pair/);
    assert.equal(out["app-ping"], "PONG");
    assert.deepEqual(out["app-denied"].split("\n"), [
      "NOPERM User default has no permissions to run the 'config|get' command",
      "NOPERM User default has no permissions to run the 'flushall' command",
      "NOPERM User default has no permissions to run the 'flushdb' command",
      // Redis refuses DEBUG to everyone before the ACL is asked (enable-debug-command defaults to no).
      'ERR DEBUG command not allowed. If the enable-debug-command option is set to "local", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.',
      "NOPERM User default has no permissions to run the 'shutdown' command",
    ]);
    assertAcl("sessions", out["sessions-acl"]);
    assert.equal(out.info, `${redisMaxMemoryMb(2048) * 1024 * 1024}\nvolatile-lru\n1`);
    assert.equal(
      out.config,
      `maxmemory=${redisMaxMemoryMb(2048) * 1024 * 1024}\nmaxmemory-policy=volatile-lru\nappendonly=yes\nappendfsync=everysec\nsave=\ndir=${REDIS_PATHS.dataDir}`,
    );
    assert.equal(out["survives-restart"], "alice\nappendonlydir", "the AOF brings sessions back, and there is no RDB file");

    started = Date.now();
    const jobs = root.run(
      `${prelude}
sec cache-run
bash /root/redis-cache.sh 2>&1; echo "exit=$?"
start_redis
sec cache-config
for name in maxmemory maxmemory-policy appendonly save; do echo "$name=$(conf "$name")"; done
sec cache-acl
acl_probe
sec cache-fill
fill 10000
sec cache-after
app DBSIZE; info stats evicted_keys
sec cache-flushdb
app FLUSHDB
sec cache-restart
app SET k v >/dev/null
stop_redis; start_redis
app DBSIZE; ls /srv/data/redis
stop_redis
sec queue-run
bash /root/redis-queue.sh 2>&1; echo "exit=$?"
start_redis
sec queue-config
for name in maxmemory maxmemory-policy appendonly save; do echo "$name=$(conf "$name")"; done
sec queue-acl
acl_probe
app DEL probe:k probe:l >/dev/null
sec queue-fill
fill 10000
sec queue-after
app DBSIZE; info stats evicted_keys
stop_redis
sec broken
bash /root/redis-broken.sh 2>&1; echo "exit=$?"
sec broken-after
grep -c evict-sometimes /etc/redis/redis.conf || true
`,
      { nspawnArgs: ["--private-network"] },
    );
    console.log(`cache, queue and broken-config runs: ${Date.now() - started} ms`);
    assert.equal(jobs.code, 0, show(jobs));
    noSecret(jobs);
    const j = sections(jobs.stdout);
    assert.match(j["cache-run"], /^\[redis\] updated file \/etc\/redis\/redis\.conf /m);
    assert.match(j["cache-run"], /exit=0$/);
    assert.equal(j["cache-config"], `maxmemory=${4 * 1024 * 1024}\nmaxmemory-policy=allkeys-lru\nappendonly=no\nsave=`);
    assertAcl("cache", j["cache-acl"]);
    assertAcl("queue", j["queue-acl"]);
    assert.equal(j["cache-fill"], "10000 OK", "a full cache evicts instead of refusing writes");
    const [cacheKeys, evicted] = j["cache-after"].split("\n").map(Number);
    assert.ok(cacheKeys > 0 && cacheKeys < 10000, `a 4 MB cache cannot hold 10 MB: DBSIZE ${cacheKeys}`);
    assert.ok(evicted > 0, `evicted_keys ${evicted}`);
    assert.equal(j["cache-flushdb"], "OK", "a cache may be cleared by the app");
    assert.equal(j["cache-restart"], "0\nappendonlydir", "a cache keeps nothing across a restart (the AOF directory is the sessions job's)");

    assert.equal(j["queue-config"], `maxmemory=${4 * 1024 * 1024}\nmaxmemory-policy=noeviction\nappendonly=yes\nsave=`);
    const fillLines = j["queue-fill"].split("\n");
    const oom = fillLines.find((l) => /OOM command not allowed when used memory > 'maxmemory'/.test(l));
    assert.ok(oom, `a full queue refuses writes:\n${j["queue-fill"]}`);
    const queued = Number(/^(\d+) OK$/m.exec(j["queue-fill"])?.[1] ?? 0);
    assert.ok(queued > 0 && queued < 10000, j["queue-fill"]);
    const [queueKeys, queueEvicted] = j["queue-after"].split("\n").map(Number);
    assert.ok(queueKeys >= queued, `nothing written was evicted: DBSIZE ${queueKeys}, written ${queued}`);
    assert.equal(queueEvicted, 0);

    assert.match(j.broken, /FATAL CONFIG FILE ERROR/);
    assert.match(j.broken, /'maxmemory-policy evict-sometimes'/);
    assert.match(j.broken, /^\[redis\] restored \/etc\/redis\/redis\.conf to its previous version$/m);
    assert.match(j.broken, /^\[redis\] FAILED during validate: validation failed/m);
    assert.match(j.broken, /exit=1$/);
    assert.equal(j["broken-after"], "0");
  }));
});
