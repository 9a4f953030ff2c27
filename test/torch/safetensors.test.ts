// safetensors: round trips in every dtype, and damaged files rejected with the file and tensor named.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";

const dir = mkdtempSync(join(tmpdir(), "oasft-st-"));

test("save then load gives the same names, dtypes, shapes, values and metadata", () => {
  torch.scope(() => {
    const tensors: Array<[string, torch.Tensor]> = [
      ["a.f32", torch.randn([3, 5])],
      ["b.bf16", torch.randn([7]).to("bfloat16")],
      ["c.f16", torch.randn([2, 2]).to("float16")],
      ["d.i64", torch.arange(0, 10)],
      ["e.bool", torch.tensor([1, 0, 1], { dtype: "bool" })],
      ["f.empty", torch.zeros([0, 4])],
    ];
    const path = join(dir, "x.safetensors");
    torch.saveSafetensors(path, tensors, { format: "pt" });
    const { header, tensors: loaded } = torch.loadSafetensors(path);
    assert.deepEqual(header.metadata, { format: "pt" });
    assert.equal(readFileSync(path).readBigUInt64LE(0) % 8n, 0n, "header padded to 8 bytes");
    for (const [name, t] of tensors) {
      const got = loaded.get(name)!;
      assert.equal(got.dtype, t.dtype, name);
      assert.deepEqual(got.shape, t.shape, name);
      assert.deepEqual(got.toBytes(), t.toBytes(), name);
    }
  });
});

test("damaged files name the file and what is wrong", () => {
  const good = join(dir, "good.safetensors");
  torch.scope(() => torch.saveSafetensors(good, [["w", torch.ones([4, 4])]]));
  const bytes = readFileSync(good);
  const truncated = join(dir, "truncated.safetensors");
  writeFileSync(truncated, bytes.subarray(0, bytes.length - 8));
  assert.throws(() => torch.loadSafetensors(truncated), /truncated\.safetensors: .*tensor 'w': data ends past the end/);

  const badJson = join(dir, "badjson.safetensors");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(5n);
  writeFileSync(badJson, Buffer.concat([len, Buffer.from("{oops")]));
  assert.throws(() => torch.loadSafetensors(badJson), /badjson\.safetensors: .*header is not JSON/);

  const wrongSize = join(dir, "wrongsize.safetensors");
  const header = JSON.stringify({ w: { dtype: "F32", shape: [4, 4], data_offsets: [0, 60] } });
  const hl = Buffer.alloc(8);
  hl.writeBigUInt64LE(BigInt(header.length));
  writeFileSync(wrongSize, Buffer.concat([hl, Buffer.from(header), Buffer.alloc(64)]));
  assert.throws(
    () => torch.loadSafetensors(wrongSize),
    /tensor 'w': 60 data bytes for shape \[4,4\] F32 \(expected 64\)/,
  );

  const tiny = join(dir, "tiny.safetensors");
  writeFileSync(tiny, Buffer.from([1, 2]));
  assert.throws(() => torch.loadSafetensors(tiny), /tiny\.safetensors: .*shorter than the 8-byte header length/);
});

test("a file longer than its header, or with overlapping tensors, names the file and the tensor", () => {
  const good = join(dir, "good2.safetensors");
  torch.scope(() =>
    torch.saveSafetensors(good, [
      ["a", torch.ones([2])],
      ["w", torch.ones([4, 4])],
    ]),
  );
  const bytes = readFileSync(good);
  const longer = join(dir, "longer.safetensors");
  writeFileSync(longer, Buffer.concat([bytes, Buffer.alloc(16)]));
  assert.throws(
    () => torch.loadSafetensors(longer),
    /longer\.safetensors: not a valid safetensors file: 16 bytes after the last tensor \('w'\)/,
  );

  const overlap = join(dir, "overlap.safetensors");
  const header = JSON.stringify({
    a: { dtype: "F32", shape: [4], data_offsets: [0, 16] },
    b: { dtype: "F32", shape: [4], data_offsets: [8, 24] },
  });
  const hl = Buffer.alloc(8);
  hl.writeBigUInt64LE(BigInt(header.length));
  writeFileSync(overlap, Buffer.concat([hl, Buffer.from(header), Buffer.alloc(24)]));
  assert.throws(() => torch.loadSafetensors(overlap), /overlap\.safetensors: .*tensor 'b': its data overlaps/);
});

test("tensors stream between files and tensors of any dtype; a bf16 entry loads into a bf16 tensor in place", () => {
  torch.scope(() => {
    const path = join(dir, "inplace.safetensors");
    const src = torch.randn([64, 33]).to("bfloat16");
    torch.saveSafetensors(path, [
      ["x", src],
      ["strided", torch.randn([8, 6]).transpose(0, 1)],
    ]);
    const { entries } = torch.readSafetensorsHeader(path);
    const into = torch.zeros([64, 33], { dtype: "bfloat16" });
    assert.equal(torch.loadSafetensorsEntry(path, entries.get("x")!, "x", into), into, "filled in place");
    assert.deepEqual(into.toBytes(), src.toBytes());
    const strided = torch.loadSafetensors(path).tensors.get("strided")!;
    assert.deepEqual(strided.shape, [6, 8]);
    assert.equal(strided.isContiguous(), true);
  });
});
