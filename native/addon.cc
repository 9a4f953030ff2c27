// oasft's native addon: a thin N-API layer over libtorch (ATen ops + autograd).
//
// Contract (mirrored one-to-one by src/torch/binding.ts):
//  - a tensor crosses into JS as an opaque External handle owning one at::Tensor, type-tagged: an
//    External this addon did not make (another addon's) is refused by name, never dereferenced;
//  - dispose(h) frees it now; the GC finalizer frees it otherwise (a safety net, not the plan);
//  - CPU tensor bytes are reported to V8 as external memory so the GC sees their weight;
//  - every op is one entry of the table in Init, named as in src/torch/binding.ts;
//  - any libtorch error becomes a JS Error whose message starts with the op's name.
// Kernels and autograd are libtorch's. What this file computes by itself is one loop: adamwStep_, an
// AdamW update in a single pass over float32 CPU memory (torch.optim.AdamW's arithmetic; its composite
// reference is src/train/adamw.ts). The table, in the order of Init: runtime (threads, BLAS, RNG,
// memory), handles and metadata, creation and transfer, file I/O (safetensors byte ranges straight
// into tensors), in-place updates, elementwise ops, reductions, shapes and indexing, linear algebra and
// layers, that AdamW step, the fast paths of newer libtorch builds (fast.h), the c10d collectives
// (dist.h), autograd and modes.

#include <napi.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <functional>
#include <string>
#include <vector>

#include "compat.h"
#include "dist.h"
#include "fast.h"
#include "graph.h"
#include "small-gemm.h"
#include "tape.h"

namespace {

// ---------------------------------------------------------------------------------------------
// Tensor handles

struct Box {
  at::Tensor t;
  int64_t reportedBytes = 0;  // what we told V8 about, so that release subtracts exactly that
};

// Every handle this addon makes carries this tag (napi_type_tag_object); isTensor checks it.
constexpr napi_type_tag kTensorTag = {0x6f6173667474656eULL, 0x736f722d68616e64ULL};

std::atomic<int64_t> liveBoxes{0};

// Views share their base's storage: report only tensors that own their bytes.
int64_t ownedCpuBytes(const at::Tensor& t) {
  if (!t.defined() || !t.device().is_cpu() || t.is_view()) return 0;
  return static_cast<int64_t>(t.storage().nbytes());
}

// liveBoxes counts handles that still own a tensor: dispose() and the finalizer both end that.
void release(Napi::BasicEnv env, Box* box) {
  if (box->reportedBytes) Napi::MemoryManagement::AdjustExternalMemory(env, -box->reportedBytes);
  box->reportedBytes = 0;
  if (box->t.defined()) liveBoxes--;
  box->t.reset();
}

void finalizeBox(Napi::BasicEnv env, Box* box) {
  release(env, box);
  delete box;
}

Napi::Value wrap(Napi::Env env, at::Tensor t) {
  auto* box = new Box{std::move(t), 0};
  box->reportedBytes = ownedCpuBytes(box->t);
  if (box->reportedBytes) Napi::MemoryManagement::AdjustExternalMemory(env, box->reportedBytes);
  if (box->t.defined()) liveBoxes++;
  auto handle = Napi::External<Box>::New(env, box, finalizeBox);
  handle.TypeTag(&kTensorTag);
  return handle;
}

bool isTensorHandle(const Napi::Value& v) {
  return v.IsExternal() && v.As<Napi::External<Box>>().CheckTypeTag(&kTensorTag);
}

// ---------------------------------------------------------------------------------------------
// Argument access with errors that name the op and the argument

// An op reads its arguments through Args: from the JavaScript call (live), or from a tape's recorded
// arguments (replay, native/tape.h), where a tensor argument is a slot of the replay's frame or a
// constant the tape holds. Outputs go back to JavaScript live, and into `produced` on replay.
struct Args {
  const Napi::CallbackInfo* info;  // live call; null on replay
  const char* op;
  const std::vector<oasft::tape::Val>* vals = nullptr;  // replay
  const std::vector<at::Tensor>* frame = nullptr;       // replay: the slots defined so far
  std::vector<at::Tensor> produced;                      // replay: this op's outputs

  Args(const Napi::CallbackInfo& call, const char* name) : info(&call), op(name) {}
  Args(const char* name, const std::vector<oasft::tape::Val>& recorded, const std::vector<at::Tensor>& slots)
      : info(nullptr), op(name), vals(&recorded), frame(&slots) {}

  Napi::Env env() const { return info->Env(); }
  Napi::Value js(size_t i) const { return (*info)[i]; }
  size_t length() const { return vals ? vals->size() : info->Length(); }
  const oasft::tape::Val* val(size_t i) const { return vals && i < vals->size() ? &(*vals)[i] : nullptr; }
  using Kind = oasft::tape::Val::Kind;
  bool is(size_t i, Kind kind) const {
    const oasft::tape::Val* v = val(i);
    return v && v->kind == kind;
  }
  const at::Tensor& resolve(const oasft::tape::Ref& r) const { return r.slot >= 0 ? (*frame)[r.slot] : r.constant; }

  [[noreturn]] void bad(size_t i, const std::string& expected) const {
    std::string message = std::string(op) + ": argument " + std::to_string(i) + " must be " + expected;
    if (!info) throw std::runtime_error(message);
    throw Napi::TypeError::New(env(), message);
  }
  bool has(size_t i) const {
    if (vals) return i < vals->size() && (*vals)[i].kind != Kind::None;
    return i < info->Length() && !js(i).IsUndefined() && !js(i).IsNull();
  }
  bool isTensor(size_t i) const { return vals ? is(i, Kind::Tensor) : i < info->Length() && isTensorHandle(js(i)); }

