// Config composition: named YAML blocks merged in order, typed flags, errors that name key/block/file.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { composeConfig, readConfigBlocks, splitConfigArgs, BUILTIN_CONFIG_DIR } from "../../src/sft/config.js";

test("the card's command line composes defaults → bloom-zh-3b → datasets, flags last", () => {
  const { names, rest } = splitConfigArgs([
    "--configs",
    "defaults",
    "bloom-zh-3b",
    "datasets",
    "--num_train_epochs",
    "2",
  ]);
  assert.deepEqual(names, ["defaults", "bloom-zh-3b", "datasets"]);
  const { config, origin } = composeConfig(names, rest, readConfigBlocks([BUILTIN_CONFIG_DIR]));
  assert.equal(config.learning_rate, 8e-6, "8e-6 is a number (PyYAML would give a string)");
  assert.equal(config.adam_epsilon, 1e-12);
  assert.equal(config.rng_seed, 2703368087);
  assert.equal(config.max_length, 5120);
  assert.equal(config.num_train_epochs, 2);
  assert.equal(origin.num_train_epochs, "--num_train_epochs");
  assert.equal((config.datasets as unknown[]).length, 8);
  assert.deepEqual(config.datasets[0], { "wmt2019_zh-en": { max_val_set: 1000, max_train_set: 20000 } });
});

test("later blocks win shallowly; --no-key sets null; booleans and numbers are typed", () => {
  const dir = mkdtempSync(join(tmpdir(), "oasft-cfg-"));
  writeFileSync(
    join(dir, "a.yaml"),
    "one:\n  max_length: 100\n  datasets: [gsm8k]\ntwo:\n  max_length: 200\n  datasets: [joke]\n",
  );
  const blocks = readConfigBlocks([dir]);
  const { config } = composeConfig(
    ["one,two"],
    ["--packing", "--eval_size=5", "--no-val_max_length", "--learning_rate", "3e-4"],
    blocks,
  );
  assert.equal(config.max_length, 200);
  assert.deepEqual(config.datasets, ["joke"]);
  assert.equal(config.packing, true);
  assert.equal(config.eval_size, 5);
  assert.equal(config.val_max_length, null);
  assert.equal(config.learning_rate, 3e-4);
});

test("errors name the key, the block and the file; unknown blocks list the known ones", () => {
  const dir = mkdtempSync(join(tmpdir(), "oasft-cfg-"));
  writeFileSync(
    join(dir, "c.yaml"),
    "typo:\n  max_lenght: 100\nbadtype:\n  max_length: long\nfine:\n  fuse_gelu: true\n  use_flash_attention: true\n",
  );
  const blocks = readConfigBlocks([dir]);
  assert.throws(
    () => composeConfig(["typo"], [], blocks),
    (e: Error) =>
      e.message.includes(`${join(dir, "c.yaml")} › typo: unknown key 'max_lenght'`) &&
      /Did you mean: max_length/.test(e.message),
  );
  assert.throws(
    () => composeConfig(["badtype"], [], blocks),
    /c\.yaml › badtype: key 'max_length' expects integer, got "long"/,
  );
  assert.throws(
    () => composeConfig(["nope"], [], blocks),
    /config block 'nope' not found; known blocks: badtype, fine, typo/,
  );
  assert.throws(
    () => composeConfig([], ["--dtype", "fp8"], blocks),
    /--dtype: key 'dtype' expects string \(one of fp16/,
  );
  const { notes } = composeConfig(["fine"], [], blocks);
  assert.equal(notes.length, 1);
  assert.match(notes[0]!, /use_flash_attention = true is ignored by oasft/);
  writeFileSync(join(dir, "d.yaml"), "typo:\n  max_length: 1\n");
  assert.throws(() => readConfigBlocks([dir]), /block 'typo' is defined in both/);
});

test(
  "every problem is reported at once, numbers are checked against their ranges, the config is typed from the " +
    "key table",
  () => {
    const dir = mkdtempSync(join(tmpdir(), "oasft-cfg-"));
    writeFileSync(join(dir, "e.yaml"), "bad:\n  max_lenght: 100\n  learning_rate: -1\n");
    const blocks = readConfigBlocks([dir]);
    let message = "";
    assert.throws(
      () =>
        composeConfig(
          ["bad", "missing"],
          [
            "--per_device_train_batch_size",
            "0",
            "--gradient_accumulation_steps=0",
            "--adam_beta2",
            "1",
            "--max_steps",
            "-1",
          ],
          blocks,
        ),
      (e: Error) => {
        message = e.message;
        return true;
      },
    );
    const lines = message
      .split("\n")
      .slice(1)
      .map((l) => l.trim());
    assert.match(message, /^7 problems in the config:/);
    assert.deepEqual(lines, [
      `${join(dir, "e.yaml")} › bad: unknown key 'max_lenght'. Did you mean: max_length?`,
      `${join(dir, "e.yaml")} › bad: key 'learning_rate' must be > 0, got -1`,
      "config block 'missing' not found; known blocks: bad",
      "--per_device_train_batch_size: key 'per_device_train_batch_size' must be ≥ 1, got 0",
      "--gradient_accumulation_steps: key 'gradient_accumulation_steps' must be ≥ 1, got 0",
      "--adam_beta2: key 'adam_beta2' must be in [0, 1), got 1",
      "--max_steps: key 'max_steps' must be ≥ 1, got -1",
    ]);
    // Every shipped block is valid under the ranges.
    const builtin = readConfigBlocks([BUILTIN_CONFIG_DIR]);
    for (const name of builtin.keys()) composeConfig([name], [], builtin);
    // The type follows the table: max_steps is a nullable integer, dtype one of its choices.
    const typed = composeConfig([], [], builtin).config;
    const maxSteps: number | null = typed.max_steps;
    // @ts-expect-error max_steps is nullable in the table, so it is not a plain number
    const notNull: number = typed.max_steps;
    const dtype: "fp16" | "float16" | "bf16" | "bfloat16" | "fp32" | "float32" = typed.dtype;
    void [maxSteps, notNull, dtype];
    // Keys oasft accepts but does not act on are announced when set.
    const { notes } = composeConfig([], ["--poly_eps", "0.5", "--verbose"], builtin);
    assert.equal(notes.length, 2);
    assert.match(notes.join("\n"), /poly_eps = 0.5 is ignored by oasft: only CrossEntropyLoss/);
  },
);
