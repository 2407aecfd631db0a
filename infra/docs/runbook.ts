import { PROJECT } from "../config";
import { APP_PATHS } from "../../components/app/render";
import { BACKUPS } from "../../components/backups/layout";
import { LAYOUT } from "../../components/host/layout";
import { POSTGRES_PATHS } from "../../components/postgres/config";
import { DocsFacts, RoleFacts } from "./facts";
import { andList, code, generatedHeader, sh, table } from "./markdown";
import { RunbookSection, StackMarker, anchorOf, fillMarkers } from "./runbook-source";

/** A section that must fit on one screen. */
export const ONE_SCREEN_LINES = 25;

const roleOn = (f: DocsFacts, name: string): RoleFacts | undefined => f.roles.find((r) => r.definition.name === name && r.on);
const setting = (f: DocsFacts, key: string) => String((f.cfg as unknown as Record<string, unknown>)[key] ?? "");

/** This stack's values for docs/runbook.md's markers. */
export function markerValues(f: DocsFacts): Record<StackMarker, string> {
  const site = String(f.plan.outputs.url);
  const health = roleOn(f, "app") ? `${site.replace(/\/$/, "")}${setting(f, "appHealthPath")}` : site;
  return { "<server>": f.cfg.fqdn, "<site url>": site, "<health url>": health, "<database>": setting(f, "postgresDatabase") };
}

function sshSection(f: DocsFacts): string[] {
  const { fqdn, adminUser, stack } = f.cfg;
  return [
    "## SSH in",
    "",
    `The server is ${code(fqdn)} (its reverse DNS; the site's names point at Cloudflare). Name it once in \`~/.ssh/config\``,
    `from the stack's output, then log in as ${code(adminUser)} with the key of \`adminSshPublicKey\` (from ${andList(f.cfg.sshAllowFrom.map(code))} only):`,
    "",
    ...sh([
      `printf 'Host ${fqdn}\\n  HostName %s\\n  User ${adminUser}\\n' "$(pulumi stack output ipv4 --stack ${stack})" >> ~/.ssh/config`,
      `ssh ${fqdn}        # the same as: $(pulumi stack output sshCommand --stack ${stack})`,
      "sudo -i                   # the commands below run as root",
    ]),
    "",
    "The server presents the host key pinned in Pulumi's state (README: *SSH host key*); accept it only if its fingerprint matches.",
    "",
  ];
}

function restartSection(f: DocsFacts): string[] {
  const rows = f.roles.flatMap((r) => r.services.map((unit) => [r.definition.name, code(unit), code(`systemctl restart ${unit}`), code(`journalctl -u ${unit} --since -1h`)]));
  const app = roleOn(f, "app");
  const release = `app-${setting(f, "appTag").split("@")[0]}`;
  if (app) rows.push(["app", `${code("app-blue")} / ${code("app-green")}`, code(APP_PATHS.deployScript.split("/").pop()!), code(`journalctl -t ${release} --since -1h`)]);
  const jobs = f.roles.flatMap((r) => r.jobs.map((j) => [r.definition.name, code(j.timer), j.onCalendar, code(`systemctl start ${j.service}`)]));
  return [
    "## Restart a service",
    "",
    ...table(["role", "service", "restart", "its logs"], rows),
    "",
    app
      ? `The app restarts without dropping a request: ${code("leaninfra-deploy")} starts the release of \`deploy.conf\` in the idle slot and switches nginx once it is healthy. Check the config before nginx restarts: ${code("nginx -t")}.`
      : `Check nginx's config before it restarts: ${code("nginx -t")}.`,
    "",
    "Jobs run by timers (`systemctl list-timers 'leaninfra-*'`):",
    "",
    ...table(["role", "timer", "when", "run it now"], jobs),
    "",
  ];
}

