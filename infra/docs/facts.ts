import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parse } from "yaml";
import { z } from "zod";
import { AnyRoleDefinition, RoleSettings, placeholderInputs } from "../../components/host/define";
import { HostRole } from "../../components/host/role";
import { MONITORING_PATHS } from "../../components/monitoring/config";
import { PROJECT, SECRET_KEYS, StackConfig, neededSecretKeys, validateConfig } from "../config";
import { stackInputPlaceholders } from "../placeholders";
import { Plan, StackFile, buildPlan, readStackFile } from "../plan";
import { ROLES } from "../roles";
import { projectConfig } from "../stack";

/** One role as this stack runs it: on or off, the config keys that switch it, and its host data when on. */
export interface RoleFacts {
  definition: AnyRoleDefinition;
  on: boolean;
  /** The config keys that turn the role on or off (none: it always runs). */
  switchKeys: string[];
  /** Rendered from placeholder inputs, as `npm run plan` renders it; undefined when off. */
  host?: HostRole;
  /** Long-running systemd services the role installs, configures or restarts. */
  services: string[];
  /** Jobs started by a timer of the role: the timer, and when it fires. */
  jobs: { timer: string; service: string; onCalendar: string }[];
}

/** A page alert in the stack's rendered rules: one name, one or more rules. */
export interface PageAlert {
  name: string;
  rules: { for: string; summary: string }[];
}

/** A secret config key (a provider's or the project's) and whether this stack file sets it. */
export interface SecretKeyFacts {
  key: string;
  description: string;
  state: "set" | "needed" | "optional";
}

export interface DocsFacts {
  stack: string;
  cfg: StackConfig;
  stackFile: StackFile;
  plan: Plan;
  roles: RoleFacts[];
  pageAlerts: PageAlert[];
  secretKeys: SecretKeyFacts[];
  /** Pulumi.yaml's backend.url, when the project pins one. */
  backendUrl?: string;
}

const PROVIDER_SECRETS: Record<string, string> = {
  "hcloud:token": "Hetzner Cloud API token (read & write) of the server's project.",
  "cloudflare:apiToken": "Cloudflare API token of the zone's account: DNS, zone settings, SSL, rules.",
};

// `systemctl restart|reload ... <unit>` in a role's handlers names the services it manages.
const SYSTEMCTL_ACTION = /systemctl (?:restart|try-restart|reload|try-reload-or-restart) ([A-Za-z0-9@_.-]+)/g;
const UNIT_DIR = "/etc/systemd/system/";

const unitName = (unit: string) => unit.replace(/\.service$/, "");

/** The services and timer jobs of a rendered role, from its unit files, drop-ins and handlers. */
function unitsOf(host: HostRole): Pick<RoleFacts, "services" | "jobs"> {
  const paths = [...host.files.map((f) => f.path), ...host.directories.map((d) => d.path)].filter((p) => p.startsWith(UNIT_DIR));
  const jobs = host.files
    .filter((f) => f.path.startsWith(UNIT_DIR) && f.path.endsWith(".timer"))
    .map((f) => ({
      timer: path.basename(f.path),
      service: /^Unit=(.+)$/m.exec(f.content)?.[1] ?? path.basename(f.path).replace(/\.timer$/, ".service"),
      onCalendar: /^OnCalendar=(.+)$/m.exec(f.content)?.[1] ?? /^OnUnitActiveSec=(.+)$/m.exec(f.content)?.[1]?.replace(/^/, "every ") ?? "",
    }));
  const jobServices = new Set(jobs.map((j) => unitName(j.service)));
  const services = new Set<string>();
  for (const file of host.files) for (const match of (file.onChange ?? "").matchAll(SYSTEMCTL_ACTION)) services.add(unitName(match[1]));
  for (const p of paths) {
    const unit = p.slice(UNIT_DIR.length).split("/")[0].replace(/\.d$/, "");
    if (unit.endsWith(".service") && !unit.includes("@.")) services.add(unitName(unit));
  }
  return { services: [...services].filter((s) => !jobServices.has(s)).sort(), jobs };
}

/**
 * The config keys that switch a role: those its `enabled` reads, or a boolean key named like the role
 * (grafana), with which the role runs to remove what it installed.
 */
