import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import test from "node:test";
import { bootFiles, renderCloudInit } from "../../components/host/cloud-init";
import { PLACEHOLDER_HOST_KEY } from "../../components/host/host-key";
import { ConfigError, validateConfig } from "../../infra/config";
import { MINIMAL_CONFIG } from "../lib/mock-cloud";
import { ed25519Key } from "../lib/ed25519-key";
import { assertShellcheckClean } from "../lib/shellcheck";

const REPO = path.resolve(__dirname, "../..");
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn9lq7g1xv3Y2Yl7Zb3eVq9tW4k8dG0ZcU2n6pYb1Xq owner@laptop";
const HOST_KEY = ed25519Key("host-ssh-host-key");
const settings = { hostname: "app", fqdn: "app.example.com", adminUser: "ops", adminSshPublicKey: KEY, swapSizeMb: 2048, journalMaxUseMb: 1024, hostKey: HOST_KEY };

/** The Debian 13 root holds cloud-init 25, the version that reads this user data on the server. */
function debianRoot(): string {
  const built = spawnSync("bash", [path.join(REPO, "tests/fixtures/debian13-root.sh")], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  assert.equal(built.status, 0, "building the Debian 13 root failed (needs debootstrap and systemd-container)");
  return built.stdout.trim();
}

function cloudInitSchema(root: string, userData: string) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-ci-"));
  fs.writeFileSync(path.join(dir, "user-data"), userData);
  try {
    return spawnSync(
      "systemd-nspawn",
      ["--quiet", "--register=no", "--keep-unit", "--read-only", `--bind-ro=${dir}:/mnt`, "-D", root, "cloud-init", "schema", "--config-file", "/mnt/user-data"],
      { encoding: "utf8" },
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test("cloud-init 25 (Debian 13) accepts the rendered user data, and rejects a broken one", { timeout: 600_000 }, () => {
  const root = debianRoot();
  const version = spawnSync("systemd-nspawn", ["--quiet", "--register=no", "--keep-unit", "--read-only", "-D", root, "cloud-init", "--version"], { encoding: "utf8" });
  console.log(`# checked with ${(version.stdout + version.stderr).trim()}`);
  // With the host key as pulumi up renders it, and with the plan's placeholder.
  for (const variant of [settings, { ...settings, swapSizeMb: 0 }, { ...settings, hostKey: PLACEHOLDER_HOST_KEY }]) {
    const ok = cloudInitSchema(root, renderCloudInit(variant));
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /Valid schema/);
  }
  // ssh_keys is checked too: an unknown key type under it is refused.
  const badKey = cloudInitSchema(root, renderCloudInit(settings).replace("ed25519_public:", "ed25519_publicc:"));
  assert.notEqual(badKey.status, 0, "cloud-init schema should refuse an unknown ssh_keys entry");
  assert.match(badKey.stdout + badKey.stderr, /ssh_keys/);
  // The checker is real: a wrong type under a known key is refused.
  const broken = renderCloudInit(settings).replace("ssh_pwauth: false", "ssh_pwauth: [not, a, boolean]");
  const bad = cloudInitSchema(root, broken);
  assert.notEqual(bad.status, 0, "cloud-init schema should refuse a list for ssh_pwauth");
  assert.match(bad.stdout + bad.stderr, /ssh_pwauth/);
});

test("shellcheck passes the scripts cloud-init writes", () => {
  for (const file of bootFiles(settings).filter((f) => f.content.startsWith("#!"))) {
    assertShellcheckClean(file.path, file.content);
  }
});

// Comments a key may carry that look like YAML syntax, quoting or other scripts: all printable text.
const ODD_COMMENTS = [
  "o'hara \"quoted\" #hash: colon & *star !bang %pct @at `tick` {brace} [bracket] | > - ? ,",
  "---",
  "... \\backslash \\n not-a-newline $HOME $(id) ;rm -rf /",
  "café 日本語 🔑 ‮rtl‬",
  "true",
  "null ~ 0x10 1e3 .inf",
];

test("user data rendered from odd but printable config values parses back with cloud-init's own PyYAML (Debian 13) to the same values; non-text characters are refused first", { timeout: 600_000 }, () => {
  const root = debianRoot();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-yaml-"));
  try {
    const keys = ODD_COMMENTS.map((comment) => `${KEY.split(" ").slice(0, 2).join(" ")} ${comment}`);
    keys.forEach((key, i) => {
      const cfg = validateConfig("prod", { ...MINIMAL_CONFIG, adminSshPublicKey: key });
      fs.writeFileSync(path.join(dir, `user-data-${i}`), renderCloudInit({ ...settings, adminSshPublicKey: cfg.adminSshPublicKey }));
    });
    const parse = spawnSync(
      "systemd-nspawn",
      [
        "--quiet", "--register=no", "--keep-unit", "--read-only", `--bind-ro=${dir}:/mnt`, "-D", root,
        "python3", "-c",
        "import glob, json, yaml\nprint(json.dumps([yaml.safe_load(open(f'/mnt/user-data-{i}', encoding='utf-8'))['users'][0]['ssh_authorized_keys'][0] for i in range(len(glob.glob('/mnt/user-data-*')))]))",
      ],
      { encoding: "utf8" },
    );
    assert.equal(parse.status, 0, parse.stderr);
    assert.deepEqual(JSON.parse(parse.stdout), keys, "PyYAML reads back exactly the key given");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  for (const bad of ["\t", "\u007f", "\u0085", "\u2028", "\ufffe", "\uffff", "\ud800"]) {
    assert.throws(
      () => validateConfig("prod", { ...MINIMAL_CONFIG, adminSshPublicKey: `${KEY} a${bad}b` }),
      (error: unknown) => error instanceof ConfigError && error.problems.some((p) => p.startsWith("leaninfra:adminSshPublicKey: ") && p.includes("is not printable text")),
      JSON.stringify(bad),
    );
  }
});
