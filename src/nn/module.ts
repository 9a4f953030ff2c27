// Module: a tree of named parameters, named as the checkpoint keys (HF state-dict names).
// Modules own their parameters: they are kept out of scopes and freed by dispose().
import { type DType, type Tensor } from "../torch/index.js";

export interface ModuleOptions {
  dtype?: DType;
  device?: string;
}

export abstract class Module {
  training = true;
  readonly #params = new Map<string, Tensor>();
  readonly #children = new Map<string, Module>();

  /** Registers a trainable parameter under `name` (the key it has in checkpoints). */
  protected param(name: string, t: Tensor, trainable = true): Tensor {
    t.keep();
    if (trainable) t.requiresGrad = true;
    this.#params.set(name, t);
    return t;
  }

  protected child<M extends Module>(name: string, m: M): M {
    this.#children.set(name, m);
    return m;
  }

  /** Detaches (and frees) a child module, e.g. an adapter merged into its base layer. */
  protected removeChild(name: string): void {
    this.#children.get(name)?.dispose();
    this.#children.delete(name);
  }

  /** All parameters with their dotted names, depth-first in registration order. */
  namedParameters(prefix = ""): Array<[string, Tensor]> {
    const out: Array<[string, Tensor]> = [];
    for (const [name, t] of this.#params) out.push([prefix + name, t]);
    for (const [name, m] of this.#children) out.push(...m.namedParameters(`${prefix}${name}.`));
    return out;
  }

  /** Every parameter with its dotted name, its name inside its module, and that module. */
  parameterOwners(prefix = ""): Array<{ name: string; local: string; tensor: Tensor; owner: Module }> {
    const out: Array<{ name: string; local: string; tensor: Tensor; owner: Module }> = [];
    for (const [local, tensor] of this.#params) out.push({ name: prefix + local, local, tensor, owner: this });
    for (const [name, m] of this.#children) out.push(...m.parameterOwners(`${prefix}${name}.`));
    return out;
  }

  /** The direct children with their names (the module tree, for adapters and sharding). */
  namedChildren(): Array<[string, Module]> {
    return [...this.#children];
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  numParameters(): number {
    return this.parameters().reduce((n, t) => n + t.numel, 0);
  }

  train(on = true): this {
    this.training = on;
    for (const m of this.#children.values()) m.train(on);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  dispose(): void {
    for (const t of this.#params.values()) t.dispose();
    for (const m of this.#children.values()) m.dispose();
  }
}

/** An indexed list of modules; children are named "0", "1", ... as in PyTorch's ModuleList. */
export class ModuleList<M extends Module> extends Module implements Iterable<M> {
  readonly items: M[];
  constructor(items: M[]) {
    super();
    this.items = items;
    items.forEach((m, i) => this.child(String(i), m));
  }
  get length(): number {
    return this.items.length;
  }
  [Symbol.iterator](): Iterator<M> {
    return this.items[Symbol.iterator]();
  }
}
