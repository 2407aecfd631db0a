// The roles' host scripts are real files: each must pass shellcheck on its own, as it sits in the
// repository (the shared library followed through its `source` line), not only once rendered.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import test from "node:test";

const REPO = path.resolve(__dirname, "../..");

function filesUnder(dir: string, keep: (file: string) => boolean): string[] {
  return fs.readdirSync(dir, { withFileTypes: true, recursive: true }).filter((e) => e.isFile() && keep(path.join(e.parentPath, e.name))).map((e) => path.join(e.parentPath, e.name));
}

const scripts = filesUnder(path.join(REPO, "components"), (f) => f.endsWith(".sh")).map((f) => path.relative(REPO, f)).sort();

test("every role script file passes shellcheck on its own", () => {
  assert.ok(scripts.includes("components/host/files/leaninfra-lib.sh") && scripts.includes("components/host/files/role-bundle.sh"));
  assert.ok(scripts.filter((f) => /^components\/[a-z-]+\/files\//.test(f)).length >= 8, `expected the roles' scripts, found ${scripts.join(", ")}`);
  const result = spawnSync("shellcheck", ["--shell=bash", "--external-sources", "--format=gcc", ...scripts], { cwd: REPO, encoding: "utf8" });
  if (result.error) assert.fail(`shellcheck could not run (${result.error.message}); install it: apt-get install shellcheck`);
  assert.equal(result.status, 0, `shellcheck found problems:\n${result.stdout}${result.stderr}`);
});

test("no shell text hides in TypeScript behind ${\"$\"} escapes", () => {
  const sources = filesUnder(path.join(REPO, "components"), (f) => f.endsWith(".ts")).concat(filesUnder(path.join(REPO, "infra"), (f) => f.endsWith(".ts")));
  const escaped = sources.filter((f) => fs.readFileSync(f, "utf8").includes('${"$"}')).map((f) => path.relative(REPO, f));
  assert.deepEqual(escaped, []);
});
