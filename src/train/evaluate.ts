// Evaluation during training: per validation set, the loss and next-token accuracy on trained tokens
// (OA's metrics), with the batches split over the ranks and the sums reduced.
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import type { Settings } from "../sft/config.js";
import { padBatch } from "../sft/collate.js";
import { splitSample, type SftData } from "../sft/data.js";
import { soloGroup, type ProcessGroup } from "../parallel/group.js";
import { tensorsOf } from "./batches.js";
import type { EvalRecord } from "./report.js";
import { inPrecision, type TrainSettings } from "./settings.js";

/** Per validation set: mean loss over trained tokens and next-token accuracy on them (OA's metrics). */
export function evaluate(
  model: CausalLM,
  data: SftData,
  cfg: Settings<"run" | "format" | "data">,
  precision: TrainSettings["precision"],
  device: string,
  processGroup: ProcessGroup = soloGroup,
): EvalRecord["datasets"] {
  const out: EvalRecord["datasets"] = {};
  const batchSize = cfg.per_device_eval_batch_size;
  model.eval();
  torch.noGrad(() => {
    for (const d of data.datasets) {
      if (!d.val.length) continue;
      let lossSum = 0;
      let correct = 0;
      let count = 0;
      const samples = d.val.map((_, i) => splitSample(data, cfg, d, i, "val"));
      // Ranks take every world-th batch; the sums are reduced below.
      for (let i = processGroup.rank * batchSize; i < samples.length; i += batchSize * processGroup.worldSize) {
        torch.scope(() => {
          const b = tensorsOf(padBatch(samples.slice(i, i + batchSize), data.tokenizer.padId, 1), device);
          const run = () => model.forward({ inputIds: b.inputIds, attentionMask: b.attentionMask }).logits;
          const logits = inPrecision(precision, device, run);
          const [rows, s, v] = logits.shape as [number, number, number];
          const target = torch
            .cat([b.labels.narrow(1, 1, s - 1), torch.full([rows, 1], -100, { dtype: "int64", device })], 1)
            .view([rows * s]);
          const flat = logits.reshape([rows * s, v]).to("float32");
          const trained = target.ne(-100);
          const n = trained.sum().item();
          if (!n) return;
          lossSum += torch.crossEntropy(flat, target, { reduction: "sum" }).item();
          correct += flat.argmax(-1).eq(target).logicalAnd(trained).sum().item();
          count += n;
        });
      }
      if (processGroup.worldSize > 1) [lossSum, correct, count] = processGroup.reduceNumbers([lossSum, correct, count]);
      if (count) out[d.name] = { loss: lossSum / count, accuracy: correct / count, tokens: count };
    }
  });
  model.train();
  return out;
}
