// The few-row linear kernel (native/small-gemm.h), which inference takes for 2-32 rows without gradients
// (1-8 rows of bf16 weights), against libtorch's GEMM (matmul with the transposed weight, a different op)
// on ragged shapes: k and n off the vector width and the 4-row blocks, 3-D inputs, strided inputs, with and
// without bias.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";
import { maxAbsDiff } from "../helpers.js";

const reference = (x: torch.Tensor, w: torch.Tensor, b?: torch.Tensor) => {
  const y = x.matmul(w.transpose(0, 1));
  return b ? y.add(b) : y;
};

const f32 = (t: torch.Tensor) => t.to("float32");
/** A bf16 result, elementwise within one bf16 rounding (2^-8 relative) of its fp32 reference, plus fp32 sums of k
 * products taken in another order. */
const nearBf16 = (got: torch.Tensor, want: torch.Tensor, k: number, what: string) => {
  assert.equal(got.dtype, "bfloat16", what);
  const w = want.toNumbers();
  f32(got)
    .toNumbers()
    .forEach((v, i) => {
      const bound = Math.abs(w[i]!) * 2 ** -8 + 1e-5 * Math.sqrt(k) * 8;
      assert.ok(Math.abs(v - w[i]!) <= bound, `${what} [${i}]: ${v} vs ${w[i]}`);
    });
};

test("the build names its few-row kernel; this CI's x86-64 CPUs have one", () => {
  assert.ok(["avx512", "avx2", ""].includes(torch.features.smallGemm));
  if (process.arch === "x64" && process.env.OASFT_SMALL_GEMM !== "0") assert.notEqual(torch.features.smallGemm, "");
});

test("few-row linear equals GEMM on ragged shapes, with and without bias", () => {
  torch.manualSeed(3);
  torch.noGrad(() =>
    torch.scope(() => {
      for (const m of [2, 3, 5, 8, 13, 32, 33]) {
        for (const [k, n] of [
          [1, 1],
          [5, 3],
          [16, 4],
          [17, 7],
          [96, 300],
          [513, 66],
        ] as const) {
          const x = torch.randn([m, k]);
          const w = torch.randn([n, k]);
          const b = torch.randn([n]);
          const bound = 1e-5 * Math.sqrt(k) * 8; // fp32 sums of k products of unit normals, two orders
          assert.ok(maxAbsDiff(torch.linear(x, w), reference(x, w)) < bound, `m ${m} k ${k} n ${n}`);
          assert.ok(maxAbsDiff(torch.linear(x, w, b), reference(x, w, b)) < bound, `bias, m ${m} k ${k} n ${n}`);
        }
      }
    }),
  );
});

test("bf16 few-row linear: the fp32 GEMM of the same bf16 values, rounded once to bf16", () => {
  torch.manualSeed(7);
  torch.noGrad(() =>
    torch.scope(() => {
      for (const m of [1, 2, 5, 8, 9, 16]) {
        for (const [k, n] of [
          [1, 1],
          [17, 7],
          [33, 66],
          [513, 300],
        ] as const) {
          const x = torch.randn([m, 1, k]).to("bfloat16");
          const w = torch.randn([n, k]).to("bfloat16");
          const b = torch.randn([n]).to("bfloat16");
          // The values are bf16 either way; the reference multiplies them in fp32 through BLAS.
          const y = torch.linear(x, w, b);
          assert.deepEqual(y.shape, [m, 1, n]);
          nearBf16(y, reference(f32(x), f32(w), f32(b)), k, `m ${m} k ${k} n ${n}`);
        }
      }
    }),
  );
});

test("few-row linear keeps the input's leading shape and reads strided inputs", () => {
  torch.noGrad(() =>
    torch.scope(() => {
      torch.manualSeed(4);
      const w = torch.randn([40, 24]);
      const x3 = torch.randn([4, 1, 24]); // a decode step: [batch, 1, hidden]
      const y3 = torch.linear(x3, w);
      assert.deepEqual(y3.shape, [4, 1, 40]);
      assert.ok(maxAbsDiff(y3, reference(x3, w)) < 1e-4);
      const strided = torch.randn([24, 6]).transpose(0, 1); // [6, 24], not contiguous
      assert.ok(maxAbsDiff(torch.linear(strided, w), reference(strided, w)) < 1e-4);
    }),
  );
});

// BLAS's GEMM splits the sum differently per thread count (this fails with OASFT_SMALL_GEMM=0).
const noKernel = torch.features.smallGemm === "" ? "no few-row kernel here" : false;
test(
  "few-row linear gives the same bits on 1 thread and on 2 (one thread's dot product each)",
  { skip: noKernel },
  () => {
    const before = torch.getNumThreads();
    try {
      torch.noGrad(() =>
        torch.scope(() => {
          torch.manualSeed(5);
          const x = torch.randn([8, 512]);
          const w = torch.randn([2048, 512]);
          torch.setNumThreads(1);
          const one = torch.linear(x, w);
          torch.setNumThreads(2);
          const two = torch.linear(x, w);
          assert.equal(maxAbsDiff(one, two), 0);
        }),
      );
    } finally {
      torch.setNumThreads(before);
    }
  },
);

