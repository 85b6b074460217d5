// dadi-snapshotter's configuration: a TOML file whose every key a command-line flag overrides.
//
//   # /etc/dadi/snapshotter.toml
//   root = "/var/lib/dadi/snapshotter"     # state: metadata.db, snapshots/, staging/
//   address = "/run/dadi/snapshotter.sock" # gRPC unix socket for containerd (0600, dir 0700)
//   log_level = "info"                     # trace, debug, info, warn, error, critical, off
//   blockd_address = "/run/dadi/blockd.sock" # dadi-blockd's socket; "" = no remote layers
//   fallback_repository = ""               # "host[:port]/path" holding overlaybd blobs whose
//                                          # labels name no repository; "": containerd
//                                          # downloads such layers
//
// Flags: --config FILE, --root DIR, --address SOCKET, --log-level LEVEL, --blockd-address,
// --fallback-repository. Without
// --config the default file is read if it exists; a file named by --config must exist. Unknown keys
// are errors, so that a misspelt key does not pass silently.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dadi::snapshotter {

inline constexpr char kDefaultConfigPath[] = "/etc/dadi/snapshotter.toml";

struct Config {
  std::string root = "/var/lib/dadi/snapshotter";
  std::string address = "/run/dadi/snapshotter.sock";
  std::string log_level = "info";
  // dadi-blockd's gRPC socket. Empty disables remote (overlaybd) layers: they are then
  // prepared like ordinary layers, i.e. containerd downloads and unpacks them.
  std::string blockd_address = "/run/dadi/blockd.sock";
  // Where overlaybd layers are fetched from when none of their labels (cri.image-ref,
  // image-ref, dadi/repository) names a repository: a registry mirror of converted images.
  std::string fallback_repository;
};

// Applies the keys of a TOML document to `config`. `source` names it in errors.
absl::Status ApplyConfigToml(absl::string_view toml, absl::string_view source, Config* config);

// What the command line asked for. `exit_code` is set when the program should exit at once
// (--help, --version or a usage error; `message` is then what to print).
struct CommandLine {
  Config config;
  std::optional<int> exit_code;
  std::string message;
};

// Parses argv, reads the configuration file and applies the flags over it.
absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv);

}  // namespace dadi::snapshotter
