// A role run interrupted the ways `pulumi up` can be (a dropped SSH connection: SIGHUP; Ctrl-C or a killed
// pulumi: SIGTERM; the machine or process killed outright: SIGKILL), in a Debian 13 root booted with systemd,
// where the role's handler reloads a real service that reads the role's file.
import test from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { renderRoleBundle, roleDigest, ROLE_MARKER_DIR } from "../../components/host/bundle";
import { HostRole } from "../../components/host/role";
import { BootedRoot, must, withBootedRoot } from "../lib/booted-root";
import { show } from "../lib/debian-root";

/** A service whose reload records the configuration it read, so a test sees what the handler made it load. */
const UNIT = `[Unit]
Description=LeanInfra test service that records each reload

[Service]
ExecStart=/bin/sleep infinity
ExecReload=/bin/sh -c 'echo "reload $(tr "\\\\n" " " </etc/demo/app.conf)" >>/var/log/demo-reloads.log'

[Install]
WantedBy=multi-user.target
`;

// Validation is slow only while /var/lib/demo-slow exists, so one bundle (one digest) serves every run.
const VALIDATE = "if [ -e /var/lib/demo-slow ]; then touch /var/lib/demo-validating; sleep 120; fi\ngrep -qx 'valid=yes' /etc/demo/app.conf";

function demoRole(release: number): HostRole {
  return {
    name: "demo",
    description: "a service reloaded by its handler, for the interruption test",
    packages: [],
    directories: [{ path: "/etc/demo", mode: "0755" }],
    files: [
      { path: "/etc/systemd/system/demo.service", mode: "0644", content: UNIT, onChange: "systemctl daemon-reload" },
      { path: "/etc/demo/app.conf", mode: "0644", content: `valid=yes\nrelease=${release}\n`, onChange: "systemctl try-reload-or-restart demo" },
    ],
    validate: VALIDATE,
    apply: "systemctl is-active --quiet demo || { systemctl enable --now --quiet demo; echo 'started demo'; }",
    healthCheck: "systemctl is-active --quiet demo",
  };
}

/** Runs the bundle as the Host does (`bash -s` on stdin) in its own process group; signals the group once it validates. */
function interrupt(root: BootedRoot, bundlePath: string, signal: string): { out: string; exit: number } {
  const r = root.run(`rm -f /var/lib/demo-validating; touch /var/lib/demo-slow
setsid bash -s <${bundlePath} >/root/run.out 2>&1 &
pid=$!
for _ in $(seq 600); do [ -e /var/lib/demo-validating ] && break; sleep 0.1; done
kill -${signal} -- -"$pid"
status=0; wait "$pid" || status=$?
rm -f /var/lib/demo-slow
cat /root/run.out
echo "exit=$status"`);
  assert.equal(r.code, 0, show(r));
  return { out: r.stdout, exit: Number(/^exit=(\d+)$/m.exec(r.stdout)?.[1]) };
}

test("interrupted role runs under systemd: HUP and TERM roll back with the service untouched; after KILL the next run validates and reloads the service", { timeout: 15 * 60_000 }, async () => {
  await withBootedRoot({}, async (root) => {
    const reloads = () => (fs.existsSync(root.hostPath("/var/log/demo-reloads.log")) ? fs.readFileSync(root.hostPath("/var/log/demo-reloads.log"), "utf8").split("\n").filter(Boolean).map((l) => l.trimEnd()) : []);
    const appConf = () => fs.readFileSync(root.hostPath("/etc/demo/app.conf"), "utf8");
    const marker = () => fs.readFileSync(root.hostPath(`${ROLE_MARKER_DIR}/demo.sha256`), "utf8");
    const pending = root.hostPath(`${ROLE_MARKER_DIR}/demo.pending`);
    const v1 = demoRole(1);
    const v2 = demoRole(2);
    fs.writeFileSync(root.hostPath("/root/v1.sh"), renderRoleBundle(v1));
    fs.writeFileSync(root.hostPath("/root/v2.sh"), renderRoleBundle(v2));

    const first = root.run("bash -s </root/v1.sh");
    assert.equal(first.code, 0, show(first));
    assert.match(first.stdout, /^\[demo\] started demo$/m, show(first));
    const mainPid = must(root, "systemctl show -p MainPID --value demo").trim();
    const reloadsBefore = reloads().length;

    for (const [signal, code] of [["HUP", 1], ["TERM", 1]] as const) {
      const run = interrupt(root, "/root/v2.sh", signal);
      assert.equal(run.exit, code, run.out);
      assert.match(run.out, new RegExp(`^\\[demo\\] FAILED during validate: interrupted by SIG${signal}$`, "m"), run.out);
      assert.match(run.out, /^\[demo\] restored \/etc\/demo\/app\.conf to its previous version$/m, run.out);
      assert.equal(appConf(), "valid=yes\nrelease=1\n", `${signal} puts the previous file back`);
      assert.ok(!fs.existsSync(pending), `a rollback after ${signal} leaves nothing pending`);
      assert.equal(reloads().length, reloadsBefore, `no handler ran after ${signal}`);
      assert.equal(marker(), `${roleDigest(v1)}\n`);
    }

    const killed = interrupt(root, "/root/v2.sh", "KILL");
    assert.equal(killed.exit, 137, killed.out);
    assert.equal(appConf(), "valid=yes\nrelease=2\n", "KILL leaves the new, unvalidated file");
    assert.ok(fs.existsSync(pending), "the killed run is recorded as pending");
    assert.equal(marker(), `${roleDigest(v1)}\n`, "the marker still names the last good run");
    assert.equal(reloads().length, reloadsBefore, "the killed run never reached its handler");

    const next = root.run("bash -s </root/v2.sh");
    assert.equal(next.code, 0, show(next));
    assert.match(next.stdout, /^\[demo\] an earlier run was stopped after changing files: validating them and running every handler again$/m, show(next));
    assert.match(next.stdout, /^\[demo\] handler: systemctl try-reload-or-restart demo/m, show(next));
    assert.deepEqual(reloads().slice(reloadsBefore), ["reload valid=yes release=2"], "the service reloaded once, with the new file");
    assert.equal(must(root, "systemctl show -p MainPID --value demo").trim(), mainPid, "reloaded, not restarted");
    assert.equal(must(root, "systemctl is-active demo").trim(), "active");
    assert.ok(!fs.existsSync(pending));
    assert.equal(marker(), `${roleDigest(v2)}\n`);

    const again = root.run("bash -s </root/v2.sh");
    assert.equal(again.stdout, "[demo] no changes\n", show(again));
    console.log(`  demo.service (pid ${mainPid}) reloads: ${JSON.stringify(reloads())}`);
  });
});
