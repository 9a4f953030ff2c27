// Token log-probabilities for the APIs that report them (OpenAI's logprobs, TGI's details): one
// chunked forward over prompt + generation through the model's cache, yielding to the event loop.
import * as torch from "../torch/index.js";
import type { CausalLM } from "../models/index.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import { prefillYielding } from "../generate/prefill.js";

/** One token of OpenAI chat's logprobs.content: its text, log-probability, UTF-8 bytes and alternatives. */
export function logprobEntry(token: string, logprob: number, top: Array<{ token: string; logprob: number }>) {
  const bytes = (t: string) => [...Buffer.from(t, "utf8")];
  return { token, logprob, bytes: bytes(token), top_logprobs: top.map((t) => ({ ...t, bytes: bytes(t.token) })) };
}

/** The generated tokens' log-probabilities (and `top` alternatives each) in OpenAI chat's shape. */
export async function chatLogprobs(
  model: CausalLM,
  tok: ChatTokenizer,
  promptIds: number[],
  generated: number[],
  top: number,
) {
  if (!generated.length) return { content: [] };
  const rows = await scoredTokens(model, [...promptIds, ...generated], promptIds.length, top);
  const text = (id: number) => tok.decode([id], false);
  const content = await Promise.all(
    rows.map(async (r, i) => {
      const alternatives = await Promise.all(r.top.map(async ([id, logprob]) => ({ token: await text(id), logprob })));
      return logprobEntry(await text(generated[i]!), r.lp, alternatives);
    }),
  );
  return { content };
}

/**
 * OpenAI logprobs for [echoed prompt] + generated tokens: tokens, token_logprobs (null for the very
 * first token), top_logprobs (n best per position), text_offset (in characters of the text). The
 * sequence goes through the cache a chunk at a time (prefillYielding), yielding to the event loop
 * between chunks, so a 64-prompt echo batch (what lm-eval sends) does not freeze the server.
 */
export async function completionLogprobs(
  model: CausalLM,
  tok: ChatTokenizer,
  echoed: number[],
  generated: number[],
  n: number,
  promptIds: number[],
) {
  const all = [...promptIds, ...generated];
  const from = promptIds.length - echoed.length;
  const rows: Array<{ lp: number | null; top: Array<[number, number]> | null }> =
    from === 0 ? [{ lp: null, top: null }] : [];
  rows.push(...(await scoredTokens(model, all, Math.max(from, 1), n)));
  const shown = all.slice(from);
  const tokens = await Promise.all(shown.map((id) => tok.decode([id], false)));
  const decodeTop = async (top: Array<[number, number]>) =>
    Object.fromEntries(await Promise.all(top.map(async ([id, v]) => [await tok.decode([id], false), v] as const)));
  const topLogprobs = await Promise.all(rows.map(async (r) => (r.top === null ? null : decodeTop(r.top))));
  return {
    tokens,
    token_logprobs: rows.map((r) => r.lp),
    top_logprobs: topLogprobs,
    text_offset: await textOffsets(tok, shown, tokens),
  };
}

/**
 * Log-probabilities of tokens `all[from..]` under the model (one chunked forward over `all`), each with
 * the `n` most likely alternatives as [id, logprob] pairs.
 */
export async function scoredTokens(
  model: CausalLM,
  all: number[],
  from: number,
  n: number,
): Promise<Array<{ lp: number; top: Array<[number, number]> }>> {
  const rows: Array<{ lp: number; top: Array<[number, number]> }> = [];
  // Row j of a chunk starting at `start` predicts the token at start + j + 1.
  const collect = (logits: torch.Tensor, start: number) =>
    torch.scope(() => {
      const lp = logits.select(0, 0).to("float32").logSoftmax(-1); // [s, V]
      for (let j = 0; j < lp.size(0); j++) {
        const t = start + j + 1;
        if (t < from || t >= all.length) continue;
        const row = lp.select(0, j);
        const top = n > 0 ? row.topk(n, -1) : undefined;
        const values = top?.values.toNumbers();
        const pairs = top ? top.indices.toNumbers().map((id, k) => [id, values![k]!] as [number, number]) : [];
        rows.push({ lp: row.select(0, all[t]!).item(), top: pairs });
      }
    });
  const cache = model.newCache({ batch: 1, capacity: all.length });
  const ids = torch.tensor([all], { dtype: "int64", device: model.device });
  try {
    (await prefillYielding(model, { inputIds: ids, cache, onChunkLogits: collect })).dispose();
  } finally {
    ids.dispose();
    cache.dispose();
  }
  return rows;
}

/**
 * Where each token starts in the decoded text, in characters (code points, as Python's str indexes
 * the text). A byte-level tokenizer's tokens can split a character: its bytes are decoded as one
 * stream, and a character counts where it completes, so the offsets stay on the text.
 */
async function textOffsets(tok: ChatTokenizer, ids: number[], pieces: string[]): Promise<number[]> {
  const offsets: number[] = [];
  let chars = 0;
  if (tok.tokenBytes) {
    const decoder = new TextDecoder("utf-8");
    for (const id of ids) {
      offsets.push(chars);
      chars += [...decoder.decode(tok.tokenBytes(id), { stream: true })].length;
    }
    return offsets;
  }
  for (const p of pieces) {
    offsets.push(chars);
    chars += [...p].length;
  }
  return offsets;
}
