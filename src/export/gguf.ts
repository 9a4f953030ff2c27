// `oasft export gguf`: a model (with its LoRA adapter merged, if any) as one GGUF file for llama.cpp,
// ollama and LM Studio. The architecture's names and layouts come from the model file itself
// (CausalLM.ggufLayout); the tokenizer and chat template from the tokenizer files; the tensor types
// follow convert_hf_to_gguf.py: norms, biases and other 1-D tensors stay f32, weight matrices take
// the file type, and a q8_0 matrix whose rows are not whole blocks of 32 falls back to f16.
import { basename } from "node:path";
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import type { GgufValue } from "../models/gguf-layout.js";
import { quantizeQ8_0, writeGguf, type GgmlType, type GgufTensorEntry } from "./gguf-file.js";
import { ggufTokenizer } from "./gguf-vocab.js";

export const GGUF_TYPES = ["f32", "f16", "q8_0"] as const;
export type GgufFileType = (typeof GGUF_TYPES)[number];

/** general.file_type (llama.cpp's LlamaFileType) per export type. */
const FILE_TYPE: Record<GgufFileType, number> = { f32: 0, f16: 1, q8_0: 7 };

export interface GgufExportOptions {
  type: GgufFileType;
  /** general.name (default: the model folder's name). */
  name?: string;
  onTensor?: (done: number, total: number) => void;
}

export interface GgufExportReport {
  tensors: number;
  /** Tensors that could not take the file type and went to f16 (q8_0 needs rows of whole blocks). */
  fallbacks: string[];
  arch: string;
}

/** The type convert_hf_to_gguf.py gives a tensor in a file of type `type`. */
function tensorType(name: string, shape: number[], type: GgufFileType): GgmlType {
  if (shape.length <= 1 || name.endsWith("_norm.weight") || !name.endsWith(".weight")) return "f32";
  if (type === "q8_0" && (shape.at(-1) ?? 0) % 32 !== 0) return "f16";
  return type;
}

function encode(t: torch.Tensor, type: GgmlType): Uint8Array {
  return torch.noGrad(() =>
    torch.scope(() => {
      if (type === "f16") return t.to("float16").contiguous().toDevice("cpu").toBytes();
      const host = t.to("float32").contiguous().toDevice("cpu");
      if (type === "f32") return host.toBytes();
      return quantizeQ8_0(host.toArray() as Float32Array);
    }),
  );
}

/** Writes `model` (its tokenizer in `tokenizerDir`) to `out` as GGUF v3. */
export function exportGguf(model: CausalLM, tokenizerDir: string, out: string, o: GgufExportOptions): GgufExportReport {
  if (!GGUF_TYPES.includes(o.type)) throw new Error(`--type ${o.type}: expected one of ${GGUF_TYPES.join(", ")}`);
  const layout = model.ggufLayout();
  const params = new Map(model.namedParameters());
  const fallbacks: string[] = [];
  const tensors: GgufTensorEntry[] = layout.tensors.map((spec) => {
    const p = spec.value ? spec.value().keep() : params.get(spec.from);
    if (!p) throw new Error(`GGUF layout of ${layout.arch}: the model has no parameter ${spec.from}`);
    const type = tensorType(spec.name, p.shape, o.type);
    if (type !== o.type && type === "f16") fallbacks.push(spec.name);
    return {
      name: spec.name,
      shape: p.shape,
      type,
      data: () => torch.scope(() => encode(spec.transform ? spec.transform(p) : p, type)),
    };
  });
  const metadata: Array<[string, GgufValue]> = [
    ["general.architecture", { type: "str", value: layout.arch }],
    ["general.type", { type: "str", value: "model" }],
    ["general.name", { type: "str", value: o.name ?? basename(tokenizerDir) }],
    ["general.file_type", { type: "u32", value: FILE_TYPE[o.type] }],
    ["general.quantization_version", { type: "u32", value: 2 }],
    ...layout.metadata,
    ...ggufTokenizer(tokenizerDir, model.config.vocabSize),
  ];
  writeGguf(out, metadata, tensors, o.onTensor);
  return { tensors: tensors.length, fallbacks, arch: layout.arch };
}