test("with gradients on, few-row linear stays differentiable (libtorch's path)", () => {
  torch.scope(() => {
    torch.manualSeed(6);
    const w = torch.randn([7, 9]);
    w.requiresGrad = true;
    const x = torch.randn([3, 9]);
    torch.linear(x, w).sum().backward();
    // d(sum(x·wᵀ))/dw[j] = sum of x's rows, for every j
    const colSums = x.sum([0]).toNumbers();
    const g = w.grad!.toNumbers();
    for (let j = 0; j < 7; j++) for (let i = 0; i < 9; i++) assert.ok(Math.abs(g[j * 9 + i]! - colSums[i]!) < 1e-5);
  });
});

// [batch entries, K, N] for one query row against a matrix: single elements, off the vector width, a head.
const ROW_SHAPES = [
  [1, 1, 1],
  [3, 5, 7],
  [16, 64, 37],
  [6, 33, 100],
] as const;

// The reference for one query row: the same row twice through BLAS (two rows never take the row path).
const twoRows = (x: torch.Tensor, m: torch.Tensor) => torch.cat([x, x], -2).matmul(m).narrow(-2, 0, 1);

test("one-row matmul, bmm and baddbmm read keys and values in place: rows, columns, narrowed views", () => {
  torch.manualSeed(8);
  torch.noGrad(() =>
    torch.scope(() => {
      for (const [B, K, N] of ROW_SHAPES) {
        const x = torch.randn([B, 1, K]);
        const rows = torch.randn([B, K, N + 9]).narrow(2, 0, N); // V, or BLOOM's keys [b·n_h, d, capacity]
        const cols = torch.randn([B, N, K]).transpose(1, 2); // keys stored [S, d], read transposed
        const bound = 1e-5 * Math.sqrt(K) * 8;
        for (const m of [rows, cols]) {
          const want = twoRows(x, m);
          assert.ok(maxAbsDiff(x.bmm(m), want) < bound, `bmm ${B} ${K} ${N}`);
          assert.ok(maxAbsDiff(x.matmul(m), want) < bound, `matmul ${B} ${K} ${N}`);
          const c = torch.randn([B, 1, N]);
          assert.ok(maxAbsDiff(c.baddbmm(x, m, 0.5, 0.25), c.mul(0.5).add(want.mul(0.25))) < bound, "baddbmm");
        }
      }
      // 4-D attention scores: q [b, h, 1, d] against keys [b, h, S, d] transposed
      const q = torch.randn([2, 3, 1, 16]);
      const keys = torch.randn([2, 3, 10, 16]);
      assert.ok(maxAbsDiff(q.matmul(keys.transpose(2, 3)), twoRows(q, keys.transpose(2, 3))) < 1e-4);
      // ALiBi broadcast from [B, 1, N]'s leading entry, and beta = 0 ignores a NaN input as libtorch does
      const x = torch.randn([4, 1, 8]);
      const m = torch.randn([4, 8, 5]);
      const nan = torch.full([4, 1, 5], NaN);
      assert.ok(maxAbsDiff(nan.baddbmm(x, m, 0, 1), twoRows(x, m)) < 1e-5);
      const alibi = torch.randn([1, 1, 5]);
      assert.ok(maxAbsDiff(alibi.expand([4, 1, 5]).baddbmm(x, m, 1, 1), twoRows(x, m).add(alibi)) < 1e-5);
    }),
  );
});

// libtorch 1.13's own bf16 bmm (OASFT_SMALL_GEMM=0) fails this bound on small products: it rounds as it goes.
test(
  "bf16 one-row matmul, bmm and baddbmm: the fp32 product of the same bf16 values, rounded once",
  { skip: noKernel },
  () => {
    torch.manualSeed(9);
    torch.noGrad(() =>
      torch.scope(() => {
        for (const [B, K, N] of ROW_SHAPES) {
          const x = torch.randn([B, 1, K]).to("bfloat16");
          const rows = torch
            .randn([B, K, N + 9])
            .to("bfloat16")
            .narrow(2, 0, N);
          const cols = torch.randn([B, N, K]).to("bfloat16").transpose(1, 2);
          const c = torch.randn([B, 1, N]).to("bfloat16");
          for (const m of [rows, cols]) {
            const want = twoRows(f32(x), f32(m));
            nearBf16(x.bmm(m), want, K, `bmm ${B} ${K} ${N}`);
            nearBf16(x.matmul(m), want, K, `matmul ${B} ${K} ${N}`);
            nearBf16(c.baddbmm(x, m, 0.5, 0.25), f32(c).mul(0.5).add(want.mul(0.25)), K, `baddbmm ${B} ${K} ${N}`);
          }
        }
      }),
    );
  },
);
