/**
 * The name and address patterns more than one part of the stack checks (config, proxy, edge, roles):
 * one definition each, so a value the config accepts is never refused later by a role.
 */

/** A host role's name: its bundle, its log prefix and its marker on the host. */
export const ROLE_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** One DNS label: a-z, 0-9 and '-', 1-63 characters, not starting or ending with '-'. */
export const HOSTNAME_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A fully qualified domain name: labels joined by dots, the last one starting with a letter (so not an IP address). */
export const DOMAIN_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$/;

/**
 * An e-mail address as Let's Encrypt and Alertmanager take it: no spaces or quotes, a dotted domain,
 * and not starting with "-" (it reaches certbot's command line, where it would read as an option).
 */
export const EMAIL_ADDRESS = /^(?!-)[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$/;

/** A PostgreSQL identifier LeanInfra creates unquoted. */
export const SQL_IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

/** A generated secret as the roles accept it: 16+ printable ASCII characters without spaces. */
export const GENERATED_SECRET = /^[\x21-\x7e]{16,1024}$/;

/** Environment names LeanInfra gives the app's container itself; the config may not set them. */
export const RESERVED_APP_ENV = ["RELEASE", "PORT", "DATABASE_URL", "REDIS_URL"] as const;

/** Linux accounts of the base system and of the roles' packages: not usable as the admin user. */
export const SYSTEM_ACCOUNTS = ["root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data", "backup", "list", "irc", "_apt", "nobody", "systemd-network", "systemd-timesync", "messagebus", "sshd", "postgres", "redis", "prometheus", "docker"] as const;
