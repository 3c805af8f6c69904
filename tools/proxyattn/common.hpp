// What the tool's commands share: the config options, moving inputs to a device, timing, and
// the accuracy metrics of a sparse run against dense attention.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "proxyattn/proxyattn.hpp"

namespace proxyattn::tool {

// A bad command line or input file: printed and turned into exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
  // From a library error, without the "proxyattn: " its message starts with (main adds one).
  explicit UsageError(const Error& e) : std::runtime_error(without_prefix(e.what())) {}
  static std::string without_prefix(const std::string& s) {
    const std::string prefix = "proxyattn: ";
    return s.rfind(prefix, 0) == 0 ? s.substr(prefix.size()) : s;
  }
};

struct CommonOptions {
  Config config;
  std::string device = "auto";  // auto, cpu, cuda
  std::string dtype = "bf16";
  std::string budget_mode = budget_mode_name(Config{}.budget_mode);
  bool no_sink = false;
  std::string cpu_kernels;  // empty: the widest level this CPU runs
  bool json = false;
  int repeat = 0;  // 0: 1 on the CPU, 5 on CUDA
};

// Applies the string options to o.config and checks them; throws UsageError.
void finish_options(CommonOptions& o);
Device resolve_device(const std::string& name);
DType parse_dtype(const std::string& name);

// Inputs and outputs on the run's device, in the run's dtype.
struct DeviceTensors {
  Problem problem;
  Buffer q, k, v, out_sparse, out_dense, lse_sparse, lse_dense;
  TensorView qv, kv, vv, osv, odv, lsv, ldv;
};
// From fp32 host arrays ([tokens, heads, dim], row-major): converted to problem.dtype.
DeviceTensors upload(const Problem& problem, const float* q, const float* k, const float* v);
// From raw host bytes already in problem.dtype.
DeviceTensors upload_raw(const Problem& problem, const void* q, const void* k, const void* v);

// Median wall time of fn over `repeat` runs after one warm-up (none on the CPU when repeat is 1),
// synchronising the device around each run.
double time_ms(Device device, int repeat, const std::function<void()>& fn);

struct Measurement {
  HostEstimate estimate;
  double estimate_ms = 0, sparse_ms = 0, dense_ms = 0;
  std::vector<double> recall, error;  // per head
  double recall_mean = 0, error_total = 0;
};
// Dense, estimate and sparse attention on t, with the metrics of sparse against dense. Each step
// says on stderr what it does and how long it took.
Measurement measure(Plan& plan, DeviceTensors& t, int repeat);

// Prints the per-head table and the totals (or JSON) of a measurement, then a plain reading of
// it. head_note(h) may say why a head is the kind of head it is (an empty string: nothing).
void report(const Plan& plan, const Measurement& m, bool json, const std::string& title,
            const std::function<std::string(int)>& head_note = {});

// A step of a long command: "what... " on stderr now, "N s" when done() is called.
struct Progress {
  explicit Progress(const std::string& what);
  void done();
  std::chrono::steady_clock::time_point start;
};

// The label of the plan's backend: "cpu (avx2 kernels)", "cuda", ...
std::string backend_label(const Plan& plan);

int default_repeat(Device device, int requested);

}  // namespace proxyattn::tool
