import test from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { BASE_DIRECTORIES, BASE_FILES, baseRole, baseSettingsProblems, role } from "../../components/base";
import { bootFiles } from "../../components/host/cloud-init";
import { SettingsError, StackFacts } from "../../components/host/define";
import { assertShellcheckClean } from "../lib/shellcheck";
import { TEST_FACTS } from "../lib/facts";

// z.object({}) parses to Record<string, never>, which no settings object with StackFacts satisfies in TypeScript.
const settingsOf = (adminUser: string) => ({ ...FACTS, adminUser, ...role.settings.parse({}) }) as unknown as Parameters<typeof role.render>[0];
const FILES = path.join(__dirname, "..", "..", "components", "base", "files");

const FACTS: StackFacts = { ...TEST_FACTS, stack: "unit" };

test("the base definition: first in the list, no config keys of its own, the admin user from the stack", () => {
  assert.equal(role.name, "base");
  assert.deepEqual(role.after, []);
  assert.deepEqual(Object.keys(role.settings.shape), []);
  assert.equal(role.inputs, undefined);
  const rendered = role.render(settingsOf("deploy"), {});
  assert.deepEqual(rendered, baseRole({ adminUser: "deploy" }));
  assert.deepEqual(rendered.directories, [...BASE_DIRECTORIES]);
});

test("the host's files come from components/base/files: the README names the admin user, node_exporter's defaults as they are", () => {
  const r = baseRole({ adminUser: "deploy" });
  const readme = r.files.find((f) => f.path === "/etc/leaninfra/README")?.content ?? "";
  assert.equal(readme, fs.readFileSync(path.join(FILES, "README.txt"), "utf8").replace("{{adminUser}}", "deploy"));
  assert.match(readme, /^This VM is managed by LeanInfra \(a Pulumi program\)\. Log in as deploy and use sudo\.$/m);
  assert.doesNotMatch(readme, /\{\{|\}\}/);
  const defaults = r.files.find((f) => f.path === "/etc/default/prometheus-node-exporter");
  assert.equal(defaults?.content, fs.readFileSync(path.join(FILES, "prometheus-node-exporter"), "utf8"));
  assert.match(defaults?.content ?? "", /^ARGS="--web\.listen-address=127\.0\.0\.1:9100 --collector\.systemd --collector\.systemd\.unit-include=\.\+\[\.\]\(service\|timer\)"$/m);
  assert.match(defaults?.onChange ?? "", /systemctl restart prometheus-node-exporter/);
});

test("render refuses an admin user that is not a Linux user name with SettingsError, the problem starting with adminUser", () => {
  for (const adminUser of ["Bad User", "1ops", "", "a".repeat(33), "ops;rm"]) {
    assert.deepEqual(baseSettingsProblems({ adminUser }).map((p) => p.split(" ")[0]), ["adminUser"], adminUser);
    assert.throws(
      () => role.render(settingsOf(adminUser), {}),
      (e: Error) => {
        assert.ok(e instanceof SettingsError, `a SettingsError, not ${e.name}: ${e.message}`);
        assert.equal(e.role, "base");
        assert.deepEqual(e.problems, [`adminUser ${JSON.stringify(adminUser)} is not a Linux user name (accepted: a-z, 0-9, '_' and '-', starting with a letter or '_')`]);
        return true;
      },
    );
  }
  assert.deepEqual(baseSettingsProblems({ adminUser: "ops" }), []);
  assert.deepEqual(baseSettingsProblems({ adminUser: "_deploy-1" }), []);
});

test("shellcheck passes the base role's rendered snippets on their own", () => {
  const r = baseRole({ adminUser: "ops" });
  assert.deepEqual(fs.readdirSync(FILES).filter((f) => f.endsWith(".sh")), [], "no script files: the snippets are short");
  for (const [step, snippet] of Object.entries({ validate: r.validate, apply: r.apply, healthCheck: r.healthCheck })) {
    assert.ok(snippet, step);
    assertShellcheckClean(`the base ${step} snippet`, snippet);
  }
  for (const file of r.files) if (file.onChange) assertShellcheckClean(`the handler of ${file.path}`, file.onChange);
});

/** An sshd config file's options: lowercase keyword -> its value (sshd reads the first one). */
function sshdOptions(text: string): Map<string, string> {
  const options = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Za-z]+)\s+(.+?)\s*$/.exec(line);
    if (m && !line.trimStart().startsWith("#") && !options.has(m[1].toLowerCase())) options.set(m[1].toLowerCase(), m[2]);
  }
  return options;
}

const sshdDropIn = () => baseRole({ adminUser: "ops" }).files.find((f) => f.path === BASE_FILES.sshdDropIn);

