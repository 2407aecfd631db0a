// Every role's budget (RoleBudget) against what the role really has: the alerts in its alerts.yml and
// the rendered SLO rules, and the secrets among its inputs.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import test from "node:test";
import { parse } from "yaml";
import { renderAppErrorLinesRules, renderSloRules } from "../../components/monitoring/slo";
import { ROLES } from "../../infra/roles";

const COMPONENTS = path.resolve(__dirname, "../../components");

function alertNames(rulesYaml: string): string[] {
  const doc = parse(rulesYaml) as { groups: { rules: { alert?: string }[] }[] };
  return doc.groups.flatMap((g) => g.rules.flatMap((r) => (r.alert ? [r.alert] : [])));
}

function roleAlertFile(role: string): string[] {
  const file = path.join(COMPONENTS, role, "alerts.yml");
  return fs.existsSync(file) ? alertNames(fs.readFileSync(file, "utf8")) : [];
}

// Every alert any rendered rule file defines: the roles' files and monitoring's rules from config.
const ALL_ALERTS = new Set([
  ...ROLES.flatMap((role) => roleAlertFile(role.name)),
  ...alertNames(renderSloRules({ sloObjectivePercent: 99.9, sloLatencyMs: 500 })),
  ...alertNames(renderAppErrorLinesRules({ appErrorLinesPerMinute: 10 })),
]);

test("every role declares a complete budget", () => {
  for (const role of ROLES) {
    const b = role.budget;
    assert.ok(b, `${role.name}: no budget`);
    assert.ok(Number.isFinite(b.monthlyCost.amount) && b.monthlyCost.amount >= 0, `${role.name}: monthlyCost.amount ${b.monthlyCost.amount}`);
    assert.ok(["EUR", "USD"].includes(b.monthlyCost.currency), `${role.name}: currency ${b.monthlyCost.currency}`);
    assert.ok(b.monthlyCost.what.length > 10, `${role.name}: monthlyCost.what says nothing`);
    assert.ok(b.alerts.length > 0, `${role.name}: no alert watches it`);
    assert.ok(b.failurePoints.length > 0, `${role.name}: no failure point`);
    for (const s of b.secrets) assert.ok(s.name && s.livesIn, `${role.name}: a secret without its name or place`);
  }
});

test("a role's budget names every alert of its alerts.yml, and only alerts that exist", () => {
  assert.ok(ALL_ALERTS.size >= 25, `only ${ALL_ALERTS.size} alerts found`);
  for (const role of ROLES) {
    const declared = new Set(role.budget.alerts);
    for (const alert of roleAlertFile(role.name)) {
      if (alert === "Watchdog" && role.name !== "monitoring") continue;
      assert.ok(declared.has(alert), `${role.name}: alerts.yml has ${alert}, its budget does not name it`);
    }
    for (const alert of declared) assert.ok(ALL_ALERTS.has(alert), `${role.name}: budget names ${alert}, which no rule defines`);
  }
});

test("a role's budget names every generated password and secret config key among its inputs", () => {
  for (const role of ROLES) {
    const names = role.budget.secrets.map((s) => s.name).join(" | ");
    for (const input of Object.values(role.inputs ?? {})) {
      const name = input.from === "password" ? input.resource : input.from === "secretConfig" ? input.key : undefined;
      if (name) assert.ok(names.includes(name), `${role.name}: input ${name} is a secret its budget does not list (has: ${names})`);
    }
  }
});