  const at::Tensor& t(size_t i) const {
    if (!isTensor(i)) bad(i, "a tensor");
    const at::Tensor& tensor = vals ? resolve(val(i)->refs[0]) : js(i).As<Napi::External<Box>>().Data()->t;
    if (!tensor.defined()) bad(i, "a live tensor (this one was disposed)");
    return tensor;
  }
  c10::optional<at::Tensor> optT(size_t i) const {
    if (!has(i)) return c10::nullopt;
    return t(i);
  }
  double f(size_t i) const {
    if (vals) {
      if (!is(i, Kind::Number)) bad(i, "a number");
      return val(i)->num;
    }
    if (i >= info->Length() || !js(i).IsNumber()) bad(i, "a number");
    return js(i).As<Napi::Number>().DoubleValue();
  }
  int64_t i64(size_t i) const {
    if (vals) {
      if (!is(i, Kind::Number)) bad(i, "an integer");
      return static_cast<int64_t>(val(i)->num);
    }
    if (i >= info->Length() || !js(i).IsNumber()) bad(i, "an integer");
    return js(i).As<Napi::Number>().Int64Value();
  }
  bool b(size_t i) const {
    if (vals) {
      if (!is(i, Kind::Bool)) bad(i, "a boolean");
      return val(i)->flag;
    }
    if (i >= info->Length() || !js(i).IsBoolean()) bad(i, "a boolean");
    return js(i).As<Napi::Boolean>().Value();
  }
  std::string str(size_t i) const {
    if (vals) {
      if (!is(i, Kind::String)) bad(i, "a string");
      return val(i)->str;
    }
    if (i >= info->Length() || !js(i).IsString()) bad(i, "a string");
    return js(i).As<Napi::String>().Utf8Value();
  }
  std::vector<int64_t> ints(size_t i) const {
    if (vals) {
      if (!is(i, Kind::Ints)) bad(i, "an array of integers");
      return val(i)->ints;
    }
    if (i >= info->Length() || !js(i).IsArray()) bad(i, "an array of integers");
    auto arr = js(i).As<Napi::Array>();
    std::vector<int64_t> out(arr.Length());
    for (uint32_t k = 0; k < arr.Length(); k++) {
      Napi::Value v = arr[k];
      if (!v.IsNumber()) bad(i, "an array of integers");
      out[k] = v.As<Napi::Number>().Int64Value();
    }
    return out;
  }
  std::vector<at::Tensor> tensors(size_t i) const {
    std::vector<at::Tensor> out;
    if (vals) {
      if (is(i, Kind::Ints) && val(i)->ints.empty()) return out;  // [] was recorded as a list of integers
      if (!is(i, Kind::Tensors)) bad(i, "an array of tensors");
      for (const auto& r : val(i)->refs) out.push_back(resolve(r));
      return out;
    }
    if (i >= info->Length() || !js(i).IsArray()) bad(i, "an array of tensors");
    auto arr = js(i).As<Napi::Array>();
    out.reserve(arr.Length());
    for (uint32_t k = 0; k < arr.Length(); k++) {
      Napi::Value v = arr[k];
      if (!isTensorHandle(v)) bad(i, "an array of tensors");
      const at::Tensor& tensor = v.As<Napi::External<Box>>().Data()->t;
      if (!tensor.defined()) bad(i, "an array of live tensors");
      out.push_back(tensor);
    }
    return out;
  }
  // An integral JS number becomes an integer Scalar, so int64 tensors stay int64 (`pos - 1`).
  at::Scalar scalar(size_t i) const {
    if (vals ? is(i, Kind::Bool) : i < info->Length() && js(i).IsBoolean()) return at::Scalar(b(i));
    double v = f(i);
    double whole = static_cast<double>(static_cast<int64_t>(v));
    if (whole == v && v > -9007199254740992.0 && v < 9007199254740992.0) return at::Scalar(static_cast<int64_t>(v));
    return at::Scalar(v);
  }
  // dtypes cross as c10::ScalarType codes (src/torch/dtype.ts keeps the same table).
  at::ScalarType dtype(size_t i) const {
    int64_t code = i64(i);
    if (code < 0 || code >= static_cast<int64_t>(at::ScalarType::NumOptions)) bad(i, "a dtype code");
    return static_cast<at::ScalarType>(code);
  }
  c10::optional<at::ScalarType> optDtype(size_t i) const {
    if (!has(i)) return c10::nullopt;
    return dtype(i);
  }
  at::Device device(size_t i) const {
    if (!has(i)) return at::Device(at::kCPU);
    return at::Device(str(i));
  }
  at::TensorOptions options(size_t dtypeArg, size_t deviceArg) const {
    return at::TensorOptions().dtype(dtype(dtypeArg)).device(device(deviceArg));
  }

  Napi::Value out(at::Tensor t) {
    if (vals) {
      produced.push_back(std::move(t));
      return Napi::Value();
    }
    return wrap(env(), std::move(t));
  }
  Napi::Value outList(const std::vector<at::Tensor>& ts) {
    if (vals) {
      produced.insert(produced.end(), ts.begin(), ts.end());
      return Napi::Value();
    }
    auto arr = Napi::Array::New(env(), ts.size());
    for (size_t k = 0; k < ts.size(); k++) arr.Set(static_cast<uint32_t>(k), out(ts[k]));
    return arr;
  }
  Napi::Value num(double v) const { return Napi::Number::New(env(), v); }
  Napi::Value boolean(bool v) const { return Napi::Boolean::New(env(), v); }
  Napi::Value undef() const { return vals ? Napi::Value() : env().Undefined(); }
};

}  // namespace

namespace oasft::tape {
// A recordable table entry: its name and its body, which a replay calls again with recorded arguments.
struct Op {
  const char* name;
  std::function<Napi::Value(Args&)> body;
};
}  // namespace oasft::tape

namespace {

using oasft::tape::Recording;
using oasft::tape::Val;

template <typename Run>
Napi::Value rethrowAsJs(const Napi::CallbackInfo& info, const char* name, Run run) {
  try {
    return run();
  } catch (const Napi::Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Napi::Error::New(info.Env(), std::string(name) + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string(name) + ": " + e.what());
  }
}

// Ops that only read handles' metadata (shapes, dtypes) or the runtime's settings: harmless while a tape
// records, since a replayed step has the same shapes. Every other entry outside `rec` breaks a recording.
bool readsMetadataOnly(const std::string& name) {
  static const char* names[] = {
      "version", "buildConfig", "parallelInfo", "getNumThreads", "cudaIsAvailable", "cudaDeviceCount", "mallocMode",
      "parentPid", "liveTensors", "dispose", "isLive", "shape", "strides", "dtype", "device", "numel",
      "requiresGrad", "isContiguous", "isGradEnabled", "features", "distAvailable", "tapeInfo", "tapeEnd", "tapeAbort", "tapeProfile"};
  for (const char* n : names)
    if (name == n) return true;
  return false;
}

// A table entry that is not recordable.
template <typename Body>
void def(Napi::Env env, Napi::Object exports, const char* name, Body body) {
  const bool harmless = readsMetadataOnly(name);
  exports.Set(name, Napi::Function::New(
                        env,
                        [name, body, harmless](const Napi::CallbackInfo& info) -> Napi::Value {
                          auto& recording = oasft::tape::current();
                          if (recording && !harmless) recording->breakWith(std::string(name) + " was called");
                          Args a(info, name);
                          return rethrowAsJs(info, name, [&] { return body(a); });
                        },
                        name));
}

// One JavaScript argument as a tape stores it; false when it is of a kind a tape cannot hold.
bool recordArg(Recording& r, const Napi::Value& v, Val& out) {
  if (v.IsUndefined() || v.IsNull()) return true;
  if (isTensorHandle(v)) {
    out.kind = Val::Tensor;
    out.refs.push_back(r.ref(v.As<Napi::External<Box>>().Data()->t));
    return true;
  }
  if (v.IsNumber()) {
    out.kind = Val::Number;
    out.num = v.As<Napi::Number>().DoubleValue();
    return true;
  }
  if (v.IsBoolean()) {
    out.kind = Val::Bool;
    out.flag = v.As<Napi::Boolean>().Value();
    return true;
  }
  if (v.IsString()) {
    out.kind = Val::String;
    out.str = v.As<Napi::String>().Utf8Value();
    return true;
  }
  if (!v.IsArray()) return false;
  auto arr = v.As<Napi::Array>();
  out.kind = arr.Length() > 0 && isTensorHandle(arr.Get(0u)) ? Val::Tensors : Val::Ints;
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value e = arr[k];
    if (out.kind == Val::Tensors && isTensorHandle(e)) out.refs.push_back(r.ref(e.As<Napi::External<Box>>().Data()->t));
    else if (out.kind == Val::Ints && e.IsNumber()) out.ints.push_back(e.As<Napi::Number>().Int64Value());
    else return false;
  }
  return true;
}

