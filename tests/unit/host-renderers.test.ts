import assert from "node:assert/strict";
import test from "node:test";
import { parse } from "yaml";
import { USER_DATA_LIMIT, bootFiles, renderCloudInit } from "../../components/host/cloud-init";
import { firewallRules } from "../../components/host/firewall";
import { serverIpv6 } from "../../components/host";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn9lq7g1xv3Y2Yl7Zb3eVq9tW4k8dG0ZcU2n6pYb1Xq owner@laptop";
const settings = { hostname: "app", fqdn: "app.example.com", adminUser: "ops", adminSshPublicKey: KEY, swapSizeMb: 2048, journalMaxUseMb: 1024 };

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
