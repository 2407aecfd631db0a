// The pipelines (.gitlab-ci.yml, .github/workflows/leaninfra.yml) checked by the tools that read them,
// and the scripts they call (ci/*.sh) run for real: shellcheck, the note's text from a preview's
// output, create-or-update of the one note against a stand-in of GitLab's and GitHub's APIs, and the
// refusals that stop a job before Pulumi runs (no backend, the backup bucket, no previous release).
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { startNotesApi, NotesApi } from "../lib/notes-api";

const REPO = path.resolve(__dirname, "..", "..");
const TOOLS = path.join(process.env.LEANINFRA_ROOT_CACHE ?? "/var/cache/leaninfra", "tools");
const ACTIONLINT = path.join(TOOLS, "actionlint-v1.7.12", "actionlint");
const GITLAB_CI_LOCAL = path.join(TOOLS, "gitlab-ci-local-4.75.1", "node_modules", ".bin", "gitlab-ci-local");
const WORKFLOW = ".github/workflows/leaninfra.yml";
const CI_SCRIPTS = fs.readdirSync(path.join(REPO, "ci")).filter((f) => f.endsWith(".sh")).map((f) => `ci/${f}`);

function tool(file: string): string {
  assert.ok(fs.existsSync(file), `${file} is missing: run bash tests/setup.sh`);
  return file;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): Run {
  const r = spawnSync(file, args, { cwd: opts.cwd ?? REPO, env: opts.env ?? process.env, input: opts.input, encoding: "utf8", timeout: 120_000 });
  if (r.error) assert.fail(`${file} could not run: ${r.error.message}`);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The same without blocking the event loop, for scripts that talk to the in-process API stand-in. */
function runAsync(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: REPO, env, encoding: "utf8", timeout: 120_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr });
    });
  });
}

