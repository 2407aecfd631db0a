/**
 * Where LeanInfra's roles meet on the VM. Paths and ports that more than one role (or a role and a
 * script) rely on live here, so no role guesses another's.
 */
export const LAYOUT = Object.freeze({
  etc: "/etc/leaninfra",
  /** Root-only (0700); secrets land here as 0600 files. */
  secrets: "/etc/leaninfra/secrets",
  state: "/var/lib/leaninfra",
  logs: "/var/log/leaninfra",
  /** The Hetzner data volume. */
  data: "/srv/data",
  /** node_exporter's textfile collector directory (*.prom files). */
  textfileDir: "/var/lib/prometheus/node-exporter",
  tls: {
    /** The certificate nginx serves: Cloudflare's Origin CA certificate, or Let's Encrypt's without the proxy. */
    certificate: "/etc/leaninfra/tls/site.crt",
    privateKey: "/etc/leaninfra/secrets/site.key",
    /** CA of the client certificate Cloudflare presents (authenticated origin pulls). */
    originPullCa: "/etc/leaninfra/tls/origin-pull-ca.pem",
  },
  nginx: {
    /** One line, `server 127.0.0.1:<slot port>;`, rewritten by each deploy; the proxy role creates it once. */
    upstream: "/etc/leaninfra/nginx/upstream.conf",
    /** One line, `set $leaninfra_release "<release>";`, rewritten by each deploy; logged with every request. */
    release: "/etc/leaninfra/nginx/release.conf",
    /** Served with status 503 when the app does not answer. */
    maintenancePage: "/var/www/leaninfra/maintenance.html",
  },
  app: {
    /** The two localhost ports the app's releases alternate between. */
    slotPorts: { blue: 8001, green: 8002 } as const,
    deployLog: "/var/log/leaninfra/deploy.log",
  },
  /** Docker's bridge, pinned (daemon.json "bip"), so PostgreSQL and Redis can listen on it for the app. */
  dockerBridge: { address: "172.17.0.1", subnet: "172.17.0.0/16" },
  /** The name containers use for the host (docker run --add-host=host.docker.internal:host-gateway). */
  dockerHostName: "host.docker.internal",
});
