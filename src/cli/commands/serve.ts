// `oasft serve --model DIR`: the HTTP server (OpenAI + TGI APIs, chat page at /).
import { resolveModelDir } from "../../models/index.js";
import { RewardScorer } from "../../pref/score.js";
import { buildServer } from "../../serve/server.js";
import { intFlag, parseFlags, required } from "../args.js";
import { DEVICE_FLAGS, DEVICE_USAGE, placement } from "../placement.js";
import { ADAPTER_USAGE, MODEL_FLAGS, loadForInference } from "../model-flags.js";
import type { Command } from "../main.js";

const USAGE = `usage: oasft serve --model DIR [--host 127.0.0.1] [--port 8080] [--api-key KEY] [--max-batch 16]
                   [--max-queue 64] [--max-tokens 2048] [--max-input-tokens N] [--max-batch-tokens N]
                   [--tokenizer-family bloom]
                   [--served-model-name NAME,...] [--reward-model RM_DIR] ${ADAPTER_USAGE} ${DEVICE_USAGE}

  Chat completions are rendered in the model folder's chat template (OA's when it has none), or the
  one --chat-template names; its end-of-turn token and generation_config.json's eos ids end replies.
  OpenAI:  POST /v1/chat/completions (logprobs, top_logprobs, stream_options.include_usage),
           POST /v1/completions (echo, logprobs), GET /v1/models. A request's "model" must be the
           folder's name, the --model argument or a --served-model-name (else 404, as OpenAI and vLLM).
  TGI:     POST /generate, POST /generate_stream, GET /info, GET /health
  best_of: N sampled candidates, the best returned. Ranked by mean token log-probability (OpenAI, TGI),
           or, for chat completions with --reward-model, by the reward model (oasft train --stage rm);
           the response's best_of field lists every candidate's score.
  Also:    GET /metrics (Prometheus), GET / (the chat page). Binds 127.0.0.1 unless --host says otherwise.
  The API key can also come from OASFT_API_KEY.`;

export const command: Command = {
  async run(argv) {
    const { values } = parseFlags(
      argv,
      {
        model: { type: "string" },
        host: { type: "string" },
        port: { type: "string" },
        "api-key": { type: "string" },
        "max-batch": { type: "string" },
        "max-queue": { type: "string" },
        "max-tokens": { type: "string" },
        "tokenizer-family": { type: "string" },
        ...MODEL_FLAGS,
        "max-input-tokens": { type: "string" },
        "max-batch-tokens": { type: "string" },
        "served-model-name": { type: "string" },
        "reward-model": { type: "string" },
        ...DEVICE_FLAGS,
      },
      USAGE,
    );
    const dir = resolveModelDir(required(values, "model", USAGE), "--model");
    const { device, dtype } = placement(values);
    const port = intFlag(values, "port", 8080, 0, 65535); // flags are checked before the model loads
    const family = values["tokenizer-family"] as string | undefined;
    const { model, tokenizer } = loadForInference(values, dir, {
      device,
      dtype,
      ...(family ? { tokenizerFamily: family } : {}),
    });
    const rmDir = values["reward-model"] as string | undefined;
    let scorer: RewardScorer | undefined;
    try {
      scorer = rmDir ? RewardScorer.load(resolveModelDir(rmDir, "--reward-model"), { device, dtype }) : undefined;
    } catch (err) {
      model.dispose();
      throw err;
    }
    const apiKey = (values["api-key"] as string | undefined) ?? process.env.OASFT_API_KEY;
    const { app } = buildServer({
      model,
      tokenizer,
      modelId: dir.replace(/\/+$/, "").split("/").pop()!,
      ...(apiKey ? { apiKey } : {}),
      aliases: [
        required(values, "model", USAGE),
        ...String(values["served-model-name"] ?? "")
          .split(",")
          .filter(Boolean),
      ],
      maxBatch: intFlag(values, "max-batch", 16),
      maxQueue: intFlag(values, "max-queue", 64, 0),
      maxTokens: intFlag(values, "max-tokens", 2048),
      ...(values["max-input-tokens"] ? { maxInputTokens: intFlag(values, "max-input-tokens", 1) } : {}),
      ...(values["max-batch-tokens"] ? { maxBatchTokens: intFlag(values, "max-batch-tokens", 1) } : {}),
      ...(scorer ? { scorer } : {}),
    });
    const host = (values.host as string | undefined) ?? "127.0.0.1";
    const address = await app.listen({ host, port });
    console.log(
      `oasft serve: ${dir} (${device}, ${dtype}) on ${address} (chat page at ${address}/, OpenAI at ` +
        `${address}/v1, TGI at ${address}/generate)${apiKey ? ", API key required" : ""}`,
    );
    await new Promise<void>((resolve) => {
      const stop = () => {
        void app.close().then(() => resolve());
      };
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
    });
    model.dispose();
    scorer?.dispose();
    return 0;
  },
};
