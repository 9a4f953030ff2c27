// The Tensor's elementwise and reduction methods, each one addon entry (as tfjs' chained ops: declared
// on Tensor here, attached to its prototype when this module loads; torch/index.ts loads it).
import { native } from "./binding.js";
import { DTYPE_CODE, type DType } from "./dtype.js";
import { Tensor, raw, type Operand } from "./tensor.js";

declare module "./tensor.js" {
  interface Tensor {
    // elementwise
    add(other: Operand, alpha?: number): Tensor;
    sub(other: Operand, alpha?: number): Tensor;
    mul(other: Operand): Tensor;
    div(other: Operand): Tensor;
    pow(other: Operand): Tensor;
    eq(other: Operand): Tensor;
    ne(other: Operand): Tensor;
    lt(other: Operand): Tensor;
    le(other: Operand): Tensor;
    gt(other: Operand): Tensor;
    ge(other: Operand): Tensor;
    remainder(other: Operand): Tensor;
    maximum(other: Tensor): Tensor;
    minimum(other: Tensor): Tensor;
    logicalAnd(other: Tensor): Tensor;
    logicalOr(other: Tensor): Tensor;
    logicalNot(): Tensor;
    maskedFill(mask: Tensor, value: number | boolean): Tensor;
    clamp(min: number | null, max?: number | null): Tensor;
    neg(): Tensor;
    exp(): Tensor;
    log(): Tensor;
    tanh(): Tensor;
    sqrt(): Tensor;
    rsqrt(): Tensor;
    abs(): Tensor;
    sigmoid(): Tensor;
    relu(): Tensor;
    silu(): Tensor;
    sin(): Tensor;
    cos(): Tensor;
    isfinite(): Tensor;
    isnan(): Tensor;
    gelu(approximate?: "none" | "tanh"): Tensor;
    // reductions
    sum(dims?: number[] | null, keepdim?: boolean, dtype?: DType): Tensor;
    mean(dims?: number[] | null, keepdim?: boolean, dtype?: DType): Tensor;
    amax(dims: number[], keepdim?: boolean): Tensor;
    amin(dims: number[], keepdim?: boolean): Tensor;
    max(): Tensor;
    min(): Tensor;
    argmax(dim: number, keepdim?: boolean): Tensor;
    any(): Tensor;
    all(): Tensor;
    norm(p?: number): Tensor;
    cumsum(dim: number, dtype?: DType): Tensor;
    softmax(dim: number, dtype?: DType): Tensor;
    logSoftmax(dim: number, dtype?: DType): Tensor;
    topk(k: number, dim?: number): { values: Tensor; indices: Tensor };
    sort(dim?: number, descending?: boolean): { values: Tensor; indices: Tensor };
    multinomial(n: number, replacement?: boolean): Tensor;
  }
}

