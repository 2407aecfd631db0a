// Bad configuration as the real CLI meets it: the program's problems message (every key, the value,
// what is accepted) before anything is created, never a stack trace, never a secret's value.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { CANNED_ZONES, MAIN_ACCOUNT } from "../lib/mock-cloud";
import { exportStack, ok } from "./engine";
import { EngineWorkspace, PulumiRun } from "./workspace";

let ws: EngineWorkspace;
before(() => {
  ws = new EngineWorkspace();
  ws.initProdStack();
});
after(() => ws?.dispose());

const STACK_TRACE = /^\s+at .+(\.ts|\.js):\d+/m;

function set(...args: string[]): void {
  ok(ws.pulumi(["config", "set", ...args]), `pulumi config set ${args.join(" ")}`);
}

function assertRefused(run: PulumiRun, what: string): void {
  assert.notEqual(run.code, 0, `${what} must fail:\n${run.output}`);
  assert.doesNotMatch(run.output, STACK_TRACE, `${what}: no stack trace`);
}

test("invalid config stops `pulumi preview` and `pulumi up` with every problem, and nothing is created", () => {
  set("leaninfra:deleteProtection", "false");
  set("--path", "leaninfra:sshAllowFrom[1]", "10.0.0.0/33");
  set("leaninfra:appRegistryPassword", "hunter2-in-plain-text");
  try {
    for (const command of [["preview"], ["up"]]) {
      const run = ws.pulumi(command);
      assertRefused(run, `pulumi ${command[0]}`);
      assert.match(run.output, /Stack "prod" has 3 configuration problems; nothing was created:/);
      assert.match(run.output, /leaninfra:sshAllowFrom\[1\]: "10\.0\.0\.0\/33" is not a CIDR/);
      assert.match(run.output, /leaninfra:deleteProtection: false is refused for a production stack/);
      assert.match(run.output, /leaninfra:appRegistryPassword: is stored in plain text in the stack file \(value not shown; accepted: an encrypted value, set with `pulumi config set --secret leaninfra:appRegistryPassword`\)/);
      assert.ok(!run.output.includes("hunter2-in-plain-text"), "the secret's value is not printed");
    }
    assert.deepEqual(exportStack(ws).resources, [], "no resource was created");
  } finally {
    ok(ws.pulumi(["config", "rm", "leaninfra:deleteProtection"]), "config rm");
    ok(ws.pulumi(["config", "set", "leaninfra:deleteProtection", "true"]), "config set back");
    set("--path", "leaninfra:sshAllowFrom[1]", "2001:db8:1234::/48");
    ok(ws.pulumi(["config", "rm", "leaninfra:appRegistryPassword"]), "config rm");
  }
});

test("bad secret values stop `pulumi up` before anything is created, named by key and never quoted", () => {
  ok(ws.pulumi(["config", "set", "--secret", "leaninfra:appSecretEnv"], { stdin: "pasted-token-without-a-key\n" }), "config set --secret");
  set("leaninfra:appRegistryUser", "deploy");
  try {
    const run = ws.pulumi(["up"]);
    assertRefused(run, "pulumi up");
    assert.match(run.output, /Stack "prod" has 2 configuration problems; nothing was created:/);
    assert.match(run.output, /leaninfra:appSecretEnv: line 1 is not KEY=value/);
    assert.match(run.output, /leaninfra:appRegistryPassword: goes together with appRegistryUser/);
    assert.ok(!run.output.includes("pasted-token-without-a-key"), "the secret is not quoted back");
    assert.deepEqual(exportStack(ws).resources, [], "no resource was created");
  } finally {
    ok(ws.pulumi(["config", "rm", "leaninfra:appSecretEnv"]), "config rm");
    ok(ws.pulumi(["config", "rm", "leaninfra:appRegistryUser"]), "config rm");
  }
});

test("Pulumi.yaml's types are enforced by the CLI itself", () => {
  set("leaninfra:volumeSizeGb", "lots");
  try {
    const run = ws.pulumi(["preview"]);
    assertRefused(run, "pulumi preview");
    assert.match(run.output, /configuration key 'volumeSizeGb' must be of type 'integer'/);
  } finally {
    set("leaninfra:volumeSizeGb", "40");
  }
});

test("optional secrets set with --secret are accepted, and never printed", () => {
  ok(ws.pulumi(["config", "set", "--secret", "leaninfra:appRegistryPassword"], { stdin: "registry-token-0123456789\n" }), "config set --secret");
  ok(ws.pulumi(["config", "set", "--secret", "leaninfra:appSecretEnv"], { stdin: "SESSION_SECRET=abcdefghijklmnop\n" }), "config set --secret");
  ok(ws.pulumi(["config", "set", "leaninfra:appRegistryUser", "deploy"]), "config set appRegistryUser");
  const run = ok(ws.pulumi(["preview", "--diff"]), "pulumi preview --diff");
  for (const secret of ["registry-token-0123456789", "abcdefghijklmnop"]) assert.ok(!run.output.includes(secret), "no secret in the preview");
});

test("a zone of another Cloudflare account, or none, is refused before anything is registered, without a stack trace", () => {
  const foreign = CANNED_ZONES.find((z) => z.account.id !== MAIN_ACCOUNT)!;
  set("leaninfra:cloudflareZone", foreign.id);
  try {
    let run = ws.pulumi(["preview"]);
    assertRefused(run, "pulumi preview");
    assert.match(run.output, new RegExp(`error: leaninfra:cloudflareZone: zone ${foreign.name} belongs to account ${foreign.account.id}, not leaninfra:cloudflareAccountId ${MAIN_ACCOUNT}`));
    assert.match(run.output, /Resources:\s+\+ 1 to create\s+1 errored/, "only the stack itself, nothing of the program's");
    set("leaninfra:cloudflareZone", "example.org");
    run = ws.pulumi(["preview"]);
    assertRefused(run, "pulumi preview");
    assert.match(run.output, new RegExp(`error: leaninfra:cloudflareZone: Cloudflare has no zone example.org in account ${MAIN_ACCOUNT} that cloudflare:apiToken can read`));
  } finally {
    set("leaninfra:cloudflareZone", "example.com");
  }
});
