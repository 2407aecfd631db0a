// The role contract from the outside: a role written in a folder of its own, through the public
// definition only, joins the stack's config, checks, order and bundles without another file changing.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import test from "node:test";
import { AnyRoleDefinition, checkRoleOrder } from "../../components/host/define";
import { ConfigError, pulumiConfigDeclarations, validateConfig } from "../../infra/config";
import { runWithMocks } from "../../infra/mock-run";
import { ROLES } from "../../infra/roles";
import { buildStack } from "../../infra/stack";
import { MINIMAL_CONFIG, mockCloudOutputs } from "../lib/mock-cloud";

const REPO = path.resolve(__dirname, "../..");

const ROLE_INDEX = `import * as path from "node:path";
import { z } from "zod";
import { defineRole, refuseProblems } from "${REPO}/components/host/define";
import { renderScript } from "${REPO}/components/host/script";

export const role = defineRole({
  name: "greeter",
  after: ["postgres"],
  budget: {
    monthlyCost: { amount: 0, currency: "EUR", what: "Runs on the server." },
    secrets: [{ name: "greeter-token", livesIn: "Pulumi state (RandomPassword)" }],
    alerts: ["SystemdUnitFailed"],
    failurePoints: ["The greeter silent: nobody is greeted."],
  },
  settings: z.object({
    greeterGreeting: z
      .string()
      .regex(/^[a-z ]{1,40}$/, { message: "is not a greeting (accepted: lower-case words, e.g. hello there)" })
      .default("hello")
      .describe("What the greeter says."),
    greeterTimes: z.number().int().min(1).max(9).default(2).describe("How often it says it."),
  }),
  inputs: {
    token: { from: "password", resource: "greeter-token" },
    databaseUrl: { from: "role", role: "postgres", offer: "databaseUrl" },
  },
  render(settings, inputs: { token: string; databaseUrl: string }) {
    refuseProblems("greeter", settings.greeterGreeting === "goodbye" ? ['greeterGreeting "goodbye" is a farewell (accepted: a greeting)'] : []);
    return {
      name: "greeter",
      description: "says hello on " + settings.fqdn,
      packages: [],
      directories: [{ path: "/etc/greeter", mode: "0755" }],
      files: [
        { path: "/usr/local/sbin/greeter", mode: "0755", content: renderScript(path.join(__dirname, "files", "greeter.sh"), { greeting: settings.greeterGreeting, times: settings.greeterTimes }) },
        { path: "/etc/greeter/secret.env", mode: "0600", content: "TOKEN=" + inputs.token + "\\nDATABASE_URL=" + inputs.databaseUrl },
      ],
      healthCheck: "/usr/local/sbin/greeter >/dev/null",
    };
  },
});
`;

const ROLE_SCRIPT = `#!/usr/bin/env bash
# greeter: says the configured greeting.
# shellcheck source=components/host/files/leaninfra-lib.sh
source "$(dirname "\${BASH_SOURCE[0]}")/../../host/files/leaninfra-lib.sh" # @lib

# @settings-begin
readonly greeting='hi'
readonly times=1
# @settings-end

for ((i = 0; i < times; i++)); do printf '%s\\n' "$greeting"; done
`;

/** Writes the throwaway role into a temp folder shaped like components/<role>/ and loads it. */
function throwawayRole(): { role: AnyRoleDefinition; dir: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-role-"));
  // The folder sits two levels below a "components"-like root, as the library include expects.
  const roleDir = path.join(dir, "components", "greeter");
  fs.mkdirSync(path.join(roleDir, "files"), { recursive: true });
  fs.mkdirSync(path.join(dir, "components", "host", "files"), { recursive: true });
  fs.copyFileSync(path.join(REPO, "components/host/files/leaninfra-lib.sh"), path.join(dir, "components/host/files/leaninfra-lib.sh"));
  fs.symlinkSync(path.join(REPO, "node_modules"), path.join(dir, "node_modules"));
  fs.writeFileSync(path.join(roleDir, "index.ts"), ROLE_INDEX);
  fs.writeFileSync(path.join(roleDir, "files", "greeter.sh"), ROLE_SCRIPT, { mode: 0o755 });
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const loaded = require(path.join(roleDir, "index.ts")) as { role: AnyRoleDefinition };
  return { role: loaded.role, dir };
}

