import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import test from "node:test";
import { baseRole } from "../../components/base";
import { POSTGRES_PATHS, postgresRole } from "../../components/postgres";
import { REDIS_PATHS, redisRole } from "../../components/redis";
import { show } from "../lib/debian-root";
import { BootedRoot, must, withBootedRoot } from "../lib/booted-root";
import { REDIS_PORT_LOCK, withLock } from "../lib/host-lock";
import { freePort } from "../lib/s3-server";
import { applyRole } from "../fixtures/test-app/scenario";


/** must(), trimmed: these checks compare whole answers. */
const answer = (root: BootedRoot, command: string) => must(root, command).trim();

/**
 * What the other data-service tests cannot show in a root without systemd: the handlers as they run on
 * the VM. PostgreSQL and Redis in a Debian 13 root booted with systemd, each role applied twice, then
 * changed in ways that need a reload (PostgreSQL: a new app role in pg_hba.conf) and a restart
 * (PostgreSQL: max_connections; Redis: another job, with its own rules for the app), and checked through
 * the running servers.
 */
test("PostgreSQL and Redis under systemd: their handlers restart or reload them as each change needs", { timeout: 25 * 60_000 }, async () => {
  const port = await freePort();
  const pg = { memoryMb: 2048, vcpus: 2, postgresMaxConnections: 0, postgresDatabase: "shop", postgresUser: "shop_app", password: `Pg${randomBytes(12).toString("hex")}`, port };
  const redis = { redisJob: "sessions" as const, memoryMb: 2048, redisMaxMemoryMb: 0, password: `Rd${randomBytes(12).toString("hex")}`, adminPassword: `Ad${randomBytes(12).toString("hex")}` };

  await withLock(REDIS_PORT_LOCK, 30 * 60_000, () =>
    withBootedRoot({}, async (root) => {
      const sql = (q: string) => answer(root, `runuser -u postgres -- psql -X -A -t -q -p ${port} -d postgres -c "${q}"`);
      const started = () => sql("select pg_postmaster_start_time()");

      assert.equal((await applyRole(root, baseRole({ adminUser: "ops" }))).code, 0);
      const first = await applyRole(root, postgresRole(pg));
      assert.equal(first.code, 0, show(first));
      const again = await applyRole(root, postgresRole(pg));
      assert.equal(again.stdout, "[postgres] no changes\n", show(again));
      // Debian's generator starts every cluster whose start.conf says auto at boot ("enabled-runtime").
      assert.equal(answer(root, `systemctl is-active ${POSTGRES_PATHS.unit}; systemctl is-enabled ${POSTGRES_PATHS.unit}; grep -v -e '^#' -e '^$' ${POSTGRES_PATHS.configDir}/start.conf`), "active\nenabled-runtime\nauto");
      assert.equal(sql("show data_directory"), POSTGRES_PATHS.dataDirectory, "systemd runs the cluster from the data volume");
      // The server systemd started reads config files only its group may read.
      assert.equal(
        answer(root, `cd ${POSTGRES_PATHS.configDir} && stat -c '%a %U:%G %n' postgresql.conf pg_hba.conf pg_ident.conf conf.d/*.conf`),
        [
          "640 postgres:postgres postgresql.conf",
          "640 root:postgres pg_hba.conf",
          "640 postgres:postgres pg_ident.conf",
          "640 root:postgres conf.d/00-leaninfra-data-directory.conf",
          "640 root:postgres conf.d/10-leaninfra-server.conf",
          "640 root:postgres conf.d/20-leaninfra-tuning.conf",
        ].join("\n"),
      );
      const boot = started();

      // Reload: a second app role only touches pg_hba.conf; the server keeps running and lets it in.
      const other = { ...pg, postgresDatabase: "shop2", postgresUser: "shop2_app", password: `Pg${randomBytes(12).toString("hex")}` };
      const reloaded = await applyRole(root, postgresRole(other));
      assert.equal(reloaded.code, 0, show(reloaded));
      assert.match(reloaded.stdout, new RegExp(`handler: onChange of [^\\n]*${POSTGRES_PATHS.hba}\\n`), reloaded.stdout);
      assert.ok(!reloaded.stdout.includes(POSTGRES_PATHS.serverConf), "the restart-only file did not change");
      assert.equal(started(), boot, "a pg_hba.conf change reloads, it does not restart");
      assert.equal(
        answer(root, `PGPASSWORD='${other.password}' psql -X -A -t -q "host=127.0.0.1 port=${port} dbname=${other.postgresDatabase} user=${other.postgresUser}" -c 'select current_user'`),
        other.postgresUser,
      );

      // Restart: max_connections is read at start only; the handler restarts, the server comes back with it.
      const restarted = await applyRole(root, postgresRole({ ...other, postgresMaxConnections: 150 }));
      assert.equal(restarted.code, 0, show(restarted));
      assert.match(restarted.stdout, new RegExp(`handler: onChange of [^\\n]*${POSTGRES_PATHS.serverConf}`), restarted.stdout);
      assert.notEqual(started(), boot, "a restart-only setting restarts PostgreSQL");
      assert.equal(sql("show max_connections"), "150");
      assert.equal(sql("select count(*) from pg_settings where pending_restart"), "0");
      assert.equal((await applyRole(root, postgresRole({ ...other, postgresMaxConnections: 150 }))).stdout, "[postgres] no changes\n");

      // Redis: the sessions job (AOF, volatile-lru), then the cache job (no persistence, allkeys-lru).
      const cli = (args: string) => answer(root, `${REDIS_PATHS.adminCli} ${args} | tr -d '\\r'`);
      const r1 = await applyRole(root, redisRole(redis));
      assert.equal(r1.code, 0, show(r1));
      assert.equal((await applyRole(root, redisRole(redis))).stdout, "[redis] no changes\n");
      assert.equal(answer(root, "systemctl is-active redis-server; systemctl is-enabled redis-server"), "active\nenabled");
      assert.equal(cli("CONFIG GET maxmemory-policy"), "maxmemory-policy\nvolatile-lru");
      assert.equal(cli("CONFIG GET appendonly"), "appendonly\nyes");
      const appEval = () => answer(root, `REDISCLI_AUTH='${redis.password}' redis-cli -p 6379 EVAL "return 'lua'" 0 2>&1 | tr -d '\\r' | sed '/^$/d'`);
      assert.equal(appEval(), "NOPERM User default has no permissions to run the 'eval' command", "sessions: no Lua scripts for the app");
      const redisStart = answer(root, "systemctl show -p ExecMainStartTimestampMonotonic --value redis-server");
      const r2 = await applyRole(root, redisRole({ ...redis, redisJob: "cache" }));
      assert.equal(r2.code, 0, show(r2));
      assert.notEqual(answer(root, "systemctl show -p ExecMainStartTimestampMonotonic --value redis-server"), redisStart, "systemd restarted Redis");
      assert.equal(cli("CONFIG GET maxmemory-policy"), "maxmemory-policy\nallkeys-lru");
      assert.equal(cli("CONFIG GET appendonly"), "appendonly\nno");
      assert.equal(
        answer(root, `REDISCLI_AUTH='${redis.password}' redis-cli -p 6379 PING | tr -d '\\r'`),
        "PONG",
        "the app's password still works after the restart",
      );
      assert.equal(appEval(), "lua", "the restart gave the app the cache job's rules: Lua scripts allowed");
    }),
  );
});