function logsSection(f: DocsFacts): string[] {
  const grafana = roleOn(f, "grafana");
  const release = `app-${setting(f, "appTag").split("@")[0]}`;
  return [
    "## Read the logs of one request",
    "",
    "Every answer carries `X-Request-ID`; nginx logs it as `request_id` and passes it to the app, which should print it.",
    "From your laptop, through an SSH tunnel to VictoriaLogs (the whole journal, nginx's access lines and the app's):",
    "",
    ...sh([
      `ssh -f -N -L 9428:127.0.0.1:9428 ${f.cfg.fqdn}`,
      `curl -s http://127.0.0.1:9428/select/logsql/query --data-urlencode 'query=_time:1d "<request id>"' | jq -c '{_time, _stream, _msg}'`,
    ]),
    "",
    `Or on the server, from the journal: ${code(`journalctl --since -1d -t nginx_access -t ${release} -g '<request id>'`)}.`,
    grafana ? `Or Grafana's dashboard *logs by request id* at https://${setting(f, "grafanaHostname")}.${f.cfg.domain}/.` : `Grafana is off (\`${PROJECT}:grafana\`): no dashboard, the tunnel above is the way.`,
    "",
  ];
}

function rollbackSection(f: DocsFacts): string[] {
  const { stack } = f.cfg;
  if (!roleOn(f, "app")) return ["## Roll back a deploy", "", `The app role is off (\`${PROJECT}:appImage\` is empty): there is no deploy to roll back.`, ""];
  return [
    "## Roll back a deploy",
    "",
    `The server runs ${code(`${setting(f, "appImage")}:${setting(f, "appTag")}`)}. A rollback is a deploy of the previous tag:`,
    "",
    ...sh([
      `ssh ${f.cfg.fqdn} sudo tail -n 3 ${APP_PATHS.stateDir}/releases    # the releases deployed, newest last`,
      `pulumi config set appTag <previous release> --stack ${stack}`,
      `pulumi up --stack ${stack}`,
    ]),
    "",
    "`pulumi up` runs `leaninfra-deploy`: the previous release starts in the idle slot, and nginx switches to it only once",
    "its health path answers; if it does not, the serving release stays. When `pulumi up` cannot run, on the server:",
    `${code("sudo leaninfra-deploy <previous release>")}, then set \`appTag\` as above so the next \`pulumi up\` keeps it.`,
    `Check: ${code("sudo leaninfra-deploy --status")} and ${code(`tail ${LAYOUT.app.deployLog}`)}.`,
    "A rollback does not undo the bad release's database migrations: if they damaged data, restore (below).",
    "",
  ];
}

function drillSection(f: DocsFacts): string[] {
  const drill = roleOn(f, "backups")?.jobs.find((j) => j.service === "leaninfra-drill.service");
  if (!drill) return ["## Run a restore drill", "", "The backups role is off: nothing to drill.", ""];
  return [
    "## Run a restore drill",
    "",
    `The drill restores the latest backup into a scratch cluster (port ${BACKUPS.scratchPort}), checks every table against production, starts the`,
    `serving release on it with no route out, and records the result. Its timer runs it ${code(drill.onCalendar)}; to run one now:`,
    "",
    ...sh([
      `sudo systemctl start ${drill.service}            # as the timer does; or: sudo leaninfra-drill`,
      "sudo leaninfra-drill --target-time '<YYYY-MM-DD HH:MM:SS+00>'   # prove a point-in-time restore",
      `tail -n 3 ${BACKUPS.logs.drill}; cat ${BACKUPS.metrics.drill}`,
    ]),
    "",
  ];
}