function switchKeysOf(role: AnyRoleDefinition, settings: RoleSettings<z.ZodObject>): { keys: string[]; on: boolean } {
  const own = (role.settings.shape as Record<string, z.ZodType>)[role.name];
  if (own instanceof z.ZodDefault && own.def.innerType instanceof z.ZodBoolean) {
    return { keys: [role.name], on: (settings as unknown as Record<string, unknown>)[role.name] === true };
  }
  if (!role.enabled) return { keys: [], on: true };
  const read = new Set<string>();
  const watched = new Proxy(settings, { get: (target, key) => (read.add(String(key)), Reflect.get(target, key)) });
  const on = role.enabled(watched);
  return { keys: [...read], on };
}

/** Every role of the list, rendered from placeholders in order (offers flow as in the plan). */
function roleFacts(cfg: StackConfig, roles: readonly AnyRoleDefinition[]): RoleFacts[] {
  const settings = cfg as unknown as RoleSettings<z.ZodObject>;
  const offers = new Map<string, Record<string, string>>();
  const placeholders = stackInputPlaceholders(cfg);
  // A service belongs to the first role that names it (grafana reloads the proxy's nginx).
  const claimed = new Set<string>();
  return roles.map((definition) => {
    const { keys, on } = switchKeysOf(definition, settings);
    if (definition.enabled && !definition.enabled(settings)) return { definition, on: false, switchKeys: keys, services: [], jobs: [] };
    const inputs = placeholderInputs(definition, settings, offers, placeholders);
    const host = definition.render(settings, inputs);
    if (definition.offers) offers.set(definition.name, definition.offers(settings, inputs));
    const units = on ? unitsOf(host) : { services: [], jobs: [] };
    const services = units.services.filter((s) => !claimed.has(s));
    for (const s of services) claimed.add(s);
    return { definition, on, switchKeys: keys, host, services, jobs: units.jobs };
  });
}

interface RuleFile {
  groups?: { rules?: { alert?: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }[] }[];
}

/** The page alerts of the rule files the monitoring role installs for this stack, in file order. */
function pageAlertsOf(roles: RoleFacts[]): PageAlert[] {
  const files = roles.flatMap((r) => r.host?.files ?? []).filter((f) => f.path.startsWith(`${MONITORING_PATHS.rulesDir}/`));
  const alerts = new Map<string, PageAlert>();
  for (const file of files) {
    for (const group of (parse(file.content) as RuleFile).groups ?? []) {
      for (const rule of group.rules ?? []) {
        if (!rule.alert || rule.labels?.severity !== "page") continue;
        const alert = alerts.get(rule.alert) ?? { name: rule.alert, rules: [] };
        alert.rules.push({ for: rule.for ?? "0s", summary: rule.annotations?.summary ?? "" });
        alerts.set(rule.alert, alert);
      }
    }
  }
  return [...alerts.values()];
}

function secretKeyFacts(cfg: StackConfig, stackFile: StackFile): SecretKeyFacts[] {
  const needed = new Set(neededSecretKeys(cfg).map((k) => `${PROJECT}:${k}`));
  const all: [string, string, boolean][] = [
    ...Object.entries(PROVIDER_SECRETS).map(([key, description]): [string, string, boolean] => [key, description, true]),
    ...Object.entries(SECRET_KEYS).map(([key, s]): [string, string, boolean] => [`${PROJECT}:${key}`, s.description, s.required]),
  ];
  return all.map(([key, description, required]) => ({
    key,
    description,
    state: stackFile.secretKeys.includes(key) ? "set" : required || needed.has(key) ? "needed" : "optional",
  }));
}

function backendUrlOf(root: string): string | undefined {
  const project = parse(fs.readFileSync(path.join(root, "Pulumi.yaml"), "utf8")) as { backend?: { url?: string } } | null;
  return project?.backend?.url || undefined;
}

/** Everything the docs say about one stack: its config, the offline plan, the roles and their rules. */
export async function collectDocsFacts(stack: string, root: string): Promise<DocsFacts> {
  const stackFile = readStackFile(stack, root);
  const cfg = validateConfig(stack, projectConfig(stackFile.config), stackFile.secretKeys, { allConfig: stackFile.config });
  // The plan's own offline run; its rendered files go to a scratch directory, not the user's out/.
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-docs-"));
  let plan: Plan;
  try {
    plan = await buildPlan(stack, { root, outDir: scratch });
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  const roles = roleFacts(cfg, ROLES);
  return { stack, cfg, stackFile, plan, roles, pageAlerts: pageAlertsOf(roles), secretKeys: secretKeyFacts(cfg, stackFile), backendUrl: backendUrlOf(root) };
}
