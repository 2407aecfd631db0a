import { fillTemplate } from "./template";

/**
 * Request metrics for the service-level objectives: Debian's mtail reads nginx's JSON access log with
 * the program this module renders and serves Prometheus metrics on loopback. Every request of the app's
 * servers is counted by route group (sloRouteGroups) and status class, and its time observed in a
 * histogram with these buckets (seconds). The alert rules' latency threshold must be one of them.
 */
export const REQUEST_DURATION_BUCKETS_SECONDS: readonly number[] = Object.freeze([0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);

/** The metric names the program exports (the `prog` label is off: --emit_prog_label=false). */
export const REQUEST_METRICS = Object.freeze({
  /** Counter by route and code ("2xx", "3xx", "4xx", "5xx"). */
  requests: "leaninfra_http_requests_total",
  /** Histogram by route: _bucket{le}, _sum, _count. */
  duration: "leaninfra_http_request_duration_seconds",
  /** Access log lines the program could not read: above 0, the log format and the program disagree. */
  unmatched: "leaninfra_http_log_lines_unmatched_total",
});

/** mtail as the proxy role runs it: Debian's mtail.service, its arguments in a drop-in. */
export const MTAIL = Object.freeze({
  address: "127.0.0.1",
  port: 3903,
  url: "http://127.0.0.1:3903/metrics",
  /** mtail loads every *.mtail file here. */
  progsDir: "/etc/mtail",
  program: "/etc/mtail/leaninfra-nginx.mtail",
  dropIn: "/etc/systemd/system/mtail.service.d/leaninfra.conf",
  /** The service's memory cap (Debian's unit allows 1G): its metrics are a few bounded series. */
  memoryMax: "128M",
});

/** Route groups nginx gives itself. */
export const ROUTES = Object.freeze({
  /** A request of the app matching no prefix. */
  other: "other",
  /** staticPathPrefixes. */
  static: "static",
  /** Answered by nginx without the app (redirects, unknown names, names a later role serves): logged, not counted. */
  notApp: "not_app",
});

/** At most this many groups in sloRouteGroups: each is a label value of every request series. */
export const MAX_SLO_ROUTE_GROUPS = 10;
/** At most this many name=prefix entries: nginx checks them in order for every request. */
export const MAX_SLO_ROUTE_PREFIXES = 50;

const GROUP_NAME = /^[a-z][a-z0-9_]{0,31}$/;
// The prefix lands in an nginx regular expression: a plain alphabet, where only "." needs escaping.
const ROUTE_PREFIX = /^\/[A-Za-z0-9._~\/-]*$/;

/** One route group: a name and the path prefixes it covers. */
export interface SloRouteGroup {
  name: string;
  prefixes: string[];
}

/**
 * Problems with sloRouteGroups ("name=/prefix" entries; a name may repeat for more prefixes), each
 * starting with the key and index; empty when valid. staticPathPrefixes form the group "static".
 */
export function sloRouteGroupProblems(entries: readonly unknown[], staticPathPrefixes: readonly string[]): string[] {
  const problems: string[] = [];
  const add = (i: number, message: string) => problems.push(`sloRouteGroups[${i}] ${message}`);
  const reserved = Object.values(ROUTES) as string[];
  const seen = new Map<string, number>();
  const names: string[] = [];
  if (!Array.isArray(entries)) return ['sloRouteGroups must be a list of "name=/prefix" strings ([] for none)'];
  if (entries.length > MAX_SLO_ROUTE_PREFIXES) problems.push(`sloRouteGroups has ${entries.length} entries (accepted: at most ${MAX_SLO_ROUTE_PREFIXES})`);
  entries.forEach((entry, i) => {
    const eq = typeof entry === "string" ? entry.indexOf("=") : -1;
    if (typeof entry !== "string" || eq < 0) {
      add(i, `${JSON.stringify(entry)} is not name=/prefix (accepted: e.g. "api=/api/", "checkout=/cart/")`);
      return;
    }
    const name = entry.slice(0, eq);
    const prefix = entry.slice(eq + 1);
    if (!GROUP_NAME.test(name)) add(i, `${JSON.stringify(entry)}: "${name}" is not a group name (accepted: a-z, 0-9 and _, starting with a letter, at most 32, e.g. api)`);
    else if (reserved.includes(name)) add(i, `${JSON.stringify(entry)}: "${name}" is a group nginx sets itself (${reserved.join(", ")}; accepted: another name)`);
    else if (!names.includes(name)) names.push(name);
    if (!ROUTE_PREFIX.test(prefix)) add(i, `${JSON.stringify(entry)}: "${prefix}" is not a path prefix (accepted: starts with "/", letters, digits and . _ ~ / -, e.g. /api/)`);
    else if (prefix === "/") add(i, `${JSON.stringify(entry)}: "/" would put every request in one group (accepted: a narrower prefix; requests matching none are "${ROUTES.other}")`);
    else if (staticPathPrefixes.includes(prefix)) add(i, `${JSON.stringify(entry)}: ${prefix} is a static path prefix, already the group "${ROUTES.static}" (accepted: another prefix)`);
    else if (seen.has(prefix)) add(i, `${JSON.stringify(entry)}: ${prefix} is already in sloRouteGroups[${seen.get(prefix)}] (accepted: each prefix once)`);
    seen.set(prefix, seen.get(prefix) ?? i);
  });
  if (names.length > MAX_SLO_ROUTE_GROUPS) {
    problems.push(`sloRouteGroups names ${names.length} groups (${names.join(", ")}; accepted: at most ${MAX_SLO_ROUTE_GROUPS}: each is a label of every request series)`);
  }
  return problems;
}

/** The groups of valid sloRouteGroups entries, in the order their names first appear. */
export function parseSloRouteGroups(entries: readonly string[]): SloRouteGroup[] {
  const groups = new Map<string, string[]>();
  for (const entry of entries) {
    const eq = entry.indexOf("=");
    const name = entry.slice(0, eq);
    groups.set(name, [...(groups.get(name) ?? []), entry.slice(eq + 1)]);
  }
  return [...groups].map(([name, prefixes]) => ({ name, prefixes }));
}

/**
 * Every prefix with its group, longest first: nginx's map tries regular expressions in order, so
 * the longest matching prefix wins (/api/admin/ before /api/).
 */
export function routePrefixes(groups: readonly SloRouteGroup[], staticPathPrefixes: readonly string[]): Array<{ prefix: string; route: string }> {
  const all = [...staticPathPrefixes.map((prefix) => ({ prefix, route: ROUTES.static })), ...groups.flatMap((g) => g.prefixes.map((prefix) => ({ prefix, route: g.name })))];
  return all.sort((a, b) => b.prefix.length - a.prefix.length || (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0));
}

/**
 * nginx's map from the request's path (without its query) to its route group, for the access log's
 * "route" field. The path is the request line's, as the client sent it.
 */
export function renderRouteMap(groups: readonly SloRouteGroup[], staticPathPrefixes: readonly string[]): string[] {
  return [
    "map $leaninfra_path $leaninfra_route {",
    `    default ${ROUTES.other};`,
    ...routePrefixes(groups, staticPathPrefixes).map(({ prefix, route }) => `    "~^${prefix.replace(/\./g, "\\.")}" ${route};`),
    "}",
  ];
}

/** /etc/mtail/leaninfra-nginx.mtail (files/leaninfra-nginx.mtail): the request metrics from nginx's JSON access log. */
export function renderMtailProgram(accessLog: string): string {
  return fillTemplate("leaninfra-nginx.mtail", {
    access_log: accessLog,
    requests: REQUEST_METRICS.requests,
    duration: REQUEST_METRICS.duration,
    unmatched: REQUEST_METRICS.unmatched,
    buckets: REQUEST_DURATION_BUCKETS_SECONDS.join(", "),
    not_app: ROUTES.notApp,
  });
}

/** The drop-in of Debian's mtail.service (files/mtail.service.conf): its arguments and its sandbox. */
export function renderMtailDropIn(accessLog: string): string {
  return fillTemplate("mtail.service.conf", {
    progs_dir: MTAIL.progsDir,
    access_log: accessLog,
    address: MTAIL.address,
    port: MTAIL.port,
    memory_max: MTAIL.memoryMax,
  });
}
