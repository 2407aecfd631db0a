import assert from "node:assert/strict";
import test from "node:test";
import { spawnSync } from "node:child_process";
import { BOOTSTRAP_MARKER, DATA_LABEL, DATA_MOUNT, METADATA_ADDRESS, METADATA_GUARD, renderCloudInit } from "../../components/host/cloud-init";
import { HostKeyCheckSettings, hostKeyLine, renderHostKeyCheck } from "../../components/host/host-key";
import { BootedRoot, withBootedRoot } from "../lib/booted-root";
import { show } from "../lib/debian-root";
import { ed25519Key } from "../lib/ed25519-key";
import { withExt4LoopVolume } from "../lib/loop-volume";
import { mockCloudOutputs } from "../lib/mock-cloud";
import { sections } from "../lib/sections";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn9lq7g1xv3Y2Yl7Zb3eVq9tW4k8dG0ZcU2n6pYb1Xq owner@laptop";
/** The host key as the tls provider gives it for the Host's `host-ssh-host-key` (the canned cloud's answer). */
const HOST_KEY = mockCloudOutputs({ type: "tls:index/privateKey:PrivateKey", name: "host-ssh-host-key", inputs: { algorithm: "ED25519" } }) as { privateKeyOpenssh: string; publicKeyOpenssh: string; publicKeyFingerprintSha256: string };
const SETTINGS = { hostname: "app", fqdn: "app.example.com", adminUser: "ops", adminSshPublicKey: KEY, swapSizeMb: 256, journalMaxUseMb: 512, hostKey: HOST_KEY };

