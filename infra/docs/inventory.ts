import { PROJECT } from "../config";
import { registryHost } from "../../components/app/settings";
import { describeResourceType } from "./resource-types";
import { DocsFacts, RoleFacts, SecretKeyFacts } from "./facts";
import { andList, code, generatedHeader, table } from "./markdown";

/** One external account the stack depends on: a row of the inventory's first table. */
interface Account {
  name: string;
  what: string;
  cost: string;
  controls: string;
  dependsOnIt: string;
  secrets: string;
}

const YOUR_PLAN = "your plan (not priced here)";

function secretState(s: SecretKeyFacts | undefined, stack: string): string {
  if (!s) return "";
  const where = `encrypted stack config (Pulumi.${stack}.yaml)`;
  return `${code(s.key)}: ${s.state === "set" ? `set, ${where}` : s.state === "needed" ? `not set yet, needed by \`pulumi up\`; goes in ${where}` : `not set (optional); would go in ${where}`}`;
}

function accounts(f: DocsFacts): Account[] {
  const cfg = f.cfg;
  const s = cfg as unknown as Record<string, string | boolean>;
  const secret = (key: string) => secretState(f.secretKeys.find((k) => k.key === key || k.key === `${PROJECT}:${key}`), f.stack);
  const money = (currency: string) => (f.plan.cost.totals[currency] ?? 0).toFixed(2) + ` ${currency}`;
  const hetzner = f.plan.cost.lines.filter((l) => l.currency === "EUR");
  const app = f.roles.find((r) => r.definition.name === "app");
  const image = String(s.appImage ?? "");
  const receiver = String(s.alertReceiver);
  const alertTo: Record<string, string> = {
    webhook: `a webhook: Alertmanager posts its JSON to the URL in the secret \`${PROJECT}:alertWebhookUrl\` (not shown here)`,
    telegram: `Telegram: a bot (its token is the secret \`${PROJECT}:alertTelegramBotToken\`) writing to chat ${code(String(s.alertTelegramChatId))}`,
    email: `e-mail to ${code(String(s.alertEmailTo))} from ${code(String(s.alertEmailFrom))} through ${code(String(s.alertSmtpHost))}`,
  };
  const alertSecrets: Record<string, string> = {
    webhook: secret("alertWebhookUrl"),
    telegram: secret("alertTelegramBotToken"),
    email: s.alertSmtpUser ? secret("alertSmtpPassword") : "none (no SMTP login)",
  };
  const sentry = f.secretKeys.find((k) => k.key === `${PROJECT}:sentryDsn`);
  return [
    {
      name: "Hetzner Cloud",
      what: `the project of \`hcloud:token\`: ${hetzner.map((l) => `${l.item.toLowerCase()}: ${l.detail}`).join("; ")}; Hetzner backups ${cfg.hetznerBackups ? "on" : "off"}; location ${cfg.location}`,
      cost: `${money("EUR")}${f.plan.cost.unpriced.length ? ` without ${andList(f.plan.cost.unpriced)}` : ""}`,
      controls: "whoever administers the Hetzner project, and any holder of its API token: they can rebuild, delete or open the console of the server",
      dependsOnIt: "everything on the server: the site, the database, the metrics, logs and alerts, and the backups' source",
      secrets: `${secret("hcloud:token")}; the server's SSH host key (Pulumi state, and the server's user data in the project)`,
    },
    {
      name: "Cloudflare (the zone's account)",
      what: `account ${code(cfg.cloudflareAccountId)}, zone ${code(cfg.cloudflareZone || cfg.domain)}: DNS${cfg.cdnProxy ? ", the CDN proxy, the Origin CA certificate and authenticated origin pulls" : " only (cdnProxy false: Let's Encrypt on the server)"}`,
      cost: `0.00 USD on the Free plan; ${YOUR_PLAN} if the zone is on a paid one`,
      controls: `whoever administers account ${cfg.cloudflareAccountId}, and any holder of \`cloudflare:apiToken\`: they can point the site elsewhere`,
      dependsOnIt: `every visitor of ${andList(f.plan.outputs.hostnames instanceof Array ? (f.plan.outputs.hostnames as string[]) : [cfg.domain])}${cfg.cdnProxy ? ", and nginx's origin certificate" : ""}`,
      secrets: `${secret("cloudflare:apiToken")}; the origin certificate's key (Pulumi state, and a root-only file on the server)`,
    },
    {
      name: "Cloudflare R2 (the backup account)",
      what: `account ${code(cfg.backupAccountId)}, bucket ${code(cfg.bucketName)} (location hint ${cfg.backupLocationHint}, jurisdiction ${cfg.backupJurisdiction}), locked ${cfg.backupLockDays} days, kept ${cfg.backupRetentionDays} days`,
      cost: `${money("USD")} for about ${cfg.backupEstimatedGb} GB (backupEstimatedGb)`,
      controls: `whoever administers account ${cfg.backupAccountId}, and any holder of \`${PROJECT}:backupApiToken\`; the server's token reaches only objects in this bucket`,
      dependsOnIt: "every restore, the weekly restore drill, and point-in-time recovery (WAL)",
      secrets: `${secret("backupApiToken")}; the bucket's token and the backup passphrase (Pulumi state, and root-only files on the server)`,
    },
    {
      name: "Alert channel",
      what: alertTo[receiver] ?? receiver,
      cost: YOUR_PLAN,
      controls: "whoever owns that endpoint or account; anyone who can read it sees every alert",
      dependsOnIt: `knowing about every page and ticket (${f.pageAlerts.length} page alerts on this stack)`,
      secrets: alertSecrets[receiver] ?? "",
    },
    {
      name: "Dead man's switch",
      what: `the URL in the secret \`${PROJECT}:heartbeatUrl\`: the Watchdog alert is posted there every minute`,
      cost: YOUR_PLAN,
      controls: "whoever owns that check (e.g. a healthchecks.io project)",
      dependsOnIt: "learning that alerting itself stopped (server, Prometheus or Alertmanager down)",
      secrets: secret("heartbeatUrl"),
    },
    {
      name: "Error tracking",
      what: sentry?.state === "set" ? `a Sentry project (or a compatible service) at the DSN in \`${PROJECT}:sentryDsn\`` : `none: \`${PROJECT}:sentryDsn\` is not set, so the app's exceptions are only in its log lines`,
      cost: sentry?.state === "set" ? YOUR_PLAN : "0",
      controls: sentry?.state === "set" ? "whoever owns the Sentry organisation" : "-",
      dependsOnIt: "seeing the app's exceptions with their release",
      secrets: secret("sentryDsn"),
    },
    {
      name: "Pulumi state backend",
      what: f.backendUrl
        ? `${code(f.backendUrl)} (Pulumi.yaml backend.url)`
        : "the backend `pulumi login` chose: Pulumi Cloud by default, or the S3-compatible bucket of `PULUMI_BACKEND_URL` in CI (never the backup bucket)",
      cost: YOUR_PLAN,
      controls: "whoever can log in to it; with a self-managed bucket, whoever holds its keys and the stack's passphrase",
      dependsOnIt: "every `pulumi up` and preview; it holds every generated password and key (encrypted)",
      secrets: "the state's encryption: Pulumi Cloud's, or `PULUMI_CONFIG_PASSPHRASE` for a self-managed backend (a CI secret, never in the repository)",
    },
    {
      name: "Container registry",
      what: app?.on
        ? `${registryHost(image) || "docker.io"}: the image ${code(image)}, release ${code(String(s.appTag))}`
        : "none: the app role is off (appImage is empty)",
      cost: app?.on ? YOUR_PLAN : "0",
      controls: app?.on ? `whoever owns the repository ${code(image)}: what they push under a tag is what the server runs` : "-",
      dependsOnIt: app?.on ? "every deploy and rollback, and the restore drill's app container" : "-",
      secrets: app?.on ? (s.appRegistryUser ? `${code(String(s.appRegistryUser))} with ${secret("appRegistryPassword")}` : "none: a public image") : "-",
    },
  ];
}

