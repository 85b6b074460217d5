// Plumbing shared by dadi's gRPC daemons (dadi-blockd, dadi-snapshotter): the configuration
// file, logging, stop signals, and a gRPC server on a private unix socket. It lives in blockstore
// because every other component may depend on blockstore, and blockstore on nothing of ours.
#pragma once

#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dadi::blockstore::daemon {

// A configuration file read whole: its text and the path it came from (for error messages).
struct ConfigFile {
  std::string path;
  std::string text;
};

// Reads `explicit_path` (given with --config), which must be readable, or else `default_path`
// if it exists; nullopt when there is no explicit path and nothing at the default one, since a
// daemon runs on its built-in defaults without a file. A file that cannot be read is NOT_FOUND.
absl::StatusOr<std::optional<ConfigFile>> ReadConfigFileIfPresent(
    const std::optional<std::string>& explicit_path, const std::string& default_path);

// Logs to stderr as `name`, with timestamps, at `level` (spdlog's level names).
void SetUpLogging(const std::string& name, const std::string& level);

// SIGTERM and SIGINT, blocked in the constructing thread (so in every thread it starts after)
// and taken by Wait(). Construct before any thread starts. Also ignores SIGPIPE: a client
// that goes away must not kill the daemon.
class StopSignals {
 public:
  StopSignals();
  // Blocks until SIGTERM or SIGINT arrives; returns it.
  int Wait() const;

 private:
  sigset_t set_;
};

// Makes the socket's missing parent directories (0700 each; an existing directory is left as
// it is, with a warning when others can enter it) and removes a stale socket. A socket that a
// live server still answers on is not taken over (FAILED_PRECONDITION).
absl::Status PrepareSocketPath(const std::string& socket);

// Starts `builder`'s services on unix:`socket` (prepared as above), the socket 0600 from its
// birth.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartUnixServer(grpc::ServerBuilder& builder,
                                                              const std::string& socket);

// Serves until a stop signal arrives, then gives calls in flight a few seconds before they are
// cancelled, and removes the socket.
void ServeUntilStopped(grpc::Server& server, const StopSignals& signals, const std::string& socket);

}  // namespace dadi::blockstore::daemon
