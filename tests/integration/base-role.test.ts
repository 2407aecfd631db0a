import test from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { BASE_FILES, baseRole } from "../../components/base";
import { renderRoleBundle, roleDigest, ROLE_MARKER_DIR } from "../../components/host/bundle";
import { HostRole } from "../../components/host/role";
import { DebianRoot, RunResult, show, withDebianRoot } from "../lib/debian-root";

const lastLine = (r: RunResult) => r.stdout.trimEnd().split("\n").pop();
/** The bundle's own lines on stderr (systemd-nspawn adds its own notes there). */
const lastRoleLine = (text: string, role: string) => text.split("\n").filter((l) => l.startsWith(`[${role}] `)).pop() ?? "";

/** Runs a bundle the way the Host does (`sudo bash -s` with the bundle on stdin). */
function applyBundle(root: DebianRoot, bundle: string): RunResult {
  const started = Date.now();
  const result = root.run("bash -s", { stdin: bundle });
  console.log(`bundle ran in ${Date.now() - started} ms, exit ${result.code}, last line: ${lastLine(result)}`);
  return result;
}

/** Type, mode, owner and content hash of each path, plus the installed packages. */
function snapshot(root: DebianRoot, paths: string[]): string {
  const script = `for p in ${paths.map((p) => `'${p}'`).join(" ")}; do
  if [ -e "$p" ]; then
    hash=-
    if [ -f "$p" ]; then hash=$(sha256sum <"$p" | cut -d' ' -f1); fi
    echo "$p $(stat -c '%F %a %U:%G' "$p") $hash"
  else
    echo "$p missing"
  fi
done
dpkg-query -W -f '\${Package} \${Version} \${db:Status-Status}\\n'`;
  const result = root.run(script);
  assert.equal(result.code, 0, show(result));
  return result.stdout;
}

test("the base role applies to a fresh Debian 13 root, and a second run changes nothing", { timeout: 20 * 60_000 }, async () => {
  const role = baseRole({ adminUser: "ops" });
  const bundle = renderRoleBundle(role);
  const marker = `${ROLE_MARKER_DIR}/base.sha256`;
  const managed = [...role.directories.map((d) => d.path), ...role.files.map((f) => f.path), marker];

  await withDebianRoot((root) => {
    const first = applyBundle(root, bundle);
    assert.equal(first.code, 0, show(first));
    assert.match(lastLine(first) ?? "", /^\[base\] \d+ change\(s\)$/, show(first));
    assert.match(first.stdout, /^\[base\] installed package prometheus-node-exporter$/m);
    assert.match(first.stdout, /^\[base\] created directory \/etc\/leaninfra\/secrets \(700 root:root\)$/m);
    assert.match(first.stdout, /^\[base\] {3}systemd is not running here: skipped systemctl restart prometheus-node-exporter$/m);
    assert.doesNotMatch(first.stdout, /mounted \/srv\/data/, "no fstab entry: the data volume step must change nothing");
    for (const line of first.stdout.trimEnd().split("\n")) assert.match(line, /^\[base\] /, `unprefixed output: ${line}`);

    const before = snapshot(root, managed);
    assert.match(before, /^\/etc\/leaninfra\/secrets directory 700 root:root -$/m);
    assert.match(before, /^\/var\/log\/leaninfra directory 750 root:adm -$/m);
    assert.match(before, /^\/etc\/leaninfra\/README regular file 644 root:root [0-9a-f]{64}$/m);
    assert.match(before, /^prometheus-node-exporter \S+ installed$/m);
    assert.equal(fs.readFileSync(root.hostPath(marker), "utf8"), `${roleDigest(role)}\n`);
    assert.match(fs.readFileSync(root.hostPath("/etc/default/prometheus-node-exporter"), "utf8"), /127\.0\.0\.1:9100/);
    assert.match(fs.readFileSync(root.hostPath("/etc/leaninfra/README"), "utf8"), /^This VM is managed by LeanInfra \(a Pulumi program\)\. Log in as ops and use sudo\.$/m);

    const second = applyBundle(root, bundle);
    assert.equal(second.code, 0, show(second));
    assert.equal(second.stdout, "[base] no changes\n", show(second));
    assert.equal(snapshot(root, managed), before, "a second run must not change anything");

    // Debian 13's sshd reads the drop-in (validation ran sshd -t) and these are its values now.
    const effective = root.run("mkdir -p /run/sshd && sshd -T -C user=ops,addr=203.0.113.7,host=client,laddr=127.0.0.1,lport=22");
    assert.equal(effective.code, 0, show(effective));
    assert.match(effective.stdout, /^kexalgorithms mlkem768x25519-sha256,sntrup761x25519-sha512@openssh\.com,curve25519-sha256,curve25519-sha256@libssh\.org$/m);
    assert.match(effective.stdout, /^hostkeyalgorithms ssh-ed25519$/m);
    assert.match(effective.stdout, /^macs hmac-sha2-512-etm@openssh\.com,hmac-sha2-256-etm@openssh\.com$/m);
    assert.deepEqual(effective.stdout.match(/^hostkey .*$/gm), ["hostkey /etc/ssh/ssh_host_ed25519_key"]);
    assert.match(effective.stdout, /^maxauthtries 10$/m);
    assert.match(effective.stdout, /^loglevel VERBOSE$/m);

    // A drop-in sshd refuses (an algorithm this OpenSSH does not know) is put back before sshd reloads.
    const sshdFile = role.files.find((f) => f.path === BASE_FILES.sshdDropIn)!;
    const broken = { ...role, files: role.files.map((f) => (f === sshdFile ? { ...f, content: f.content.replace("KexAlgorithms ", "KexAlgorithms leaninfra-no-such-kex,") } : f)) };
    const refused = applyBundle(root, renderRoleBundle(broken));
    assert.notEqual(refused.code, 0, show(refused));
    assert.match(refused.stderr, /leaninfra-no-such-kex/, "sshd -t names the bad value");
    assert.match(refused.stderr, new RegExp(`^\\[base\\] restored ${BASE_FILES.sshdDropIn} to its previous version$`, "m"));
    assert.match(lastRoleLine(refused.stderr, "base"), /^\[base\] FAILED during validate: validation failed/);
    assert.equal(fs.readFileSync(root.hostPath(BASE_FILES.sshdDropIn), "utf8"), sshdFile.content);
    assert.equal(applyBundle(root, bundle).stdout, "[base] no changes\n");
  });
});

