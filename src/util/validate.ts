// The checks every boundary shares (config keys, config.json fields, PEFT's adapter settings, HTTP
// request fields): a value against its rule, and the rule as the phrase an error gives ("an integer
// ≥ 1", "a number in [0, 1)"). Each boundary words its own error around the phrase, with its own
// location (file › key, 'field', --flag) and its own error type (ConfigError, ApiError).

/** What a number must be: an integer or any finite number, within bounds (min/max inclusive, gt/lt exclusive). */
export interface NumberRule {
  integer?: boolean;
  min?: number;
  max?: number;
  gt?: number;
  lt?: number;
}

/** The bounds as a phrase: "in [0, 1)", "≥ 1", "> 0"; "" when unbounded. */
export function describeRange(r: Omit<NumberRule, "integer">): string {
  const finite = (v: number | undefined) => (v !== undefined && Number.isFinite(v) ? v : undefined);
  const min = finite(r.min);
  const gt = finite(r.gt);
  const max = finite(r.max);
  const lt = finite(r.lt);
  const low = min !== undefined ? { v: min, open: false } : gt !== undefined ? { v: gt, open: true } : undefined;
  const high = max !== undefined ? { v: max, open: false } : lt !== undefined ? { v: lt, open: true } : undefined;
  if (low && high) return `in ${low.open ? "(" : "["}${low.v}, ${high.v}${high.open ? ")" : "]"}`;
  if (low) return `${low.open ? ">" : "≥"} ${low.v}`;
  if (high) return `${high.open ? "<" : "≤"} ${high.v}`;
  return "";
}

/** The rule as the phrase after "expected" or "must be": "an integer ≥ 1", "a number". */
export function describeNumber(rule: NumberRule): string {
  const range = describeRange(rule);
  return `${rule.integer ? "an integer" : "a number"}${range ? ` ${range}` : ""}`;
}

/** Whether `v` is a finite number that keeps the rule. */
export function keepsRule(v: unknown, rule: NumberRule): v is number {
  if (typeof v !== "number" || !Number.isFinite(v)) return false;
  if (rule.integer && !Number.isInteger(v)) return false;
  const { min, max, gt, lt } = rule;
  return !(
    (min !== undefined && v < min) ||
    (max !== undefined && v > max) ||
    (gt !== undefined && v <= gt) ||
    (lt !== undefined && v >= lt)
  );
}
