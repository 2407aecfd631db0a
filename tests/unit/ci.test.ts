import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import test from "node:test";
import { VERSITYGW_MODULE, VERSITYGW_VERSION } from "../lib/s3-server";

const read = (file: string) => fs.readFileSync(path.join(__dirname, "../..", file), "utf8");

test("npm test sets up the machine itself: setup.sh installs the versitygw the backup tests start, at the same version", () => {
  const setup = read("tests/setup.sh");
  assert.ok(setup.includes(`go install ${VERSITYGW_MODULE}@${VERSITYGW_VERSION}`), `tests/setup.sh must install ${VERSITYGW_MODULE}@${VERSITYGW_VERSION}`);
  assert.ok(setup.includes(`versitygw-${VERSITYGW_VERSION}/versitygw`));
  assert.ok(setup.includes("tests/engine/build-pulumi.sh"), "and builds the Pulumi CLI");
  assert.match(read("tests/run.sh"), /\nbash tests\/setup.sh\n/, "npm test runs the set-up first");
});

test(".ci/run ends by running the README's test command, which the README names", () => {
  assert.match(read(".ci/run"), /\nnpm test\n$/);
  assert.match(read("README.md"), /npm test {2,}# /);
});