/** An environment with nothing of this machine's CI or Pulumi settings. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: os.tmpdir(), LANG: "C.UTF-8", ...extra };
}

describe("GitHub workflow", () => {
  test("actionlint (with shellcheck on its run: blocks) finds nothing", () => {
    const r = run(tool(ACTIONLINT), ["-verbose", WORKFLOW]);
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /Found total 0 errors/);
    assert.doesNotMatch(r.stderr, /Rule "shellcheck" was disabled/, "actionlint runs shellcheck on run: blocks");
  });

  test("actionlint's shellcheck does read the run: blocks: an unquoted variable in a copy is reported", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-actionlint-"));
    try {
      fs.mkdirSync(path.join(dir, ".github", "workflows"), { recursive: true });
      const text = fs.readFileSync(path.join(REPO, WORKFLOW), "utf8").replace("run: bash ci/up.sh", "run: bash ci/up.sh $STACK");
      fs.writeFileSync(path.join(dir, WORKFLOW), text);
      const r = run(ACTIONLINT, [WORKFLOW], { cwd: dir });
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stdout, /SC2086/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the jobs: test and preview on pull requests, up on main one at a time, rollback by hand; actions pinned by commit", () => {
    const wf = parse(fs.readFileSync(path.join(REPO, WORKFLOW), "utf8")) as {
      on: Record<string, unknown>;
      jobs: Record<string, { if?: string; needs?: string; permissions?: Record<string, string>; concurrency?: unknown; steps: { uses?: string; run?: string; with?: Record<string, unknown> }[] }>;
    };
    assert.deepEqual(Object.keys(wf.on).sort(), ["pull_request", "push", "workflow_dispatch"]);
    assert.deepEqual(Object.keys(wf.jobs), ["test", "system-tests", "preview", "up", "rollback"]);
    assert.equal(wf.jobs.preview.if, "github.event_name == 'pull_request'");
    assert.equal(wf.jobs.preview.permissions?.["pull-requests"], "write");
    assert.ok(wf.jobs.preview.steps.some((s) => s.run === "bash ci/preview.sh github"));
    assert.equal(wf.jobs.up.needs, "test");
    assert.match(wf.jobs.up.if ?? "", /github.event_name == 'push' && github.ref == 'refs\/heads\/main'/);
    assert.match(wf.jobs.rollback.if ?? "", /workflow_dispatch/);
    for (const job of ["up", "rollback"]) assert.deepEqual(wf.jobs[job].concurrency, { group: "production", "cancel-in-progress": false }, job);
    assert.equal(wf.jobs.rollback.steps[0].with?.["fetch-depth"], 0, "rollback reads the stack file's history");
    const uses = Object.values(wf.jobs).flatMap((j) => j.steps.map((s) => s.uses).filter((u): u is string => !!u));
    assert.ok(uses.length >= 10);
    for (const u of uses) assert.match(u, /^actions\/(checkout|setup-node|cache)@[0-9a-f]{40}$/, u);
  });
});

describe("GitLab pipeline", () => {
  let repo: string;
  before(() => {
    // gitlab-ci-local reads the branch from git: a repository holding the pipeline, on main.
    repo = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-gitlab-ci-"));
    fs.copyFileSync(path.join(REPO, ".gitlab-ci.yml"), path.join(repo, ".gitlab-ci.yml"));
    const git = (...args: string[]) => assert.equal(run("git", ["-c", "user.name=t", "-c", "user.email=t@example.net", ...args], { cwd: repo }).code, 0, args.join(" "));
    git("init", "-q", "-b", "main");
    git("add", ".gitlab-ci.yml");
    git("commit", "-q", "-m", "pipeline");
  });
  after(() => fs.rmSync(repo, { recursive: true, force: true }));

  /** gitlab-ci-local --list-json under the given predefined variables: each job's stage, when and allow_failure. */
  function jobs(variables: Record<string, string>): Record<string, string> {
    const args = ["--list-json", "--json-schema-validation", "--ignore-predefined-vars", Object.keys(variables).join(",") || "CI_PIPELINE_SOURCE"];
    for (const [k, v] of Object.entries(variables)) args.push("--variable", `${k}=${v}`);
    const r = run(tool(GITLAB_CI_LOCAL), args, { cwd: repo });
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    assert.match(r.stdout + r.stderr, /json schema validated/);
    const list = JSON.parse(r.stdout.slice(r.stdout.indexOf("\n[") + 1)) as { name: string; stage: string; when: string; allow_failure: boolean }[];
    return Object.fromEntries(list.map((j) => [j.name, `${j.stage} ${j.when}${j.allow_failure ? " allow_failure" : ""}`]));
  }

  test("a merge-request pipeline: test and preview", () => {
    // GitLab leaves CI_COMMIT_BRANCH unset in merge-request pipelines; gitlab-ci-local would read it from git.
    assert.deepEqual(jobs({ CI_PIPELINE_SOURCE: "merge_request_event", CI_MERGE_REQUEST_IID: "3", CI_COMMIT_BRANCH: "" }), {
      test: "test on_success",
      "system-tests": "test never",
      preview: "preview on_success",
      up: "deploy never",
      rollback: "deploy never",
    });
  });

  test("a push to the default branch: test, up, and rollback by hand", () => {
    assert.deepEqual(jobs({ CI_PIPELINE_SOURCE: "push" }), {
      test: "test on_success",
      "system-tests": "test never",
      preview: "preview never",
      up: "deploy on_success",
      rollback: "deploy manual allow_failure",
    });
  });

  test("a push to another branch deploys nothing; a root runner's tag adds the tool and integration tests", () => {
    const other = jobs({ CI_PIPELINE_SOURCE: "push", CI_COMMIT_BRANCH: "feature" });
    assert.deepEqual([other.preview, other.up, other.rollback], ["preview never", "deploy never", "deploy never"]);
    assert.equal(jobs({ CI_PIPELINE_SOURCE: "push", LEANINFRA_ROOT_RUNNER: "debian-root" })["system-tests"], "test on_success");
  });

  test("as expanded by gitlab-ci-local: up and rollback share resource_group production; npm and plugins cached on the lock file", () => {
    const r = run(GITLAB_CI_LOCAL, ["--preview"], { cwd: repo });
    assert.equal(r.code, 0, r.stderr);
    const doc = parse(r.stdout.slice(r.stdout.indexOf("---") >= 0 ? r.stdout.indexOf("---") : 0)) as Record<string, { resource_group?: string; script?: string[]; cache?: { key: { files: string[] }; paths: string[] }[]; variables?: Record<string, string>; needs?: unknown[] }>;
    assert.equal(doc.up.resource_group, "production");
    assert.equal(doc.rollback.resource_group, "production");
    assert.deepEqual(doc.rollback.needs, []);
    assert.equal(doc.rollback.variables?.GIT_DEPTH, "0");
    assert.deepEqual(doc.preview.script?.at(-1), "bash ci/preview.sh gitlab");
    assert.deepEqual(doc.up.script, ["bash ci/up.sh"]);
    assert.deepEqual(doc.rollback.script, ["bash ci/rollback.sh"]);
    for (const job of ["preview", "up", "rollback"]) {
      assert.deepEqual(doc[job].cache?.map((c) => [c.key.files, c.paths]), [[["package-lock.json"], [".npm/"]], [["package-lock.json"], [".pulumi-home/plugins/"]]], job);
    }
  });
});