// A live call of a recordable op while a tape records: the op runs as usual, and its arguments and the
// slots of its outputs join the tape.
Napi::Value callRecording(Recording& r, const oasft::tape::Op& op, Args& a, const Napi::CallbackInfo& info) {
  std::vector<Val> vals(info.Length());
  for (size_t i = 0; i < info.Length(); i++) {
    if (!recordArg(r, info[i], vals[i])) r.breakWith(std::string(op.name) + " took an argument a tape cannot hold");
  }
  Napi::Value result = op.body(a);
  oasft::tape::Step step{&op, std::move(vals), {}, {}};
  auto define = [&](const Napi::Value& v) {
    if (isTensorHandle(v)) step.outputs.push_back(r.define(v.As<Napi::External<Box>>().Data()->t));
    else r.breakWith(std::string(op.name) + " returned something other than tensors");
  };
  if (result.IsArray()) {
    auto arr = result.As<Napi::Array>();
    for (uint32_t k = 0; k < arr.Length(); k++) define(arr.Get(k));
  } else if (!result.IsUndefined()) {
    define(result);
  }
  r.tape.steps.push_back(std::move(step));
  return result;
}

// A recordable table entry: a pure function of its arguments (tensors, shapes, numbers), or an in-place
// update of a tensor argument.
template <typename Body>
void rec(Napi::Env env, Napi::Object exports, const char* name, Body body) {
  auto* op = new oasft::tape::Op{name, body};  // lives as long as the process: tapes point at it
  exports.Set(name, Napi::Function::New(
                        env,
                        [op](const Napi::CallbackInfo& info) -> Napi::Value {
                          Args a(info, op->name);
                          return rethrowAsJs(info, op->name, [&] {
                            auto& recording = oasft::tape::current();
                            return recording ? callRecording(*recording, *op, a, info) : op->body(a);
                          });
                        },
                        op->name));
}

// The replay of a tape: every step's op on its recorded arguments, slots freed after their last use.
std::vector<at::Tensor> replay(oasft::tape::Tape& tape) {
  std::vector<at::Tensor> frame(tape.slots);
  at::AutoGradMode grad(tape.gradEnabled);
  for (size_t k = 0; k < tape.steps.size(); k++) {
    const oasft::tape::Step& s = tape.steps[k];
    Args a(s.op->name, s.args, frame);
    auto start = tape.profiling ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    try {
      s.op->body(a);
    } catch (const c10::Error& e) {
      throw std::runtime_error("step " + std::to_string(k) + " (" + s.op->name + "): " + e.what_without_backtrace());
    } catch (const std::exception& e) {
      throw std::runtime_error("step " + std::to_string(k) + " (" + s.op->name + "): " + e.what());
    }
    if (a.produced.size() != s.outputs.size()) {
      throw std::runtime_error("step " + std::to_string(k) + " (" + s.op->name + ") made " +
                               std::to_string(a.produced.size()) + " tensors, recorded " + std::to_string(s.outputs.size()));
    }
    for (size_t j = 0; j < s.outputs.size(); j++) frame[s.outputs[j]] = std::move(a.produced[j]);
    for (int f : s.frees) frame[f].reset();
    if (tape.profiling) tape.seconds[k] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  std::vector<at::Tensor> out;
  for (int s : tape.outputs) out.push_back(frame[s]);
  return out;
}

// A replay as one CUDA graph launch where it applies (native/graph.h), else op by op. A GPU tape's first
// replay runs op by op (the allocator settles), its second is captured; a failed capture is not retried.
std::vector<at::Tensor> replayTape(oasft::tape::Tape& tape) {
#if OASFT_HAS_CUDA_GRAPH
  if (tape.cudaDevice >= 0 && !tape.profiling && oasft::graph::enabled()) {
    if (tape.graph) {
      auto& g = *static_cast<oasft::graph::Graph*>(tape.graph.get());
      oasft::graph::replay(g);
      return g.outputs;
    }
    if (++tape.replays >= 2 && tape.graphError.empty()) {
      try {
        auto g = oasft::graph::capture([&] { return replay(tape); }, static_cast<c10::DeviceIndex>(tape.cudaDevice));
        tape.graph = g;
        return g->outputs;
      } catch (const std::exception& e) {
        tape.graphError = e.what();
        if (tape.graphError.empty()) tape.graphError = "capture failed";
      }
    }
  }
#endif
  return replay(tape);
}

constexpr napi_type_tag kTapeTag = {0x6f61736674746170ULL, 0x652d68616e646c65ULL};

oasft::tape::Tape& tapeOf(const Args& a, size_t i) {
  Napi::Value v = a.js(i);
  if (!v.IsExternal() || !v.As<Napi::External<oasft::tape::Tape>>().CheckTypeTag(&kTapeTag)) a.bad(i, "a tape");
  return *v.As<Napi::External<oasft::tape::Tape>>().Data();
}

// tapeEnd's work: the recording becomes a tape whose outputs are `outputs`, or the reason it cannot.
Napi::Value finishRecording(Args& a, std::unique_ptr<Recording> r) {
  std::vector<at::Tensor> outputs = a.tensors(0);
  for (const at::Tensor& t : outputs) {
    auto it = r->slotOf.find(t.unsafeGetTensorImpl());
    if (it == r->slotOf.end()) r->breakWith("an output was not computed while recording");
    else r->tape.outputs.push_back(it->second);
  }
  if (!r->broken.empty()) return Napi::String::New(a.env(), r->broken);
  r->held.clear();
  r->slotOf.clear();
  auto* tape = new oasft::tape::Tape(std::move(r->tape));
  oasft::tape::planFrees(*tape);
  if (!outputs.empty() && outputs[0].is_cuda()) tape->cudaDevice = outputs[0].get_device();
  auto handle = Napi::External<oasft::tape::Tape>::New(a.env(), tape, [](Napi::BasicEnv, oasft::tape::Tape* t) { delete t; });
  handle.TypeTag(&kTapeTag);
  return handle;
}

at::Tensor tensorFromBytes(const Args& a, size_t bytesArg, at::ScalarType dtype, const std::vector<int64_t>& shape) {
  if (!a.js(bytesArg).IsTypedArray()) a.bad(bytesArg, "a typed array or Buffer");
  auto view = a.js(bytesArg).As<Napi::TypedArray>();
  auto* data = static_cast<uint8_t*>(view.ArrayBuffer().Data()) + view.ByteOffset();
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  size_t expected = static_cast<size_t>(numel) * c10::elementSize(dtype);
  if (view.ByteLength() != expected) {
    a.bad(bytesArg, std::to_string(expected) + " bytes for shape and dtype, got " + std::to_string(view.ByteLength()));
  }
  if (numel == 0) return at::empty(shape, at::TensorOptions().dtype(dtype));
  return at::from_blob(data, shape, at::TensorOptions().dtype(dtype)).clone();
}

at::Reduction::Reduction reductionFrom(const Args& a, size_t i) {
  std::string r = a.str(i);
  if (r == "mean") return at::Reduction::Mean;
  if (r == "sum") return at::Reduction::Sum;
  if (r == "none") return at::Reduction::None;
  a.bad(i, "'mean', 'sum' or 'none'");
}

// Binary ops take a tensor or a JS number as their second operand.
#define BINARY(jsName, fn)                                                              \
  rec(env, exports, jsName, [](Args& a) {                                               \
    return a.out(a.isTensor(1) ? at::fn(a.t(0), a.t(1)) : at::fn(a.t(0), a.scalar(1))); \
  })
#define UNARY(jsName, fn) rec(env, exports, jsName, [](Args& a) { return a.out(at::fn(a.t(0))); })

// Training allocates and frees the same large activation buffers every step. With glibc's default,
// dynamic thresholds many of them are mmap()ed and munmap()ed each time, and the kernel zero-fills every
// page again: on a 160M BLOOM step that was ~20% extra system time. Keeping buffers up to 1 GiB in the
// heap lets malloc reuse them (what jemalloc/tcmalloc give PyTorch users). Peak RSS is unchanged: it is
// set by the largest step. OASFT_MALLOC_TUNING=0, or the user's own MALLOC_* / GLIBC_TUNABLES settings, opt out.
const char* tuneMalloc() {
#if defined(__GLIBC__)
  const char* optOut = std::getenv("OASFT_MALLOC_TUNING");
  if (optOut && std::string(optOut) == "0") return "glibc default (OASFT_MALLOC_TUNING=0)";
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("MALLOC_TRIM_THRESHOLD_") || std::getenv("GLIBC_TUNABLES")) {
    return "glibc, user settings";
  }
  const int oneGiB = 1 << 30;
  if (mallopt(M_MMAP_THRESHOLD, oneGiB) == 1 && mallopt(M_TRIM_THRESHOLD, oneGiB) == 1) return "glibc, mmap/trim threshold 1 GiB";
  return "glibc default (mallopt refused)";
#else
  return "system default";
#endif
}

