import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import test from "node:test";
import { parse } from "yaml";
import { METADATA_ADDRESS, METADATA_GUARD, USER_DATA_LIMIT, bootFiles, metadataGuardRules, metadataGuardUnit, renderCloudInit } from "../../components/host/cloud-init";
import { firewallRules } from "../../components/host/firewall";
import { serverIpv6 } from "../../components/host";
import { HOST_KEY_FILE, PLACEHOLDER_HOST_KEY, hostKeyFingerprint, hostKeyLine, hostKeyProblem, renderHostKeyCheck } from "../../components/host/host-key";
import { assertShellcheckClean } from "../lib/shellcheck";
import { ed25519Key } from "../lib/ed25519-key";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn9lq7g1xv3Y2Yl7Zb3eVq9tW4k8dG0ZcU2n6pYb1Xq owner@laptop";
const HOST_KEY = ed25519Key("host-ssh-host-key");
/** The blob of an RSA key, under an ed25519 type name. */
const SSH_RSA_BLOB = Buffer.concat([Buffer.from("\0\0\0\x07ssh-rsa\0\0\0\x03\x01\0\x01\0\0\0\x02\0\xc1", "latin1")]).toString("base64");
const settings = { hostname: "app", fqdn: "app.example.com", adminUser: "ops", adminSshPublicKey: KEY, swapSizeMb: 2048, journalMaxUseMb: 1024, hostKey: HOST_KEY };

test("cloud-init: admin user with the key, no root, no passwords, UTC, time sync, swap", () => {
  const text = renderCloudInit(settings);
  assert.ok(text.startsWith("#cloud-config\n"));
  const doc = parse(text);
  assert.equal(doc.users.length, 1);
  assert.equal(doc.users[0].name, "ops");
  assert.deepEqual(doc.users[0].ssh_authorized_keys, [KEY]);
  assert.equal(doc.users[0].lock_passwd, true);
  assert.equal(doc.disable_root, true);
  assert.equal(doc.ssh_pwauth, false);
  assert.equal(doc.timezone, "UTC");
  assert.equal(doc.ntp, undefined, "time sync is timesyncd's drop-in, not cloud-init's ntp module");
  assert.ok(doc.packages.includes("systemd-timesyncd"));
  const timesyncd = doc.write_files.find((f: { path: string }) => f.path === "/etc/systemd/timesyncd.conf.d/10-leaninfra.conf");
  assert.match(timesyncd.content, /^NTP=ntp1\.hetzner\.de ntp2\.hetzner\.com ntp3\.hetzner\.net$/m);
  assert.match(bootFiles(settings).find((f) => f.path.endsWith("leaninfra-bootstrap"))!.content, /^systemctl enable systemd-timesyncd\.service$/m);
  assert.equal(doc.swap.filename, "/swapfile");
  assert.equal(doc.swap.size, 2048 * 1024 * 1024);
  assert.ok(doc.packages.includes("unattended-upgrades"));
  assert.deepEqual(doc.runcmd, [["/usr/local/sbin/leaninfra-bootstrap"]]);
});

test("cloud-init: sshd, journald and unattended-upgrades files say what they should", () => {
  const doc = parse(renderCloudInit(settings));
  const file = (p: string) => doc.write_files.find((f: { path: string }) => f.path === p)?.content as string;
  const sshd = file("/etc/ssh/sshd_config.d/10-leaninfra.conf");
  assert.match(sshd, /^PermitRootLogin no$/m);
  assert.match(sshd, /^PasswordAuthentication no$/m);
  assert.match(sshd, /^AllowUsers ops$/m);
  assert.match(file("/etc/systemd/journald.conf.d/10-leaninfra.conf"), /^SystemMaxUse=1024M$/m);
  assert.match(file("/etc/apt/apt.conf.d/20auto-upgrades"), /^APT::Periodic::Unattended-Upgrade "1";$/m);
  const mount = file("/usr/local/sbin/leaninfra-mount-data");
  assert.match(mount, /LABEL=leaninfra-data \/srv\/data ext4 defaults,nofail/);
  assert.match(file("/usr/local/sbin/leaninfra-bootstrap"), /bootstrap-done/);
});

test("cloud-init: no swap section when swap is 0; deterministic; within Hetzner's 32 KiB", () => {
  assert.equal(parse(renderCloudInit({ ...settings, swapSizeMb: 0 })).swap, undefined);
  assert.equal(renderCloudInit(settings), renderCloudInit(settings));
  assert.ok(Buffer.byteLength(renderCloudInit(settings)) < USER_DATA_LIMIT);
  assert.throws(() => renderCloudInit({ ...settings, adminSshPublicKey: `ssh-ed25519 ${"A".repeat(USER_DATA_LIMIT)}` }), /at most 32768/);
});

