// A named registry (architectures, datasets, tasks): duplicates throw, unknown names list what exists.

/** Levenshtein distance, for "did you mean" suggestions. */
export function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j]!;
      row[j] = Math.min(up + 1, row[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length]!;
}

export class Registry<T> {
  private readonly entries = new Map<string, T>();
  constructor(readonly kind: string) {}

  register(name: string, value: T): void {
    if (this.entries.has(name)) throw new Error(`${this.kind} '${name}' is registered twice`);
    this.entries.set(name, value);
  }

  names(): string[] {
    return [...this.entries.keys()].sort();
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  get(name: string): T {
    const found = this.entries.get(name);
    if (found !== undefined) return found;
    const close = this.names().filter((n) => editDistance(n, name) <= Math.max(2, Math.floor(name.length / 4)));
    const err = new Error(
      `unknown ${this.kind} '${name}'.` +
        (close.length ? ` Did you mean: ${close.join(", ")}?` : "") +
        ` Known: ${this.names().join(", ")}`,
    );
    err.name = "UnknownNameError"; // a name in a config or on a command line: bad input, not a crash
    throw err;
  }
}
