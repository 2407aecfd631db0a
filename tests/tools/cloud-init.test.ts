import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import test from "node:test";
import { METADATA_ADDRESS, METADATA_GUARD, bootFiles, metadataGuardRules, metadataGuardUnit, renderCloudInit } from "../../components/host/cloud-init";
import { show, withDebianRoot } from "../lib/debian-root";
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

/** As `nobody` and as root: a TCP connect to the metadata address, its errno and how long it took. */
const CONNECT_PY = `import errno, json, socket, sys, time
s = socket.socket()
s.settimeout(5)
t = time.monotonic()
try:
    s.connect(("${METADATA_ADDRESS}", 80))
    result = "connected"
except OSError as e:
    result = errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__
print(json.dumps({"result": result, "ms": round((time.monotonic() - t) * 1000)}))
`;

test("the metadata guard in Debian 13: nft -c and nft -f load the ruleset (twice, replacing only its own table); nobody is refused at once, root connects, a container's forwarded traffic is refused at once; systemd-analyze verify reads the unit", { timeout: 20 * 60_000 }, async () => {
  await withDebianRoot((root) => {
    const installed = root.run("apt-get install -qq -y --no-install-recommends nftables >/dev/null 2>&1 || { apt-get update -qq && apt-get install -qq -y --no-install-recommends nftables; }");
    assert.equal(installed.code, 0, show(installed));
    for (const [rootPath, content] of [[METADATA_GUARD.rulesPath, metadataGuardRules()], [METADATA_GUARD.unitPath, metadataGuardUnit()], ["/srv/connect.py", CONNECT_PY]]) {
      fs.mkdirSync(path.dirname(root.hostPath(rootPath)), { recursive: true });
      fs.writeFileSync(root.hostPath(rootPath), content);
    }
    const verify = root.run(`systemd-analyze verify --man=no ${METADATA_GUARD.unit} 2>&1`);
    assert.equal(verify.code, 0, show(verify));
    console.log(`# systemd-analyze verify ${METADATA_GUARD.unit}: ${verify.stdout.trim() || "no findings"}`);
    // A private network namespace: the rules and the metadata address on lo exist only there, never on
    // this machine's own network.
    const net = root.run(`set -e
nft --version
nft -c -f ${METADATA_GUARD.rulesPath} && echo check-ok
# A table of someone else's (as Docker's are) survives the guard's loads.
nft add table inet other && nft add chain inet other keep
nft -f ${METADATA_GUARD.rulesPath}
nft -f ${METADATA_GUARD.rulesPath}
nft -j list ruleset > /root/ruleset.json
ip link set lo up
echo 1 > /proc/sys/net/ipv4/ip_forward
# Two more namespaces: the metadata service (its address, a listener as root) and a container whose
# traffic this namespace forwards, as the server does for docker0.
unshare -n sleep 60 & md=$!
unshare -n sleep 60 & ct=$!
sleep 0.5
ip link add md0 type veth peer name eth0 netns "$md"
ip link add ct0 type veth peer name eth0 netns "$ct"
ip addr add 10.99.1.1/24 dev md0 && ip link set md0 up
ip addr add 10.99.2.1/24 dev ct0 && ip link set ct0 up
ip route add ${METADATA_ADDRESS}/32 via 10.99.1.2
nsenter -t "$md" -n sh -ec 'ip link set lo up; ip addr add ${METADATA_ADDRESS}/32 dev lo; ip addr add 10.99.1.2/24 dev eth0; ip link set eth0 up; ip route add default via 10.99.1.1'
nsenter -t "$ct" -n sh -ec 'ip link set lo up; ip addr add 10.99.2.2/24 dev eth0; ip link set eth0 up; ip route add default via 10.99.2.1'
nsenter -t "$md" -n python3 -c 'import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("${METADATA_ADDRESS}", 80)); s.listen(8); time.sleep(30)' &
listener=$!
sleep 1
echo "nobody $(runuser -u nobody -- python3 /srv/connect.py)"
echo "root $(python3 /srv/connect.py)"
echo "container $(nsenter -t "$ct" -n python3 /srv/connect.py)"
kill "$listener" "$md" "$ct"
nft list table inet ${METADATA_GUARD.table} | grep -o 'counter packets [0-9]*'
`, { nspawnArgs: ["--private-network"] });
    assert.equal(net.code, 0, show(net));
    const lines = net.stdout.trim().split("\n");
    const result = (who: string) => {
      const line = lines.find((l) => l.startsWith(`${who} `));
      assert.ok(line, `no result for ${who}:\n${show(net)}`);
      return JSON.parse(line.slice(who.length + 1)) as { result: string; ms: number };
    };
    console.log(`# checked with ${lines[0]}`);
    assert.match(lines[0], /^nftables v1\./);
    assert.equal(lines[1], "check-ok");
    const nobody = result("nobody");
    const rootTry = result("root");
    assert.equal(nobody.result, "EHOSTUNREACH", "admin-prohibited reaches the caller as No route to host");
    assert.ok(nobody.ms < 1000, `refused at once, not after a timeout (${nobody.ms} ms)`);
    const container = result("container");
    console.log(`# nobody: ${nobody.result} in ${nobody.ms} ms; root: ${rootTry.result} in ${rootTry.ms} ms; forwarded (root in a container): ${container.result} in ${container.ms} ms`);
    assert.equal(rootTry.result, "connected", "root reaches the metadata service");
    assert.equal(container.result, "EHOSTUNREACH", "forwarded traffic is refused, whatever the user inside the container");
    assert.ok(container.ms < 1000, `refused at once (${container.ms} ms)`);
    assert.deepEqual(lines.slice(-2), ["counter packets 1", "counter packets 1"], "output counted nobody's one SYN (not root's), forward the container's");
    const ruleset = JSON.parse(fs.readFileSync(root.hostPath("/root/ruleset.json"), "utf8")).nftables as Record<string, { family?: string; name?: string; table?: string; hook?: string }>[];
    assert.deepEqual(ruleset.filter((o) => o.table).map((o) => `${o.table.family} ${o.table.name}`).sort(), [`inet ${METADATA_GUARD.table}`, "inet other"], "loaded twice: one table of its own, the other table kept");
    assert.deepEqual(ruleset.filter((o) => o.chain).map((o) => `${o.chain.name}:${o.chain.hook}`).sort(), ["forward:forward", "keep:undefined", "output:output"]);
  });
});