test("cloud-init: the boot scripts keep the bootstrap marker last", () => {
  const bootstrap = bootFiles(settings).find((f) => f.path.endsWith("leaninfra-bootstrap"))!.content;
  const lines = bootstrap.trim().split("\n");
  assert.match(lines[lines.length - 1], /> \/var\/lib\/leaninfra\/bootstrap-done$/);
  assert.match(bootstrap, /^set -euo pipefail$/m);
});

const cdnRanges = { ipv4Cidrs: ["173.245.48.0/20"], ipv6Cidrs: ["2400:cb00::/32"] };

test("firewall rules: web from Cloudflare when proxied, from anywhere when not", () => {
  const proxied = firewallRules({ sshAllowFrom: ["203.0.113.7/32"], cdnProxy: true, cdnRanges });
  assert.deepEqual(proxied.find((r) => r.port === "443")!.sourceIps, ["173.245.48.0/20", "2400:cb00::/32"]);
  assert.deepEqual(proxied.find((r) => r.port === "22")!.sourceIps, ["203.0.113.7/32"]);
  const open = firewallRules({ sshAllowFrom: ["203.0.113.7/32"], cdnProxy: false, cdnRanges });
  assert.deepEqual(open.find((r) => r.port === "80")!.sourceIps, ["0.0.0.0/0", "::/0"]);
  assert.deepEqual(open.map((r) => r.port ?? r.protocol), ["22", "80", "443", "icmp"]);
});

test("firewall rules refuse to run with an empty Cloudflare list", () => {
  assert.throws(() => firewallRules({ sshAllowFrom: ["203.0.113.7/32"], cdnProxy: true, cdnRanges: { ipv4Cidrs: [], ipv6Cidrs: [] } }), /ranges are empty/);
});

test("the server's IPv6 address is ::1 in its Primary IP's /64, as Hetzner configures it", () => {
  assert.equal(serverIpv6("2a01:4f8:c17:1234::"), "2a01:4f8:c17:1234::1");
  assert.equal(serverIpv6("2a01:4f8:c17:1234::/64"), "2a01:4f8:c17:1234::1");
  assert.equal(serverIpv6("2001:db8:42::"), "2001:db8:42::1");
});

test("cloud-init: the server's host key is the given pair, the image's keys deleted and no other type generated, sshd serving that key only", () => {
  const doc = parse(renderCloudInit(settings));
  assert.equal(doc.ssh_deletekeys, true);
  assert.deepEqual(doc.ssh_genkeytypes, ["ed25519"]);
  assert.deepEqual(doc.ssh_keys, { ed25519_private: HOST_KEY.privateKeyOpenssh, ed25519_public: HOST_KEY.publicKeyOpenssh.trim() });
  assert.match(doc.ssh_keys.ed25519_private, /^-----BEGIN OPENSSH PRIVATE KEY-----\n[\s\S]+\n-----END OPENSSH PRIVATE KEY-----\n$/);
  const sshd = bootFiles(settings).find((f) => f.path === "/etc/ssh/sshd_config.d/10-leaninfra.conf")!.content;
  assert.deepEqual(sshd.split("\n").filter((l) => l.startsWith("HostKey")), [`HostKey ${HOST_KEY_FILE}`]);
  // The plan's copy: a placeholder where the private key goes, never a key.
  const preview = renderCloudInit({ ...settings, hostKey: PLACEHOLDER_HOST_KEY });
  assert.ok(!preview.includes(HOST_KEY.privateKeyOpenssh.split("\n")[1]));
  assert.match(parse(preview).ssh_keys.ed25519_private, /generated on pulumi up, kept in Pulumi state/);
});

test("host keys: the pin accepts one ssh-ed25519 line and names what is wrong with anything else; fingerprints as ssh-keygen prints them", () => {
  const line = HOST_KEY.publicKeyOpenssh.trim();
  assert.equal(hostKeyProblem(line), undefined);
  assert.equal(hostKeyProblem(`${line} root@app`), undefined, "a comment is allowed");
  assert.equal(hostKeyLine(`${line} root@app\n`), line, "pinned without comment or line end");
  assert.equal(hostKeyFingerprint(line), HOST_KEY.publicKeyFingerprintSha256);
  const problems: [string, RegExp][] = [
    ["ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== root@app", /is a ssh-rsa key .*presents its ssh-ed25519 key only/],
    ["ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY=", /is a ecdsa-sha2-nistp256 key/],
    ["SHA256:sooAv8LPUCo7GncTIhL48gzjnouhexO5oyqim6AK3P8", /is not an OpenSSH host public key/],
    ["ssh-ed25519", /has no base64 key/],
    ["ssh-ed25519 not*base64", /has no base64 key/],
    [`ssh-ed25519 ${line.split(" ")[1].slice(0, -8)}`, /has no base64 key|does not hold one 32-byte Ed25519 key/],
    [`ssh-ed25519 ${Buffer.from("\0\0\0\x0bssh-ed25519\0\0\0\x10" + "x".repeat(16), "latin1").toString("base64")}`, /does not hold one 32-byte Ed25519 key/],
    [`ssh-ed25519 ${SSH_RSA_BLOB}`, /does not hold one 32-byte Ed25519 key/],
  ];
  for (const [value, says] of problems) assert.match(String(hostKeyProblem(value)), says, value);
  assert.throws(() => hostKeyLine("ssh-ed25519 AAAA"), /does not hold|has no base64/);
});

