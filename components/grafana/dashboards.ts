/// <reference path="./foundation-sdk.d.ts" />
import * as cog from "@grafana/grafana-foundation-sdk/cog";
import * as common from "@grafana/grafana-foundation-sdk/common";
import { DashboardBuilder, DashboardCursorSync, DataSourceRef, AnnotationQueryBuilder, TextBoxVariableBuilder, Dashboard } from "@grafana/grafana-foundation-sdk/dashboard";
import * as logs from "@grafana/grafana-foundation-sdk/logs";
import * as prometheus from "@grafana/grafana-foundation-sdk/prometheus";
import * as stat from "@grafana/grafana-foundation-sdk/stat";
import * as timeseries from "@grafana/grafana-foundation-sdk/timeseries";
import { role as monitoringRole } from "../monitoring";
import { SLO_PERIOD_DAYS, leLabel } from "../monitoring/slo";
import { REQUEST_METRICS } from "../proxy/request-metrics";
import { DATASOURCES } from "./render";

/** The dashboards' uids: fixed, so links and bookmarks survive a re-render. */
export const DASHBOARD_UIDS = Object.freeze({ owner: "leaninfra-owner", logs: "leaninfra-logs" });

/** What the dashboards read from the stack: the monitoring role's SLO (sloObjectivePercent, sloLatencyMs). */
export interface DashboardSettings {
  sloObjectivePercent: number;
  sloLatencyMs: number;
}

/** The monitoring role's defaults for its SLO keys. */
export function defaultDashboardSettings(): DashboardSettings {
  const shape = monitoringRole.settings.shape;
  return { sloObjectivePercent: shape.sloObjectivePercent.parse(undefined), sloLatencyMs: shape.sloLatencyMs.parse(undefined) };
}

const PROMETHEUS: DataSourceRef = { type: DATASOURCES.prometheus.type, uid: DATASOURCES.prometheus.uid };
const VICTORIALOGS: DataSourceRef = { type: DATASOURCES.victorialogs.type, uid: DATASOURCES.victorialogs.uid };

/** The SLO period the budgets are a share of, as the monitoring role keeps it. */
export const SLO_WINDOW = `${SLO_PERIOD_DAYS}d`;

// Request metrics from nginx's access log (proxy role): code is the class ("5xx"), route a route group.
const REQUESTS = REQUEST_METRICS.requests;
const DURATION = REQUEST_METRICS.duration;
const DURATION_BUCKET = `${DURATION}_bucket`;

/** The PromQL of the owner's page, by panel title; `$__rate_interval` is Grafana's. */
export function ownerQueries(s: DashboardSettings): Record<string, Record<string, string>> {
  const budget = Number((1 - s.sloObjectivePercent / 100).toPrecision(12));
  // The two SLO signals as the monitoring role records them: failed (5xx) and slow requests, each with its own budget.
  const errorRatio = `(sum(increase(${REQUESTS}{code="5xx"}[${SLO_WINDOW}])) or vector(0)) / (sum(increase(${REQUESTS}[${SLO_WINDOW}])) > 0)`;
  const slowRatio = `1 - sum(increase(${DURATION_BUCKET}{le="${leLabel(s.sloLatencyMs)}"}[${SLO_WINDOW}])) / (sum(increase(${DURATION}_count[${SLO_WINDOW}])) > 0)`;
  const quantile = (q: number) => `histogram_quantile(${q}, sum by (le) (rate(${DURATION_BUCKET}[$__rate_interval])))`;
  return {
    "Errors (5xx ratio)": {
      "5xx ratio": `(sum(rate(${REQUESTS}{code="5xx"}[$__rate_interval])) or vector(0)) / sum(rate(${REQUESTS}[$__rate_interval]))`,
    },
    "Request rate by route": { "{{route}}": `sum by (route) (rate(${REQUESTS}[$__rate_interval]))` },
    "Latency": { p50: quantile(0.5), p95: quantile(0.95), p99: quantile(0.99) },
    [`Error budget left (${SLO_WINDOW}, objective ${s.sloObjectivePercent}%)`]: {
      "5xx": `1 - (${errorRatio}) / ${budget}`,
      [`slower than ${s.sloLatencyMs} ms`]: `1 - (${slowRatio}) / ${budget}`,
    },
    "Database size": { "{{datname}}": "sum by (datname) (pg_database_size_bytes)" },
    "Redis memory": { used: "redis_memory_used_bytes", "max (maxmemory)": "redis_memory_max_bytes" },
    "Last successful backup": { "age": "time() - max(leaninfra_backup_last_success_timestamp_seconds)" },
    "Last successful restore drill": { "age": "time() - max(leaninfra_drill_last_success_timestamp_seconds)" },
  };
}

/** The deploy annotation: a change of the deploy's timestamp, with the release now serving. */
export const DEPLOY_ANNOTATION_EXPR = "changes(leaninfra_app_deploy_timestamp_seconds[2m]) > 0";

/** The logs view's LogsQL: the request id as a word of any line (nginx's JSON and the app's fields carry it), newest first. */
export const LOGS_BY_REQUEST_ID = '"$request_id" | sort by (_time desc) | limit 500';

/** A VictoriaLogs query as the victoriametrics-logs-datasource plugin stores it (the SDK has no type for this plugin). */
class VictoriaLogsQuery implements cog.Builder<cog.Dataquery> {
  constructor(private readonly query: { refId: string; expr: string; queryType: "instant" | "range"; maxLines?: number }) {}
  build(): cog.Dataquery {
    return { ...this.query, datasource: VICTORIALOGS, _implementsDataqueryVariant() {} } as cog.Dataquery;
  }
}

