/** Pure pieces of the Edge: which names exist, which requests are cached, which host redirects. */

export interface EdgeNames {
  domain: string;
  canonicalHost: "apex" | "www";
  extraHostnames: readonly string[];
  /** "" for none. */
  staticHostname: string;
}

/** Every name the zone points at the server: apex, www, the static host and the extra names. */
export function edgeHostnames(names: EdgeNames): string[] {
  const labels = ["www", ...(names.staticHostname ? [names.staticHostname] : []), ...names.extraHostnames];
  return [names.domain, ...labels.map((label) => `${label}.${names.domain}`)];
}

export function canonicalName(names: EdgeNames): string {
  return names.canonicalHost === "apex" ? names.domain : `www.${names.domain}`;
}

export function redirectedName(names: EdgeNames): string {
  return names.canonicalHost === "apex" ? `www.${names.domain}` : names.domain;
}

function quoted(value: string): string {
  if (/["\\]/.test(value)) throw new Error(`cannot quote ${JSON.stringify(value)} in a Cloudflare rule expression`);
  return `"${value}"`;
}

export interface CacheRuleSettings extends EdgeNames {
  staticPathPrefixes: readonly string[];
}

/**
 * The Cloudflare rule expression for what is cached at the edge: the static path prefixes on the
 * site's own names, and everything on the static host. Undefined when nothing is static.
 */
export function cacheRuleExpression(settings: CacheRuleSettings): string | undefined {
  const parts: string[] = [];
  if (settings.staticPathPrefixes.length > 0) {
    const hosts = [settings.domain, `www.${settings.domain}`].map(quoted).join(" ");
    const paths = settings.staticPathPrefixes.map((prefix) => `starts_with(http.request.uri.path, ${quoted(prefix)})`);
    const pathMatch = paths.length === 1 ? paths[0] : `(${paths.join(" or ")})`;
    parts.push(`(http.host in {${hosts}} and ${pathMatch})`);
  }
  if (settings.staticHostname) parts.push(`(http.host eq ${quoted(`${settings.staticHostname}.${settings.domain}`)})`);
  return parts.length ? parts.join(" or ") : undefined;
}

/** The redirect from the other name (www or apex) to the canonical one, path and query kept. */
export function redirectRule(names: EdgeNames): { expression: string; targetExpression: string } {
  return {
    expression: `http.host eq ${quoted(redirectedName(names))}`,
    targetExpression: `concat(${quoted(`https://${canonicalName(names)}`)}, http.request.uri.path)`,
  };
}

/** Zone settings the Edge enforces: TLS to the origin verified, HTTPS only, TLS 1.2+, HTTP/3. */
export const ZONE_SETTINGS: ReadonlyArray<{ id: string; value: string }> = [
  { id: "ssl", value: "strict" },
  { id: "always_use_https", value: "on" },
  { id: "min_tls_version", value: "1.2" },
  { id: "http3", value: "on" },
];

/** Why a looked-up zone cannot be used with the configured account, or undefined when it can. */
export function zoneAccountProblem(zone: { name?: string; accountId?: string }, expectedAccountId: string): string | undefined {
  if (!zone.accountId || zone.accountId === expectedAccountId) return undefined;
  return `leaninfra:cloudflareZone: zone ${zone.name ?? "(unnamed)"} belongs to account ${zone.accountId}, not leaninfra:cloudflareAccountId ${expectedAccountId}`;
}
