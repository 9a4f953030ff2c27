// ZeRO's units (FSDP's flat layout): a block's parameters, or those outside the blocks, end to end in
// one flat vector, decayed ones first; rank r owns a 1/world slice of each. Also the checkpoint side:
// each rank's file of moment slices, and reading moments back at any world size.
import { join } from "node:path";
import { existsSync } from "node:fs";
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import type { ParamGroup } from "./adamw.js";

/** One unit of sharding: a block's parameters, or those outside the blocks. */
export interface ZeroUnit {
  name: string;
  /** The block's index; undefined for the parameters outside the blocks. */
  block: number | undefined;
  /** Checkpoint names and tensors, decayed ones first. */
  params: Array<[string, torch.Tensor]>;
  shapes: number[][];
  sizes: number[];
  offsets: number[];
  /** Elements [0, decayEnd) take weight decay. */
  decayEnd: number;
  numel: number;
}

/**
 * The units of a model's trainable parameters: one per block, then everything else. `names` and
 * `groups` are paramGroups' (names in group order, group 0 decayed).
 */
export function zeroUnits(model: CausalLM, names: string[], groups: ParamGroup[]): ZeroUnit[] {
  const decayed = new Set(groups[0]?.params ?? []);
  const owner = new Map<torch.Tensor, number>();
  model.blocks.forEach((block, i) => {
    for (const [, t] of block.namedParameters()) owner.set(t, i);
  });
  const members: Array<Array<[string, torch.Tensor]>> = Array.from({ length: model.blocks.length + 1 }, () => []);
  groups.flatMap((g) => g.params).forEach((p, k) => members[owner.get(p) ?? model.blocks.length]!.push([names[k]!, p]));
  return members
    .map((list, i) => {
      const params = [...list.filter(([, p]) => decayed.has(p)), ...list.filter(([, p]) => !decayed.has(p))];
      const sizes = params.map(([, p]) => p.numel);
      const offsets = sizes.map((_, k) => sizes.slice(0, k).reduce((a, b) => a + b, 0));
      const decayEnd = params.filter(([, p]) => decayed.has(p)).reduce((n, [, p]) => n + p.numel, 0);
      const block = i < model.blocks.length ? i : undefined;
      return {
        name: block === undefined ? "outside the blocks" : `block ${block}`,
        block,
        params,
        sizes,
        offsets,
        decayEnd,
        shapes: params.map(([, p]) => p.shape),
        numel: sizes.reduce((a, b) => a + b, 0),
      };
    })
    .filter((u) => u.numel > 0);
}

/** Rank r's file of AdamW moment slices in a stage ≥ 1 checkpoint. */
export const SHARD_FILE = (rank: number) => `zero_rank_${rank}.safetensors`;

/**
 * Reads unit moments from a checkpoint folder: zero_rank_*.safetensors (sharded, any world size) or
 * optimizer.safetensors (stage 0, per parameter). A missing piece names the file and the tensor.
 */
export function readUnitMoments(
  dir: string,
  units: ZeroUnit[],
): { step: number; read(i: number, which: "m" | "v"): torch.Tensor } {
  const first = join(dir, SHARD_FILE(0));
  if (existsSync(first)) {
    const header = torch.readSafetensorsHeader(first);
    const world = Number(header.metadata.world_size);
    const saved = JSON.parse(header.metadata.units ?? "[]") as Array<{ name: string; numel: number; params: string[] }>;
    units.forEach((u, i) => {
      const s = saved[i];
      if (!s || s.numel !== u.numel || s.params.join() !== u.params.map(([n]) => n).join()) {
        throw new Error(
          `${first}: unit ${i} (${u.name}) holds other parameters than this model's (another model's checkpoint?)`,
        );
      }
    });
    const files = Array.from({ length: world }, (_, r) => join(dir, SHARD_FILE(r)));
    const headers = files.map((f) => {
      if (!existsSync(f)) throw new Error(`${f}: missing (the checkpoint was written by ${world} ranks)`);
      return torch.readSafetensorsHeader(f);
    });
    return {
      step: Number(header.metadata.step),
      read(i, which) {
        const name = `${which === "m" ? "exp_avg" : "exp_avg_sq"}.${i}`;
        const parts = headers.map((h) => {
          const e = h.entries.get(name);
          if (!e) throw new Error(`${h.path}: missing ${name} (the checkpoint is incomplete)`);
          return torch.loadSafetensorsEntry(h.path, e, name);
        });
        return torch.cat(parts).narrow(0, 0, units[i]!.numel);
      },
    };
  }
  const file = join(dir, "optimizer.safetensors");
  const header = torch.readSafetensorsHeader(file);
  const steps = JSON.parse(header.metadata.steps ?? "{}") as Record<string, number>;
  return {
    step: Math.max(0, ...Object.values(steps)),
    read(i, which) {
      const u = units[i]!;
      return torch.cat(
        u.params.map(([n], k) => {
          const name = `${which === "m" ? "exp_avg" : "exp_avg_sq"}.${n}`;
          const e = header.entries.get(name);
          if (!e) return torch.zeros([u.sizes[k]!], { dtype: "float32" });
          return torch.loadSafetensorsEntry(file, e, name).reshape([-1]).to("float32");
        }),
      );
    },
  };
}