const gitStatus = () => execFileSync("git", ["status", "--porcelain", "--untracked-files=all"], { cwd: REPO, encoding: "utf8" });

test("a throwaway role in its own folder is validated, ordered and rendered through the public definition alone", async () => {
  const before = gitStatus();
  const { role, dir } = throwawayRole();
  try {
    const roles = [...ROLES, role];

    // Validated: its slice joins the config schema, Pulumi.yaml's declarations and the config check.
    assert.equal(pulumiConfigDeclarations(roles).greeterGreeting.description, "What the greeter says.");
    assert.equal(pulumiConfigDeclarations(roles).greeterTimes.default, 2);
    assert.throws(
      () => validateConfig("prod", { ...MINIMAL_CONFIG, greeterGreeting: "Hello!", greeterTimes: 12 }, [], { roles }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.problems.includes('leaninfra:greeterGreeting: "Hello!" is not a greeting (accepted: lower-case words, e.g. hello there)') &&
        error.problems.includes("leaninfra:greeterTimes: 12 is too large (accepted: at most 9)"),
    );
    assert.throws(
      () => validateConfig("prod", { ...MINIMAL_CONFIG, greeterGreeting: "goodbye" }, [], { roles }),
      (error: unknown) => error instanceof ConfigError && error.problems.includes('leaninfra:greeterGreeting: "goodbye" is a farewell (accepted: a greeting)'),
    );
    // Without the role the key is unknown: nothing else learnt about it.
    assert.throws(() => validateConfig("prod", { ...MINIMAL_CONFIG, greeterGreeting: "hello" }), /leaninfra:greeterGreeting: is not a LeanInfra setting/);

    // Ordered: after what it names; a list that puts it first is refused.
    assert.throws(() => checkRoleOrder([role, ...ROLES]), /role greeter is listed before postgres, which it comes after/);
    const cfg = validateConfig("prod", { ...MINIMAL_CONFIG, greeterGreeting: "good morning", greeterTimes: 3 }, [], { roles });
    const run = await runWithMocks(
      { project: "leaninfra", stack: "prod", preview: false, config: {}, computed: mockCloudOutputs, revealSecrets: true },
      () => buildStack(cfg, { offline: true, roles }),
    );
    const commands = run.resources.filter((r) => r.type === "command:remote:Command");
    assert.deepEqual(
      commands.map((r) => r.name),
      roles.filter((r) => r.name !== "redis" && r.name !== "app").map((r) => `host-role-${r.name}`),
    );
    const greeter = commands.find((r) => r.name === "host-role-greeter")!;
    const previous = commands[commands.indexOf(greeter) - 1];
    assert.ok(greeter.options.dependsOn.includes(`command:remote:Command::${previous.name}`), "applied after the roles before it");

    // Rendered: its generated password and postgres's offer reach the secret bundle; the plan's copy has placeholders.
    assert.ok(greeter.secretInputs.includes("stdin"));
    const bundle = String(greeter.inputs.stdin);
    assert.match(bundle, /readonly greeting='good morning'\nreadonly times=3\n/);
    assert.match(bundle, /take_lock\(\) \{/, "the shared library is inlined");
    assert.match(bundle, /DATABASE_URL=postgresql:\/\/app:postgresapppassword0123456789abcdefABCDEF@host\.docker\.internal:5432\/app/);
    const token = run.resources.find((r) => r.type === "random:index/randomPassword:RandomPassword" && r.name === "greeter-token");
    assert.ok(token, "the role's password is generated under its resource name");
    const preview = run.result.rendered["bundles/greeter.sh"];
    assert.match(preview, /TOKEN=placeholder-greeter-token-generated-on-pulumi-up/);
    assert.match(preview, /DATABASE_URL=postgresql:\/\/app:placeholder-postgres-app-password-generated-on-pulumi-up@/);

    // The rendered script runs as it will on the host.
    const script = path.join(dir, "greeter");
    fs.writeFileSync(script, /cat >"\$tmp_file" <<'(LEANINFRA_EOF\w*)'\n([\s\S]*?)\n\1\n/.exec(bundle.slice(bundle.indexOf("/usr/local/sbin/greeter")))![2]);
    const ran = spawnSync("bash", [script], { encoding: "utf8" });
    assert.equal(ran.stdout, "good morning\ngood morning\ngood morning\n", ran.stderr);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(gitStatus(), before, "no file of the project changed");
});
