// Tensor: a JS owner of one native libtorch tensor, with explicit lifetime.
//
// Lifetimes (see scope.ts for the rules):
//   - inside `scope(fn)`, every tensor created belongs to that scope and is freed when fn returns,
//     except what fn returns (moved to the enclosing scope) and what was `keep()`-ed;
//   - outside any scope a tensor lives until `dispose()` (the GC finalizer is only a safety net);
//   - `dispose()` twice is fine; using a disposed tensor throws DisposedError.
import { native, type Handle } from "./binding.js";
import { DTYPE_CODE, dtypeFromCode, type DType } from "./dtype.js";

export class DisposedError extends Error {
  constructor(what: string) {
    super(`${what}: tensor was disposed`);
    this.name = "DisposedError";
  }
}

/** A set of tensors freed together; scopes nest. */
export type Scope = Set<Tensor>;
const scopeStack: Scope[] = [];

export function currentScope(): Scope | undefined {
  return scopeStack[scopeStack.length - 1];
}
export function pushScope(): Scope {
  const s: Scope = new Set();
  scopeStack.push(s);
  return s;
}
export function popScope(s: Scope): void {
  if (scopeStack.pop() !== s) throw new Error("scopes must be closed in the order they were opened");
}

/** A tensor, or a number broadcast as a scalar; `raw` is what the addon takes for it. */
export type Operand = Tensor | number;
export const raw = (x: Operand): Handle | number => (typeof x === "number" ? x : x.handle);

export interface CreateOptions {
  dtype?: DType;
  device?: string;
}

export class Tensor {
  #handle: Handle | null;
  #scope: Scope | undefined;

  /** Wraps a native handle; the new tensor joins the current scope. */
  constructor(handle: Handle) {
    this.#handle = handle;
    this.#scope = currentScope();
    this.#scope?.add(this);
  }

