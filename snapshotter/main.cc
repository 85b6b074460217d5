// dadi-snapshotter: serves containerd's snapshots API on a unix socket (a containerd proxy
// plugin). Usage: dadi-snapshotter [--config FILE] [--root DIR] [--address SOCKET]
// [--log-level LEVEL]. Stops cleanly on SIGTERM or SIGINT.
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "blockstore/daemon/daemon.h"
#include "snapshotter/blockd_attacher.h"
#include "snapshotter/config.h"
#include "snapshotter/fs_util.h"
#include "snapshotter/service.h"
#include "snapshotter/snapshotter.h"
#include "spdlog/spdlog.h"

namespace dadi::snapshotter {
namespace {

namespace daemon = ::dadi::blockstore::daemon;

int Run(int argc, char** argv) {
  auto cli = ParseCommandLine(argc, argv);
  if (!cli.ok()) {
    std::fprintf(stderr, "dadi-snapshotter: %s\n", std::string(cli.status().message()).c_str());
    return 2;
  }
  if (cli->exit_code) {
    std::fputs(cli->message.c_str(), *cli->exit_code == 0 ? stdout : stderr);
    return *cli->exit_code;
  }
  const Config& config = cli->config;

  daemon::SetUpLogging("dadi-snapshotter", config.log_level);
  // Everything the daemon creates is private unless it says otherwise (snapshot dirs chmod
  // themselves).
  ::umask(0077);
  // Before any thread starts: every thread inherits the blocked stop signals.
  const daemon::StopSignals stop_signals;

  std::shared_ptr<BlockAttacher> attacher;
  if (!config.blockd_address.empty()) {
    attacher = std::make_shared<BlockdAttacher>(config.blockd_address);
  }
  auto snapshotter = Snapshotter::Open(config.root, attacher, config.fallback_repository);
  if (!snapshotter.ok()) {
    spdlog::critical("opening {}: {}", config.root, snapshotter.status().ToString());
    return 1;
  }
  const auto& report = (*snapshotter)->reconcile_report();
  if (!report.removed_dirs.empty() || !report.dropped_snapshots.empty()) {
    spdlog::warn("reconciled {}: removed {} stray directories, dropped {} snapshots", config.root,
                 report.removed_dirs.size(), report.dropped_snapshots.size());
  }

  SnapshotsService service(snapshotter->get());
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  absl::StatusOr<std::unique_ptr<grpc::Server>> server =
      daemon::StartUnixServer(builder, config.address);
  if (!server.ok()) {
    spdlog::critical("socket {}: {}", config.address, server.status().ToString());
    return 1;
  }
  spdlog::info("dadi-snapshotter serving on {} (root {}, {})", config.address, config.root,
               config.blockd_address.empty()
                   ? std::string("remote layers disabled")
                   : absl::StrCat("remote layers through dadi-blockd at ", config.blockd_address));

  daemon::ServeUntilStopped(**server, stop_signals, config.address);
  server->reset();
  snapshotter->reset();
  spdlog::info("stopped");
  return 0;
}

}  // namespace
}  // namespace dadi::snapshotter

int main(int argc, char** argv) { return dadi::snapshotter::Run(argc, argv); }
