// Greedy decoding with or without the KV cache, as HF's generate() with do_sample=False and no
// logits processors: each step takes the argmax (first index on ties) of the last position's logits,
// appends it, and appends 1 to the attention mask. Left-padded batches decode as each row alone.
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import { prefill } from "./prefill.js";
import { captureByDefault, FixedDecoder } from "./captured.js";
import { DecodeThreads } from "./decode-threads.js";

export interface GreedyOptions {
  /** [b, P] int64 prompts, left-padded when their lengths differ. */
  inputIds: torch.Tensor;
  /** [b, P], 1 = real token; omitted = no padding. */
  attentionMask?: torch.Tensor;
  maxNewTokens: number;
  /** Reuse keys/values of earlier positions (default); false re-runs the whole sequence each step. */
  useCache?: boolean;
  /** Stop a row at this token (later positions are filled with padTokenId); omit to always run maxNewTokens. */
  eosTokenId?: number;
  padTokenId?: number;
  /**
   * Decode steps replayed from a captured tape (src/generate/captured.ts; default unless OASFT_CAPTURE=0);
   * false runs each step's ops from JavaScript. "eager-fixed" runs the captured path's fixed-shape step
   * without the tape (the reference a replay equals bit for bit).
   */
  capture?: boolean | "eager-fixed";
  /** Called with each step's last-position logits [b, v] (borrowed: valid during the call only). */
  onStepLogits?: (logits: torch.Tensor, step: number) => void;
}

/** Returns the prompts followed by the generated tokens, [b, P + generated] int64 (owned by the caller). */
export function generateGreedy(model: CausalLM, o: GreedyOptions): torch.Tensor {
  const wasTraining = model.training;
  model.eval();
  const b = o.inputIds.size(0);
  const cache =
    o.useCache === false ? undefined : model.newCache({ batch: b, capacity: o.inputIds.size(1) + o.maxNewTokens });
  const capture = o.capture ?? captureByDefault;
  let decoder: FixedDecoder | undefined;
  const threads = cache && DecodeThreads.forDevice(model.device);
  try {
    return torch.noGrad(() =>
      torch.scope(() => {
        let tokens = o.inputIds;
        // A mask without padding changes nothing: drop it, which skips the masked_fill in every layer.
        let mask = o.attentionMask && o.attentionMask.eq(0).any().item() ? o.attentionMask : undefined;
        const finished = new Array<boolean>(b).fill(false);
        for (let step = 0; step < o.maxNewTokens; step++) {
          const next = torch.scope(() => {
            // With the cache: the prompt in chunks (bounded memory), then one token per step, replayed.
            if (cache && step === 1 && capture) {
              const fixed = { batch: b, attentionMask: mask?.narrow(1, 0, cache.length), capture: capture === true };
              decoder = FixedDecoder.open(model, cache, fixed);
            }
            const decode = () =>
              decoder
                ? decoder.step(tokens.narrow(1, tokens.size(1) - 1, 1)).logits
                : model
                    .forward({
                      inputIds: cache ? tokens.narrow(1, tokens.size(1) - 1, 1) : tokens,
                      attentionMask: mask,
                      cache,
                      logits: "last",
                    })
                    .logits.select(1, 0); // [b, v]
            const last =
              cache && step === 0
                ? prefill(model, { inputIds: tokens, attentionMask: mask, cache })
                : threads
                  ? threads.step(decode)
                  : decode();
            o.onStepLogits?.(last, step);
            let next = last.argmax(-1, true); // [b, 1]
            if (o.eosTokenId !== undefined) next = applyFinished(next, finished, o.padTokenId ?? o.eosTokenId);
            return next;
          });
          tokens = torch.cat([tokens, next], 1);
          if (mask) mask = torch.cat([mask, torch.ones([b, 1], { dtype: "int64", device: mask.device })], 1);
          if (o.eosTokenId !== undefined) {
            next.toNumbers().forEach((id, row) => {
              if (id === o.eosTokenId) finished[row] = true;
            });
            if (finished.every(Boolean)) break;
          }
        }
        return tokens === o.inputIds ? tokens.clone() : tokens;
      }),
    );
  } finally {
    decoder?.close();
    threads?.release();
    cache?.dispose();
    model.train(wasTraining);
  }
}

/** Rows that already emitted EOS keep emitting padding. */
function applyFinished(next: torch.Tensor, finished: boolean[], padId: number): torch.Tensor {
  if (!finished.some(Boolean)) return next;
  const done = torch.tensor(finished.map(Number), { dtype: "bool", shape: [finished.length, 1], device: next.device });
  return next.maskedFill(done, padId);
}
