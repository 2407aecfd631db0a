/** The type and name a URN ends with (`...::<parent$>type::name`), light enough for the stand-in plugins. */
export function urnTypeAndName(urn: string): { type: string; name: string } {
  const parts = urn.split("::");
  return { type: parts[parts.length - 2].split("$").pop()!, name: parts[parts.length - 1] };
}
