import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import test from "node:test";
import { HostRole } from "../../components/host/role";
import { MONITORING_PACKAGES, MONITORING_PATHS, MonitoringSettings, monitoringRole } from "../../components/monitoring";
import { DebianRoot, show, withDebianRoot } from "../lib/debian-root";
import { TEST_MONITORING_SETTINGS } from "../lib/facts";

/**
 * The monitoring role's files as the programs that read them see them, in a Debian 13 root with Debian's
 * packages (no systemd runs there): promtool (prometheus.yml and every rule file it names), amtool
 * (alertmanager.yml and its template) for each receiver kind, blackbox_exporter's own check, and
 * systemd-analyze verify on each unit with its drop-in. The role's validate script runs them all; a broken
 * rule file, alertmanager.yml or drop-in makes it fail, which puts the files back in the bundle.
 */
const base: MonitoringSettings = TEST_MONITORING_SETTINGS;
const KINDS: Record<string, MonitoringSettings> = {
  webhook: base,
  email: { ...base, alertReceiver: "email", alertEmailTo: "owner@example.com", alertEmailFrom: "alerts@example.com", alertSmtpHost: "smtp.example.net:587", alertSmtpUser: "alerts", alertSmtpPassword: "SmtpSecret-1", heartbeatUrl: "" },
  telegram: { ...base, alertReceiver: "telegram", alertTelegramBotToken: "123456789:AAH-abcdefghijklmnopqrstuvwxyz012345", alertTelegramChatId: "-1001234567890", redisUrl: undefined, appHealthPath: undefined },
};

/** Writes the role's directories and files into the root as the bundle would (modes and groups included). */
function install(root: DebianRoot, role: HostRole): void {
  for (const dir of role.directories) fs.mkdirSync(root.hostPath(dir.path), { recursive: true });
  const lines: string[] = [];
  for (const dir of role.directories) lines.push(`chown ${dir.owner ?? "root"}:${dir.group ?? dir.owner ?? "root"} ${dir.path}; chmod ${dir.mode} ${dir.path}`);
  for (const f of role.files) {
    const target = root.hostPath(f.path);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, f.content.endsWith("\n") || f.content === "" ? f.content : `${f.content}\n`);
    lines.push(`chown ${f.owner ?? "root"}:${f.group ?? f.owner ?? "root"} ${f.path}; chmod ${f.mode} ${f.path}`);
  }
  const r = root.run(`set -e\n${lines.join("\n")}`);
  assert.equal(r.code, 0, show(r));
}

const validate = (root: DebianRoot, role: HostRole) => root.run(`set -e\n${role.validate}`);

test("promtool, amtool, blackbox_exporter and systemd-analyze accept the rendered files for each receiver, and the validate step refuses broken ones", { timeout: 20 * 60_000 }, async () => {
  await withDebianRoot((root) => {
    const packages = Object.values(MONITORING_PACKAGES).join(" ");
    // postgresql-common: the postgres user the pgBackRest exporter's unit runs as.
    const installed = root.run(`export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends ${packages} postgresql-common >/dev/null && promtool --version | head -1 && amtool --version 2>&1 | head -1`, { timeoutMs: 15 * 60_000 });
    assert.equal(installed.code, 0, show(installed));
    assert.match(installed.stdout, /promtool, version 2\.53\./);
    assert.match(installed.stdout, /amtool, version 0\.28\./);

    for (const [kind, settings] of Object.entries(KINDS)) {
      const role = monitoringRole(settings);
      install(root, role);
      const checked = validate(root, role);
      assert.equal(checked.code, 0, `${kind}: ${show(checked)}`);
      const out = checked.stdout + checked.stderr;
      // promtool names each rule file it checked with its rule count; amtool names the receivers it found.
      const ruleFiles = role.files.filter((f) => f.path.startsWith(`${MONITORING_PATHS.rulesDir}/`));
      for (const f of ruleFiles) assert.match(out, new RegExp(`SUCCESS: \\d+ rules found|${f.path}`), kind);
      assert.match(out, /SUCCESS: \d+ rules found/);
      assert.match(out, /Found:\n(?:.*\n)*? - 2 receivers/, `${kind}: amtool read the owner and heartbeat receivers`);
      assert.doesNotMatch(out, /\b(warning|error)\b.*\.service/i, `${kind}: systemd-analyze found nothing to say about the units`);
    }

    // A broken rule file: validate fails (the bundle then puts the files back).
    const role = monitoringRole(base);
    install(root, role);
    const slo = root.hostPath(`${MONITORING_PATHS.rulesDir}/slo.yml`);
    const good = fs.readFileSync(slo, "utf8");
    fs.writeFileSync(slo, good.replace(/expr: /, "expr: sum(rate(")); // unbalanced parenthesis
    const badRule = validate(root, role);
    assert.notEqual(badRule.code, 0, "a broken rule file is refused");
    assert.match(badRule.stdout + badRule.stderr, /slo\.yml/);
    fs.writeFileSync(slo, good);

    // A broken alertmanager.yml: a route to a receiver that does not exist.
    const am = root.hostPath(MONITORING_PATHS.alertmanagerYml);
    fs.writeFileSync(am, fs.readFileSync(am, "utf8").replace("receiver: heartbeat", "receiver: nobody"));
    const badAm = validate(root, role);
    assert.notEqual(badAm.code, 0, "an alertmanager.yml naming an unknown receiver is refused");
    assert.match(badAm.stdout + badAm.stderr, /nobody/);
    install(root, role);

    // Drop-ins systemd would not run as meant: a sandbox setting it ignores (a typo), and a missing program.
    const dropIn = root.hostPath(MONITORING_PATHS.dropIn("prometheus"));
    const goodDropIn = fs.readFileSync(dropIn, "utf8");
    for (const [what, extra, says] of [
      ["an ignored setting", "ProtectSystem=sideways\n", /ProtectSystem/],
      ["a missing program", "ExecStart=\nExecStart=/usr/bin/prometheus-missing $ARGS\n", /prometheus-missing/],
    ] as const) {
      fs.writeFileSync(dropIn, `${goodDropIn}${extra}`);
      const badUnit = validate(root, role);
      assert.notEqual(badUnit.code, 0, `a drop-in with ${what} is refused: ${show(badUnit)}`);
      assert.match(badUnit.stderr, says);
    }
    install(root, role);
    assert.equal(validate(root, role).code, 0, "and the good files pass again");
  });
});