test("shellcheck finds nothing in the scripts the pipelines call", () => {
  assert.ok(CI_SCRIPTS.length >= 7, CI_SCRIPTS.join(" "));
  const r = run("shellcheck", ["--shell=bash", "--external-sources", "--format=gcc", ...CI_SCRIPTS]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  for (const script of CI_SCRIPTS.filter((s) => s !== "ci/lib.sh")) assert.match(fs.readFileSync(path.join(REPO, script), "utf8"), /^#!\/usr\/bin\/env bash\n[^]*\nset -euo pipefail\n/, script);
});

describe("the preview note (ci/note.sh)", () => {
  let dir: string;
  before(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-note-"))));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  function note(log: string, status: number, env: Record<string, string> = {}): string {
    const file = path.join(dir, "preview.log");
    fs.writeFileSync(file, log);
    const r = run("bash", ["ci/note.sh", "prod", file, String(status)], { env: cleanEnv({ COMMIT_SHA: "0123abc", ...env }) });
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  }

  test("a failed preview that reached no summary: the marker first, the status, the whole output", () => {
    const text = note("Previewing update (prod):\nerror: something broke\n", 255);
    assert.equal(text.split("\n")[0], "<!-- leaninfra-preview:prod -->");
    assert.match(text, /- \*\*Commit:\*\* `0123abc`/);
    assert.match(text, /- \*\*Preview:\*\* \*\*failed\*\* \(exit 255\)/);
    assert.match(text, /- \*\*Changes:\*\* none reported/);
    assert.match(text, /- \*\*Policy pack `policy`:\*\* not reached/);
    assert.match(text, /<details><summary>Output<\/summary>\n\n``````diff\nPreviewing update \(prod\):\nerror: something broke\n``````\n\n<\/details>\n$/);
  });

  // Lines as `pulumi preview --diff --policy-pack policy` v3.274.1 prints them (tests/engine/ci-preview.test.ts runs it for real).
  const VIOLATION = (type: string, name: string) =>
    `    leaninfra@v1.0.0 [mandatory]  production-delete-protection  (hcloud:index:${type}: ${name})Production servers, volumes and primary IPs have delete protection.\n${type} ${name} is production but has deleteProtection off.`;
  const SUMMARY = "Resources:\n    + 57 to create\n    ~ 1 to update\n\nPolicy Packs run:\n    Name                    Version\n    leaninfra|local|policy  1.0.0\n";

  test("a passing preview: its change counts and the policy packs that ran; progress lines left out", () => {
    const text = note(`Previewing update (prod):\n@ previewing update....\n+ pulumi:pulumi:Stack: (create)\n${SUMMARY}`, 0);
    assert.match(text, /- \*\*Preview:\*\* succeeded\n- \*\*Changes:\*\* \+ 57 to create, ~ 1 to update\n- \*\*Policy pack `policy`:\*\* passed \(leaninfra\|local\|policy 1\.0\.0\)\n/);
    assert.ok(!text.includes("@ previewing"));
    assert.ok(text.includes("+ pulumi:pulumi:Stack: (create)\n"));
  });

  test("a policy violation: failed, each violation listed under the policy pack (at most 20, then a count)", () => {
    const text = note(`Previewing update (prod):\n${VIOLATION("Volume", "host-data")}\n${VIOLATION("Server", "host-server")}\nerror: preview failed\n${SUMMARY}`, 255);
    assert.match(text, /- \*\*Preview:\*\* \*\*failed\*\* \(exit 255\)/);
    assert.match(
      text,
      /- \*\*Policy pack `policy`:\*\* \*\*failed\*\*, violations: 2\n {2}- \[mandatory\] `production-delete-protection` \(hcloud:index:Volume: host-data\)\n {2}- \[mandatory\] `production-delete-protection` \(hcloud:index:Server: host-server\)\n\n/,
    );
    const many = note(Array.from({ length: 23 }, (_, i) => VIOLATION("Volume", `v${i}`)).join("\n") + `\n${SUMMARY}`, 255);
    assert.match(many, /violations: 23\n/);
    assert.match(many, /\(hcloud:index:Volume: v19\)\n {2}- \.\.\. and 3 more in the output\n/);
    assert.ok(!many.includes("(hcloud:index:Volume: v20)\n"));
  });

  test("a long output is cut to NOTE_LIMIT with a line saying how much and where the rest is", () => {
    const lines = Array.from({ length: 5000 }, (_, i) => `    + hcloud:index/firewall:Firewall: (create) line ${i} ✓`);
    const text = note(`${lines.join("\n")}\nResources:\n    + 58 to create\n`, 0, { NOTE_LIMIT: "65536", JOB_URL: "https://ci.example.net/jobs/9" });
    assert.ok(Buffer.byteLength(text) <= 65536, `${Buffer.byteLength(text)} bytes`);
    assert.ok(Buffer.byteLength(text) > 60000, "the limit is used, not wasted");
    assert.match(text, /- \*\*Changes:\*\* \+ 58 to create/);
    const cut = /\.\.\. cut: (\d+) of 5002 lines shown to fit the note's limit of 65536 characters; the whole output is in the job's log \(https:\/\/ci\.example\.net\/jobs\/9\)\n``````\n/.exec(text);
    assert.ok(cut, text.slice(-400));
    assert.ok(Number(cut[1]) > 100 && Number(cut[1]) < 5000, cut[1]);
    assert.ok(text.includes(`${lines[0]}\n`));
    assert.ok(!text.includes(lines[4999]));
    // GitLab's limit is larger: the same output goes in whole.
    assert.ok(!note(lines.join("\n"), 0, { NOTE_LIMIT: "1000000" }).includes("... cut:"));
  });
});

describe("one note per merge request (ci/post-note.sh against a stand-in API)", () => {
  let api: NotesApi;
  let dir: string;
  const TOKEN = "glpat-standin-0123456789";
  before(async () => {
    api = await startNotesApi(TOKEN);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-post-note-"));
  });
  after(async () => {
    await api.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function noteFile(name: string, body: string): string {
    const file = path.join(dir, name);
    fs.writeFileSync(file, `<!-- leaninfra-preview:prod -->\n${body}\n`);
    return file;
  }
  const gitlabEnv = (extra: Record<string, string> = {}) =>
    cleanEnv({ CI_API_V4_URL: `${api.url}/api/v4`, CI_PROJECT_ID: "7", CI_MERGE_REQUEST_IID: "3", LEANINFRA_NOTE_TOKEN: TOKEN, ...extra });
  const githubEnv = (extra: Record<string, string> = {}) => cleanEnv({ GITHUB_API_URL: api.url, GITHUB_REPOSITORY: "owner/shop", PR_NUMBER: "5", GITHUB_TOKEN: TOKEN, ...extra });

  test("GitLab: the first push creates the note, the second updates it, past 150 others on later pages", async () => {
    const thread = Array.from({ length: 150 }, (_, i) => ({ id: i + 1, body: `review comment ${i}` }));
    api.threads.set("gitlab:7:3", thread);
    const first = await runAsync("bash", ["ci/post-note.sh", "gitlab", noteFile("a.md", "first push")], gitlabEnv());
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /post-note: created note (\d+)/);
    const second = await runAsync("bash", ["ci/post-note.sh", "gitlab", noteFile("b.md", "second push")], gitlabEnv());
    assert.equal(second.code, 0, second.stderr);
    const id = /created note (\d+)/.exec(first.stdout)![1];
    assert.match(second.stdout, new RegExp(`post-note: updated note ${id} `));
    const ours = api.threads.get("gitlab:7:3")!.filter((n) => n.body.startsWith("<!-- leaninfra-preview:prod -->"));
    assert.deepEqual(ours, [{ id: Number(id), body: "<!-- leaninfra-preview:prod -->\nsecond push\n" }]);
    assert.equal(api.threads.get("gitlab:7:3")!.length, 151, "the others are untouched");
    assert.ok(api.requests.includes(`PUT /api/v4/projects/7/merge_requests/3/notes/${id}`));
  });

  test("GitHub: create, then update the same comment (PATCH)", async () => {
    const first = await runAsync("bash", ["ci/post-note.sh", "github", noteFile("c.md", "first push")], githubEnv());
    assert.equal(first.code, 0, first.stderr);
    const second = await runAsync("bash", ["ci/post-note.sh", "github", noteFile("d.md", "second push")], githubEnv());
    assert.equal(second.code, 0, second.stderr);
    const comments = api.threads.get("github:owner/shop:5")!;
    assert.equal(comments.length, 1);
    assert.equal(comments[0].body, "<!-- leaninfra-preview:prod -->\nsecond push\n");
    assert.ok(api.requests.includes(`PATCH /repos/owner/shop/issues/comments/${comments[0].id}`));
  });

  test("no token: refused naming the token to create; a wrong token fails the job", async () => {
    const none = await runAsync("bash", ["ci/post-note.sh", "gitlab", noteFile("e.md", "x")], gitlabEnv({ LEANINFRA_NOTE_TOKEN: "" }));
    assert.equal(none.code, 2);
    assert.match(none.stderr, /LEANINFRA_NOTE_TOKEN is not set: create a project access token \(role Reporter, scope api\)/);
    const wrong = await runAsync("bash", ["ci/post-note.sh", "github", noteFile("f.md", "x")], githubEnv({ GITHUB_TOKEN: "wrong" }));
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /401/);
  });
});

describe("refusals before Pulumi runs", () => {
  test("no state backend, a backend without its passphrase or credentials, the backup bucket as backend", () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{}, /ci: no state backend: set PULUMI_ACCESS_TOKEN \(Pulumi Cloud\), or PULUMI_BACKEND_URL=s3:/],
      [{ PULUMI_BACKEND_URL: "s3://leaninfra-state?endpoint=https://a.r2.cloudflarestorage.com&region=auto" }, /PULUMI_CONFIG_PASSPHRASE is not: set the stack's passphrase/],
      [{ PULUMI_BACKEND_URL: "s3://leaninfra-state?region=auto", PULUMI_CONFIG_PASSPHRASE: "p" }, /AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set/],
      [
        { PULUMI_BACKEND_URL: "s3://leaninfra-prod-backups?endpoint=https://a.r2.cloudflarestorage.com&region=auto", PULUMI_CONFIG_PASSPHRASE: "p", AWS_ACCESS_KEY_ID: "a", AWS_SECRET_ACCESS_KEY: "b" },
        /PULUMI_BACKEND_URL is the backup bucket \(leaninfra-prod-backups\): keep the state in a bucket of its own/,
      ],
      [{ PULUMI_BACKEND_URL: "postgres://x", PULUMI_CONFIG_PASSPHRASE: "p" }, /"postgres:\/\/x" is not a backend URL/],
    ];
    for (const script of ["ci/preview.sh", "ci/up.sh"]) {
      for (const [env, message] of cases) {
        const r = run("bash", [script], { env: cleanEnv(env) });
        assert.equal(r.code, 2, `${script} ${JSON.stringify(env)}: ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, message, script);
        assert.doesNotMatch(r.stdout, /Previewing|Updating/);
      }
    }
  });

  describe("rollback", () => {
    let repo: string;
    before(() => {
      // A fork's history: the stack file with appTag 1.0.0, a commit elsewhere, then 1.1.0.
      repo = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-rollback-"));
      fs.cpSync(path.join(REPO, "ci"), path.join(repo, "ci"), { recursive: true });
      fs.symlinkSync(path.join(REPO, "node_modules"), path.join(repo, "node_modules"));
      const stackFile = fs.readFileSync(path.join(REPO, "Pulumi.prod.yaml"), "utf8");
      assert.match(stackFile, /^ {2}appTag: 1\.0\.0$/m);
      fs.writeFileSync(path.join(repo, "Pulumi.prod.yaml"), stackFile);
      // The project's name in Pulumi.yaml is the namespace of the stack file's keys.
      fs.copyFileSync(path.join(REPO, "Pulumi.yaml"), path.join(repo, "Pulumi.yaml"));
      git(repo, "init", "-q", "-b", "main");
      git(repo, "add", ".");
      git(repo, "commit", "-q", "-m", "first release");
    });
    after(() => fs.rmSync(repo, { recursive: true, force: true }));

    function git(cwd: string, ...args: string[]): void {
      const r = run("git", ["-c", "user.name=t", "-c", "user.email=t@example.net", ...args], { cwd });
      assert.equal(r.code, 0, `git ${args.join(" ")}: ${r.stderr}`);
    }

    test("one release in the history: no previous release, refused before any backend or Pulumi", () => {
      const r = run("bash", ["ci/rollback.sh"], { cwd: repo, env: cleanEnv() });
      assert.equal(r.code, 2, r.stdout + r.stderr);
      assert.match(r.stderr, /rollback: no previous release: every commit of Pulumi\.prod\.yaml has appTag 1\.0\.0; nothing to roll back to \(set ROLLBACK_TO=<tag> to deploy a given tag\)/);
    });

    test("a shallow clone cannot see the history: refused, naming the setting", () => {
      const shallow = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-shallow-"));
      try {
        git(repo, "commit", "-q", "--allow-empty", "-m", "another");
        git(os.tmpdir(), "clone", "-q", "--depth", "1", `file://${repo}`, shallow);
        assert.ok(fs.existsSync(path.join(shallow, "node_modules", "yaml")), "the clone links the project's node_modules");
        const r = run("bash", ["ci/rollback.sh"], { cwd: shallow, env: cleanEnv() });
        assert.equal(r.code, 2, r.stdout + r.stderr);
        assert.match(r.stderr, /this checkout is shallow; the job needs the whole history \(GIT_DEPTH: 0 \/ fetch-depth: 0\)/);
      } finally {
        fs.rmSync(shallow, { recursive: true, force: true });
      }
    });
  });
});
