// The numbers ../shared/golden holds (Hugging Face's outputs on tiny random models), computed by oasft
// for any model folder: logits, loss, gradients, one AdamW step and cached greedy generation, so that a
// model can be checked against HF tensor by tensor (`oasft parity`, the golden tests).
import * as torch from "../torch/index.js";
import { checkpointNames, loadCausalLM } from "../models/index.js";
import { generateGreedy } from "../generate/index.js";
import { AdamW } from "../train/index.js";

export const PARITY_ADAMW = { lr: 1e-3, betas: [0.9, 0.999] as [number, number], eps: 1e-8, weightDecay: 0.01 };
export const PARITY_NEW_TOKENS = 20;

/**
 * Computes every parity output whose inputs are present. Forward and generation run first (eval
 * mode, the loaded weights), then the training step. The caller owns the returned tensors.
 */
export function computeParity(
  modelDir: string,
  inputs: Map<string, torch.Tensor>,
  o: { device?: string; dtype?: torch.DType } = {},
): Map<string, torch.Tensor> {
  const out = new Map<string, torch.Tensor>();
  const model = loadCausalLM(modelDir, o);
  const stored = checkpointNames(model, modelDir);
  const checkpointName = (name: string) => stored.get(name)!;
  // Inputs go to the model's device once; outputs stay there (saving streams them back).
  const onDevice = new Map(
    [...inputs].map(([k, t]) => [k, model.device === "cpu" ? t : t.toDevice(model.device).keep()]),
  );
  const get = (name: string) => onDevice.get(name);
  try {
    model.eval();
    torch.noGrad(() => {
      for (const kind of ["right", "left"] as const) {
        const ids = get(`inputs.${kind}.input_ids`);
        if (ids)
          out.set(
            `logits.${kind}`,
            model.forward({ inputIds: ids, attentionMask: get(`inputs.${kind}.attention_mask`) }).logits.keep(),
          );
      }
      const nomask = get("inputs.nomask.input_ids");
      if (nomask) out.set("logits.nomask", model.forward({ inputIds: nomask }).logits.keep());
    });
    const single = get("gen.single.prompt_ids");
    if (single)
      out.set("gen.single.tokens", generateGreedy(model, { inputIds: single, maxNewTokens: PARITY_NEW_TOKENS }).keep());
    const batch = get("gen.batch_left_padded.prompt_ids");
    if (batch) {
      const attentionMask = get("gen.batch_left_padded.attention_mask");
      out.set(
        "gen.batch_left_padded.tokens",
        generateGreedy(model, { inputIds: batch, attentionMask, maxNewTokens: PARITY_NEW_TOKENS }).keep(),
      );
    }

    const ids = get("inputs.right.input_ids");
    const labels = get("inputs.right.labels");
    if (ids && labels) {
      model.train();
      torch.scope(() => {
        const { loss } = model.forward({ inputIds: ids, attentionMask: get("inputs.right.attention_mask"), labels });
        loss!.backward();
        out.set("loss.right", loss!.detach().reshape([1]).keep());
      });
      for (const [name, p] of model.namedParameters()) out.set(`grad.${checkpointName(name)}`, p.grad!.keep());
      const optimizer = new AdamW(model.parameters(), PARITY_ADAMW);
      optimizer.step();
      optimizer.dispose();
      for (const [name, p] of model.namedParameters())
        out.set(`adamw.${checkpointName(name)}`, p.detach().clone().keep());
    }
  } finally {
    model.dispose();
    if (model.device !== "cpu") for (const t of onDevice.values()) t.dispose();
  }
  return out;
}
