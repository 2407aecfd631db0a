// The pipelines' scripts through the real Pulumi CLI and the engine tier's stand-ins: ci/preview.sh
// previews the prod stack with the policy pack and posts its note to a stand-in of GitLab's notes API
// (once created, then updated when a push breaks a policy), and ci/rollback.sh redeploys the appTag
// before the last release, found in the stack file's git history, through ci/up.sh's `pulumi up`.
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { NotesApi, startNotesApi } from "../lib/notes-api";
import { exportStack, ok } from "./engine";
import { EngineWorkspace, PROJECT_FILES, plainText } from "./workspace";

const TOKEN = "glpat-standin-0123456789";
const MARKER = "<!-- leaninfra-preview:prod -->";
let ws: EngineWorkspace;
let api: NotesApi;

before(async () => {
  ws = new EngineWorkspace({ projectFiles: [...PROJECT_FILES, "policy", "ci"] });
  ws.initProdStack();
  api = await startNotesApi(TOKEN);
});
after(async () => {
  await api?.close();
  ws?.dispose();
});

/** A ci/ script in the fork, as a merge-request or default-branch job runs it (async: the API stand-in serves from this process). */
function job(script: string, args: string[], extra: Record<string, string> = {}): Promise<{ code: number; output: string }> {
  const env = ws.env({
    // The local backend the workspace logged in to, named as a pipeline names its backend.
    PULUMI_BACKEND_URL: `file://${ws.home}/.leaninfra-state`,
    CI_API_V4_URL: `${api.url}/api/v4`,
    CI_PROJECT_ID: "7",
    CI_MERGE_REQUEST_IID: "3",
    LEANINFRA_NOTE_TOKEN: TOKEN,
    NOTE_LIMIT: "1000000",
    ...extra,
  });
  return new Promise((resolve) => {
    execFile("bash", [script, ...args], { cwd: ws.project, env, encoding: "utf8", timeout: 20 * 60_000, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, output: plainText(`${stdout}\n${stderr}`) });
    });
  });
}

const notes = () => api.threads.get("gitlab:7:3") ?? [];

test("ci/preview.sh: the prod stack's preview passes the policy pack; its note is created on the merge request", async () => {
  const r = await job("ci/preview.sh", ["gitlab"], { COMMIT_SHA: "1111111" });
  assert.equal(r.code, 0, r.output);
  assert.match(r.output, /post-note: created note \d+ \(<!-- leaninfra-preview:prod -->\)/);
  const note = fs.readFileSync(path.join(ws.project, "out/ci/preview-prod.md"), "utf8");
  assert.equal(note.split("\n")[0], MARKER);
  assert.match(note, /- \*\*Commit:\*\* `1111111`\n- \*\*Preview:\*\* succeeded\n- \*\*Changes:\*\* \+ 58 to create\n/);
  assert.match(note, /- \*\*Policy pack `policy`:\*\* passed \(leaninfra/);
  assert.match(note, /<details><summary>Output<\/summary>\n\n``````diff\nPreviewing update \(prod\):\n/);
  assert.match(note, /\+ hcloud:index\/server:Server: \(create\)/);
  assert.ok(!note.includes("... cut:"), "GitLab's limit takes the whole preview");
  assert.deepEqual(notes().map((n) => n.body), [note]);
});

test("ci/preview.sh: a push that breaks a policy fails the job and updates the same note with the violations", async () => {
  ok(ws.pulumi(["config", "set", "leaninfra:deleteProtection", "false"]), "config set deleteProtection");
  ok(ws.pulumi(["config", "set", "leaninfra:allowUnprotectedProduction", "true"]), "config set allowUnprotectedProduction");
  try {
    const r = await job("ci/preview.sh", ["gitlab"], { COMMIT_SHA: "2222222" });
    assert.notEqual(r.code, 0, r.output);
    assert.match(r.output, /post-note: updated note \d+ /);
    const note = fs.readFileSync(path.join(ws.project, "out/ci/preview-prod.md"), "utf8");
    assert.match(note, /- \*\*Commit:\*\* `2222222`\n- \*\*Preview:\*\* \*\*failed\*\* \(exit \d+\)\n/);
    assert.match(note, /- \*\*Policy pack `policy`:\*\* \*\*failed\*\*, violations: \d+\n/);
    assert.match(note, /\n {2}- \[mandatory\] `production-delete-protection` \(hcloud:index:Server: host-server\)\n/);
    assert.deepEqual(notes().map((n) => n.body), [note], "one note, with the new text");
  } finally {
    ok(ws.pulumi(["config", "rm", "leaninfra:allowUnprotectedProduction"]), "config rm");
    ok(ws.pulumi(["config", "set", "leaninfra:deleteProtection", "true"]), "config set deleteProtection back");
  }
});

test("ci/rollback.sh: the appTag before the last release, from git history, deployed by pulumi up without a commit", async () => {
  const git = (...args: string[]) => {
    const r = spawnSync("git", ["-c", "user.name=t", "-c", "user.email=t@example.net", ...args], { cwd: ws.project, encoding: "utf8" });
    assert.equal(r.status, 0, `git ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  git("init", "-q", "-b", "main");
  git("add", "Pulumi.prod.yaml");
  git("commit", "-q", "-m", "release 1.0.0");
  ok(ws.pulumi(["config", "set", "leaninfra:appTag", "1.1.0"]), "config set appTag");
  git("commit", "-q", "-m", "release 1.1.0", "--", "Pulumi.prod.yaml");

  // The admin key as a CI secret: up.sh loads it into an agent of its own.
  const keyFile = path.join(ws.root, "admin-key");
  assert.equal(spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "ci", "-f", keyFile]).status, 0);
  const r = await job("ci/rollback.sh", [], { LEANINFRA_SSH_PRIVATE_KEY: fs.readFileSync(keyFile, "utf8").trimEnd() });
  assert.equal(r.code, 0, r.output);
  assert.match(r.output, /rollback: Pulumi\.prod\.yaml's appTag is 1\.1\.0; the previous release in its history is 1\.0\.0/);
  assert.match(r.output, /Policy Packs run:|Policies:/, "up ran the policy pack");
  assert.match(r.output, /Resources:\s+\+ 58 created/);
  assert.match(r.output, /rollback: stack prod runs appTag 1\.0\.0\. This checkout's change was not committed/);
  assert.equal(ok(ws.pulumi(["config", "get", "leaninfra:appTag"]), "config get").stdout.trim(), "1.0.0");
  assert.match(git("diff", "--", "Pulumi.prod.yaml"), /^-  leaninfra:appTag: 1\.1\.0\n\+  leaninfra:appTag: 1\.0\.0$/m);
  assert.equal(git("log", "--format=%s", "-1"), "release 1.1.0\n", "no commit was made");
  const app = exportStack(ws, true).resources.find((res) => res.urn.endsWith("::host-role-app"));
  assert.ok(app, "the app role's command is in the state");
  assert.match(JSON.stringify(app.inputs), /ghcr\.io\/example\/shop:1\.0\.0/, "the app role deployed the previous tag");
});
