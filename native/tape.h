// Captured steps: a tape of addon calls, recorded once while TypeScript runs a step eagerly and then
// replayed here with no JavaScript per op (the decode step of src/generate/captured.ts).
//
// Recording: between tapeBegin and tapeEnd every recordable op (addon.cc's `rec` table entries) logs its
// arguments. A tensor argument is either an earlier recorded op's output (a slot of the tape) or, when it
// came from anywhere else (a weight, a KV-cache buffer, a static input buffer), a constant the tape holds
// by reference. Numbers, strings and shapes are stored as given: the step must have the same shapes and the
// same JavaScript control flow each time, and data that changes between steps must live in tensors that
// the caller writes in place before a replay. An op that moves data between tensors and JavaScript (item,
// toBytes, fromBytes), draws random numbers or changes a mode breaks the recording: tapeEnd then reports
// why and the caller keeps the eager path.
//
// Replay runs the same ATen calls with the same arguments in the same order, so on the CPU its outputs
// equal the eager step's bit for bit (test/generate/captured.test.ts). Slots are freed after their last
// use, so a replay holds no more memory than the eager step did.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace oasft::tape {

// A tensor argument: an earlier op's output (slot >= 0) or a tensor the tape holds (slot == -1).
struct Ref {
  int slot = -1;
  at::Tensor constant;
};

// One recorded argument, as the op read it from JavaScript.
struct Val {
  enum Kind : uint8_t { None, Tensor, Tensors, Number, Bool, String, Ints } kind = None;
  double num = 0;
  bool flag = false;
  std::string str;
  std::vector<int64_t> ints;
  std::vector<Ref> refs;  // Tensor: one; Tensors: the list
};

struct Op;  // an entry of the recordable table (addon.cc): its name and body

struct Step {
  const Op* op;
  std::vector<Val> args;
  std::vector<int> outputs;  // slots this step defines, in the op's output order
  std::vector<int> frees;    // slots whose last use is this step
};

struct Tape {
  std::vector<Step> steps;
  std::vector<int> outputs;  // slots returned by a replay
  int slots = 0;
  bool gradEnabled = false;
  int64_t constants = 0;  // distinct tensors held by reference
  bool profiling = false;
  std::vector<double> seconds;  // per step, summed over replays while profiling
  // GPU tapes (native/graph.h): the device, the replays so far, the captured graph (type-erased: this
  // header needs no CUDA), or why capture failed.
  int cudaDevice = -1;
  int64_t replays = 0;
  std::shared_ptr<void> graph;
  std::string graphError;
};

// The recording in progress (one at a time, on the JavaScript thread).
struct Recording {
  Tape tape;
  std::unordered_map<const void*, int> slotOf;  // TensorImpl* → slot of the op that made it
  std::vector<at::Tensor> held;                 // every slot's tensor, so no address is reused meanwhile
  std::unordered_set<const void*> constantSeen;  // distinct tensors held by reference
  std::string broken;                           // why this recording cannot be replayed ("" = fine)

  Ref ref(const at::Tensor& t) {
    auto it = slotOf.find(t.unsafeGetTensorImpl());
    if (it != slotOf.end()) return Ref{it->second, at::Tensor()};
    if (constantSeen.insert(t.unsafeGetTensorImpl()).second) tape.constants++;
    return Ref{-1, t};
  }
  int define(const at::Tensor& t) {
    int slot = tape.slots++;
    slotOf[t.unsafeGetTensorImpl()] = slot;
    held.push_back(t);
    return slot;
  }
  void breakWith(const std::string& why) {
    if (broken.empty()) broken = why;
  }
};

inline std::unique_ptr<Recording>& current() {
  static std::unique_ptr<Recording> recording;
  return recording;
}

// After recording: each slot is freed after the last step that reads it (outputs are kept).
inline void planFrees(Tape& tape) {
  std::vector<int> last(tape.slots, -1);
  for (size_t k = 0; k < tape.steps.size(); k++) {
    for (const Val& v : tape.steps[k].args)
      for (const Ref& r : v.refs)
        if (r.slot >= 0) last[r.slot] = static_cast<int>(k);
    for (int s : tape.steps[k].outputs)
      if (last[s] < 0) last[s] = static_cast<int>(k);  // never read: free right away
  }
  for (int s : tape.outputs) last[s] = -1;
  for (int s = 0; s < tape.slots; s++)
    if (last[s] >= 0) tape.steps[last[s]].frees.push_back(s);
}

}  // namespace oasft::tape
