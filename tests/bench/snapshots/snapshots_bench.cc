// snapshots_bench: latency and throughput of the snapshot life cycle of a container layer —
// Prepare (on a committed parent), Mounts, Commit, Remove — through containerd's own
// snapshots API (containerd.services.snapshots.v1.Snapshots on containerd's socket), for each
// snapshotter named, in the same process and interleaved in batches so that both see the same
// machine. Prints p50/p99 per call and per cycle, cycles/s, and the ratio of the first
// snapshotter to the second.
//
//   snapshots_bench --address /run/containerd/containerd.sock --namespace bench
//       --snapshotter dadi --snapshotter overlayfs --cycles 500
//
// containerd's metadata layer sits in front of every snapshotter, so what is measured is what
// a client of containerd sees. containerd removes the backend snapshot during garbage
// collection, after Remove returns; that cost is not in the Remove latency of either
// snapshotter.

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"

namespace dadi::bench {
namespace {

namespace api = containerd::services::snapshots::v1;
using Clock = std::chrono::steady_clock;

// Without a lease, containerd's garbage collector removes snapshots that nothing references,
// and it runs after every Remove: the label makes each snapshot of ours a root until removed.
constexpr const char* kGcRoot = "containerd.io/gc.root";
constexpr const char* kGcRootValue = "snapshots_bench";

constexpr const char* kOps[] = {"prepare", "mounts", "commit", "remove", "cycle"};

struct Samples {
  std::map<std::string, std::vector<double>> ms;  // op -> latencies in milliseconds
  double total_seconds = 0;
  int cycles = 0;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

class Bench {
 public:
  Bench(std::shared_ptr<grpc::Channel> channel, std::string ns)
      : stub_(api::Snapshots::NewStub(channel)), ns_(std::move(ns)) {}

  // One call with the namespace header; returns false (and prints why) on error.
  template <typename Req, typename Resp, typename Fn>
  bool Call(const char* what, Fn fn, const Req& req, Resp* resp) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("containerd-namespace", ns_);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    grpc::Status s = (stub_.get()->*fn)(&ctx, req, resp);
    if (!s.ok()) {
      std::fprintf(stderr, "snapshots_bench: %s %s: %s (code %d)\n", what,
                   req.snapshotter().c_str(), s.error_message().c_str(),
                   static_cast<int>(s.error_code()));
      return false;
    }
    return true;
  }

  bool Prepare(const std::string& sn, const std::string& key, const std::string& parent) {
    api::PrepareSnapshotRequest req;
    req.set_snapshotter(sn);
    req.set_key(key);
    req.set_parent(parent);
    (*req.mutable_labels())[kGcRoot] = kGcRootValue;
    api::PrepareSnapshotResponse resp;
    return Call("Prepare", &api::Snapshots::Stub::Prepare, req, &resp);
  }
  bool Mounts(const std::string& sn, const std::string& key) {
    api::MountsRequest req;
    req.set_snapshotter(sn);
    req.set_key(key);
    api::MountsResponse resp;
    if (!Call("Mounts", &api::Snapshots::Stub::Mounts, req, &resp)) return false;
    if (resp.mounts_size() == 0) {
      std::fprintf(stderr, "snapshots_bench: Mounts %s %s: no mounts\n", sn.c_str(), key.c_str());
      return false;
    }
    return true;
  }
  bool Commit(const std::string& sn, const std::string& name, const std::string& key) {
    api::CommitSnapshotRequest req;
    req.set_snapshotter(sn);
    req.set_name(name);
    req.set_key(key);
    (*req.mutable_labels())[kGcRoot] = kGcRootValue;
    google::protobuf::Empty resp;
    return Call("Commit", &api::Snapshots::Stub::Commit, req, &resp);
  }
  bool Remove(const std::string& sn, const std::string& key) {
    api::RemoveSnapshotRequest req;
    req.set_snapshotter(sn);
    req.set_key(key);
    google::protobuf::Empty resp;
    return Call("Remove", &api::Snapshots::Stub::Remove, req, &resp);
  }

  // One cycle on top of `parent`; records each call's latency into `out` when given.
  bool Cycle(const std::string& sn, const std::string& parent, const std::string& key,
             Samples* out) {
    const std::string name = key + "-committed";
    auto t0 = Clock::now();
    if (!Prepare(sn, key, parent)) return false;
    auto t1 = Clock::now();
    if (!Mounts(sn, key)) return false;
    auto t2 = Clock::now();
    if (!Commit(sn, name, key)) return false;
    auto t3 = Clock::now();
    if (!Remove(sn, name)) return false;
    auto t4 = Clock::now();
    if (out != nullptr) {
      auto ms = [](Clock::time_point a, Clock::time_point b) {
        return std::chrono::duration<double, std::milli>(b - a).count();
      };
      out->ms["prepare"].push_back(ms(t0, t1));
      out->ms["mounts"].push_back(ms(t1, t2));
      out->ms["commit"].push_back(ms(t2, t3));
      out->ms["remove"].push_back(ms(t3, t4));
      out->ms["cycle"].push_back(ms(t0, t4));
      out->total_seconds += std::chrono::duration<double>(t4 - t0).count();
      out->cycles++;
    }
    return true;
  }