function roleLines(r: RoleFacts, f: DocsFacts): string[] {
  const d = r.definition;
  const b = d.budget;
  const shape = d.settings.shape as Record<string, { description?: string }>;
  const state = r.on ? "on" : `off (turned on by ${andList(r.switchKeys.map((k) => code(`${PROJECT}:${k}`)))})`;
  const lines = [`### ${d.name}: ${state}`, ""];
  if (r.on && r.host) lines.push(`What it sets up: ${r.host.description}.`, "");
  else lines.push(...r.switchKeys.map((k) => `${code(`${PROJECT}:${k}`)}: ${shape[k]?.description ?? ""}`), "");
  if (r.services.length) lines.push(`- Services: ${r.services.map(code).join(", ")}`);
  if (r.jobs.length) lines.push(`- Timers: ${r.jobs.map((j) => `${code(j.timer)} (${j.onCalendar})`).join(", ")}`);
  if (d.name === "app" && r.on) lines.push(`- Containers: ${code("app-blue")} or ${code("app-green")} (the serving slot), image ${code(String((f.cfg as Record<string, unknown>).appImage))}`);
  lines.push(`- Adds to the monthly bill: ${b.monthlyCost.amount.toFixed(2)} ${b.monthlyCost.currency}. ${b.monthlyCost.what}`);
  lines.push(`- Secrets: ${b.secrets.length ? b.secrets.map((s) => `${code(s.name)} (${s.livesIn})`).join("; ") : "none"}`);
  lines.push(`- Alerts: ${b.alerts.length ? b.alerts.map(code).join(", ") : "none of its own"}`);
  lines.push("- Failure points:", ...b.failurePoints.map((p) => `  - ${p}`), "");
  return lines;
}

