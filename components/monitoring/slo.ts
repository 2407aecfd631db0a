import { stringify } from "yaml";
import { SettingsError } from "../host/define";
import { REQUEST_DURATION_BUCKETS_SECONDS, REQUEST_METRICS } from "../proxy/request-metrics";

/**
 * The SLO rules: recording rules for the share of failed (5xx) and slow requests over each window, and
 * multi-window multi-burn-rate alerts on them (Google's SRE workbook, "Alerting on SLOs", table 5-8). The
 * objective and the latency bound are config values, so this file is rendered, unlike the alerts.yml files
 * beside each role. The request metrics come from mtail over nginx's JSON access log (proxy role).
 */

/** The period the objective is kept over: what "the error budget" is a share of. */
export const SLO_PERIOD_DAYS = 30;

/** Windows the ratios are recorded over; each burn-rate alert reads two of them. */
export const SLO_WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"] as const;
export type SloWindow = (typeof SLO_WINDOWS)[number];

export interface BurnRateAlert {
  severity: "page" | "ticket";
  /** How many times faster than "exactly the budget over SLO_PERIOD_DAYS" the budget burns. */
  factor: number;
  /** Both windows must burn faster than the factor: the long one proves it matters, the short one that it still goes on. */
  longWindow: SloWindow;
  shortWindow: SloWindow;
  /**
   * Pages hold for 2 minutes (8 evaluations at 15 s): the 5-minute window can jump on one scrape after a
   * counter reset (mtail or nginx restarted), and two minutes cost little next to the hour the long window
   * needs. Tickets wait 15 minutes: nobody acts on them sooner.
   */
  for: string;
}

/** The four pairs of the SRE workbook: 2 % of the budget in 1 h and 5 % in 6 h page; 10 % in 1 d and 10 % in 3 d open a ticket. */
export const BURN_RATE_ALERTS: readonly BurnRateAlert[] = Object.freeze([
  { severity: "page", factor: 14.4, longWindow: "1h", shortWindow: "5m", for: "2m" },
  { severity: "page", factor: 6, longWindow: "6h", shortWindow: "30m", for: "2m" },
  { severity: "ticket", factor: 3, longWindow: "1d", shortWindow: "2h", for: "15m" },
  { severity: "ticket", factor: 1, longWindow: "3d", shortWindow: "6h", for: "15m" },
]);

/** Request duration buckets (seconds) the proxy's mtail program exports; sloLatencyMs must be one of them x 1000. */
export const SLO_LATENCY_BUCKETS_SECONDS = REQUEST_DURATION_BUCKETS_SECONDS;

const REQUESTS = REQUEST_METRICS.requests;
const DURATION = REQUEST_METRICS.duration;

/** The two things users feel: requests that fail and requests that are slow. */
export const SLO_SIGNALS = Object.freeze({
  errors: { alert: "HighErrorRate", record: "leaninfra:http_errors:ratio_rate", what: "failed with a 5xx status", summary: "Requests fail" },
  latency: { alert: "HighLatency", record: "leaninfra:http_slow:ratio_rate", what: "were slower than", summary: "Requests are slow" },
});
export type SloSignal = keyof typeof SLO_SIGNALS;

export interface SloSettings {
  /** leaninfra:sloObjectivePercent: the share of good requests promised over SLO_PERIOD_DAYS, e.g. 99.9. */
  sloObjectivePercent: number;
  /** leaninfra:sloLatencyMs: a request slower than this is a bad one; one of the duration buckets x 1000. */
  sloLatencyMs: number;
}

/** The largest burn factor; an objective whose budget times it reaches 100 % could never page. */
const FASTEST_FACTOR = Math.max(...BURN_RATE_ALERTS.map((a) => a.factor));
/** The lowest objective the fastest page can still fire for (14.4 x budget < 100 %): 93.06 %. */
export const MIN_OBJECTIVE_PERCENT = Math.ceil((100 - 100 / FASTEST_FACTOR) * 100) / 100;