// Whole-buffer write/read on a file descriptor: loops over short writes/reads and EINTR, and names
// the failing system call (the JS side adds the file and tensor names).
void writeAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t{1} << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw std::runtime_error(std::string("write failed: ") + (w < 0 ? std::strerror(errno) : "no progress"));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void readAll(int fd, int64_t offset, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, std::min<size_t>(n, size_t{1} << 30), offset);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw std::runtime_error(std::string("read failed: ") + std::strerror(errno));
    if (r == 0) throw std::runtime_error("read failed: the file ends " + std::to_string(n) + " bytes early (truncated?)");
    p += r;
    n -= static_cast<size_t>(r);
    offset += r;
  }
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  static const char* mallocMode = tuneMalloc();
  // The intra-op thread count is set from JS (src/torch/threads.ts): OMP_NUM_THREADS, the CPU
  // affinity mask and the cgroup quota decide it, not the host's core count.

  // ----- runtime -------------------------------------------------------------------------------
  def(env, exports, "version", [](Args& a) { return Napi::String::New(a.env(), TORCH_VERSION); });
  def(env, exports, "buildConfig", [](Args& a) { return Napi::String::New(a.env(), at::show_config()); });
  def(env, exports, "parallelInfo", [](Args& a) { return Napi::String::New(a.env(), at::get_parallel_info()); });
  def(env, exports, "setNumThreads", [](Args& a) { at::set_num_threads(static_cast<int>(a.i64(0))); return a.undef(); });
  def(env, exports, "getNumThreads", [](Args& a) { return a.num(at::get_num_threads()); });
  def(env, exports, "manualSeed", [](Args& a) { torch::manual_seed(static_cast<uint64_t>(a.i64(0))); return a.undef(); });
  def(env, exports, "cudaIsAvailable", [](Args& a) { return a.boolean(torch::cuda::is_available()); });
  def(env, exports, "cudaDeviceCount", [](Args& a) { return a.num(static_cast<double>(torch::cuda::device_count())); });
  def(env, exports, "cudaSynchronize", [](Args& a) {
    if (torch::cuda::is_available()) torch::cuda::synchronize();
    return a.undef();
  });
  def(env, exports, "mallocMode", [](Args& a) { return Napi::String::New(a.env(), mallocMode); });
  // setParentDeathSignal(signal) → whether the kernel took it: the signal this process gets when its
  // parent dies (Linux prctl PR_SET_PDEATHSIG). Ranks started by `oasft train --nproc_per_node` set it,
  // so they end with a launcher that was killed outright (kill -9 leaves no handler to stop them).
  def(env, exports, "setParentDeathSignal", [](Args& a) {
#if defined(__linux__)
    return a.boolean(prctl(PR_SET_PDEATHSIG, static_cast<unsigned long>(a.i64(0))) == 0);
#else
    return a.boolean(false);
#endif
  });
  def(env, exports, "parentPid", [](Args& a) { return a.num(static_cast<double>(getppid())); });
  // releaseFreeMemory(): hands the heap's free pages back to the system (glibc malloc_trim). Training
  // keeps them for the next step (tuneMalloc); work of varying sizes (evaluation, serving) calls this
  // between items so that the peak of one long prompt does not stay resident.
  def(env, exports, "releaseFreeMemory", [](Args& a) {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
    return a.undef();
  });
  def(env, exports, "liveTensors", [](Args& a) { return a.num(static_cast<double>(liveBoxes.load())); });
  // rngState(device) / setRngState(device, state): the default generator of "cpu", "cuda" or "cuda:N"
  // as a byte tensor (CPU), for gradient-checkpoint recomputation and checkpoints.
  def(env, exports, "rngState", [](Args& a) {
    auto gen = at::globalContext().defaultGenerator(a.device(0));
    std::lock_guard<std::mutex> lock(gen.mutex());
    return a.out(gen.get_state());
  });
  def(env, exports, "setRngState", [](Args& a) {
    auto gen = at::globalContext().defaultGenerator(a.device(0));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(a.t(1));
    return a.undef();
  });

  // ----- handles and metadata --------------------------------------------------------------------
  def(env, exports, "dispose", [](Args& a) {
    if (!a.isTensor(0)) a.bad(0, "a tensor");
    release(a.env(), a.js(0).As<Napi::External<Box>>().Data());
    return a.undef();
  });
  def(env, exports, "isLive", [](Args& a) {
    return a.boolean(a.isTensor(0) && a.js(0).As<Napi::External<Box>>().Data()->t.defined());
  });
  def(env, exports, "shape", [](Args& a) {
    auto sizes = a.t(0).sizes();
    auto arr = Napi::Array::New(a.env(), sizes.size());
    for (size_t k = 0; k < sizes.size(); k++) arr.Set(static_cast<uint32_t>(k), a.num(static_cast<double>(sizes[k])));
    return arr;
  });
  def(env, exports, "strides", [](Args& a) {
    auto strides = a.t(0).strides();
    auto arr = Napi::Array::New(a.env(), strides.size());
    for (size_t k = 0; k < strides.size(); k++) arr.Set(static_cast<uint32_t>(k), a.num(static_cast<double>(strides[k])));
    return arr;
  });
  def(env, exports, "dtype", [](Args& a) { return a.num(static_cast<int>(a.t(0).scalar_type())); });
  def(env, exports, "device", [](Args& a) { return Napi::String::New(a.env(), a.t(0).device().str()); });
  def(env, exports, "numel", [](Args& a) { return a.num(static_cast<double>(a.t(0).numel())); });
  def(env, exports, "item", [](Args& a) { return a.num(a.t(0).item().toDouble()); });
  def(env, exports, "requiresGrad", [](Args& a) { return a.boolean(a.t(0).requires_grad()); });
  def(env, exports, "setRequiresGrad", [](Args& a) { a.t(0).set_requires_grad(a.b(1)); return a.undef(); });
  def(env, exports, "grad", [](Args& a) {
    const at::Tensor& g = a.t(0).grad();
    return g.defined() ? a.out(g) : a.undef();
  });
  def(env, exports, "setGrad", [](Args& a) {
    at::Tensor& g = a.t(0).mutable_grad();
    g = a.has(1) ? a.t(1) : at::Tensor();  // undefined = "no grad", as zero_grad(set_to_none=True)
    return a.undef();
  });
  def(env, exports, "isContiguous", [](Args& a) { return a.boolean(a.t(0).is_contiguous()); });

  // ----- creation and transfer ------------------------------------------------------------------
  // fromBytes(bytes, dtype, shape): copies; the JS memory can be reused right after.
  def(env, exports, "fromBytes", [](Args& a) { return a.out(tensorFromBytes(a, 0, a.dtype(1), a.ints(2))); });
  // toBytes(t): a copy of the (CPU, contiguous) data as a Node Buffer.
  def(env, exports, "toBytes", [](Args& a) {
    at::Tensor t = a.t(0).detach().to(at::kCPU).contiguous();
    return Napi::Buffer<uint8_t>::Copy(a.env(), static_cast<const uint8_t*>(t.data_ptr()), t.nbytes());
  });
  rec(env, exports, "empty", [](Args& a) { return a.out(at::empty(a.ints(0), a.options(1, 2))); });
  rec(env, exports, "zeros", [](Args& a) { return a.out(at::zeros(a.ints(0), a.options(1, 2))); });
  rec(env, exports, "ones", [](Args& a) { return a.out(at::ones(a.ints(0), a.options(1, 2))); });
  rec(env, exports, "full", [](Args& a) { return a.out(at::full(a.ints(0), a.scalar(1), a.options(2, 3))); });
  rec(env, exports, "arange", [](Args& a) { return a.out(at::arange(a.scalar(0), a.scalar(1), a.scalar(2), a.options(3, 4))); });
  def(env, exports, "randn", [](Args& a) { return a.out(at::randn(a.ints(0), a.options(1, 2))); });
  def(env, exports, "rand", [](Args& a) { return a.out(at::rand(a.ints(0), a.options(1, 2))); });
  def(env, exports, "randint", [](Args& a) { return a.out(at::randint(a.i64(0), a.i64(1), a.ints(2), a.options(3, 4))); });
  def(env, exports, "randperm", [](Args& a) { return a.out(at::randperm(a.i64(0), a.options(1, 2))); });
  rec(env, exports, "to", [](Args& a) { return a.out(a.t(0).to(a.dtype(1))); });
  // toDevice(t, device, nonBlocking): an asynchronous host-to-device copy needs pinned host memory.
  rec(env, exports, "toDevice", [](Args& a) {
    return a.out(a.t(0).to(a.device(1), /*non_blocking=*/a.has(2) && a.b(2)));
  });
  def(env, exports, "pinMemory", [](Args& a) { return a.out(a.t(0).pin_memory()); });
  rec(env, exports, "clone", [](Args& a) { return a.out(a.t(0).clone()); });
  rec(env, exports, "detach", [](Args& a) { return a.out(a.t(0).detach()); });
  rec(env, exports, "contiguous", [](Args& a) { return a.out(a.t(0).contiguous()); });

  // ----- file I/O: tensors of any size, straight between files and tensors (no JS buffer) ---------
  // writeToFd(t, fd): appends t's bytes (row-major, little-endian) at fd's current position. CPU
  // contiguous tensors are written from their own memory; others (CUDA, strided) go through
  // 64 MiB host chunks, so saving never holds a second full copy of a large tensor.
  def(env, exports, "writeToFd", [](Args& a) {
    const int fd = static_cast<int>(a.i64(1));
    at::Tensor t = a.t(0).detach();
    if (t.device().is_cpu() && t.is_contiguous()) {
      writeAll(fd, t.data_ptr(), t.nbytes());
      return a.undef();
    }
    at::Tensor flat = t.contiguous().view({-1});
    const int64_t chunk = std::max<int64_t>(1, (int64_t{64} << 20) / static_cast<int64_t>(t.element_size()));
    for (int64_t start = 0; start < flat.numel(); start += chunk) {
      at::Tensor host = flat.narrow(0, start, std::min(chunk, flat.numel() - start)).to(at::kCPU).contiguous();
      writeAll(fd, host.data_ptr(), host.nbytes());
    }
    return a.undef();
  });
  // readFromFd(fd, offset, dtype, shape): a new CPU tensor read from the file at `offset`.
  def(env, exports, "readFromFd", [](Args& a) {
    at::Tensor t = at::empty(a.ints(3), at::TensorOptions().dtype(a.dtype(2)));
    readAll(static_cast<int>(a.i64(0)), a.i64(1), t.data_ptr(), t.nbytes());
    return a.out(t);
  });
  // readIntoFromFd(fd, offset, t): fills a contiguous CPU tensor in place (a parameter of the
  // stored dtype loads with no intermediate copy).
  def(env, exports, "readIntoFromFd", [](Args& a) {
    const at::Tensor& t = a.t(2);
    if (!t.device().is_cpu() || !t.is_contiguous()) a.bad(2, "a contiguous CPU tensor");
    readAll(static_cast<int>(a.i64(0)), a.i64(1), t.data_ptr(), t.nbytes());
    return a.undef();
  });

  // ----- in-place ----------------------------------------------------------------------------------
  rec(env, exports, "copy_", [](Args& a) { a.t(0).copy_(a.t(1)); return a.undef(); });
  rec(env, exports, "zero_", [](Args& a) { a.t(0).zero_(); return a.undef(); });
  rec(env, exports, "fill_", [](Args& a) { a.t(0).fill_(a.scalar(1)); return a.undef(); });
  def(env, exports, "normal_", [](Args& a) { a.t(0).normal_(a.f(1), a.f(2)); return a.undef(); });
  def(env, exports, "uniform_", [](Args& a) { a.t(0).uniform_(a.f(1), a.f(2)); return a.undef(); });
  rec(env, exports, "add_", [](Args& a) {
    if (a.isTensor(1)) a.t(0).add_(a.t(1), a.has(2) ? a.scalar(2) : at::Scalar(1));
    else a.t(0).add_(a.scalar(1));
    return a.undef();
  });
  rec(env, exports, "mul_", [](Args& a) {
    if (a.isTensor(1)) a.t(0).mul_(a.t(1));
    else a.t(0).mul_(a.scalar(1));
    return a.undef();
  });
  rec(env, exports, "div_", [](Args& a) {
    if (a.isTensor(1)) a.t(0).div_(a.t(1));
    else a.t(0).div_(a.scalar(1));
    return a.undef();
  });
  rec(env, exports, "addcmul_", [](Args& a) { a.t(0).addcmul_(a.t(1), a.t(2), a.scalar(3)); return a.undef(); });
  rec(env, exports, "addcdiv_", [](Args& a) { a.t(0).addcdiv_(a.t(1), a.t(2), a.scalar(3)); return a.undef(); });
  rec(env, exports, "lerp_", [](Args& a) { a.t(0).lerp_(a.t(1), a.scalar(2)); return a.undef(); });
  rec(env, exports, "clampMax_", [](Args& a) { a.t(0).clamp_max_(a.scalar(1)); return a.undef(); });
  rec(env, exports, "maskedFill_", [](Args& a) { a.t(0).masked_fill_(a.t(1), a.scalar(2)); return a.undef(); });
  rec(env, exports, "indexCopy_", [](Args& a) { a.t(0).index_copy_(a.i64(1), a.t(2), a.t(3)); return a.undef(); });
  rec(env, exports, "scatter_", [](Args& a) {
    if (a.isTensor(3)) a.t(0).scatter_(a.i64(1), a.t(2), a.t(3));
    else a.t(0).scatter_(a.i64(1), a.t(2), a.scalar(3));
    return a.undef();
  });
  rec(env, exports, "indexFill_", [](Args& a) { a.t(0).index_fill_(a.i64(1), a.t(2), a.scalar(3)); return a.undef(); });

  // ----- elementwise -------------------------------------------------------------------------------
  rec(env, exports, "add", [](Args& a) {
    at::Scalar alpha = a.has(2) ? a.scalar(2) : at::Scalar(1);
    return a.out(a.isTensor(1) ? at::add(a.t(0), a.t(1), alpha) : at::add(a.t(0), a.scalar(1), alpha));
  });
  rec(env, exports, "sub", [](Args& a) {
    at::Scalar alpha = a.has(2) ? a.scalar(2) : at::Scalar(1);
    return a.out(a.isTensor(1) ? at::sub(a.t(0), a.t(1), alpha) : at::sub(a.t(0), a.scalar(1), alpha));
  });
  BINARY("mul", mul);
  BINARY("div", div);
  BINARY("pow", pow);
  BINARY("eq", eq);
  BINARY("ne", ne);
  BINARY("lt", lt);
  BINARY("le", le);
  BINARY("gt", gt);
  BINARY("ge", ge);
  BINARY("remainder", remainder);
  rec(env, exports, "maximum", [](Args& a) { return a.out(at::maximum(a.t(0), a.t(1))); });
  rec(env, exports, "minimum", [](Args& a) { return a.out(at::minimum(a.t(0), a.t(1))); });
  rec(env, exports, "logicalAnd", [](Args& a) { return a.out(at::logical_and(a.t(0), a.t(1))); });
  rec(env, exports, "logicalOr", [](Args& a) { return a.out(at::logical_or(a.t(0), a.t(1))); });
  rec(env, exports, "where", [](Args& a) { return a.out(at::where(a.t(0), a.t(1), a.t(2))); });
  rec(env, exports, "maskedFill", [](Args& a) { return a.out(at::masked_fill(a.t(0), a.t(1), a.scalar(2))); });
  rec(env, exports, "clamp", [](Args& a) {
    c10::optional<at::Scalar> lo, hi;
    if (a.has(1)) lo = a.scalar(1);
    if (a.has(2)) hi = a.scalar(2);
    return a.out(at::clamp(a.t(0), lo, hi));
  });
  UNARY("neg", neg);
  UNARY("exp", exp);
  UNARY("log", log);
  UNARY("tanh", tanh);
  UNARY("sqrt", sqrt);
  UNARY("rsqrt", rsqrt);
  UNARY("abs", abs);
  UNARY("sigmoid", sigmoid);
  UNARY("relu", relu);
  UNARY("silu", silu);
  UNARY("sin", sin);
  UNARY("cos", cos);
  UNARY("logicalNot", logical_not);
  UNARY("isfinite", isfinite);
  UNARY("isnan", isnan);
  rec(env, exports, "gelu", [](Args& a) { return a.out(at::gelu(a.t(0), a.has(1) ? a.str(1) : "none")); });

  // ----- reductions --------------------------------------------------------------------------------
  // dims = null reduces over everything.
  rec(env, exports, "sum", [](Args& a) {
    if (!a.has(1)) return a.out(at::sum(a.t(0), a.optDtype(3)));
    return a.out(at::sum(a.t(0), a.ints(1), a.b(2), a.optDtype(3)));
  });
  rec(env, exports, "mean", [](Args& a) {
    if (!a.has(1)) return a.out(at::mean(a.t(0), a.optDtype(3)));
    return a.out(at::mean(a.t(0), a.ints(1), a.b(2), a.optDtype(3)));
  });
  rec(env, exports, "amax", [](Args& a) { return a.out(at::amax(a.t(0), a.ints(1), a.b(2))); });
  rec(env, exports, "amin", [](Args& a) { return a.out(at::amin(a.t(0), a.ints(1), a.b(2))); });
  rec(env, exports, "max", [](Args& a) { return a.out(at::max(a.t(0))); });
  rec(env, exports, "min", [](Args& a) { return a.out(at::min(a.t(0))); });
  rec(env, exports, "argmax", [](Args& a) { return a.out(at::argmax(a.t(0), a.i64(1), a.b(2))); });
  rec(env, exports, "any", [](Args& a) { return a.out(at::any(a.t(0))); });
  rec(env, exports, "all", [](Args& a) { return a.out(at::all(a.t(0))); });
  rec(env, exports, "norm", [](Args& a) { return a.out(at::norm(a.t(0), a.scalar(1))); });
  rec(env, exports, "cumsum", [](Args& a) { return a.out(at::cumsum(a.t(0), a.i64(1), a.optDtype(2))); });
  rec(env, exports, "softmax", [](Args& a) { return a.out(at::softmax(a.t(0), a.i64(1), a.optDtype(2))); });
  rec(env, exports, "logSoftmax", [](Args& a) { return a.out(at::log_softmax(a.t(0), a.i64(1), a.optDtype(2))); });
  rec(env, exports, "topk", [](Args& a) {
    auto [values, indices] = at::topk(a.t(0), a.i64(1), a.i64(2), true, true);
    return a.outList({values, indices});
  });
  rec(env, exports, "sort", [](Args& a) {
    auto [values, indices] = at::sort(a.t(0), a.i64(1), a.b(2));
    return a.outList({values, indices});
  });
  def(env, exports, "multinomial", [](Args& a) { return a.out(at::multinomial(a.t(0), a.i64(1), a.b(2))); });

  // ----- shapes and indexing ------------------------------------------------------------------------
  rec(env, exports, "reshape", [](Args& a) { return a.out(a.t(0).reshape(a.ints(1))); });
  rec(env, exports, "view", [](Args& a) { return a.out(a.t(0).view(a.ints(1))); });
  rec(env, exports, "transpose", [](Args& a) { return a.out(a.t(0).transpose(a.i64(1), a.i64(2))); });
  rec(env, exports, "permute", [](Args& a) { return a.out(a.t(0).permute(a.ints(1))); });
  rec(env, exports, "unsqueeze", [](Args& a) { return a.out(a.t(0).unsqueeze(a.i64(1))); });
  rec(env, exports, "squeeze", [](Args& a) { return a.out(a.t(0).squeeze(a.i64(1))); });
  rec(env, exports, "expand", [](Args& a) { return a.out(a.t(0).expand(a.ints(1))); });
  rec(env, exports, "narrow", [](Args& a) { return a.out(a.t(0).narrow(a.i64(1), a.i64(2), a.i64(3))); });
  rec(env, exports, "select", [](Args& a) { return a.out(a.t(0).select(a.i64(1), a.i64(2))); });
  rec(env, exports, "indexSelect", [](Args& a) { return a.out(at::index_select(a.t(0), a.i64(1), a.t(2))); });
  rec(env, exports, "gather", [](Args& a) { return a.out(at::gather(a.t(0), a.i64(1), a.t(2))); });
  rec(env, exports, "cat", [](Args& a) { return a.out(at::cat(a.tensors(0), a.i64(1))); });
  rec(env, exports, "stack", [](Args& a) { return a.out(at::stack(a.tensors(0), a.i64(1))); });
  rec(env, exports, "triu", [](Args& a) { return a.out(at::triu(a.t(0), a.i64(1))); });
  rec(env, exports, "tril", [](Args& a) { return a.out(at::tril(a.t(0), a.i64(1))); });
  rec(env, exports, "flatten", [](Args& a) { return a.out(at::flatten(a.t(0), a.i64(1), a.i64(2))); });
  rec(env, exports, "repeat", [](Args& a) { return a.out(a.t(0).repeat(a.ints(1))); });
  rec(env, exports, "unbind", [](Args& a) { return a.outList(at::unbind(a.t(0), a.i64(1))); });

  // ----- linear algebra and layers -----------------------------------------------------------------
  // One query row per batch entry (attention in a decode step) takes native/small-gemm.h's rowMatmul.
  rec(env, exports, "matmul", [](Args& a) {
    namespace sg = oasft::smallgemm;
    return a.out(sg::rowMatmulApplies(a.t(0), a.t(1)) ? sg::rowMatmul(a.t(0), a.t(1)) : at::matmul(a.t(0), a.t(1)));
  });
  rec(env, exports, "bmm", [](Args& a) {
    namespace sg = oasft::smallgemm;
    return a.out(sg::rowMatmulApplies(a.t(0), a.t(1)) ? sg::rowMatmul(a.t(0), a.t(1)) : at::bmm(a.t(0), a.t(1)));
  });
  rec(env, exports, "baddbmm", [](Args& a) {
    const at::Tensor &c = a.t(0), &x = a.t(1), &m = a.t(2);
    if (oasft::smallgemm::rowMatmulApplies(x, m, &c))
      return a.out(oasft::smallgemm::rowMatmul(x, m, &c, a.scalar(3).toDouble(), a.scalar(4).toDouble()));
    return a.out(at::baddbmm(c, x, m, a.scalar(3), a.scalar(4)));
  });
  // A few rows without gradients (a decode step for a small batch) take native/small-gemm.h; a single input
  // row (batch-1 decoding) goes through matrix-vector BLAS: OpenBLAS's GEMM with m = 1 is ~5x slower than
  // its GEMV on these CPUs. Same math: test/torch/tensor.test.ts and small-gemm.test.ts compare them with GEMM.
  // fp32 and fp64 only: a bf16 row through at::mv takes libtorch's reference loop, where at::linear takes
  // oneDNN's bf16 GEMM (~2.5x less time per bloom-160m decode step on an AVX-512 BF16 CPU).
  rec(env, exports, "linear", [](Args& a) {
    const at::Tensor &x = a.t(0), &w = a.t(1);
    c10::optional<at::Tensor> bias = a.optT(2);
    if (oasft::smallgemm::applies(x, w, bias)) return a.out(oasft::smallgemm::linear(x, w, bias));  // a few rows
    const bool blasType = x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble;
    if (x.device().is_cpu() && blasType && x.dim() >= 1 && w.dim() == 2 && x.numel() == x.size(-1) &&
        x.size(-1) == w.size(1)) {
      at::Tensor row = x.reshape({x.size(-1)});
      at::Tensor y = bias ? at::addmv(*bias, w, row) : at::mv(w, row);
      std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
      shape.back() = w.size(0);
      return a.out(y.view(shape));
    }
    return a.out(at::linear(x, w, bias));
  });
  rec(env, exports, "embedding", [](Args& a) { return a.out(at::embedding(a.t(0), a.t(1))); });
  rec(env, exports, "layerNorm", [](Args& a) {
    return a.out(at::layer_norm(a.t(0), a.ints(1), a.optT(2), a.optT(3), a.f(4), /*cudnn_enable=*/true));
  });
  def(env, exports, "dropout", [](Args& a) { return a.out(at::dropout(a.t(0), a.f(1), a.b(2))); });
  // crossEntropy(logits [N, V], target [N], ignoreIndex, reduction, labelSmoothing)
  rec(env, exports, "crossEntropy", [](Args& a) {
    return a.out(at::cross_entropy_loss(a.t(0), a.t(1), c10::nullopt, reductionFrom(a, 3), a.i64(2), a.has(4) ? a.f(4) : 0.0));
  });

  // ----- fused optimizer step --------------------------------------------------------------------------
  // adamwStep_(param, grad, expAvg, expAvgSq, lr, beta1, beta2, eps, weightDecay, step): one AdamW update
  // in a single pass over float32 CPU memory (the composite version reads and writes each tensor ~20
  // times). Same arithmetic as torch.optim.AdamW; src/train/adamw.ts keeps the composite reference.
  def(env, exports, "adamwStep_", [](Args& a) {
    const at::Tensor &p = a.t(0), &g = a.t(1), &m = a.t(2), &v = a.t(3);
    for (const at::Tensor* t : {&p, &g, &m, &v}) {
      if (!t->device().is_cpu() || t->scalar_type() != at::kFloat || !t->is_contiguous() || t->numel() != p.numel()) {
        a.bad(0, "contiguous float32 CPU tensors of one size (param, grad, exp_avg, exp_avg_sq)");
      }
    }
    const float lr = static_cast<float>(a.f(4)), beta1 = static_cast<float>(a.f(5)), beta2 = static_cast<float>(a.f(6));
    const float eps = static_cast<float>(a.f(7)), wd = static_cast<float>(a.f(8));
    const double step = a.f(9);
    const float decay = 1.0f - lr * wd;
    const float stepSize = static_cast<float>(a.f(4) / (1.0 - std::pow(a.f(5), step)));
    const float bc2Sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(a.f(6), step)));
    float* __restrict pp = p.data_ptr<float>();
    float* __restrict mp = m.data_ptr<float>();
    float* __restrict vp = v.data_ptr<float>();
    const float* __restrict gp = g.data_ptr<float>();
    at::parallel_for(0, p.numel(), 16384, [=](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; i++) {
        const float grad = gp[i];
        const float mi = mp[i] * beta1 + (1.0f - beta1) * grad;
        const float vi = vp[i] * beta2 + (1.0f - beta2) * grad * grad;
        mp[i] = mi;
        vp[i] = vi;
        pp[i] = pp[i] * decay - stepSize * (mi / (std::sqrt(vi) / bc2Sqrt + eps));
      }
    });
    return a.undef();
  });

  // ----- fast paths (native/fast.h): present only where the linked libtorch has them -----------------
  // features() → which of them this build has; src/torch/features.ts reads it once.
  def(env, exports, "features", [](Args& a) {
    auto out = Napi::Object::New(a.env());
    out.Set("sdpa", a.boolean(OASFT_HAS_SDPA));
    out.Set("fusedAdamw", a.boolean(OASFT_HAS_FUSED_ADAMW));
    out.Set("cudaAllocatorStats", a.boolean(OASFT_HAS_CUDA_ALLOC));
    out.Set("cudaGraph", a.boolean(OASFT_HAS_CUDA_GRAPH));
    out.Set("smallGemm", Napi::String::New(a.env(), oasft::smallgemm::name()));
    return out;
  });
