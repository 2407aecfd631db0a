// LeanInfra's policy pack: `pulumi preview --policy-pack policy` (and `pulumi up --policy-pack policy`)
// refuses a stack that breaks one of the guardrails in policies.ts. The roles come from the same list
// the program deploys, so a role added without a budget fails here.
import { PolicyPack } from "@pulumi/policy";
import { ROLES } from "../infra/roles";
import { policies, stackSettings } from "./policies";

new PolicyPack("leaninfra", {
  enforcementLevel: "mandatory",
  policies: policies(stackSettings(), ROLES),
});