test("the host key check script: rendered with the stack's values, shellcheck-clean, and clear when the server does not answer", () => {
  const script = renderHostKeyCheck({
    fqdn: "app.example.com",
    // Nothing listens on the discard port of this machine: a server still booting.
    address: "127.0.0.1",
    port: 9,
    expectedKey: HOST_KEY.publicKeyOpenssh,
    expectedFrom: "generated",
    generatedKey: HOST_KEY.publicKeyOpenssh,
    waitSeconds: 1,
  });
  assert.match(script, new RegExp(`^readonly expected_key='${hostKeyLine(HOST_KEY.publicKeyOpenssh).replace(/[+/]/g, "\\$&")}'$`, "m"));
  assert.match(script, new RegExp(`^readonly expected_fingerprint='${HOST_KEY.publicKeyFingerprintSha256.replace(/[+/]/g, "\\$&")}'$`, "m"));
  assertShellcheckClean("host-key-check", script);
  const r = spawnSync("bash", ["-s"], { input: script, encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /^leaninfra: app\.example\.com \(127\.0\.0\.1 port 9\) did not answer on SSH within 1 seconds, so its host key could not be checked; nothing was sent to it\./);
});

test("cloud-init: the metadata guard (only root reaches the user data) is written, installed, and enabled before the marker", () => {
  const doc = parse(renderCloudInit(settings));
  const file = (p: string) => doc.write_files.find((f: { path: string }) => f.path === p) as { content: string; permissions: string; owner: string } | undefined;
  assert.ok(doc.packages.includes("nftables"));
  const rules = file(METADATA_GUARD.rulesPath)!;
  assert.equal(rules.content, metadataGuardRules());
  assert.deepEqual([rules.permissions, rules.owner], ["0644", "root:root"]);
  // Its own table only, replaced whole: never the ruleset Docker's rules live in.
  assert.doesNotMatch(rules.content, /flush ruleset/);
  const lines = rules.content.split("\n").filter((l) => l && !l.startsWith("#"));
  assert.deepEqual(lines.slice(0, 3), [`table inet ${METADATA_GUARD.table}`, `delete table inet ${METADATA_GUARD.table}`, `table inet ${METADATA_GUARD.table} {`]);
  assert.match(rules.content, new RegExp(`type filter hook output priority filter; policy accept;\\n\\t\\t# .*\\n\\t\\tip daddr ${METADATA_ADDRESS.replace(/\./g, "\\.")} meta skuid != 0 counter reject with icmpx type admin-prohibited\\n`));
  assert.match(rules.content, new RegExp(`type filter hook forward priority filter; policy accept;\\n\\t\\tip daddr ${METADATA_ADDRESS.replace(/\./g, "\\.")} counter reject with icmpx type admin-prohibited\\n`));
  const unit = file(METADATA_GUARD.unitPath)!;
  assert.equal(unit.content, metadataGuardUnit());
  assert.match(unit.content, new RegExp(`^ExecStart=/usr/sbin/nft -f ${METADATA_GUARD.rulesPath}$`, "m"));
  assert.match(unit.content, /^Before=network-pre\.target docker\.service shutdown\.target$/m);
  assert.match(unit.content, /^WantedBy=sysinit\.target$/m);
  assert.doesNotMatch(unit.content, /^ExecStop=|nftables\.conf/m);
  // Enabled and started by the bootstrap, which stops before the marker if it fails.
  const bootstrap = bootFiles(settings).find((f) => f.path.endsWith("leaninfra-bootstrap"))!.content;
  const enable = bootstrap.indexOf(`systemctl enable --now ${METADATA_GUARD.unit}\n`);
  assert.ok(bootstrap.indexOf("systemctl daemon-reload\n") > 0 && bootstrap.indexOf("systemctl daemon-reload\n") < enable, "daemon-reload, then enable --now");
  assert.ok(enable < bootstrap.indexOf("bootstrap-done"), "the guard is up before the marker lets roles run");
  assert.match(bootstrap, /^set -euo pipefail$/m);
  assert.ok(Buffer.byteLength(renderCloudInit(settings)) < USER_DATA_LIMIT);
});
