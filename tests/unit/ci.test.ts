import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import test from "node:test";
import { VERSITYGW_MODULE, VERSITYGW_VERSION } from "../lib/s3-server";

test(".ci/run installs the versitygw the backup tests start, at the same version", () => {
  const ci = fs.readFileSync(path.join(__dirname, "../../.ci/run"), "utf8");
  assert.ok(ci.includes(`go install ${VERSITYGW_MODULE}@${VERSITYGW_VERSION}`), `.ci/run must install ${VERSITYGW_MODULE}@${VERSITYGW_VERSION}`);
  assert.ok(ci.includes(`versitygw-${VERSITYGW_VERSION}/versitygw`));
  assert.match(ci, /\nnpm test\n/, ".ci/run ends by running the README's test command");
});
