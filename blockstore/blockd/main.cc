// dadi-blockd: serves images (stacks of overlaybd layer blobs read lazily from registries) as
// read-only block devices with their file systems mounted, for dadi-snapshotter. Usage:
// dadi-blockd [--config FILE] [flags, see config.h]. On SIGTERM or SIGINT it stops serving,
// detaches every device and unmounts its FUSE mount.
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "blockstore/blockd/attachment_table.h"
#include "blockstore/blockd/config.h"
#include "blockstore/blockd/image_opener.h"
#include "blockstore/blockd/service.h"
#include "blockstore/daemon/daemon.h"
#include "blockstore/device/fuse_loop_backend.h"
#include "blockstore/remote/node_cache.h"
#include "blockstore/remote/registry_client.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore::blockd {
namespace {

// Creates missing directories of `path` with mode 0700 (umask 0077 is set).
absl::Status MakeDirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", path, ": ", ec.message()));
  return absl::OkStatus();
}

int Run(int argc, char** argv) {
  absl::StatusOr<CommandLine> cli = ParseCommandLine(argc, argv);
  if (!cli.ok()) {
    std::fprintf(stderr, "dadi-blockd: %s\n", std::string(cli.status().message()).c_str());
    return 2;
  }
  if (cli->exit_code) {
    std::fputs(cli->message.c_str(), *cli->exit_code == 0 ? stdout : stderr);
    return *cli->exit_code;
  }
  const Config& config = cli->config;

  daemon::SetUpLogging("dadi-blockd", config.log_level);
  ::umask(0077);
  // Before any thread starts: every thread inherits the blocked stop signals.
  const daemon::StopSignals stop_signals;

  for (const std::string& dir : {config.state_dir, config.cache_dir}) {
    if (absl::Status s = MakeDirs(dir); !s.ok()) {
      spdlog::critical("{}", s.ToString());
      return 1;
    }
  }
  NodeCacheOptions cache_options;
  cache_options.root = config.cache_dir;
  cache_options.unit_size = config.cache_unit;
  cache_options.fetch_size = std::max(config.cache_fetch, config.cache_unit);
  cache_options.size_limit = config.cache_size_limit;
  absl::StatusOr<std::shared_ptr<NodeCache>> cache = NodeCache::Open(cache_options);
  if (!cache.ok()) {
    spdlog::critical("node cache {}: {}", config.cache_dir, cache.status().ToString());
    return 1;
  }
  auto client = std::make_shared<const RegistryClient>(config.registry);

  FuseLoopBackendOptions backend_options;
  backend_options.state_dir = config.state_dir;
  backend_options.fuse.threads = config.fuse_threads;
  backend_options.loop.direct_io = config.loop_direct_io;
  backend_options.loop.read_ahead_kb = config.device_read_ahead_kb;
  absl::StatusOr<std::unique_ptr<FuseLoopBackend>> backend =
      FuseLoopBackend::Create(backend_options);
  if (!backend.ok()) {
    spdlog::critical("device backend in {}: {}", config.state_dir, backend.status().ToString());
    return 1;
  }
  ImageOpenerOptions opener_options;
  opener_options.remote.max_readahead = config.readahead_bytes;
  opener_options.block_cache_bytes = config.block_cache_bytes;
  ImageOpener opener(client, *cache, opener_options);
  auto table = std::make_unique<AttachmentTable>(&opener, backend->get());

  BlockdService service(table.get());
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  absl::StatusOr<std::unique_ptr<grpc::Server>> server =
      daemon::StartUnixServer(builder, config.socket);
  if (!server.ok()) {
    spdlog::critical("socket {}: {}", config.socket, server.status().ToString());
    return 1;
  }
  spdlog::info("dadi-blockd serving on {} (state {}, cache {})", config.socket, config.state_dir,
               config.cache_dir);

  daemon::ServeUntilStopped(**server, stop_signals, config.socket);
  server->reset();
  int rc = 0;
  if (absl::Status s = table->DetachAll(); !s.ok()) {
    spdlog::error("detaching at shutdown: {}", s.ToString());
    rc = 1;
  }
  table.reset();
  backend->reset();  // unmounts the FUSE mount
  if (absl::Status s = (*cache)->Flush(); !s.ok()) spdlog::warn("cache flush: {}", s.ToString());
  spdlog::info("stopped");
  return rc;
}

}  // namespace
}  // namespace dadi::blockstore::blockd

int main(int argc, char** argv) { return dadi::blockstore::blockd::Run(argc, argv); }