function restoreSection(f: DocsFacts): string[] {
  if (!roleOn(f, "backups")) return ["## Restore production to a point in time", "", "The backups role is off: there is nothing to restore from.", ""];
  const db = setting(f, "postgresDatabase");
  return [
    "## Restore production to a point in time",
    "",
    `${code("leaninfra-restore")} (backups role) restores database ${code(db)} from ${code(`s3://${f.cfg.bucketName}${BACKUPS.repoPath}`)} (stanza ${code(BACKUPS.stanza)}).`,
    `Pick the moment in UTC just before the damage (a deploy's time is in ${code(LAYOUT.app.deployLog)}), then on the server:`,
    "",
    ...sh([
      `sudo -u postgres pgbackrest --stanza=${BACKUPS.stanza} info          # the backups it can start from`,
      "sudo leaninfra-restore --to '<YYYY-MM-DD HH:MM:SS+00>'   # or --latest: all the archived WAL",
    ]),
    "",
    `It asks you to type ${code(f.cfg.hostname)}, serves the maintenance page, stops ${code(POSTGRES_PATHS.unit)}, moves`,
    `${code(POSTGRES_PATHS.dataDirectory)} aside (kept), runs \`pgbackrest restore\` (\`--type=time\` with \`--to\`), replays WAL, checks every table and`,
    "starts the app again; each step is printed, and the end says how to go back to the moved-aside directory.",
    `Then: ${code(`curl -sI ${markerValues(f)["<site url>"]}`)}, and a full backup of the new timeline: ${code("sudo leaninfra-backup full")}.`,
    `Server lost: \`pulumi up\` a new one (same bucket and passphrase, in Pulumi state), then ${code("sudo leaninfra-restore --latest")}.`,
    "",
  ];
}

/** The stack's values of the config keys a text names in backticks, as one line (none: no line). */
function settingsNamed(text: string, f: DocsFacts): string[] {
  const cfg = f.cfg as unknown as Record<string, unknown>;
  const keys = [...new Set([...text.matchAll(/`([a-z][A-Za-z0-9]+)`/g)].map((m) => m[1]))].filter((k) => k in cfg && k !== "stack");
  return keys.length ? [`On this stack: ${keys.map((k) => `${code(k)} is ${code(String(cfg[k]))}`).join(", ")}.`, ""] : [];
}

function alertSection(name: string, f: DocsFacts, source: RunbookSection | undefined): string[] {
  if (!source) throw new Error(`docs/runbook.md has no section for the page alert ${name} (## ${name}, with **Means:** and **First three things to check:**)`);
  const alert = f.pageAlerts.find((a) => a.name === name)!;
  const values = markerValues(f);
  return [
    `### ${name}`,
    "",
    `${alert.rules.map((r) => `${r.summary}${r.for === "0s" ? "" : ` (for ${r.for})`}`).join("; ")}.`,
    "",
    `**Means:** ${fillMarkers(source.means, values)}`,
    "",
    ...settingsNamed(source.means, f),
    "**First three things to check:**",
    "",
    ...source.checks.slice(0, 3).map((c, i) => `${i + 1}. ${fillMarkers(c, values)}`),
    "",
    `How it resolves: [docs/runbook.md#${anchorOf(name)}](docs/runbook.md#${anchorOf(name)}).`,
    "",
  ];
}

/** RUNBOOK.md: SSH, restarts, one request's logs, rollback, drill, restore, and each page alert of this stack. */
export function renderRunbook(f: DocsFacts, sources: ReadonlyMap<string, RunbookSection>): string {
  const lines = [
    ...generatedHeader(`Runbook of stack ${f.stack}: ${f.cfg.domain}`, f.stack),
    ...sshSection(f),
    ...restartSection(f),
    ...logsSection(f),
    ...rollbackSection(f),
    ...drillSection(f),
    ...restoreSection(f),
    "## Page alerts",
    "",
    `The ${f.pageAlerts.length} alerts that page on this stack, as \`${setting(f, "alertReceiver")}\` delivers them. The commands run on the server as root.`,
    "",
    ...f.pageAlerts.flatMap((a) => alertSection(a.name, f, sources.get(a.name))),
  ];
  return `${lines.join("\n").trimEnd()}\n`;
}
