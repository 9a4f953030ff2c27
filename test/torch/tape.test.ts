// torch.Tape: a step recorded once and replayed natively reads the current contents of the tensors it
// was recorded with, computes what the same ops compute eagerly, and refuses what it cannot replay.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as torch from "../../src/torch/index.js";

test("a replay recomputes the step from the inputs' new contents, equal to running it eagerly", () => {
  torch.scope(() => {
    torch.manualSeed(1);
    const w = torch.randn([5, 4]);
    const bias = torch.randn([5]);
    const x = torch.zeros([3, 4]);
    const step = () => [torch.linear(x.add(1), w, bias).softmax(-1), x.sum()];
    const recorded = torch.Tape.record(step);
    assert.ok("tape" in recorded, "reason" in recorded ? recorded.reason : "");
    const { tape } = recorded;
    assert.deepEqual(tape.info, { ops: 4, slots: 4, constants: 3, graph: "" }); // no CUDA graph on the CPU
    for (let i = 0; i < 3; i++) {
      x.copy_(torch.randn([3, 4]));
      const [probs, total] = tape.replay();
      const [eagerProbs, eagerTotal] = step();
      assert.deepEqual(probs!.toArray(), eagerProbs!.toArray());
      assert.equal(total!.item(), eagerTotal!.item());
    }
    tape.dispose();
    assert.throws(() => tape.replay(), /disposed/);
  });
});

test("in-place updates replay in order (a cache written at a slot held in a tensor)", () => {
  torch.scope(() => {
    const buffer = torch.zeros([4]);
    const slot = torch.tensor([0], { dtype: "int64" });
    const value = torch.zeros([1]);
    const { tape } = torch.Tape.record(() => {
      buffer.indexCopy_(0, slot, value.add(10));
      return [buffer.cumsum(0)];
    }) as { tape: torch.Tape };
    for (let i = 1; i < 4; i++) {
      slot.fill_(i);
      value.fill_(i);
      tape.replay();
    }
    assert.deepEqual([...buffer.toNumbers()], [10, 11, 12, 13]);
    tape.dispose();
  });
});

test("a step that reads data into JavaScript, or returns a tensor it did not compute, cannot be replayed", () => {
  torch.scope(() => {
    const x = torch.ones([2]);
    const read = torch.Tape.record(() => [x.mul(x.sum().item())]);
    assert.ok("reason" in read && /item was called/.test(read.reason), JSON.stringify(read));
    assert.equal(read.outputs[0]!.toNumbers()[0], 2, "the recording run is a real step");
    const foreign = torch.Tape.record(() => [x]);
    assert.ok("reason" in foreign && /not computed while recording/.test(foreign.reason));
    // A step that throws ends the recording: the next one starts cleanly.
    assert.throws(() => torch.Tape.record(() => [x.reshape([3])]), /reshape/);
    assert.ok("tape" in torch.Tape.record(() => [x.add(1)]));
  });
});

test("a replay that fails names the step and the op", () => {
  torch.scope(() => {
    const w = torch.ones([2, 2]);
    const x = torch.ones([1, 2]);
    const { tape } = torch.Tape.record(() => [torch.linear(x, w).relu()]) as { tape: torch.Tape };
    torch.native.setData(w.handle, torch.ones([3, 3]).handle); // the weight changed shape under the tape
    assert.throws(() => tape.replay(), /tapeReplay: step 0 \(linear\)/);
    tape.dispose();
  });
});
