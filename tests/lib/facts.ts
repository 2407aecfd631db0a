import type { StackFacts } from "../../components/host/define";

/** The stack-wide facts a role's render gets beside its slice, as the example stack has them; tests override what they exercise. */
export const TEST_FACTS: StackFacts = Object.freeze({
  stack: "prod",
  domain: "example.com",
  hostname: "app",
  fqdn: "app.example.com",
  adminUser: "ops",
  canonicalHost: "apex",
  extraHostnames: [],
  staticHostname: "",
  staticPathPrefixes: ["/assets/", "/static/"],
  cdnProxy: true,
  volumeSizeGb: 20,
  backupRetentionDays: 35,
  backupLockDays: 14,
  memoryMb: 8192,
  vcpus: 4,
  serverType: "cx32",
});
