import test from "node:test";
import assert from "node:assert/strict";
import { renderRoleBundle } from "../../components/host/bundle";
import { postgresRole } from "../../components/postgres";
import { RedisJob, redisRole } from "../../components/redis";
import { assertShellcheckClean } from "../lib/shellcheck";

const shellcheck = (name: string, script: string) => assertShellcheckClean(`the ${name} bundle`, script);

test("shellcheck passes the postgres role's bundle", () => {
  const bundle = renderRoleBundle(
    postgresRole({ memoryMb: 8192, vcpus: 4, postgresMaxConnections: 0, postgresDatabase: "app", postgresUser: "app", password: "p4ss:w0rd\\'\"$(x)`y`" }),
  );
  for (const part of ["role_validate", "role_apply", "role_health_check", "handler_2"]) assert.ok(bundle.includes(part), part);
  shellcheck("postgres", bundle);
});

for (const job of ["cache", "sessions", "queue"] as RedisJob[]) {
  test(`shellcheck passes the redis role's bundle (job ${job})`, () => {
    const bundle = renderRoleBundle(
      redisRole({ redisJob: job, memoryMb: 4096, redisMaxMemoryMb: 0, password: "app-p4ss'\"$(x)`y`", adminPassword: "adm-p4ss'\"$(x)`y`" }),
    );
    for (const part of ["role_validate", "role_apply", "role_health_check", "handler_0"]) assert.ok(bundle.includes(part), part);
    shellcheck(`redis (${job})`, bundle);
  });
}