/** The Host's host key check, run on this machine as `pulumi up` runs it: against the booted root's sshd (shared network). */
function runHostKeyCheck(overrides: Partial<HostKeyCheckSettings>) {
  const settings: HostKeyCheckSettings = {
    fqdn: "app.example.com",
    address: "127.0.0.1",
    port: 22,
    expectedKey: HOST_KEY.publicKeyOpenssh,
    expectedFrom: "generated",
    generatedKey: HOST_KEY.publicKeyOpenssh,
    waitSeconds: 30,
    ...overrides,
  };
  const r = spawnSync("bash", ["-s"], { input: renderHostKeyCheck(settings), encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
/**
 * A TCP connect to the metadata address, as the caller's user: its errno and how long it took. With
 * "lo", bound to the loopback device (root may): the SYN then passes the output hook as every local
 * packet does, but cannot leave this machine, whose network the booted root shares.
 */
const CONNECT_PY = `import errno, json, socket, sys, time
s = socket.socket()
if len(sys.argv) > 1:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, sys.argv[1].encode())
s.settimeout(2)
t = time.monotonic()
try:
    s.connect(("${METADATA_ADDRESS}", 80))
    result = "connected"
except OSError as e:
    result = errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__
print(json.dumps({"result": result, "ms": round((time.monotonic() - t) * 1000)}))
`;
/** The guard's table lives in this machine's network namespace (shared): removed however the test ends. */
const DROP_GUARD_TABLE = `nft list table inet ${METADATA_GUARD.table} >/dev/null 2>&1 && nft delete table inet ${METADATA_GUARD.table}; ! nft list table inet ${METADATA_GUARD.table} >/dev/null 2>&1`;
type NftRule = { rule: { chain: string; expr: Record<string, unknown>[] } };

/** Hetzner's name for an attached volume; the test links its loop device there, as udev does on the VM. */
const VOLUME_LINK = "/dev/disk/by-id/scsi-0HC_Volume_4242";

/**
 * The rendered user data, booted: a Debian 13 root with cloud-init 25 boots under systemd with the
 * user data as its NoCloud seed (Hetzner's datasource differs only in where the seed comes from) and a
 * real ext4 volume under Hetzner's device name. Then the machine is inspected as the owner will find it.
 */
test("cloud-init boots the rendered user data: admin user, sshd with exactly the pinned host key, UTC, journald, time sync, unattended upgrades, the volume, the marker; the host key check passes it and stops on another key; the metadata guard refuses non-root users the metadata service", { timeout: 20 * 60_000 }, async () => {
  const unit = "leaninfra-test-volume.service";
  const cleanupUnit = "leaninfra-test-drop-guard.service";
  await withExt4LoopVolume(64, async (loop) => {
    const started = Date.now();
    await withBootedRoot(
      {
        bootTimeoutMs: 15 * 60_000,
        binds: [{ host: loop, root: loop }],
        files: [
          { path: "/var/lib/cloud/seed/nocloud/user-data", content: renderCloudInit(SETTINGS) },
          // As Hetzner's metadata does for the server's SshKey: cloud-init gives it to the admin user and
          // turns root's copy into a "log in as ops" message (disable_root).
          { path: "/var/lib/cloud/seed/nocloud/meta-data", content: `instance-id: leaninfra-boot-test\nlocal-hostname: app\npublic-keys:\n  - ${KEY}\n` },
          // The root shares the test machine's network: cloud-init must not configure it.
          { path: "/etc/cloud/cloud.cfg.d/99-leaninfra-test.cfg", content: "datasource_list: [NoCloud]\nnetwork: {config: disabled}\n" },
          {
            path: `/etc/systemd/system/${unit}`,
            content: `[Unit]\nDescription=Test: the volume under Hetzner's device name\nDefaultDependencies=no\nBefore=cloud-init-local.service\n\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'mkdir -p /dev/disk/by-id && ln -sf ${loop} ${VOLUME_LINK}'\n`,
          },
          { path: `/etc/systemd/system/sysinit.target.wants/${unit}`, symlinkTo: `/etc/systemd/system/${unit}` },
          // Should the test stop before its own clean-up, the root's power-off still removes the guard's
          // table from this machine's network namespace.
          {
            path: `/etc/systemd/system/${cleanupUnit}`,
            content: `[Unit]\nDescription=Test: drop the metadata guard's table at power-off (shared network)\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\nExecStop=/bin/sh -c '${DROP_GUARD_TABLE.replace(/'/g, "")} || true'\n`,
          },
          { path: `/etc/systemd/system/multi-user.target.wants/${cleanupUnit}`, symlinkTo: `/etc/systemd/system/${cleanupUnit}` },
          { path: "/srv/connect.py", content: CONNECT_PY },
        ],
      },
      (root) => withGuardTableDropped(root, () => {
        console.log(`booted with cloud-init in ${Date.now() - started} ms`);
        const r = root.run(`sec() { printf '\\n== %s\\n' "$1"; }
sec status
cloud-init status --format json | tr -d '\n'; echo
sec datasource
cloud-init query v1.platform
sec user
id -nG ops
passwd -S ops | cut -d' ' -f2
cat /home/ops/.ssh/authorized_keys
stat -c '%a %U' /home/ops/.ssh /home/ops/.ssh/authorized_keys
sudo -n -u ops sudo -n true && echo sudo-ok
sec hostkeys
sshd -T | grep -E '^hostkey ' | sort
stat -c '%a %U' /etc/ssh/ssh_host_ed25519_key
ssh-keyscan -p 22 127.0.0.1 2>/dev/null | awk '$1 !~ /^#/ { print $2, $3 }'
sec hostkeyfiles
ls /etc/ssh/ | grep -E '^ssh_host_' || true
sec root
passwd -S root | cut -d' ' -f2
grep -c 'Please login as the user' /root/.ssh/authorized_keys || true
sec sshd
sshd -T | grep -E '^(permitrootlogin|passwordauthentication|kbdinteractiveauthentication|pubkeyauthentication|allowusers|maxauthtries|x11forwarding) ' | sort
sec host
hostname
readlink -f /etc/localtime
sec journald
systemd-analyze cat-config systemd/journald.conf | grep -E '^(Storage|SystemMaxUse|SystemKeepFree|MaxRetentionSec)='
test -d /var/log/journal && echo persistent
sec timesyncd
dpkg-query -W -f '\${Status}\\n' systemd-timesyncd
systemctl is-enabled systemd-timesyncd
systemd-analyze cat-config systemd/timesyncd.conf | grep -E '^NTP='
sec upgrades
dpkg-query -W -f '\${Status}\\n' unattended-upgrades
systemctl is-enabled unattended-upgrades
apt-config dump APT::Periodic::Unattended-Upgrade APT::Periodic::Update-Package-Lists
sec swap
stat -c '%s' /swapfile
blkid -s TYPE -o value /swapfile
grep -E '^/swapfile\\s' /etc/fstab | awk '{print $2, $3}'
sec volume
findmnt -n -o SOURCE,FSTYPE ${DATA_MOUNT}
blkid -s LABEL -o value ${loop}
grep -F ' ${DATA_MOUNT} ' /etc/fstab
sec marker
test -s ${BOOTSTRAP_MARKER} && echo present
grep -c 'LeanInfra base ready after' /var/log/cloud-init-output.log
`);
        assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
        const out = sections(r.stdout);
        // The one error a container cannot avoid: swapon needs a real kernel swap device, which nspawn
        // does not grant. The swap file itself is made and listed (see "swap").
        const status = JSON.parse(out.status) as { status: string; errors: string[] };
        console.log(`cloud-init status: ${status.status}; errors: ${JSON.stringify(status.errors)}`);
        const unexpected = status.errors.filter((e) => !/swapon: \/swapfile: swapon failed: Operation not permitted/.test(e));
        assert.deepEqual(unexpected, [], `cloud-init reported errors:\n${out.status}`);
        assert.match(out.datasource, /^nocloud$/);
        assert.deepEqual(out.user.split("\n"), ["ops adm sudo systemd-journal", "L", KEY, "700 ops", "600 ops", "sudo-ok"]);
        assert.deepEqual(out.root.split("\n"), ["L", "1"], "root: locked, and its key only prints where to log in");
        assert.equal(
          out.sshd,
          ["allowusers ops", "kbdinteractiveauthentication no", "maxauthtries 10", "passwordauthentication no", "permitrootlogin no", "pubkeyauthentication yes", "x11forwarding no"].join("\n"),
        );
        assert.deepEqual(out.host.split("\n"), ["app", "/usr/share/zoneinfo/Etc/UTC"]);
        // Every key type sshd is asked for, it answers with the one pinned key only.
        console.log(`host key files on the server: ${out.hostkeyfiles.split("\n").join(", ")}`);
        assert.deepEqual(out.hostkeys.split("\n"), ["hostkey /etc/ssh/ssh_host_ed25519_key", "600 root", hostKeyLine(HOST_KEY.publicKeyOpenssh)]);
        const pinned = runHostKeyCheck({});
        assert.equal(pinned.code, 0, pinned.stdout + pinned.stderr);
        assert.ok(pinned.stdout.includes(`app.example.com (127.0.0.1 port 22) presents its pinned host key ${HOST_KEY.publicKeyFingerprintSha256}`), pinned.stdout);
        const other = ed25519Key("a key the server does not have");
        const changed = runHostKeyCheck({ expectedKey: other.publicKeyOpenssh, generatedKey: other.publicKeyOpenssh });
        assert.equal(changed.code, 1, changed.stdout + changed.stderr);
        console.log(`the host key check on a changed key says:\n${changed.stderr}`);
        for (const says of [
          "the SSH host key of app.example.com (127.0.0.1 port 22) is not the pinned one; nothing was sent to the server",
          `expected:  ssh-ed25519 ${other.publicKeyFingerprintSha256}, from the key Pulumi generated`,
          `presented: ssh-ed25519 ${HOST_KEY.publicKeyFingerprintSha256}`,
          "someone may be answering in its place",
          `pulumi config set leaninfra:sshHostKey "${hostKeyLine(HOST_KEY.publicKeyOpenssh)}"`,
        ]) assert.ok(changed.stderr.includes(says), `the message says: ${says}`);
        // A server pinned through leaninfra:sshHostKey, since rebuilt with the generated key.
        const rebuilt = runHostKeyCheck({ expectedKey: other.publicKeyOpenssh, expectedFrom: "config", generatedKey: HOST_KEY.publicKeyOpenssh });
        assert.equal(rebuilt.code, 1, rebuilt.stdout + rebuilt.stderr);
        assert.match(rebuilt.stderr, /from leaninfra:sshHostKey \(pinned by you\)/);
        assert.match(rebuilt.stderr, /presents the key Pulumi generated for it/);
        assert.match(rebuilt.stderr, /pulumi config rm leaninfra:sshHostKey/);
        assert.deepEqual(out.journald.split("\n"), ["Storage=persistent", "SystemMaxUse=512M", "SystemKeepFree=512M", "MaxRetentionSec=30day", "persistent"]);
        assert.deepEqual(out.timesyncd.split("\n"), ["install ok installed", "enabled", "NTP=ntp1.hetzner.de ntp2.hetzner.com ntp3.hetzner.net"]);
        assert.deepEqual(out.upgrades.split("\n"), ["install ok installed", "enabled", 'APT::Periodic::Unattended-Upgrade "1";', 'APT::Periodic::Update-Package-Lists "1";']);
        console.log("not tested here: swap activation (a container may not swapon; the file is made, formatted as swap and listed in fstab)");
        assert.deepEqual(out.swap.split("\n"), [String(256 * 1024 * 1024), "swap", "none swap"]);
        assert.deepEqual(out.volume.split("\n"), [`${loop} ext4`, DATA_LABEL, `LABEL=${DATA_LABEL} ${DATA_MOUNT} ext4 defaults,nofail,x-systemd.device-timeout=30s 0 2`]);
        assert.deepEqual(out.marker.split("\n"), ["present", "1"]);
        checkMetadataGuard(root);
      }),
    );
  });
});

/** Runs fn, then removes the guard's table from this machine's (shared) network namespace, also when fn fails. */
function withGuardTableDropped(root: BootedRoot, fn: () => void): void {
  try {
    fn();
  } finally {
    const dropped = root.run(DROP_GUARD_TABLE);
    if (dropped.code !== 0) console.error(`could not remove the table inet ${METADATA_GUARD.table} from this machine: ${show(dropped)}`);
  }
}

/**
 * After the first boot: the guard's unit is enabled and active, its table loaded with the two rules, and
 * a non-root user is refused the metadata address at once while root's packet passes the rule.
 */
function checkMetadataGuard(root: BootedRoot): void {
  const state = root.run(`systemctl is-enabled ${METADATA_GUARD.unit}; systemctl is-active ${METADATA_GUARD.unit}; nft -j list table inet ${METADATA_GUARD.table}`);
  assert.equal(state.code, 0, show(state));
  const [enabled, active, json] = state.stdout.trim().split("\n");
  assert.deepEqual([enabled, active], ["enabled", "active"]);
  const items = JSON.parse(json).nftables as Record<string, { name?: string; hook?: string }>[];
  assert.deepEqual(items.filter((o) => o.chain).map((o) => `${o.chain!.name}:${o.chain!.hook}`).sort(), ["forward:forward", "output:output"]);
  const rules = (items.filter((o) => "rule" in o) as unknown as NftRule[]).map((o) => o.rule);
  const daddr = { match: { op: "==", left: { payload: { protocol: "ip", field: "daddr" } }, right: METADATA_ADDRESS } };
  const notRoot = { match: { op: "!=", left: { meta: { key: "skuid" } }, right: 0 } };
  const reject = { reject: { type: "icmpx", expr: "admin-prohibited" } };
  const output = rules.filter((r) => r.chain === "output");
  const forward = rules.filter((r) => r.chain === "forward");
  assert.equal(output.length, 1, JSON.stringify(output));
  assert.equal(forward.length, 1, JSON.stringify(forward));
  const strip = (expr: Record<string, unknown>[]) => expr.filter((e) => !("counter" in e));
  assert.deepEqual(strip(output[0].expr), [daddr, notRoot, reject]);
  assert.deepEqual(strip(forward[0].expr), [daddr, reject]);

  // Only now that the rule is known loaded: nobody's SYN is refused in the output hook and never leaves
  // this machine; root's (bound to lo) passes the rule and stays on this machine.
  const tries = root.run(`echo "nobody $(runuser -u nobody -- python3 /srv/connect.py)"
echo "root $(python3 /srv/connect.py lo)"
nft list table inet ${METADATA_GUARD.table} | grep -o 'counter packets [0-9]*'`);
  assert.equal(tries.code, 0, show(tries));
  const lines = tries.stdout.trim().split("\n");
  const result = (who: string) => {
    const line = lines.find((l) => l.startsWith(`${who} {`));
    assert.ok(line, `no result for ${who}:\n${show(tries)}`);
    return JSON.parse(line.slice(who.length + 1)) as { result: string; ms: number };
  };
  const nobody = result("nobody");
  const rootTry = result("root");
  console.log(`metadata guard: nobody gets ${nobody.result} in ${nobody.ms} ms; root gets ${rootTry.result} in ${rootTry.ms} ms (no metadata service here)`);
  assert.equal(nobody.result, "EHOSTUNREACH", "the rule's admin-prohibited reaches the caller as No route to host");
  assert.ok(nobody.ms < 1000, `refused at once (${nobody.ms} ms)`);
  assert.notEqual(rootTry.result, "EHOSTUNREACH", "root is not refused by the rule");
  assert.deepEqual(lines.slice(-2), ["counter packets 1", "counter packets 0"], "the output rule counted nobody's SYN only; nothing was forwarded");
  console.log(
    "not tested here: a container's traffic through the forward chain (no Docker in this boot, and a container network " +
      "would live in this machine's shared namespace); the rule is checked loaded above, and the tools test " +
      "(tests/tools/cloud-init.test.ts) sends forwarded traffic through the same ruleset in a private namespace",
  );
}
