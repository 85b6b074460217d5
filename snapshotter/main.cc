// dadi-snapshotter: serves containerd's snapshots API on a unix socket (a containerd proxy
// plugin). Usage: dadi-snapshotter [--config FILE] [--root DIR] [--address SOCKET]
// [--log-level LEVEL]. Stops cleanly on SIGTERM or SIGINT.
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
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "snapshotter/blockd_attacher.h"
#include "snapshotter/config.h"
#include "snapshotter/fs_util.h"
#include "snapshotter/service.h"
#include "snapshotter/snapshotter.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace dadi::snapshotter {
namespace {

// Creates the missing directories leading to the socket, each 0700; an existing directory is
// left as it is (it may be shared), with a warning if others can enter it.
absl::Status PrepareSocketPath(const std::string& address) {
  const std::string dir = address.substr(0, address.rfind('/'));
  size_t pos = 0;
  while (pos != std::string::npos && !dir.empty()) {
    pos = dir.find('/', pos + 1);
    const std::string prefix = dir.substr(0, pos);
    struct stat st;
    if (::stat(prefix.c_str(), &st) == 0) continue;
    if (absl::Status s = MakeDir(prefix, 0700); !s.ok()) return s;
  }
  struct stat st;
  if (!dir.empty() && ::stat(dir.c_str(), &st) == 0 && (st.st_mode & 0077) != 0) {
    spdlog::warn("socket directory {} is accessible to other users (mode {:o}); 0700 is advised",
                 dir, st.st_mode & 07777);
  }
  if (::lstat(address.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(address + " exists and is not a socket");
    }
    // A socket left by an earlier run is replaced; one that still answers belongs to a live
    // server (perhaps a snapshotter on another root) and is not taken over.
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (address.size() >= sizeof(sa.sun_path)) {
      return absl::InvalidArgumentError(absl::StrCat("socket path ", address, " is too long"));
    }
    std::memcpy(sa.sun_path, address.c_str(), address.size() + 1);
    if (probe.get() >= 0 &&
        ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(address, " is in use by a running server"));
    }
    if (::unlink(address.c_str()) != 0) return ErrnoStatus(errno, "unlink " + address);
  }
  return absl::OkStatus();
}

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

  auto logger = spdlog::stderr_color_mt("dadi-snapshotter");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_default_logger(logger);

  // Everything the daemon creates is private unless it says otherwise (snapshot dirs chmod
  // themselves); the socket is therefore born 0600-ish and chmod-ed to exactly 0600.
  ::umask(0077);

  // Signals are taken by one thread with sigwait; block them before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

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

  if (absl::Status st = PrepareSocketPath(config.address); !st.ok()) {
    spdlog::critical("socket {}: {}", config.address, st.ToString());
    return 1;
  }
  SnapshotsService service(snapshotter->get());
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + config.address, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  // The socket is created while the server starts: make it 0600 from birth (umask 0177), so
  // no client ever sees a wider mode, then go back to the daemon's umask.
  const mode_t daemon_umask = ::umask(0177);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ::umask(daemon_umask);
  if (server == nullptr) {
    spdlog::critical("cannot listen on unix:{}", config.address);
    return 1;
  }
  if (::chmod(config.address.c_str(), 0600) != 0) {
    spdlog::critical("chmod {}: {}", config.address, std::strerror(errno));
    server->Shutdown();
    return 1;
  }
  spdlog::info("dadi-snapshotter serving on {} (root {}, {})", config.address, config.root,
               config.blockd_address.empty()
                   ? std::string("remote layers disabled")
                   : absl::StrCat("remote layers through dadi-blockd at ", config.blockd_address));

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
  ::unlink(config.address.c_str());
  snapshotter->reset();
  spdlog::info("stopped");
  return 0;
}

}  // namespace
}  // namespace dadi::snapshotter

int main(int argc, char** argv) { return dadi::snapshotter::Run(argc, argv); }
