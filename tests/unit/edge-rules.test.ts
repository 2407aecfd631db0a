import assert from "node:assert/strict";
import test from "node:test";
import { ZONE_SETTINGS, zoneAccountProblem, cacheRuleExpression, canonicalName, edgeHostnames, redirectRule } from "../../components/edge/rules";

const names = { domain: "example.com", canonicalHost: "apex" as const, extraHostnames: ["grafana"], staticHostname: "static" };

test("hostnames: apex, www, the static host and the extra names", () => {
  assert.deepEqual(edgeHostnames(names), ["example.com", "www.example.com", "static.example.com", "grafana.example.com"]);
  assert.deepEqual(edgeHostnames({ ...names, extraHostnames: [], staticHostname: "" }), ["example.com", "www.example.com"]);
});

test("cache rule expression: static prefixes on the site's names, or anything on the static host", () => {
  assert.equal(
    cacheRuleExpression({ ...names, staticPathPrefixes: ["/assets/", "/static/"] }),
    '(http.host in {"example.com" "www.example.com"} and (starts_with(http.request.uri.path, "/assets/") or starts_with(http.request.uri.path, "/static/"))) or (http.host eq "static.example.com")',
  );
});

test("cache rule expression: one prefix needs no parentheses, no static host leaves it out", () => {
  assert.equal(
    cacheRuleExpression({ ...names, staticHostname: "", staticPathPrefixes: ["/build/"] }),
    '(http.host in {"example.com" "www.example.com"} and starts_with(http.request.uri.path, "/build/"))',
  );
  assert.equal(cacheRuleExpression({ ...names, staticPathPrefixes: [] }), '(http.host eq "static.example.com")');
  assert.equal(cacheRuleExpression({ ...names, staticHostname: "", staticPathPrefixes: [] }), undefined, "nothing static, no rule");
});

test("a quote in an expression value is refused rather than escaped wrongly", () => {
  assert.throws(() => cacheRuleExpression({ ...names, staticPathPrefixes: ['/a"b/'] }), /cannot quote/);
});

test("redirect rule: www to apex by default, apex to www when www is canonical, path kept", () => {
  assert.deepEqual(redirectRule(names), {
    expression: 'http.host eq "www.example.com"',
    targetExpression: 'concat("https://example.com", http.request.uri.path)',
  });
  const www = { ...names, canonicalHost: "www" as const };
  assert.equal(canonicalName(www), "www.example.com");
  assert.deepEqual(redirectRule(www), {
    expression: 'http.host eq "example.com"',
    targetExpression: 'concat("https://www.example.com", http.request.uri.path)',
  });
});

test("zone settings: strict TLS to the origin, HTTPS only, TLS 1.2 minimum, HTTP/3", () => {
  assert.deepEqual(Object.fromEntries(ZONE_SETTINGS.map((s) => [s.id, s.value])), {
    ssl: "strict",
    always_use_https: "on",
    min_tls_version: "1.2",
    http3: "on",
  });
});

test("a zone in another account than cloudflareAccountId is refused, naming both", () => {
  const main = "0123456789abcdef0123456789abcdef";
  assert.equal(zoneAccountProblem({ name: "example.com", accountId: main }, main), undefined);
  assert.equal(zoneAccountProblem({ name: "example.com" }, main), undefined, "offline the account is unknown");
  assert.equal(
    zoneAccountProblem({ name: "example.com", accountId: "99999999999999999999999999999999" }, main),
    `leaninfra:cloudflareZone: zone example.com belongs to account 99999999999999999999999999999999, not leaninfra:cloudflareAccountId ${main}`,
  );
});
