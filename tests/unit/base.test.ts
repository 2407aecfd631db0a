import test from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { BASE_DIRECTORIES, baseRole, baseSettingsProblems, role } from "../../components/base";
import { SettingsError, StackFacts } from "../../components/host/define";
import { assertShellcheckClean } from "../lib/shellcheck";
import { TEST_FACTS } from "../lib/facts";

// z.object({}) parses to Record<string, never>, which no settings object with StackFacts satisfies in TypeScript.
const settingsOf = (adminUser: string) => ({ ...FACTS, adminUser, ...role.settings.parse({}) }) as unknown as Parameters<typeof role.render>[0];
const FILES = path.join(__dirname, "..", "..", "components", "base", "files");

const FACTS: StackFacts = { ...TEST_FACTS, stack: "unit" };

test("the base definition: first in the list, no config keys of its own, the admin user from the stack", () => {
  assert.equal(role.name, "base");
  assert.deepEqual(role.after, []);
  assert.deepEqual(Object.keys(role.settings.shape), []);
  assert.equal(role.inputs, undefined);
  const rendered = role.render(settingsOf("deploy"), {});
  assert.deepEqual(rendered, baseRole({ adminUser: "deploy" }));
  assert.deepEqual(rendered.directories, [...BASE_DIRECTORIES]);
});

test("the host's files come from components/base/files: the README names the admin user, node_exporter's defaults as they are", () => {
  const r = baseRole({ adminUser: "deploy" });
  const readme = r.files.find((f) => f.path === "/etc/leaninfra/README")?.content ?? "";
  assert.equal(readme, fs.readFileSync(path.join(FILES, "README.txt"), "utf8").replace("{{adminUser}}", "deploy"));
  assert.match(readme, /^This VM is managed by LeanInfra \(a Pulumi program\)\. Log in as deploy and use sudo\.$/m);
  assert.doesNotMatch(readme, /\{\{|\}\}/);
  const defaults = r.files.find((f) => f.path === "/etc/default/prometheus-node-exporter");
  assert.equal(defaults?.content, fs.readFileSync(path.join(FILES, "prometheus-node-exporter"), "utf8"));
  assert.match(defaults?.content ?? "", /^ARGS="--web\.listen-address=127\.0\.0\.1:9100"$/m);
  assert.match(defaults?.onChange ?? "", /systemctl restart prometheus-node-exporter/);
});

test("render refuses an admin user that is not a Linux user name with SettingsError, the problem starting with adminUser", () => {
  for (const adminUser of ["Bad User", "1ops", "", "a".repeat(33), "ops;rm"]) {
    assert.deepEqual(baseSettingsProblems({ adminUser }).map((p) => p.split(" ")[0]), ["adminUser"], adminUser);
    assert.throws(
      () => role.render(settingsOf(adminUser), {}),
      (e: Error) => {
        assert.ok(e instanceof SettingsError, `a SettingsError, not ${e.name}: ${e.message}`);
        assert.equal(e.role, "base");
        assert.deepEqual(e.problems, [`adminUser ${JSON.stringify(adminUser)} is not a Linux user name (accepted: a-z, 0-9, '_' and '-', starting with a letter or '_')`]);
        return true;
      },
    );
  }
  assert.deepEqual(baseSettingsProblems({ adminUser: "ops" }), []);
  assert.deepEqual(baseSettingsProblems({ adminUser: "_deploy-1" }), []);
});

test("shellcheck passes the base role's rendered snippets on their own", () => {
  const r = baseRole({ adminUser: "ops" });
  assert.deepEqual(fs.readdirSync(FILES).filter((f) => f.endsWith(".sh")), [], "no script files: the snippets are short");
  for (const [step, snippet] of Object.entries({ apply: r.apply, healthCheck: r.healthCheck })) {
    assert.ok(snippet, step);
    assertShellcheckClean(`the base ${step} snippet`, snippet);
  }
  for (const file of r.files) if (file.onChange) assertShellcheckClean(`the handler of ${file.path}`, file.onChange);
});