 private:
  std::unique_ptr<api::Snapshots::Stub> stub_;
  std::string ns_;
};

int Run(int argc, char** argv) {
  CLI::App app{"Prepare+Mounts+Commit+Remove latency through containerd's snapshots API"};
  std::string address = "/run/containerd/containerd.sock";
  std::string ns = "dadi-bench";
  std::vector<std::string> snapshotters;
  int cycles = 500;
  int warmup = 20;
  int batch = 50;
  app.add_option("--address", address, "containerd's gRPC socket")->capture_default_str();
  app.add_option("--namespace", ns, "containerd namespace to work in")->capture_default_str();
  app.add_option("--snapshotter", snapshotters,
                 "snapshotter to measure (repeat; the ratio is first / second)");
  app.add_option("--cycles", cycles, "measured cycles per snapshotter")->capture_default_str();
  app.add_option("--warmup", warmup, "unmeasured cycles first")->capture_default_str();
  app.add_option("--batch", batch, "cycles in a row before switching snapshotter")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (snapshotters.empty()) snapshotters = {"dadi", "overlayfs"};
  if (cycles <= 0 || batch <= 0) {
    std::fprintf(stderr, "snapshots_bench: --cycles and --batch must be positive\n");
    return 2;
  }

  Bench bench(
      grpc::CreateChannel(absl::StrCat("unix://", address), grpc::InsecureChannelCredentials()),
      ns);
  const std::string tag = absl::StrCat("bench-", getpid());

  // A committed parent per snapshotter, so Prepare builds a real layered mount.
  std::map<std::string, std::string> parents;
  for (const auto& sn : snapshotters) {
    const std::string key = absl::StrCat(tag, "-", sn, "-base-active");
    const std::string name = absl::StrCat(tag, "-", sn, "-base");
    if (!bench.Prepare(sn, key, "") || !bench.Commit(sn, name, key)) return 1;
    parents[sn] = name;
  }

  bool ok = true;
  int serial = 0;
  std::map<std::string, Samples> results;
  for (const auto& sn : snapshotters) {
    for (int i = 0; ok && i < warmup; ++i) {
      ok = bench.Cycle(sn, parents[sn], absl::StrCat(tag, "-", serial++), nullptr);
    }
  }
  for (int done = 0; ok && done < cycles; done += batch) {
    for (const auto& sn : snapshotters) {
      for (int i = 0; ok && i < batch && done + i < cycles; ++i) {
        ok = bench.Cycle(sn, parents[sn], absl::StrCat(tag, "-", serial++), &results[sn]);
      }
    }
  }
  for (const auto& [sn, parent] : parents) bench.Remove(sn, parent);
  if (!ok) return 1;

  std::printf(
      "snapshots_bench: %d cycles per snapshotter (Prepare on a committed parent, "
      "Mounts, Commit, Remove), via containerd's snapshots API on %s\n",
      cycles, address.c_str());
  std::printf("%-12s %-8s %10s %10s\n", "snapshotter", "call", "p50 ms", "p99 ms");
  for (const auto& sn : snapshotters) {
    const Samples& s = results[sn];
    for (const char* op : kOps) {
      const auto& v = s.ms.at(op);
      std::printf("%-12s %-8s %10.3f %10.3f\n", sn.c_str(), op, Percentile(v, 0.50),
                  Percentile(v, 0.99));
    }
    std::printf("%-12s %-8s %10.1f cycles/s (%.1f calls/s)\n", sn.c_str(), "rate",
                s.cycles / s.total_seconds, 4 * s.cycles / s.total_seconds);
  }
  if (snapshotters.size() >= 2) {
    const Samples& a = results[snapshotters[0]];
    const Samples& b = results[snapshotters[1]];
    std::printf("ratio %s/%s: cycle p50 %.2fx, cycle p99 %.2fx, cycles/s %.2fx\n",
                snapshotters[0].c_str(), snapshotters[1].c_str(),
                Percentile(a.ms.at("cycle"), 0.5) / Percentile(b.ms.at("cycle"), 0.5),
                Percentile(a.ms.at("cycle"), 0.99) / Percentile(b.ms.at("cycle"), 0.99),
                (a.cycles / a.total_seconds) / (b.cycles / b.total_seconds));
  }
  return 0;
}

}  // namespace
}  // namespace dadi::bench

int main(int argc, char** argv) { return dadi::bench::Run(argc, argv); }
