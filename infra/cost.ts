import prices from "./data/prices.json";

export interface CostLine {
  item: string;
  detail: string;
  monthly: number | null;
  currency: string;
}

export interface CostEstimate {
  currency: string;
  lines: CostLine[];
  /** Hetzner, in `currency` (EUR). */
  total: number;
  /** Every currency's sum: Hetzner bills in EUR, Cloudflare R2 in USD. */
  totals: Record<string, number>;
  /** Items the table has no price for; the total leaves them out. */
  unpriced: string[];
  notes: string[];
  source: string;
  recordedOn: string;
}

export interface CostInputs {
  serverType: string;
  location: string;
  volumeSizeGb: number;
  hetznerBackups: boolean;
  /** Expected GB in the R2 backup bucket. */
  backupEstimatedGb: number;
}

type ServerPrice = { vcpu: number; memoryGb: number; diskGb: number; monthly: number };
const SERVER_TYPES = prices.serverTypes as Record<string, ServerPrice>;
const EU = ["fsn1", "nbg1", "hel1"];

const round = (value: number) => Math.round(value * 100) / 100;

export function serverTypeInfo(serverType: string): ServerPrice | undefined {
  return SERVER_TYPES[serverType];
}

/** Monthly cost of what the stack creates, from the dated price table in infra/data/prices.json. */
export function estimateMonthlyCost(inputs: CostInputs): CostEstimate {
  const lines: CostLine[] = [];
  const unpriced: string[] = [];
  const notes: string[] = [];
  const server = SERVER_TYPES[inputs.serverType];
  const euLocation = EU.includes(inputs.location);
  const serverPrice = server && euLocation ? server.monthly : null;
  const eur = prices.currency;
  lines.push({
    currency: eur,
    item: "Hetzner server",
    detail: server
      ? `${inputs.serverType} (${server.vcpu} vCPU, ${server.memoryGb} GB RAM, ${server.diskGb} GB disk) in ${inputs.location}`
      : `${inputs.serverType} in ${inputs.location}`,
    monthly: serverPrice,
  });
  if (serverPrice === null) unpriced.push(`server ${inputs.serverType} in ${inputs.location}`);
  if (inputs.hetznerBackups) {
    lines.push({ currency: eur, item: "Hetzner backups", detail: `${prices.backupsShareOfServer * 100}% of the server price`, monthly: serverPrice === null ? null : serverPrice * prices.backupsShareOfServer });
  }
  lines.push({ currency: eur, item: "Primary IPv4", detail: "kept across server rebuilds", monthly: prices.primaryIpv4Monthly });
  lines.push({ currency: eur, item: "Primary IPv6", detail: "/64 network", monthly: prices.primaryIpv6Monthly });
  lines.push({ currency: eur, item: "Data volume", detail: `${inputs.volumeSizeGb} GB at ${prices.volumePerGbMonthly}/GB`, monthly: inputs.volumeSizeGb * prices.volumePerGbMonthly });
  const traffic = euLocation ? prices.includedTrafficTb.eu : inputs.location === "sin" ? prices.includedTrafficTb.sin : prices.includedTrafficTb.us;
  notes.push(`Outbound traffic: ${traffic} TB a month included with the server; Cloudflare serves cached files from its edge at no charge on the Free plan.`);
  if (!euLocation) notes.push(`Prices for ${inputs.location} are not in the table (it holds EU list prices); the server is left out of the total.`);
  notes.push("Excluding VAT.");
  const r2 = prices.r2;
  const billableGb = Math.max(0, inputs.backupEstimatedGb - r2.free.storageGb);
  lines.push({
    currency: r2.currency,
    item: "R2 backup storage",
    detail: `${inputs.backupEstimatedGb} GB, first ${r2.free.storageGb} GB free, then ${r2.storagePerGbMonthly}/GB`,
    monthly: billableGb * r2.storagePerGbMonthly,
  });
  const ops = r2.assumedMonthlyOperations;
  const classA = (Math.max(0, ops.classA / 1e6 - r2.free.classAMillions)) * r2.classAPerMillion;
  const classB = (Math.max(0, ops.classB / 1e6 - r2.free.classBMillions)) * r2.classBPerMillion;
  lines.push({
    currency: r2.currency,
    item: "R2 operations",
    detail: `about ${ops.classA.toLocaleString("en")} writes and ${ops.classB.toLocaleString("en")} reads a month (free up to ${r2.free.classAMillions} M and ${r2.free.classBMillions} M)`,
    monthly: classA + classB,
  });
  notes.push(`R2 charges no egress: a restore costs only its reads. R2 prices: ${r2.source}.`);
  const totals: Record<string, number> = {};
  for (const line of lines) totals[line.currency] = round((totals[line.currency] ?? 0) + (line.monthly ?? 0));
  const total = totals[eur] ?? 0;
  return {
    currency: prices.currency,
    lines: lines.map((l) => ({ ...l, monthly: l.monthly === null ? null : round(l.monthly) })),
    total,
    totals,
    unpriced,
    notes,
    source: prices.source,
    recordedOn: prices.recordedOn,
  };
}
