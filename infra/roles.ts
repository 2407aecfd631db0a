// The stack's host roles, in the order the Host applies them. Adding a role: one folder under
// components/ exporting `role = defineRole(...)`, and one line here.
import * as app from "../components/app";
import * as backups from "../components/backups";
import * as base from "../components/base";
import * as docker from "../components/docker";
import * as grafana from "../components/grafana";
import * as logs from "../components/logs";
import * as monitoring from "../components/monitoring";
import * as postgres from "../components/postgres";
import * as proxy from "../components/proxy";
import * as redis from "../components/redis";

export const ROLES = [
  base.role,
  // Docker right after base: PostgreSQL and Redis listen on its bridge for the app.
  docker.role,
  postgres.role,
  redis.role,
  proxy.role,
  app.role,
  // Backups last: they need PostgreSQL, and the restore drill the app's serving release.
  backups.role,
  // Logs before monitoring, which scrapes VictoriaLogs and alerts on the app's error lines it counts.
  logs.role,
  // Monitoring after every role it watches: their alert rules, PostgreSQL's monitor role, nginx's stub_status.
  monitoring.role,
  // Grafana after monitoring: its dashboards read Prometheus and the SLO objective (sloObjectivePercent).
  grafana.role,
] as const;