  get handle(): Handle {
    if (this.#handle === null) throw new DisposedError("tensor");
    return this.#handle;
  }
  get isDisposed(): boolean {
    return this.#handle === null;
  }

  /** Frees the native memory now (when no other tensor views it). Safe to call twice. */
  dispose(): void {
    if (this.#handle === null) return;
    native.dispose(this.#handle);
    this.#handle = null;
    this.#scope?.delete(this);
    this.#scope = undefined;
  }

  /** Takes this tensor out of scope management: it lives until dispose(). */
  keep(): this {
    this.#scope?.delete(this);
    this.#scope = undefined;
    return this;
  }

  /** @internal moves the tensor to another scope (used when a scope returns it). */
  adoptInto(scope: Scope | undefined): void {
    this.#scope?.delete(this);
    this.#scope = scope;
    scope?.add(this);
  }

  // ----- metadata ---------------------------------------------------------------------------
  get shape(): number[] {
    return native.shape(this.handle);
  }
  get dtype(): DType {
    return dtypeFromCode(native.dtype(this.handle));
  }
  get device(): string {
    return native.device(this.handle);
  }
  get numel(): number {
    return native.numel(this.handle);
  }
  get ndim(): number {
    return this.shape.length;
  }
  size(dim: number): number {
    const shape = this.shape;
    return shape[dim < 0 ? shape.length + dim : dim]!;
  }
  get requiresGrad(): boolean {
    return native.requiresGrad(this.handle);
  }
  set requiresGrad(flag: boolean) {
    native.setRequiresGrad(this.handle, flag);
  }
  /** The accumulated gradient, as a new tensor owner (in the current scope), or undefined. */
  get grad(): Tensor | undefined {
    const g = native.grad(this.handle);
    return g === undefined ? undefined : new Tensor(g);
  }
  set grad(g: Tensor | undefined) {
    native.setGrad(this.handle, g === undefined ? null : g.handle);
  }
  /** A CPU sync point: copies one element to JS. */
  item(): number {
    return native.item(this.handle);
  }
  isContiguous(): boolean {
    return native.isContiguous(this.handle);
  }

  /** Copies the data to JS as a typed array of the tensor's dtype (16-bit floats as raw Uint16 bits). */
  toArray():
    Float32Array | Float64Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint16Array | Uint8Array {
    const buf = native.toBytes(this.handle);
    const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
    switch (this.dtype) {
      case "float32":
        return new Float32Array(ab);
      case "float64":
        return new Float64Array(ab);
      case "int64":
        return new BigInt64Array(ab);
      case "int32":
        return new Int32Array(ab);
      case "int16":
        return new Int16Array(ab);
      case "int8":
        return new Int8Array(ab);
      case "float16":
      case "bfloat16":
        return new Uint16Array(ab);
      default:
        return new Uint8Array(ab);
    }
  }
  /** The data as plain JS numbers (float tensors are read as float32/float64, int64 as numbers). */
  toNumbers(): number[] {
    const t = this.dtype === "float16" || this.dtype === "bfloat16" ? this.to("float32") : this;
    const arr = t.toArray();
    if (t !== this) t.dispose();
    return Array.from(arr as ArrayLike<number | bigint>, Number);
  }
  /** The raw bytes (contiguous, CPU). */
  toBytes(): Buffer {
    return native.toBytes(this.handle);
  }

  // ----- conversion ---------------------------------------------------------------------------
  to(dtype: DType): Tensor {
    return new Tensor(native.to(this.handle, DTYPE_CODE[dtype]));
  }
  /** A copy on `device` (this tensor when it is already there is not reused: always a new owner). */
  toDevice(device: string, nonBlocking = false): Tensor {
    return new Tensor(native.toDevice(this.handle, device, nonBlocking));
  }
  /** A copy in page-locked host memory (CUDA builds only): host-to-device copies from it can run asynchronously. */
  pinMemory(): Tensor {
    return new Tensor(native.pinMemory(this.handle));
  }
  clone(): Tensor {
    return new Tensor(native.clone(this.handle));
  }
  detach(): Tensor {
    return new Tensor(native.detach(this.handle));
  }
  contiguous(): Tensor {
    return new Tensor(native.contiguous(this.handle));
  }

  // ----- in-place (return this) ---------------------------------------------------------------
  copy_(src: Tensor): this {
    native.copy_(this.handle, src.handle);
    return this;
  }
  zero_(): this {
    native.zero_(this.handle);
    return this;
  }
  fill_(value: number | boolean): this {
    native.fill_(this.handle, value);
    return this;
  }
  normal_(mean = 0, std = 1): this {
    native.normal_(this.handle, mean, std);
    return this;
  }
  uniform_(low = 0, high = 1): this {
    native.uniform_(this.handle, low, high);
    return this;
  }
  add_(other: Operand, alpha?: number): this {
    native.add_(this.handle, raw(other), alpha);
    return this;
  }
  mul_(other: Operand): this {
    native.mul_(this.handle, raw(other));
    return this;
  }
  div_(other: Operand): this {
    native.div_(this.handle, raw(other));
    return this;
  }
  addcmul_(a: Tensor, b: Tensor, value = 1): this {
    native.addcmul_(this.handle, a.handle, b.handle, value);
    return this;
  }
  addcdiv_(a: Tensor, b: Tensor, value = 1): this {
    native.addcdiv_(this.handle, a.handle, b.handle, value);
    return this;
  }
  lerp_(end: Tensor, weight: number): this {
    native.lerp_(this.handle, end.handle, weight);
    return this;
  }
  clampMax_(max: number): this {
    native.clampMax_(this.handle, max);
    return this;
  }
  maskedFill_(mask: Tensor, value: number | boolean): this {
    native.maskedFill_(this.handle, mask.handle, value);
    return this;
  }
  indexCopy_(dim: number, index: Tensor, source: Tensor): this {
    native.indexCopy_(this.handle, dim, index.handle, source.handle);
    return this;
  }
  /** Sets the entries at `index` along `dim` to `value` (torch's index_fill_). */
  indexFill_(dim: number, index: Tensor, value: number | boolean): this {
    native.indexFill_(this.handle, dim, index.handle, value);
    return this;
  }

  /**
   * Writes `source` (a tensor shaped like `index`, or one number) at the positions `index` names along
   * `dim` (torch's scatter_): self[i][index[i][j]] = source[i][j] for dim 1.
   */
  scatter_(dim: number, index: Tensor, source: Tensor | number): this {
    native.scatter_(this.handle, dim, index.handle, typeof source === "number" ? source : source.handle);
    return this;
  }

  // ----- shapes and indexing ------------------------------------------------------------------
  reshape(shape: number[]): Tensor {
    return new Tensor(native.reshape(this.handle, shape));
  }
  view(shape: number[]): Tensor {
    return new Tensor(native.view(this.handle, shape));
  }
  transpose(d0: number, d1: number): Tensor {
    return new Tensor(native.transpose(this.handle, d0, d1));
  }
  permute(dims: number[]): Tensor {
    return new Tensor(native.permute(this.handle, dims));
  }
  unsqueeze(dim: number): Tensor {
    return new Tensor(native.unsqueeze(this.handle, dim));
  }
  squeeze(dim: number): Tensor {
    return new Tensor(native.squeeze(this.handle, dim));
  }
  expand(shape: number[]): Tensor {
    return new Tensor(native.expand(this.handle, shape));
  }
  narrow(dim: number, start: number, length: number): Tensor {
    return new Tensor(native.narrow(this.handle, dim, start, length));
  }
  select(dim: number, index: number): Tensor {
    return new Tensor(native.select(this.handle, dim, index));
  }
  indexSelect(dim: number, index: Tensor): Tensor {
    return new Tensor(native.indexSelect(this.handle, dim, index.handle));
  }
  gather(dim: number, index: Tensor): Tensor {
    return new Tensor(native.gather(this.handle, dim, index.handle));
  }
  triu(k = 0): Tensor {
    return new Tensor(native.triu(this.handle, k));
  }
  tril(k = 0): Tensor {
    return new Tensor(native.tril(this.handle, k));
  }
  flatten(start = 0, end = -1): Tensor {
    return new Tensor(native.flatten(this.handle, start, end));
  }
  repeat(repeats: number[]): Tensor {
    return new Tensor(native.repeat(this.handle, repeats));
  }
  unbind(dim = 0): Tensor[] {
    return native.unbind(this.handle, dim).map((h) => new Tensor(h));
  }

  // ----- linear algebra -----------------------------------------------------------------------
  matmul(other: Tensor): Tensor {
    return new Tensor(native.matmul(this.handle, other.handle));
  }
  bmm(other: Tensor): Tensor {
    return new Tensor(native.bmm(this.handle, other.handle));
  }
  /** this·beta + alpha·(b1 @ b2), batched. */
  baddbmm(b1: Tensor, b2: Tensor, beta = 1, alpha = 1): Tensor {
    return new Tensor(native.baddbmm(this.handle, b1.handle, b2.handle, beta, alpha));
  }

  // ----- autograd -----------------------------------------------------------------------------
  /** Accumulates d(this)/d(leaf) into every leaf's .grad; `grad` seeds a non-scalar output. */
  backward(grad?: Tensor, retainGraph?: boolean): void {
    native.backward([this.handle], grad ? [grad.handle] : undefined, retainGraph);
  }

  toString(): string {
    return this.isDisposed
      ? "Tensor(disposed)"
      : `Tensor(shape=[${this.shape}], dtype=${this.dtype}, device=${this.device})`;
  }
}
