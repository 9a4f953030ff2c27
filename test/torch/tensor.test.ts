// The tensor layer: lifetimes, errors from native code, dtype rules, and the native fast paths
// compared with libtorch's plain composite ops.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { maxAbsDiff } from "../helpers.js";

test("scope frees what it created and keeps what it returns", () => {
  const before = torch.liveTensors();
  const kept = torch.scope(() => {
    const a = torch.ones([4, 4]);
    const b = a.add(1).mul(3);
    b.sum();
    return { b, list: [a.sub(1)] };
  });
  assert.equal(torch.liveTensors() - before, 2, "only the two returned tensors survive");
  assert.deepEqual(kept.b.toNumbers(), new Array(16).fill(6));
  torch.disposeAll(kept);
  assert.equal(torch.liveTensors(), before);
});

test("a throwing scope frees everything it made; nested scopes hand results upward", () => {
  const before = torch.liveTensors();
  assert.throws(
    () =>
      torch.scope(() => {
        torch.ones([3]);
        throw new Error("boom");
      }),
    /boom/,
  );
  assert.equal(torch.liveTensors(), before);
  const outer = torch.scope(() => {
    const inner = torch.scope(() => torch.ones([2]).mul(2));
    torch.zeros([5]);
    return inner.add(1);
  });
  assert.deepEqual(outer.toNumbers(), [3, 3]);
  outer.dispose();
  assert.equal(torch.liveTensors(), before);
});

test("dispose is idempotent, use after dispose throws DisposedError, keep() escapes a scope", () => {
  const t = torch.ones([2]);
  t.dispose();
  t.dispose();
  assert.throws(() => t.add(1), torch.DisposedError);
  let escaped: torch.Tensor | undefined;
  torch.scope(() => {
    escaped = torch.ones([2]).keep();
  });
  assert.equal(escaped!.sum().item(), 2);
  escaped!.dispose();
});

test("libtorch errors become JS errors naming the op; bad arguments name the argument", () => {
  torch.scope(() => {
    assert.throws(() => torch.ones([2, 3]).matmul(torch.ones([2, 3])), /^Error: matmul: .*cannot be multiplied/);
    assert.throws(
      () => torch.native.reshape(torch.ones([2]).handle, "x" as unknown as number[]),
      /reshape: argument 1 must be an array of integers/,
    );
    assert.throws(() => torch.fromBytes(new Float32Array(3), "float32", [4]), /16 bytes for shape and dtype, got 12/);
  });
});

test("integer scalars keep int64 tensors int64; float scalars promote", () => {
  torch.scope(() => {
    const ids = torch.tensor([1, 2, 3], { dtype: "int64" });
    assert.equal(ids.sub(1).dtype, "int64");
    assert.equal(ids.mul(0.5).dtype, "float32");
    assert.deepEqual(ids.cumsum(0).sub(1).toNumbers(), [0, 2, 5]);
  });
});

test("bf16/fp16 round trips through bytes and casts", () => {
  torch.scope(() => {
    const x = torch.tensor([1.5, -2.25, 1024, 0.1]);
    for (const dtype of ["bfloat16", "float16"] as const) {
      const y = x.to(dtype);
      const back = torch.fromBytes(y.toBytes(), dtype, [4]).to("float32").toNumbers();
      assert.deepEqual(back.slice(0, 3), [1.5, -2.25, 1024]);
      assert.ok(Math.abs(back[3]! - 0.1) < 1e-3);
    }
  });
});

test("single-row linear (GEMV fast path) equals the same row through GEMM, forward and backward", () => {
  torch.scope(() => {
    torch.manualSeed(7);
    const w = torch.randn([300, 96]);
    w.requiresGrad = true;
    const b = torch.randn([300]);
    const rows = torch.randn([2, 1, 96]);
    const both = torch.linear(rows, w, b); // GEMM: 2 rows
    const one = torch.linear(rows.narrow(0, 0, 1), w, b); // GEMV: 1 row
    assert.ok(maxAbsDiff(one, both.narrow(0, 0, 1)) < 1e-5);
    one.sum().backward();
    const gFast = w.grad!.clone();
    w.grad = undefined;
    both.narrow(0, 0, 1).sum().backward();
    assert.ok(maxAbsDiff(gFast, w.grad!) < 1e-6);
  });
});

test("noGrad stops recording; autocast runs matmuls in bf16 and restores the previous mode", () => {
  torch.scope(() => {
    const w = torch.randn([8, 8]);
    w.requiresGrad = true;
    assert.equal(torch.noGrad(() => w.mul(2)).requiresGrad, false);
    assert.equal(torch.isGradEnabled(), true);
    const x = torch.randn([4, 8]);
    assert.equal(torch.autocast("cpu", "bfloat16", () => torch.linear(x, w)).dtype, "bfloat16");
    assert.equal(torch.linear(x, w).dtype, "float32");
  });
});
