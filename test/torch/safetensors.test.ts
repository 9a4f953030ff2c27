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
  assert.throws(() => torch.loadSafetensors(wrongSize), /tensor 'w': 60 data bytes for shape \[4,4\] F32 \(expected 64\)/);

  const tiny = join(dir, "tiny.safetensors");
  writeFileSync(tiny, Buffer.from([1, 2]));
  assert.throws(() => torch.loadSafetensors(tiny), /tiny\.safetensors: .*shorter than the 8-byte header length/);
});
