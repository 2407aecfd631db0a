import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";

/** Runs the real shellcheck on a bash script; a missing shellcheck fails the test, never skips it. */
export function runShellcheck(script: string): { status: number | null; output: string } {
  const result = spawnSync("shellcheck", ["--shell=bash", "--format=gcc", "-"], { input: script, encoding: "utf8" });
  if (result.error) assert.fail(`shellcheck could not run (${result.error.message}); install it: apt-get install shellcheck`);
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/** Asserts that shellcheck finds nothing in `script`, naming what was checked. */
export function assertShellcheckClean(name: string, script: string): void {
  const { status, output } = runShellcheck(script);
  assert.equal(status, 0, `shellcheck found problems in ${name}:\n${output}`);
}