function promTargets(exprs: Record<string, string>): prometheus.DataqueryBuilder[] {
  return Object.entries(exprs).map(([legend, expr], i) =>
    new prometheus.DataqueryBuilder().refId(String.fromCharCode(65 + i)).expr(expr).legendFormat(legend).datasource(PROMETHEUS).range(),
  );
}

function series(id: number, title: string, exprs: Record<string, string>, unit: string, width: number): timeseries.PanelBuilder {
  return new timeseries.PanelBuilder().id(id).title(title).datasource(PROMETHEUS).targets(promTargets(exprs)).unit(unit).height(8).span(width);
}

function single(id: number, title: string, exprs: Record<string, string>, unit: string, width: number): stat.PanelBuilder {
  return new stat.PanelBuilder()
    .id(id)
    .title(title)
    .datasource(PROMETHEUS)
    .targets(promTargets(exprs).map((t) => t.instant()))
    .unit(unit)
    .reduceOptions(new common.ReduceDataOptionsBuilder().calcs(["lastNotNull"]).values(false))
    .height(8)
    .span(width);
}

/** The owner's one page: user pain first (errors, latency, budget), then the data and the safety net. */
export function ownerDashboard(s: DashboardSettings): Dashboard {
  const q = ownerQueries(s);
  const titles = Object.keys(q);
  const [errors, rate, latency, budget, database, redis, backup, drill] = titles;
  return new DashboardBuilder("LeanInfra: the owner's page")
    .uid(DASHBOARD_UIDS.owner)
    .tags(["leaninfra"])
    .editable()
    .tooltip(DashboardCursorSync.Crosshair)
    .time({ from: "now-24h", to: "now" })
    .refresh("1m")
    .timezone("browser")
    .annotation(
      new AnnotationQueryBuilder()
        .name("Deploys")
        .datasource(PROMETHEUS)
        .enable(true)
        .iconColor("blue")
        .expr(DEPLOY_ANNOTATION_EXPR),
    )
    .withPanel(series(1, errors, q[errors], "percentunit", 12))
    .withPanel(single(2, budget, q[budget], "percentunit", 12))
    .withPanel(series(3, rate, q[rate], "reqps", 12))
    .withPanel(series(4, latency, q[latency], "s", 12))
    .withPanel(series(5, database, q[database], "bytes", 12))
    .withPanel(series(6, redis, q[redis], "bytes", 12))
    .withPanel(single(7, backup, q[backup], "s", 12))
    .withPanel(single(8, drill, q[drill], "s", 12))
    .build();
}

/** The logs view: every line (nginx's access log, the app's) that carries one request id. */
export function logsDashboard(): Dashboard {
  return new DashboardBuilder("LeanInfra: logs by request id")
    .uid(DASHBOARD_UIDS.logs)
    .tags(["leaninfra"])
    .editable()
    .time({ from: "now-24h", to: "now" })
    .withVariable(new TextBoxVariableBuilder("request_id").label("Request id (X-Request-ID)").description("The request id the site answered with, or the one in the app's error"))
    .withPanel(
      new logs.PanelBuilder()
        .id(1)
        .title("Lines with request id $request_id")
        .datasource(VICTORIALOGS)
        .withTarget(new VictoriaLogsQuery({ refId: "A", expr: LOGS_BY_REQUEST_ID, queryType: "instant", maxLines: 500 }))
        .showTime(true)
        .wrapLogMessage(true)
        .enableLogDetails(true)
        .sortOrder(common.LogsSortOrder.Descending)
        .height(20)
        .span(24),
    )
    .build();
}

/** The dashboards as the role writes them: file name -> JSON. */
export function renderDashboards(s: DashboardSettings): Record<string, string> {
  return {
    [`${DASHBOARD_UIDS.owner}.json`]: `${JSON.stringify(ownerDashboard(s), null, 2)}\n`,
    [`${DASHBOARD_UIDS.logs}.json`]: `${JSON.stringify(logsDashboard(), null, 2)}\n`,
  };
}

/** Test values for the template variables, as Grafana would put them in. */
export const TEST_VARIABLES: Readonly<Record<string, string>> = Object.freeze({
  $__rate_interval: "1m",
  $request_id: "leaninfra-test-request-1",
});

function substitute(expr: string): string {
  return expr.replace(/\$__rate_interval|\$request_id/g, (name) => TEST_VARIABLES[name]);
}

/**
 * Every query the dashboards hold (panels and annotations), with the template variables replaced by
 * TEST_VARIABLES: what a test runs against a live Prometheus and VictoriaLogs.
 */
export function dashboardQueries(s: DashboardSettings = defaultDashboardSettings()): { dashboard: string; panel: string; datasource: "prometheus" | "victorialogs"; expr: string }[] {
  const out: { dashboard: string; panel: string; datasource: "prometheus" | "victorialogs"; expr: string }[] = [];
  for (const dashboard of [ownerDashboard(s), logsDashboard()]) {
    for (const annotation of dashboard.annotations?.list ?? []) {
      const expr = (annotation as { expr?: string }).expr;
      if (expr) out.push({ dashboard: dashboard.uid ?? "", panel: `annotation ${annotation.name}`, datasource: "prometheus", expr: substitute(expr) });
    }
    for (const panel of dashboard.panels ?? []) {
      for (const target of (panel as { targets?: { expr?: string; datasource?: DataSourceRef }[] }).targets ?? []) {
        if (!target.expr) continue;
        const datasource = target.datasource?.uid === DATASOURCES.victorialogs.uid ? "victorialogs" : "prometheus";
        out.push({ dashboard: dashboard.uid ?? "", panel: (panel as { title?: string }).title ?? "", datasource, expr: substitute(target.expr) });
      }
    }
  }
  return out;
}
