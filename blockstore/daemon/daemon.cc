#include "blockstore/daemon/daemon.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "blockstore/file/unique_fd.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore::daemon {
namespace {

absl::Status ErrnoError(int err, const std::string& what) {
  return absl::Status(absl::ErrnoToStatusCode(err), absl::StrCat(what, ": ", std::strerror(err)));
}

// True when a server accepts connections on `socket`.
absl::StatusOr<bool> SocketIsLive(const std::string& socket) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (socket.size() >= sizeof(sa.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path ", socket, " is too long"));
  }
  std::memcpy(sa.sun_path, socket.c_str(), socket.size() + 1);
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  return probe.valid() &&
         ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) == 0;
}

}  // namespace

absl::StatusOr<std::optional<ConfigFile>> ReadConfigFileIfPresent(
    const std::optional<std::string>& explicit_path, const std::string& default_path) {
  ConfigFile file;
  file.path = explicit_path.value_or(default_path);
  struct stat st;
  if (!explicit_path.has_value() && ::stat(file.path.c_str(), &st) != 0) return std::nullopt;
  std::ifstream in(file.path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read configuration file ", file.path));
  std::stringstream text;
  text << in.rdbuf();
  file.text = text.str();
  return file;
}

void SetUpLogging(const std::string& name, const std::string& level) {
  auto logger = spdlog::stderr_color_mt(name);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

StopSignals::StopSignals() {
  sigemptyset(&set_);
  sigaddset(&set_, SIGTERM);
  sigaddset(&set_, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

int StopSignals::Wait() const {
  int sig = 0;
  sigwait(&set_, &sig);
  return sig;
}

absl::Status PrepareSocketPath(const std::string& socket) {
  const std::string dir = socket.substr(0, socket.rfind('/'));
  for (size_t pos = dir.empty() ? std::string::npos : 0; pos != std::string::npos;) {
    pos = dir.find('/', pos + 1);
    const std::string prefix = dir.substr(0, pos);
    struct stat st;
    if (::stat(prefix.c_str(), &st) == 0) continue;
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoError(errno, "mkdir " + prefix);
    }
  }
  struct stat st;
  if (!dir.empty() && ::stat(dir.c_str(), &st) == 0 && (st.st_mode & 0077) != 0) {
    spdlog::warn("socket directory {} is accessible to other users (mode {:o}); 0700 is advised",
                 dir, st.st_mode & 07777);
  }
  if (::lstat(socket.c_str(), &st) != 0) return absl::OkStatus();
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(socket + " exists and is not a socket");
  }
  // A socket left by an earlier run is replaced; one that still answers belongs to a live
  // server and is not taken over.
  absl::StatusOr<bool> live = SocketIsLive(socket);
  if (!live.ok()) return live.status();
  if (*live) {
    return absl::FailedPreconditionError(absl::StrCat(socket, " is in use by a running server"));
  }
  if (::unlink(socket.c_str()) != 0) return ErrnoError(errno, "unlink " + socket);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartUnixServer(grpc::ServerBuilder& builder,
                                                              const std::string& socket) {
  if (absl::Status s = PrepareSocketPath(socket); !s.ok()) return s;
  builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
  // The socket is created while the server starts: umask 0177 makes it 0600 from birth, so no
  // client ever sees a wider mode; the chmod makes that exact whatever the umask was.
  const mode_t saved_umask = ::umask(0177);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ::umask(saved_umask);
  if (server == nullptr) return absl::UnavailableError("cannot listen on unix:" + socket);
  if (::chmod(socket.c_str(), 0600) != 0) {
    absl::Status s = ErrnoError(errno, "chmod " + socket);
    server->Shutdown();
    return s;
  }
  return server;
}

void ServeUntilStopped(grpc::Server& server, const StopSignals& signals,
                       const std::string& socket) {
  std::thread stopper([&] {
    const int sig = signals.Wait();
    spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    // Calls in flight get a second to answer; then they are cancelled (their handlers still
    // run to the end; only the answer is lost, as when the daemon is killed). The wait is
    // short because gRPC also waits this long for idle clients (containerd, the snapshotter)
    // to close their connections, which they do not.
    server.Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  });
  server.Wait();
  stopper.join();
  ::unlink(socket.c_str());
}

}  // namespace dadi::blockstore::daemon