// elementwise
Tensor.prototype.add = function (this: Tensor, other: Operand, alpha?: number): Tensor {
  return new Tensor(native.add(this.handle, raw(other), alpha));
};
Tensor.prototype.sub = function (this: Tensor, other: Operand, alpha?: number): Tensor {
  return new Tensor(native.sub(this.handle, raw(other), alpha));
};
Tensor.prototype.mul = function (this: Tensor, other: Operand): Tensor {
  return new Tensor(native.mul(this.handle, raw(other)));
};
Tensor.prototype.div = function (this: Tensor, other: Operand): Tensor {
  return new Tensor(native.div(this.handle, raw(other)));
};
Tensor.prototype.pow = function (this: Tensor, other: Operand): Tensor {
  return new Tensor(native.pow(this.handle, raw(other)));
};
Tensor.prototype.eq = function (this: Tensor, other: Operand): Tensor {
  return new Tensor(native.eq(this.handle, raw(other)));
};
Tensor.prototype.ne = function (this: Tensor, other: Operand): Tensor {
  return new Tensor(native.ne(this.handle, raw(other)));
};
Tensor.prototype.lt = function (this: Tensor, other: Operand): Tensor {
  return new Tensor(native.lt(this.handle, raw(other)));
};
Tensor.prototype.le = function (this: Tensor, other: Operand): Tensor {
  return new Tensor(native.le(this.handle, raw(other)));
};
Tensor.prototype.gt = function (this: Tensor, other: Operand): Tensor {
  return new Tensor(native.gt(this.handle, raw(other)));
};
Tensor.prototype.ge = function (this: Tensor, other: Operand): Tensor {
  return new Tensor(native.ge(this.handle, raw(other)));
};
Tensor.prototype.remainder = function (this: Tensor, other: Operand): Tensor {
  return new Tensor(native.remainder(this.handle, raw(other)));
};
Tensor.prototype.maximum = function (this: Tensor, other: Tensor): Tensor {
  return new Tensor(native.maximum(this.handle, other.handle));
};
Tensor.prototype.minimum = function (this: Tensor, other: Tensor): Tensor {
  return new Tensor(native.minimum(this.handle, other.handle));
};
Tensor.prototype.logicalAnd = function (this: Tensor, other: Tensor): Tensor {
  return new Tensor(native.logicalAnd(this.handle, other.handle));
};
Tensor.prototype.logicalOr = function (this: Tensor, other: Tensor): Tensor {
  return new Tensor(native.logicalOr(this.handle, other.handle));
};
Tensor.prototype.logicalNot = function (this: Tensor): Tensor {
  return new Tensor(native.logicalNot(this.handle));
};
Tensor.prototype.maskedFill = function (this: Tensor, mask: Tensor, value: number | boolean): Tensor {
  return new Tensor(native.maskedFill(this.handle, mask.handle, value));
};
Tensor.prototype.clamp = function (this: Tensor, min: number | null, max: number | null = null): Tensor {
  return new Tensor(native.clamp(this.handle, min, max));
};
Tensor.prototype.neg = function (this: Tensor): Tensor {
  return new Tensor(native.neg(this.handle));
};
Tensor.prototype.exp = function (this: Tensor): Tensor {
  return new Tensor(native.exp(this.handle));
};
Tensor.prototype.log = function (this: Tensor): Tensor {
  return new Tensor(native.log(this.handle));
};
Tensor.prototype.tanh = function (this: Tensor): Tensor {
  return new Tensor(native.tanh(this.handle));
};
Tensor.prototype.sqrt = function (this: Tensor): Tensor {
  return new Tensor(native.sqrt(this.handle));
};
Tensor.prototype.rsqrt = function (this: Tensor): Tensor {
  return new Tensor(native.rsqrt(this.handle));
};
Tensor.prototype.abs = function (this: Tensor): Tensor {
  return new Tensor(native.abs(this.handle));
};
Tensor.prototype.sigmoid = function (this: Tensor): Tensor {
  return new Tensor(native.sigmoid(this.handle));
};
Tensor.prototype.relu = function (this: Tensor): Tensor {
  return new Tensor(native.relu(this.handle));
};
Tensor.prototype.silu = function (this: Tensor): Tensor {
  return new Tensor(native.silu(this.handle));
};
Tensor.prototype.sin = function (this: Tensor): Tensor {
  return new Tensor(native.sin(this.handle));
};
Tensor.prototype.cos = function (this: Tensor): Tensor {
  return new Tensor(native.cos(this.handle));
};
Tensor.prototype.isfinite = function (this: Tensor): Tensor {
  return new Tensor(native.isfinite(this.handle));
};
Tensor.prototype.isnan = function (this: Tensor): Tensor {
  return new Tensor(native.isnan(this.handle));
};
Tensor.prototype.gelu = function (this: Tensor, approximate: "none" | "tanh" = "none"): Tensor {
  return new Tensor(native.gelu(this.handle, approximate));
};
// reductions
Tensor.prototype.sum = function (this: Tensor, dims: number[] | null = null, keepdim = false, dtype?: DType): Tensor {
  return new Tensor(native.sum(this.handle, dims, keepdim, dtype && DTYPE_CODE[dtype]));
};
Tensor.prototype.mean = function (this: Tensor, dims: number[] | null = null, keepdim = false, dtype?: DType): Tensor {
  return new Tensor(native.mean(this.handle, dims, keepdim, dtype && DTYPE_CODE[dtype]));
};
Tensor.prototype.amax = function (this: Tensor, dims: number[], keepdim = false): Tensor {
  return new Tensor(native.amax(this.handle, dims, keepdim));
};
Tensor.prototype.amin = function (this: Tensor, dims: number[], keepdim = false): Tensor {
  return new Tensor(native.amin(this.handle, dims, keepdim));
};
Tensor.prototype.max = function (this: Tensor): Tensor {
  return new Tensor(native.max(this.handle));
};
Tensor.prototype.min = function (this: Tensor): Tensor {
  return new Tensor(native.min(this.handle));
};
Tensor.prototype.argmax = function (this: Tensor, dim: number, keepdim = false): Tensor {
  return new Tensor(native.argmax(this.handle, dim, keepdim));
};
Tensor.prototype.any = function (this: Tensor): Tensor {
  return new Tensor(native.any(this.handle));
};
Tensor.prototype.all = function (this: Tensor): Tensor {
  return new Tensor(native.all(this.handle));
};
Tensor.prototype.norm = function (this: Tensor, p = 2): Tensor {
  return new Tensor(native.norm(this.handle, p));
};
Tensor.prototype.cumsum = function (this: Tensor, dim: number, dtype?: DType): Tensor {
  return new Tensor(native.cumsum(this.handle, dim, dtype && DTYPE_CODE[dtype]));
};
Tensor.prototype.softmax = function (this: Tensor, dim: number, dtype?: DType): Tensor {
  return new Tensor(native.softmax(this.handle, dim, dtype && DTYPE_CODE[dtype]));
};
Tensor.prototype.logSoftmax = function (this: Tensor, dim: number, dtype?: DType): Tensor {
  return new Tensor(native.logSoftmax(this.handle, dim, dtype && DTYPE_CODE[dtype]));
};
Tensor.prototype.topk = function (this: Tensor, k: number, dim = -1): { values: Tensor; indices: Tensor } {
  const [v, i] = native.topk(this.handle, k, dim);
  return { values: new Tensor(v), indices: new Tensor(i) };
};
Tensor.prototype.sort = function (this: Tensor, dim = -1, descending = false): { values: Tensor; indices: Tensor } {
  const [v, i] = native.sort(this.handle, dim, descending);
  return { values: new Tensor(v), indices: new Tensor(i) };
};
Tensor.prototype.multinomial = function (this: Tensor, n: number, replacement = false): Tensor {
  return new Tensor(native.multinomial(this.handle, n, replacement));
};
