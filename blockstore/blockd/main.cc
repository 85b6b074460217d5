// dadi-blockd: serves images (stacks of overlaybd layer blobs read lazily from registries) as
// read-only block devices with their file systems mounted, for dadi-snapshotter. Usage:
// dadi-blockd [--config FILE] [flags, see config.h]. On SIGTERM or SIGINT it stops serving,
// detaches every device and unmounts its FUSE mount.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "blockstore/blockd/attachment_table.h"
#include "blockstore/blockd/config.h"
#include "blockstore/blockd/image_opener.h"
#include "blockstore/blockd/service.h"
#include "blockstore/device/fuse_loop_backend.h"
#include "blockstore/file/unique_fd.h"
#include "blockstore/remote/node_cache.h"
#include "blockstore/remote/registry_client.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore::blockd {
namespace {

absl::Status ErrnoError(int err, const std::string& what) {
  return absl::Status(absl::ErrnoToStatusCode(err), absl::StrCat(what, ": ", std::strerror(err)));
}

// Creates missing directories of `path` with mode 0700 (umask 0077 is set).
absl::Status MakeDirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", path, ": ", ec.message()));
  return absl::OkStatus();
}

// The socket's directory exists (0700 when we create it); a stale socket is removed, a live
// one (another server) is not taken over.
absl::Status PrepareSocketPath(const std::string& socket) {
  const std::string dir = socket.substr(0, socket.rfind('/'));
  if (!dir.empty()) {
    struct stat st;
    const bool existed = ::stat(dir.c_str(), &st) == 0;
    if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
    if (!existed && ::chmod(dir.c_str(), 0700) != 0) return ErrnoError(errno, "chmod " + dir);
    if (::stat(dir.c_str(), &st) == 0 && (st.st_mode & 0077) != 0) {
      spdlog::warn("socket directory {} is accessible to other users (mode {:o}); 0700 is advised",
                   dir, st.st_mode & 07777);
    }
  }
  struct stat st;
  if (::lstat(socket.c_str(), &st) != 0) return absl::OkStatus();
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(socket + " exists and is not a socket");
  }
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (socket.size() >= sizeof(sa.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path ", socket, " is too long"));
  }
  std::memcpy(sa.sun_path, socket.c_str(), socket.size() + 1);
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (probe.valid() &&
      ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(socket, " is in use by a running server"));
  }
  if (::unlink(socket.c_str()) != 0) return ErrnoError(errno, "unlink " + socket);
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

  auto logger = spdlog::stderr_color_mt("dadi-blockd");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_default_logger(logger);

  ::umask(0077);
  // Signals are taken by one thread with sigwait; block them before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  for (const std::string& dir : {config.state_dir, config.cache_dir}) {
    if (absl::Status s = MakeDirs(dir); !s.ok()) {
      spdlog::critical("{}", s.ToString());
      return 1;
    }
  }
  NodeCacheOptions cache_options;
  cache_options.root = config.cache_dir;
  cache_options.unit_size = config.cache_unit;
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

  if (absl::Status s = PrepareSocketPath(config.socket); !s.ok()) {
    spdlog::critical("socket {}: {}", config.socket, s.ToString());
    return 1;
  }
  BlockdService service(table.get());
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + config.socket, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  // The socket is created while the server starts: make it 0600 from birth (umask 0177), so
  // no client ever sees a wider mode, then go back to the daemon's umask.
  const mode_t daemon_umask = ::umask(0177);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ::umask(daemon_umask);
  if (server == nullptr) {
    spdlog::critical("cannot listen on unix:{}", config.socket);
    return 1;
  }
  if (::chmod(config.socket.c_str(), 0600) != 0) {
    spdlog::critical("chmod {}: {}", config.socket, std::strerror(errno));
    server->Shutdown();
    return 1;
  }
  spdlog::info("dadi-blockd serving on {} (state {}, cache {})", config.socket, config.state_dir,
               config.cache_dir);

  std::thread stopper([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    // Calls in flight get a few seconds to finish; then they are cancelled.
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  server->Wait();
  stopper.join();
  server.reset();
  ::unlink(config.socket.c_str());
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