function resourceRows(f: DocsFacts): string[][] {
  const counts = new Map<string, number>();
  for (const r of f.plan.resources) counts.set(r.type, (counts.get(r.type) ?? 0) + 1);
  return [...counts.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([type, n]) => [code(type), String(n), describeResourceType(type)]);
}

/** INVENTORY.md: every external account, every role and what it runs, every secret key, every resource type. */
export function renderInventory(f: DocsFacts): string {
  const cost = f.plan.cost;
  const totals = Object.entries(cost.totals).map(([currency, sum]) => `${sum.toFixed(2)} ${currency}`);
  const on = f.roles.filter((r) => r.on).map((r) => r.definition.name);
  const lines = [
    ...generatedHeader(`Inventory of stack ${f.stack}: ${f.cfg.domain}`, f.stack),
    `One ${f.cfg.environment} server, ${code(f.cfg.fqdn)} (${f.cfg.serverType} in ${f.cfg.location}), admin user ${code(f.cfg.adminUser)}; roles on: ${andList(on)}.`,
    `Monthly: ${totals.join(" + ")} (prices recorded ${cost.recordedOn}, excluding VAT), plus the accounts priced as "your plan".`,
    "",
    "## External accounts",
    "",
    ...table(
      ["account", "what it is for this stack", "monthly cost", "who controls it", "what depends on it", "its secrets and where they live"],
      accounts(f).map((a) => [a.name, a.what, a.cost, a.controls, a.dependsOnIt, a.secrets]),
    ),
    "",
    "## Monthly cost",
    "",
    ...table(
      ["item", "detail", "monthly"],
      cost.lines.map((l) => [l.item, l.detail, l.monthly === null ? "not in the price table" : `${l.monthly.toFixed(2)} ${l.currency}`]),
      ["l", "l", "r"],
    ),
    "",
    ...cost.notes.map((n) => `- ${n}`),
    `- Source: ${cost.source}`,
    "",
    "## Services on the server, by role",
    "",
    "Each role's bill, secrets, alerts and failure points are its budget (`budget` in `components/<role>/index.ts`).",
    "",
    ...f.roles.flatMap((r) => roleLines(r, f)),
    "## Secret config keys",
    "",
    ...table(
      ["key", "state in this stack file", "what it is"],
      f.secretKeys.map((k) => [code(k.key), k.state === "set" ? "set (encrypted)" : k.state === "needed" ? "needed by `pulumi up`, not set" : "optional, not set", k.description]),
    ),
    "",
    "Values are never printed here. Set one with `pulumi config set --secret <key> ...`; generated passwords and keys live in Pulumi state.",
    "",
    "## Resources in the plan",
    "",
    ...table(["type", "count", "what it is"], resourceRows(f), ["l", "r", "l"]),
    "",
    `${f.plan.resources.length} resources in all.`,
  ];
  return `${lines.join("\n")}\n`;
}