#if OASFT_HAS_SDPA
  // sdpa(q [b,n,s,d], k [b,n,S,d], v [b,n,S,d], mask [.., s, S] additive | undefined, dropout, isCausal, scale)
  rec(env, exports, "sdpa", [](Args& a) {
    return a.out(oasft::fast::sdpa(a.t(0), a.t(1), a.t(2), a.optT(3), a.f(4), a.b(5), a.f(6)));
  });
#endif
#if OASFT_HAS_FUSED_ADAMW
  // fusedAdamw_(params[], grads[], expAvgs[], expAvgSqs[], lr, beta1, beta2, eps, weightDecay, step)
  def(env, exports, "fusedAdamw_", [](Args& a) {
    oasft::fast::adamw(a.tensors(0), a.tensors(1), a.tensors(2), a.tensors(3), a.f(4), a.f(5), a.f(6), a.f(7), a.f(8), a.f(9));
    return a.undef();
  });
#endif
#if OASFT_HAS_CUDA_ALLOC
  // cudaMemory(device) → [allocated bytes now, peak since reset, reserved by the cache]
  def(env, exports, "cudaMemory", [](Args& a) {
    auto v = oasft::fast::cudaMemory(static_cast<int>(a.i64(0)));
    auto arr = Napi::Array::New(a.env(), v.size());
    for (size_t k = 0; k < v.size(); k++) arr.Set(static_cast<uint32_t>(k), a.num(v[k]));
    return arr;
  });
  def(env, exports, "cudaResetPeakMemory", [](Args& a) { oasft::fast::cudaResetPeak(static_cast<int>(a.i64(0))); return a.undef(); });
  def(env, exports, "cudaEmptyCache", [](Args& a) { oasft::fast::cudaEmptyCache(); return a.undef(); });
