// The Debian 13 root every role test runs in is shaped like a Hetzner server after its security updates:
// Debian's own sources with trixie-updates and trixie-security, and nothing left to upgrade from them.
import assert from "node:assert/strict";
import test from "node:test";
import { show, withDebianRoot } from "../lib/debian-root";

test("the Debian 13 test root takes trixie-security and trixie-updates, and was upgraded from them", async () => {
  await withDebianRoot((root) => {
    const policy = root.run("apt-cache policy");
    assert.equal(policy.code, 0, show(policy));
    for (const suite of ["trixie/main", "trixie-updates/main", "trixie-security/main"]) {
      assert.match(policy.stdout, new RegExp(`^\\s*500 \\S+ ${suite} amd64 Packages$`, "m"), `apt does not use ${suite}:\n${policy.stdout}`);
    }
    // The package lists are the ones the root was built with: nothing in them is newer than what is installed.
    const upgrade = root.run("apt-get --simulate --quiet upgrade");
    assert.equal(upgrade.code, 0, show(upgrade));
    const pending = upgrade.stdout.split("\n").filter((line) => line.startsWith("Inst "));
    assert.deepEqual(pending, [], "packages the root's own lists would still upgrade");
    const ssh = root.run("apt-cache policy openssh-server");
    const installed = /Installed: (\S+)/.exec(ssh.stdout)?.[1];
    console.log(`  openssh-server ${installed} (${/Candidate: (\S+)/.exec(ssh.stdout)?.[1]} is the candidate from trixie, trixie-updates and trixie-security)`);
    assert.ok(installed && installed !== "(none)", show(ssh));
  });
});