/** Float noise off a threshold (14.4 x 0.001 is 0.014400000000000001 in binary), so the rules read as they are meant. */
function tidy(n: number): number {
  return Number(n.toPrecision(12));
}

/** The share of requests a burn factor allows over a window: factor x (1 - objective). */
export function burnThreshold(factor: number, objectivePercent: number): number {
  return tidy((factor * (100 - objectivePercent)) / 100);
}

/** The `le` label of a bucket as mtail prints it: the shortest decimal (0.5, 1, 2.5). */
export function leLabel(latencyMs: number): string {
  return String(tidy(latencyMs / 1000));
}

/** Every problem with the settings, each starting with its config key; empty when they are fine. */
export function sloSettingsProblems(s: SloSettings): string[] {
  const problems: string[] = [];
  const objective = s.sloObjectivePercent;
  if (typeof objective !== "number" || !Number.isFinite(objective) || objective < MIN_OBJECTIVE_PERCENT || objective >= 100) {
    problems.push(
      `leaninfra:sloObjectivePercent: ${JSON.stringify(objective)} is not accepted: give a percentage from ${MIN_OBJECTIVE_PERCENT} to below 100, ` +
        `e.g. 99.9 (below ${MIN_OBJECTIVE_PERCENT} the fastest page, ${FASTEST_FACTOR}x the budget, would need more than 100 % bad requests; 100 leaves no budget at all)`,
    );
  }
  const latency = s.sloLatencyMs;
  const allowed = SLO_LATENCY_BUCKETS_SECONDS.map((b) => tidy(b * 1000));
  if (typeof latency !== "number" || !allowed.includes(latency)) {
    problems.push(
      `leaninfra:sloLatencyMs: ${JSON.stringify(latency)} is not a request duration bucket: give one of ${allowed.join(", ")} (milliseconds)`,
    );
  }
  return problems;
}

/** The recorded ratio of one signal over one window; absent (not 0/0) when there were no requests. */
function ratioExpr(signal: SloSignal, window: SloWindow, latencyMs: number): string {
  if (signal === "errors") {
    // `or vector(0)`: a site that never answered 5xx has no 5xx series at all, and its ratio is 0, not absent.
    return `(sum(rate(${REQUESTS}{code="5xx"}[${window}])) or vector(0))\n/\n(sum(rate(${REQUESTS}[${window}])) > 0)`;
  }
  return `1 - (\n  sum(rate(${DURATION}_bucket{le="${leLabel(latencyMs)}"}[${window}]))\n  /\n  (sum(rate(${DURATION}_count[${window}])) > 0)\n)`;
}

function percent(ratio: number): string {
  return `${tidy(ratio * 100)} %`;
}

function burnAlert(signal: SloSignal, a: BurnRateAlert, s: SloSettings) {
  const { alert, record, what, summary } = SLO_SIGNALS[signal];
  const threshold = burnThreshold(a.factor, s.sloObjectivePercent);
  const bad = signal === "errors" ? what : `${what} ${s.sloLatencyMs} ms`;
  const daysLeft = Math.round((SLO_PERIOD_DAYS / a.factor) * 10) / 10;
  return {
    alert,
    expr: `${record}${a.longWindow} > ${threshold}\nand\n${record}${a.shortWindow} > ${threshold}`,
    for: a.for,
    labels: { severity: a.severity, slo: signal, long_window: a.longWindow, short_window: a.shortWindow, burn_factor: String(a.factor) },
    annotations: {
      summary: `${summary}: the error budget burns ${a.factor}x too fast (${a.longWindow} and ${a.shortWindow})`,
      description:
        `{{ $value | humanizePercentage }} of the site's requests ${bad} over the last ${a.longWindow}, and more than ` +
        `${percent(threshold)} still over the last ${a.shortWindow}; the objective (${s.sloObjectivePercent} % good over ` +
        `${SLO_PERIOD_DAYS} days) allows ${percent(threshold / a.factor)}. At this rate the ${SLO_PERIOD_DAYS}-day budget lasts about ${daysLeft} days.`,
      runbook: `docs/runbook.md#${alert.toLowerCase()}`,
    },
  };
}

