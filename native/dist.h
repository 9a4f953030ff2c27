// Collectives for data-parallel and ZeRO training: libtorch's c10d, nothing home-made.
//   rendezvous: a TCPStore served by rank 0 at MASTER_ADDR:MASTER_PORT (the torchrun contract);
//   transport:  ProcessGroupGloo on CPU tensors, ProcessGroupNCCL on CUDA tensors.
// One process group per process, made by distInit and ended by distDestroy. Every collective is
// synchronous (issued, then waited on with the group's timeout), so a dead or stuck peer turns into
// an error on the surviving ranks instead of a hang.
//
// The headers differ between libtorch 1.13 (a backend *is* a ProcessGroup) and 2.x (a backend is a
// c10d::Backend behind a ProcessGroup); both expose the same collective methods, used here.
#pragma once

#if __has_include(<torch/csrc/distributed/c10d/TCPStore.hpp>)
#define OASFT_HAS_DIST 1
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
// Gloo's own headers come with Debian's libgloo-dev (pip wheels may lack them: then CUDA runs NCCL only).
#if __has_include(<gloo/config.h>)
#define OASFT_HAS_GLOO 1
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
// NCCL: a CUDA libtorch and nccl.h (pip's nvidia-nccl package); native/libtorch.mjs defines OASFT_WITH_NCCL.
#if defined(OASFT_WITH_NCCL) && __has_include(<nccl.h>)
#define OASFT_HAS_NCCL 1
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#else
#define OASFT_HAS_DIST 0
#endif

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace oasft::dist {

#if OASFT_HAS_DIST

#if OASFT_TORCH_AT_LEAST(2, 0)
using Group = c10d::Backend;
#else
using Group = c10d::ProcessGroup;
#endif

struct State {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Group> group;
  std::string backend;
  std::chrono::milliseconds timeout{600000};
  int rank = 0;
  int world = 1;
};

inline State& state() {
  static State s;
  return s;
}

inline State& live(const char* op) {
  State& s = state();
  if (!s.group) throw std::runtime_error(std::string(op) + ": no process group (call init first)");
  return s;
}

inline void waitFor(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
  State& s = state();
  try {
    work->wait(s.timeout);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(what) + " failed on rank " + std::to_string(s.rank) + " of " + std::to_string(s.world) +
                             " (a peer rank died, or did not join within " + std::to_string(s.timeout.count() / 1000) +
                             " s): " + e.what());
  }
}

inline void createGroup(State& s, int rank, int world, const std::string& backend);

// Every rank announces itself in the store, then waits until all `world` have, within `timeout`
// (polled, so the deadline is the caller's, not one per library layer). A rank that never came is
// named, with where the others waited and for how long.
inline void joinAll(c10d::Store& store, int rank, int world, const std::string& where, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::string me = "rank " + std::to_string(rank);
  try {
    store.set("oasft/joined/" + std::to_string(rank), std::vector<uint8_t>{1});
    for (int64_t n = store.add("oasft/joined", 1); n < world; n = store.add("oasft/joined", 0)) {
      if (std::chrono::steady_clock::now() >= deadline) {
        std::string missing;
        for (int r = 0; r < world; r++) {
          if (!store.check({"oasft/joined/" + std::to_string(r)})) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
        }
        throw std::runtime_error(me + ": rank(s) " + missing + " of " + std::to_string(world) + " did not join the rendezvous at " +
                                 where + " within " + std::to_string(timeout.count() / 1000) +
                                 " s (dist_timeout); were they started, with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE?");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).rfind(me, 0) == 0) throw;
    throw std::runtime_error(me + ": lost the rendezvous at " + where + " while the ranks joined (did rank 0 exit?): " + e.what());
  }
}