#endif

  // ----- captured steps (native/tape.h) -------------------------------------------------------------
  // tapeBegin(): records the recordable ops called until tapeEnd (one recording at a time).
  def(env, exports, "tapeBegin", [](Args& a) {
    auto& recording = oasft::tape::current();
    if (recording) throw std::runtime_error("a tape is already recording");
    recording = std::make_unique<Recording>();
    recording->tape.gradEnabled = at::GradMode::is_enabled();
    return a.undef();
  });
  // tapeEnd(outputs[]) → the tape, or a string saying why the recording cannot be replayed.
  def(env, exports, "tapeEnd", [](Args& a) {
    auto r = std::move(oasft::tape::current());
    if (!r) throw std::runtime_error("no tape is recording");
    return finishRecording(a, std::move(r));
  });
  // tapeAbort(): drops a recording in progress, if any (the step threw).
  def(env, exports, "tapeAbort", [](Args& a) { oasft::tape::current().reset(); return a.undef(); });
  // tapeReplay(tape) → its outputs, computed again from the current contents of the tensors it reads.
  def(env, exports, "tapeReplay", [](Args& a) {
    oasft::tape::Tape& tape = tapeOf(a, 0);
    if (tape.steps.empty() && tape.outputs.empty()) throw std::runtime_error("this tape was disposed");
    return a.outList(replayTape(tape));
  });
  // tapeInfo(tape) → [ops, slots, constant tensors held, CUDA graph: "graph" (replays as one), "" (none), or
  // why capture failed]
  def(env, exports, "tapeInfo", [](Args& a) {
    oasft::tape::Tape& tape = tapeOf(a, 0);
    auto arr = Napi::Array::New(a.env(), 4);
    arr.Set(0u, a.num(static_cast<double>(tape.steps.size())));
    arr.Set(1u, a.num(tape.slots));
    arr.Set(2u, a.num(static_cast<double>(tape.constants)));
    arr.Set(3u, Napi::String::New(a.env(), tape.graph ? "graph" : tape.graphError));
    return arr;
  });
  // tapeProfile(tape, enable) → [[op name, seconds summed over replays since profiling began], ...] per
  // step, in tape order; enable starts (or restarts) the sums, false stops them.
  def(env, exports, "tapeProfile", [](Args& a) {
    oasft::tape::Tape& tape = tapeOf(a, 0);
    auto arr = Napi::Array::New(a.env(), tape.seconds.size());
    for (size_t k = 0; k < tape.seconds.size(); k++) {
      auto row = Napi::Array::New(a.env(), 2);
      row.Set(0u, Napi::String::New(a.env(), tape.steps[k].op->name));
      row.Set(1u, a.num(tape.seconds[k]));
      arr.Set(static_cast<uint32_t>(k), row);
    }
    tape.profiling = a.b(1);
    tape.seconds.assign(tape.profiling ? tape.steps.size() : 0, 0.0);
    return arr;
  });
  // tapeDispose(tape): frees what the tape holds (its constants: weights, caches) now.
  def(env, exports, "tapeDispose", [](Args& a) { tapeOf(a, 0) = oasft::tape::Tape(); return a.undef(); });

  // ----- collectives (native/dist.h; absent when libtorch was built without them) ------------------
  def(env, exports, "distAvailable", [](Args& a) { return a.boolean(OASFT_HAS_DIST); });