test("the base role mounts /srv/data when /etc/fstab lists it, and fails clearly when it cannot", { timeout: 20 * 60_000 }, async () => {
  const bundle = renderRoleBundle(baseRole({ adminUser: "ops" }));
  await withDebianRoot((root) => {
    const path = root.hostPath("/root/base.sh");
    fs.writeFileSync(path, bundle);
    // Each nspawn run has its own mount namespace: mount and re-check in one run.
    fs.appendFileSync(root.hostPath("/etc/fstab"), "tmpfs /srv/data tmpfs defaults,mode=0755 0 0\n");
    const mounted = root.run("bash /root/base.sh >/dev/null && bash /root/base.sh && echo === && findmnt -n -o FSTYPE /srv/data", {
      nspawnArgs: ["--capability=CAP_SYS_ADMIN"],
    });
    assert.equal(mounted.code, 0, show(mounted));
    assert.equal(mounted.stdout, "[base] no changes\n===\ntmpfs\n", show(mounted));
    const mountOnce = root.run("bash /root/base.sh", { nspawnArgs: ["--capability=CAP_SYS_ADMIN"] });
    assert.equal(mountOnce.code, 0, show(mountOnce));
    assert.equal(mountOnce.stdout, "[base] mounted /srv/data (the data volume, from /etc/fstab)\n[base] 1 change(s)\n", show(mountOnce));

    // cloud-init's exact line, with no volume attached.
    const fstab = "LABEL=leaninfra-data /srv/data ext4 defaults,nofail,x-systemd.device-timeout=30s 0 2\n";
    fs.writeFileSync(root.hostPath("/etc/fstab"), fstab);
    const failed = root.run("bash /root/base.sh", { nspawnArgs: ["--capability=CAP_SYS_ADMIN"] });
    assert.notEqual(failed.code, 0, show(failed));
    assert.match(failed.stderr, /Hetzner volume attached/, show(failed));
    assert.match(lastRoleLine(failed.stderr, "base"), /^\[base\] FAILED during apply: apply failed/);
  });
});

const SECRET = "s3cr3t-4d1f0c9b7e-must-not-be-printed";
// Lines that would end a heredoc early, shell syntax that must stay literal, no final newline.
const TRICKY = "EOF\nLEANINFRA_EOF\n$(touch /pwned) `touch /pwned` ${HOME} $1 \\\n\ttab 'single' \"double\"\nlast line";

