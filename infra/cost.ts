import prices from "./data/prices.json";

export interface CostLine {
  item: string;
  detail: string;
  monthly: number | null;
}

export interface CostEstimate {
  currency: string;
  lines: CostLine[];
  total: number;
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
  lines.push({
    item: "Hetzner server",
    detail: server
      ? `${inputs.serverType} (${server.vcpu} vCPU, ${server.memoryGb} GB RAM, ${server.diskGb} GB disk) in ${inputs.location}`
      : `${inputs.serverType} in ${inputs.location}`,
    monthly: serverPrice,
  });
  if (serverPrice === null) unpriced.push(`server ${inputs.serverType} in ${inputs.location}`);
  if (inputs.hetznerBackups) {
    lines.push({ item: "Hetzner backups", detail: `${prices.backupsShareOfServer * 100}% of the server price`, monthly: serverPrice === null ? null : serverPrice * prices.backupsShareOfServer });
  }
  lines.push({ item: "Primary IPv4", detail: "kept across server rebuilds", monthly: prices.primaryIpv4Monthly });
  lines.push({ item: "Primary IPv6", detail: "/64 network", monthly: prices.primaryIpv6Monthly });
  lines.push({ item: "Data volume", detail: `${inputs.volumeSizeGb} GB at ${prices.volumePerGbMonthly}/GB`, monthly: inputs.volumeSizeGb * prices.volumePerGbMonthly });
  const traffic = euLocation ? prices.includedTrafficTb.eu : inputs.location === "sin" ? prices.includedTrafficTb.sin : prices.includedTrafficTb.us;
  notes.push(`Outbound traffic: ${traffic} TB a month included with the server; Cloudflare serves cached files from its edge at no charge on the Free plan.`);
  if (!euLocation) notes.push(`Prices for ${inputs.location} are not in the table (it holds EU list prices); the server is left out of the total.`);
  notes.push("Excluding VAT.");
  const total = round(lines.reduce((sum, line) => sum + (line.monthly ?? 0), 0));
  return {
    currency: prices.currency,
    lines: lines.map((l) => ({ ...l, monthly: l.monthly === null ? null : round(l.monthly) })),
    total,
    unpriced,
    notes,
    source: prices.source,
    recordedOn: prices.recordedOn,
  };
}