#if OASFT_HAS_DIST
  // distInit(rank, world, masterAddr, masterPort, backend "gloo"|"nccl", timeoutMs)
  def(env, exports, "distInit", [](Args& a) {
    oasft::dist::init(static_cast<int>(a.i64(0)), static_cast<int>(a.i64(1)), a.str(2), static_cast<int>(a.i64(3)), a.str(4), a.i64(5));
    return a.undef();
  });
  def(env, exports, "distDestroy", [](Args& a) { oasft::dist::destroy(); return a.undef(); });
  def(env, exports, "distAllReduce", [](Args& a) { oasft::dist::allReduce(a.t(0), a.str(1)); return a.undef(); });
  def(env, exports, "distAllGather", [](Args& a) { oasft::dist::allGather(a.tensors(0), a.t(1)); return a.undef(); });
  def(env, exports, "distReduceScatter", [](Args& a) { oasft::dist::reduceScatter(a.t(0), a.tensors(1)); return a.undef(); });
  def(env, exports, "distBroadcast", [](Args& a) { oasft::dist::broadcast(a.t(0), static_cast<int>(a.i64(1))); return a.undef(); });
  def(env, exports, "distBarrier", [](Args& a) { oasft::dist::barrier(); return a.undef(); });
#endif
  // setData(param, value): param takes value's storage and shape, keeping its autograd identity
  // (Python's `param.data = value`); ZeRO-3 frees and re-gathers sharded parameters this way.
  def(env, exports, "setData", [](Args& a) { a.t(0).set_data(a.t(1)); return a.undef(); });

  // ----- autograd and modes ----------------------------------------------------------------------------
  // backward(outputs[], grads[] | undefined, retainGraph)
  def(env, exports, "backward", [](Args& a) {
    std::vector<at::Tensor> grads = a.has(1) ? a.tensors(1) : std::vector<at::Tensor>{};
    torch::autograd::backward(a.tensors(0), grads, a.has(2) ? c10::optional<bool>(a.b(2)) : c10::nullopt);
    return a.undef();
  });
  def(env, exports, "setGradEnabled", [](Args& a) {
    bool previous = at::GradMode::is_enabled();
    at::GradMode::set_enabled(a.b(0));
    return a.boolean(previous);
  });
  // setAutocastCacheEnabled(enabled) → previous. Autocast keeps its cast copy of each fp32 weight until
  // the region ends; ZeRO-3 frees weights block by block, so it turns the cache off.
  def(env, exports, "setAutocastCacheEnabled", [](Args& a) {
    bool previous = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(a.b(0));
    return a.boolean(previous);
  });
  def(env, exports, "isGradEnabled", [](Args& a) { return a.boolean(at::GradMode::is_enabled()); });
  // setAutocast(deviceType "cpu"|"cuda", enabled, dtype) → previous [enabled, dtype].
  // Leaving autocast clears its cache of casted weights, as torch.autocast's __exit__ does;
  // otherwise a later step would reuse weights cast before the optimizer changed them.
  def(env, exports, "setAutocast", [](Args& a) {
    bool cuda = a.str(0) == "cuda";
    bool wasEnabled = oasft::autocastEnabled(cuda);
    at::ScalarType wasDtype = oasft::autocastDtype(cuda);
    bool enable = a.b(1);
    oasft::setAutocast(cuda, enable, a.dtype(2));
    if (wasEnabled && !enable) at::autocast::clear_cache();
    auto previous = Napi::Array::New(a.env(), 2);
    previous.Set(0u, a.boolean(wasEnabled));
    previous.Set(1u, a.num(static_cast<int>(wasDtype)));
    return previous;
  });

  return exports;
}

}  // namespace

NODE_API_MODULE(oasft_torch, Init)