function demoRole(appConf: string, extra: Partial<HostRole> = {}): HostRole {
  return {
    name: "demo",
    description: "synthetic role for the rollback test",
    packages: [],
    directories: [{ path: "/etc/demo", mode: "0750" }],
    files: [
      { path: "/etc/demo/app.conf", mode: "0600", content: appConf, onChange: "echo reload >> /var/log/demo-handler.log" },
      { path: "/etc/demo/tricky.txt", mode: "0644", content: TRICKY, onChange: "echo reload >> /var/log/demo-handler.log" },
    ],
    validate: "grep -qx 'valid=yes' /etc/demo/app.conf",
    apply: `if [ ! -e /var/lib/demo-applied ]; then
  touch /var/lib/demo-applied
  echo "created /var/lib/demo-applied"
fi`,
    healthCheck: "test -s /etc/demo/app.conf",
    ...extra,
  };
}

test("a failing validate puts every changed file back and names the role", { timeout: 5 * 60_000 }, async () => {
  const good = `valid=yes\npassword=${SECRET}\n`;
  const v1 = demoRole(good);
  const v2 = demoRole(`valid=no\npassword=${SECRET}-2\n`, {
    files: [...v1.files, { path: "/etc/demo/extra.conf", mode: "0644", content: "new in v2\n" }],
  });
  v2.files[0] = { ...v2.files[0], content: `valid=no\npassword=${SECRET}-2\n` };
  const v3 = demoRole(`valid=yes\npassword=${SECRET}-3\n`);
  v3.files[0] = { ...v3.files[0], onChange: "echo 'reload failed: bad config' >&2; exit 3" };

  await withDebianRoot((root) => {
    const appConf = root.hostPath("/etc/demo/app.conf");
    const handlerRuns = () => fs.readFileSync(root.hostPath("/var/log/demo-handler.log"), "utf8").split("\n").filter(Boolean).length;
    const noSecret = (r: RunResult) => assert.ok(!r.stdout.includes(SECRET) && !r.stderr.includes(SECRET), `secret printed:\n${show(r)}`);

    const first = applyBundle(root, renderRoleBundle(v1));
    assert.equal(first.code, 0, show(first));
    assert.equal(lastLine(first), "[demo] 5 change(s)", show(first));
    assert.match(first.stdout, /^\[demo\] created \/var\/lib\/demo-applied$/m, "apply's lines are counted changes");
    noSecret(first);
    assert.equal(handlerRuns(), 1, "two files share one handler: it runs once");
    assert.equal(fs.readFileSync(root.hostPath("/etc/demo/tricky.txt"), "utf8"), `${TRICKY}\n`);
    assert.ok(!fs.existsSync(root.hostPath("/pwned")), "heredoc content must never be executed");
    assert.equal(fs.statSync(appConf).mode & 0o7777, 0o600);
    assert.equal(fs.readFileSync(appConf, "utf8"), good);

    const again = applyBundle(root, renderRoleBundle(v1));
    assert.equal(again.code, 0, show(again));
    assert.equal(again.stdout, "[demo] no changes\n", show(again));
    assert.equal(handlerRuns(), 1);

    const invalid = applyBundle(root, renderRoleBundle(v2));
    assert.notEqual(invalid.code, 0, show(invalid));
    noSecret(invalid);
    assert.match(invalid.stderr, /^\[demo\] restored \/etc\/demo\/app\.conf to its previous version$/m, show(invalid));
    assert.match(invalid.stderr, /^\[demo\] removed \/etc\/demo\/extra\.conf \(it did not exist before this run\)$/m);
    assert.match(lastRoleLine(invalid.stderr, "demo"), /^\[demo\] FAILED during validate: validation failed/);
    assert.equal(fs.readFileSync(appConf, "utf8"), good, "the previous content must be back");
    assert.equal(fs.statSync(appConf).mode & 0o7777, 0o600);
    assert.ok(!fs.existsSync(root.hostPath("/etc/demo/extra.conf")), "a file new in the failed run must be gone");
    assert.equal(handlerRuns(), 1, "no handler runs when validation fails");
    assert.equal(fs.readFileSync(root.hostPath(`${ROLE_MARKER_DIR}/demo.sha256`), "utf8"), `${roleDigest(v1)}\n`);

    const handlerFails = applyBundle(root, renderRoleBundle(v3));
    assert.notEqual(handlerFails.code, 0, show(handlerFails));
    noSecret(handlerFails);
    assert.match(handlerFails.stderr, /reload failed: bad config/);
    assert.match(handlerFails.stderr, /^\[demo\] restored \/etc\/demo\/app\.conf to its previous version$/m);
    assert.match(lastRoleLine(handlerFails.stderr, "demo"), /^\[demo\] FAILED during handlers: handler /);
    assert.equal(fs.readFileSync(appConf, "utf8"), good);

    const back = applyBundle(root, renderRoleBundle(v1));
    assert.equal(back.code, 0, show(back));
    assert.equal(back.stdout, "[demo] no changes\n", show(back));
  });
});