/**
 * The SLO rules file (Prometheus rules YAML) for the objective and latency bound in config. Throws
 * SettingsError naming the key when either is out of range.
 */
export function renderSloRules(s: SloSettings): string {
  const problems = sloSettingsProblems(s);
  if (problems.length > 0) throw new SettingsError("monitoring", problems);
  // One group per signal, its ratios first: rules of a group run in order at the same evaluation time, so
  // the alerts read the ratios just recorded, not those of the evaluation before.
  const groups = (Object.keys(SLO_SIGNALS) as SloSignal[]).map((signal) => ({
    name: `leaninfra-slo-${signal}`,
    rules: [
      ...SLO_WINDOWS.map((window) => ({ record: `${SLO_SIGNALS[signal].record}${window}`, expr: ratioExpr(signal, window, s.sloLatencyMs) })),
      ...BURN_RATE_ALERTS.map((a) => burnAlert(signal, a, s)),
    ],
  }));
  const header =
    `# Generated by LeanInfra from components/monitoring/slo.ts (sloObjectivePercent ${s.sloObjectivePercent}, ` +
    `sloLatencyMs ${s.sloLatencyMs}); change the config or that file, not this one.\n`;
  return header + stringify({ groups }, { lineWidth: 0 });
}

/** The app error lines page: its threshold is a config value too, so it is rendered here beside the SLO rules. */
export const APP_ERROR_LINES = Object.freeze({
  alert: "AppErrorLines",
  /** The logs role's gauge: error lines of the app in the journal over the last 5 minutes, from VictoriaLogs. */
  metric: "leaninfra_app_error_lines",
  windowMinutes: 5,
  /** A burst of one bad minute does not page; errors that go on for 5 more minutes do. */
  for: "5m",
});

/** leaninfra:appErrorLinesPerMinute problems; empty when it is fine. */
export function appErrorLinesProblems(s: { appErrorLinesPerMinute: number }): string[] {
  const n = s.appErrorLinesPerMinute;
  if (typeof n === "number" && Number.isFinite(n) && n > 0) return [];
  return [`leaninfra:appErrorLinesPerMinute: ${JSON.stringify(n)} is not accepted: give a number of error lines per minute above 0, e.g. 10`];
}

/**
 * The app error lines rules file: pages when the app writes more than appErrorLinesPerMinute error lines a
 * minute (averaged over the gauge's 5 minutes). A metric derived from the logs, not vmalert: one rule
 * engine, one route. Throws SettingsError when the value is out of range.
 */
export function renderAppErrorLinesRules(s: { appErrorLinesPerMinute: number }): string {
  const problems = appErrorLinesProblems(s);
  if (problems.length > 0) throw new SettingsError("logs", problems);
  const { alert, metric, windowMinutes } = APP_ERROR_LINES;
  const rule = {
    alert,
    expr: `${metric} / ${windowMinutes} > ${s.appErrorLinesPerMinute}`,
    for: APP_ERROR_LINES.for,
    labels: { severity: "page" },
    annotations: {
      summary: "The app writes more error lines than usual",
      description:
        `The app wrote {{ $value | humanize }} error lines a minute to the journal over the last ${windowMinutes} minutes ` +
        `(on {{ $labels.instance }}); more than ${s.appErrorLinesPerMinute} a minute (leaninfra:appErrorLinesPerMinute) pages.`,
      runbook: `docs/runbook.md#${alert.toLowerCase()}`,
    },
  };
  const header =
    `# Generated by LeanInfra from components/monitoring/slo.ts (appErrorLinesPerMinute ${s.appErrorLinesPerMinute}); ` +
    `change the config or that file, not this one.\n`;
  return header + stringify({ groups: [{ name: "leaninfra-app-error-lines", rules: [rule] }] }, { lineWidth: 0 });
}