// Rank 0 serves the store; every rank (rank 0 too) is a client of it. The store waits for all
// `world` ranks within `timeout`, so a rank that cannot reach the master fails instead of hanging.
inline void init(int rank, int world, const std::string& addr, int port, const std::string& backend, int64_t timeoutMs) {
  State& s = state();
  if (s.group) throw std::runtime_error("a process group already exists in this process");
  s.timeout = std::chrono::milliseconds(timeoutMs);
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(port);
  o.isServer = rank == 0;
  o.numWorkers = static_cast<std::size_t>(world);
  // The store's own wait for its workers is not used: joinAll below waits within the same timeout and
  // can say which ranks never came.
  o.waitWorkers = false;
  o.timeout = s.timeout;
  try {
    s.store = c10::make_intrusive<c10d::TCPStore>(addr, o);
  } catch (const std::exception& e) {
    std::string why = e.what();
    std::string where = addr + ":" + std::to_string(port);
    if (rank == 0 && why.find("ddress already in use") != std::string::npos) {
      throw std::runtime_error("rank 0 cannot serve the rendezvous at " + where + ": MASTER_PORT " + std::to_string(port) +
                               " is in use (choose another --master_port)");
    }
    throw std::runtime_error("rank " + std::to_string(rank) + " could not rendezvous at " + where + " within " +
                             std::to_string(timeoutMs / 1000) + " s (is rank 0 running there, and are all " +
                             std::to_string(world) + " ranks started?): " + why);
  }
  joinAll(*s.store, rank, world, addr + ":" + std::to_string(port), s.timeout);
  try {
    createGroup(s, rank, world, backend);
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(rank) + ": the " + backend + " group of " + std::to_string(world) +
                             " ranks (rendezvous at " + addr + ":" + std::to_string(port) + ") could not form: " + e.what());
  }
  s.backend = backend;
  s.rank = rank;
  s.world = world;
}

inline void createGroup(State& s, int rank, int world, const std::string& backend) {
  if (backend == "gloo") {
#if defined(OASFT_HAS_GLOO)
    auto options = c10d::ProcessGroupGloo::Options::create(s.timeout);
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    s.group = c10::make_intrusive<c10d::ProcessGroupGloo>(s.store, rank, world, options);
#else
    throw std::runtime_error("backend gloo: this addon was built without Gloo's headers (Debian: apt-get install libgloo-dev, then npm rebuild)");
#endif
  } else if (backend == "nccl") {
#if defined(OASFT_HAS_NCCL)
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = s.timeout;
    s.group = c10::make_intrusive<c10d::ProcessGroupNCCL>(s.store, rank, world, options);
#else
    throw std::runtime_error("backend nccl: this addon was built without NCCL (a CUDA libtorch with nccl.h is needed)");
#endif
  } else {
    throw std::runtime_error("unknown backend '" + backend + "' (expected gloo or nccl)");
  }
}

inline void destroy() {
  State& s = state();
  s.group.reset();
  s.store.reset();
}

inline c10d::ReduceOp reduceOp(const std::string& op) {
  if (op == "sum") return c10d::ReduceOp::SUM;
  if (op == "max") return c10d::ReduceOp::MAX;
  if (op == "min") return c10d::ReduceOp::MIN;
  throw std::runtime_error("unknown reduce op '" + op + "' (expected sum, max or min)");
}

inline void allReduce(at::Tensor t, const std::string& op) {
  State& s = live("allReduce");
  std::vector<at::Tensor> ts{std::move(t)};
  c10d::AllreduceOptions o;
  o.reduceOp = reduceOp(op);
  o.timeout = s.timeout;
  waitFor(s.group->allreduce(ts, o), "allReduce");
}

// outputs[k] receives rank k's `input` (all of the same shape).
inline void allGather(const std::vector<at::Tensor>& outputs, at::Tensor input) {
  State& s = live("allGather");
  std::vector<std::vector<at::Tensor>> outs{outputs};
  std::vector<at::Tensor> ins{std::move(input)};
  c10d::AllgatherOptions o;
  o.timeout = s.timeout;
  waitFor(s.group->allgather(outs, ins, o), "allGather");
}

// output = Σ over ranks of inputs[rank of this process]; only NCCL implements it (Gloo in 1.13 does
// not), so the TS side falls back to allReduce + narrow on Gloo.
inline void reduceScatter(at::Tensor output, const std::vector<at::Tensor>& inputs) {
  State& s = live("reduceScatter");
  std::vector<at::Tensor> outs{std::move(output)};
  std::vector<std::vector<at::Tensor>> ins{inputs};
  c10d::ReduceScatterOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  o.timeout = s.timeout;
  waitFor(s.group->reduce_scatter(outs, ins, o), "reduceScatter");
}

inline void broadcast(at::Tensor t, int root) {
  State& s = live("broadcast");
  std::vector<at::Tensor> ts{std::move(t)};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  o.timeout = s.timeout;
  waitFor(s.group->broadcast(ts, o), "broadcast");
}

inline void barrier() {
  State& s = live("barrier");
  c10d::BarrierOptions o;
  o.timeout = s.timeout;
  waitFor(s.group->barrier(o), "barrier");
}

#endif  // OASFT_HAS_DIST

}  // namespace oasft::dist