test("an interrupted run rolls back on TERM; a killed one is validated and its handlers run by the next run", { timeout: 5 * 60_000 }, async () => {
  // Validation takes long only while /run/demo-slow exists, so one bundle (one digest) serves both runs.
  const slowValidate = "if [ -e /run/demo-slow ]; then touch /run/demo-validating; sleep 60; fi\ngrep -qx 'valid=yes' /etc/demo/app.conf";
  const v1 = demoRole("valid=yes\nrelease=1\n", { validate: slowValidate });
  const v2 = demoRole("valid=yes\nrelease=2\n", { validate: slowValidate });
  await withDebianRoot((root) => {
    const appConf = () => fs.readFileSync(root.hostPath("/etc/demo/app.conf"), "utf8");
    const handlerRuns = () => fs.readFileSync(root.hostPath("/var/log/demo-handler.log"), "utf8").split("\n").filter(Boolean).length;
    const pending = root.hostPath(`${ROLE_MARKER_DIR}/demo.pending`);
    fs.writeFileSync(root.hostPath("/root/v2.sh"), renderRoleBundle(v2));
    /** Runs v2 in its own process group, waits until it validates, then sends the group `signal`. */
    const interrupt = (signal: string) =>
      root.run(`rm -f /run/demo-validating; touch /run/demo-slow
setsid bash -s </root/v2.sh >/root/run.out 2>/root/run.err &
pid=$!
for _ in $(seq 300); do [ -e /run/demo-validating ] && break; sleep 0.1; done
kill -${signal} -- -"$pid"
status=0; wait "$pid" || status=$?
rm -f /run/demo-slow
cat /root/run.out; cat /root/run.err >&2
echo "exit=$status"`);

    assert.equal(applyBundle(root, renderRoleBundle(v1)).code, 0);
    const before = handlerRuns();

    const term = interrupt("TERM");
    assert.match(term.stdout, /exit=1$/m, show(term));
    assert.match(term.stderr, /^\[demo\] restored \/etc\/demo\/app\.conf to its previous version$/m, show(term));
    assert.match(term.stderr, /^\[demo\] FAILED during validate: interrupted by SIGTERM$/m, show(term));
    assert.equal(appConf(), "valid=yes\nrelease=1\n", "TERM puts the previous file back");
    assert.ok(!fs.existsSync(pending), "a complete rollback leaves nothing pending");
    assert.equal(handlerRuns(), before);

    const killed = interrupt("KILL");
    assert.match(killed.stdout, /exit=137$/m, show(killed));
    assert.equal(appConf(), "valid=yes\nrelease=2\n", "KILL leaves the new, unvalidated file");
    assert.ok(fs.existsSync(pending), "the killed run is recorded as pending");
    assert.equal(fs.readFileSync(root.hostPath(`${ROLE_MARKER_DIR}/demo.sha256`), "utf8"), `${roleDigest(v1)}\n`, "the marker still names the last good run");

    const next = applyBundle(root, renderRoleBundle(v2));
    assert.equal(next.code, 0, show(next));
    assert.match(next.stdout, /^\[demo\] an earlier run was stopped after changing files: validating them and running every handler again$/m, show(next));
    assert.match(next.stdout, /^\[demo\] handler: echo reload >> \/var\/log\/demo-handler\.log/m, show(next));
    assert.equal(handlerRuns(), before + 1, "the handler the killed run never reached has run");
    assert.ok(!fs.existsSync(pending));
    assert.equal(fs.readFileSync(root.hostPath(`${ROLE_MARKER_DIR}/demo.sha256`), "utf8"), `${roleDigest(v2)}\n`);

    const again = applyBundle(root, renderRoleBundle(v2));
    assert.equal(again.stdout, "[demo] no changes\n", show(again));
  });
});