test("sshd's drop-in: post-quantum and X25519 key exchange, the ed25519 host key, AEAD and etm SHA-2 only, no compression or agent forwarding", () => {
  const file = sshdDropIn();
  assert.ok(file, BASE_FILES.sshdDropIn);
  assert.equal(file.content, fs.readFileSync(path.join(FILES, "sshd-hardening.conf"), "utf8"));
  assert.equal(file.mode, "0644");
  const o = sshdOptions(file.content);
  assert.equal(o.get("kexalgorithms"), "mlkem768x25519-sha256,sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org");
  assert.equal(o.get("hostkey"), "/etc/ssh/ssh_host_ed25519_key");
  assert.equal(file.content.match(/^HostKey /gm)?.length, 1, "HostKey adds up across lines: exactly one");
  assert.equal(o.get("hostkeyalgorithms"), "ssh-ed25519");
  for (const mac of o.get("macs")?.split(",") ?? []) assert.match(mac, /^hmac-sha2-(256|512)-etm@openssh\.com$/);
  for (const cipher of o.get("ciphers")?.split(",") ?? []) assert.match(cipher, /^(chacha20-poly1305@openssh\.com|aes(128|256)-gcm@openssh\.com|aes(128|192|256)-ctr)$/);
  assert.equal(o.get("compression"), "no");
  assert.equal(o.get("allowagentforwarding"), "no");
  assert.equal(o.get("loglevel"), "VERBOSE");
  assert.equal(o.get("maxauthtries"), "10");
  // Every key type infra/config.ts accepts for adminSshPublicKey can still log in; RSA never with SHA-1.
  const accepted = o.get("pubkeyacceptedalgorithms")?.split(",") ?? [];
  for (const type of ["ssh-ed25519", "sk-ssh-ed25519@openssh.com", "rsa-sha2-512", "rsa-sha2-256", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"]) {
    assert.ok(accepted.includes(type), `PubkeyAcceptedAlgorithms takes ${type}`);
  }
  assert.ok(!accepted.includes("ssh-rsa"));
});

test("sshd's drop-in sorts before cloud-init's, and the options both set agree", (t) => {
  const cloudInit = bootFiles({ hostname: "web", fqdn: "web.example.com", adminUser: "ops", adminSshPublicKey: "", swapSizeMb: 0, journalMaxUseMb: 200, hostKey: { privateKeyOpenssh: "", publicKeyOpenssh: "" } } as unknown as Parameters<typeof bootFiles>[0]).filter((f) =>
    f.path.startsWith("/etc/ssh/sshd_config.d/"),
  );
  assert.ok(cloudInit.length > 0, "cloud-init writes an sshd drop-in");
  const base = sshdOptions(sshdDropIn()?.content ?? "");
  const differing: string[] = [];
  for (const file of cloudInit) {
    assert.ok(path.basename(BASE_FILES.sshdDropIn) < path.basename(file.path), `${BASE_FILES.sshdDropIn} is read before ${file.path}: sshd keeps the first value`);
    for (const [key, value] of sshdOptions(file.content)) {
      if (base.has(key) && base.get(key) !== value) differing.push(`${key}: base ${base.get(key)}, cloud-init ${value}`);
    }
  }
  t.diagnostic(`options set differently: ${differing.join("; ") || "none"}`);
  assert.deepEqual(differing, [], "cloud-init's first-boot sshd settings and the base role's agree (MaxAuthTries included: the first pulumi up runs before the base role)");
});

test("the base role's validation runs sshd -t and checks needrestart's file; node_exporter's sandbox; needrestart restarts by itself", () => {
  const r = baseRole({ adminUser: "ops" });
  assert.match(r.validate ?? "", /^sshd -t$/m);
  assert.match(r.validate ?? "", new RegExp(`^perl -c ${BASE_FILES.needrestartConf}$`, "m"));
  assert.ok(r.packages.includes("needrestart") && r.packages.includes("openssh-server"));
  assert.match(r.files.find((f) => f.path === BASE_FILES.sshdDropIn)?.onChange ?? "", /systemctl try-reload-or-restart ssh/);

  const dropIn = r.files.find((f) => f.path === BASE_FILES.nodeExporterDropIn);
  assert.ok(dropIn);
  assert.ok(r.directories.some((d) => d.path === path.dirname(BASE_FILES.nodeExporterDropIn)));
  const lines = dropIn.content.split("\n").filter((l) => l !== "" && !l.startsWith("#"));
  assert.equal(lines[0], "[Service]");
  for (const setting of ["NoNewPrivileges=yes", "CapabilityBoundingSet=", "ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes", "PrivateDevices=yes", "MemoryDenyWriteExecute=yes"]) {
    assert.ok(lines.includes(setting), setting);
  }
  assert.ok(!lines.some((l) => l.startsWith("ReadWritePaths=")), "node_exporter only reads, the textfile directory included");
  // The defaults and the drop-in share one handler: systemd reads the drop-in again, then the restart.
  const defaults = r.files.find((f) => f.path === "/etc/default/prometheus-node-exporter");
  assert.equal(dropIn.onChange, defaults?.onChange);
  assert.match(dropIn.onChange ?? "", /systemctl daemon-reload\n\s+systemctl restart prometheus-node-exporter/);

  const needrestart = r.files.find((f) => f.path === BASE_FILES.needrestartConf)?.content ?? "";
  assert.match(needrestart, /^\$nrconf\{restart\} = 'a';$/m);
  assert.match(needrestart, /^\$nrconf\{kernelhints\} = -1;$/m);
  const perl = spawnSync("perl", ["-c", "-"], { input: needrestart, encoding: "utf8" });
  assert.equal(perl.status, 0, perl.stderr);
});
