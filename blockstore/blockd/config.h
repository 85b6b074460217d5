// dadi-blockd's configuration: a TOML file whose every key a command-line flag overrides.
//
//   # /etc/dadi/blockd.toml
//   socket = "/run/dadi/blockd.sock"        # gRPC unix socket (0600, its directory 0700)
//   state_dir = "/var/lib/dadi/blockd"      # FUSE mount (fuse/) and device mounts (mnt/<id>)
//   cache_dir = "/var/lib/dadi/blockd/cache" # node cache of blob bytes (survives restarts)
//   cache_size_limit = 0                    # bytes of the node cache; 0: unlimited
//   cache_unit = 8192                       # node cache unit (bytes, power of two): the
//                                           # granularity of a startup trace's prefetch
//   cache_fetch = 32768                     # least a read miss fetches (aligned, a multiple
//                                           # of cache_unit)
//   block_cache_bytes = 67108864            # memory for decompressed ZFile blocks
//   readahead_bytes = 16777216              # largest sequential readahead per blob; 0: none
//   fuse_threads = 4                        # threads serving /dev/fuse
//   device_read_ahead_kb = 64               # readahead of each image's loop device (KiB)
//   loop_direct_io = true                   # loop devices read FUSE without a page cache
//   log_level = "info"                      # trace, debug, info, warn, error, critical, off
//   registry_config = ""                    # optional JSON registry config (docs/registry.md)
//                                           # loaded first; [registry] keys apply over it
//   [registry]
//   ca_file = ""                            # CA bundle for all hosts; "": the system's
//   docker_config = ""                      # docker config.json to take credentials from
//   connect_timeout_ms = 10000
//   request_timeout_ms = 60000
//   stall_timeout_ms = 20000
//   max_attempts = 5                        # tries of one request before a read fails (EIO)
//   initial_backoff_ms = 200
//   max_backoff_ms = 10000
//   [registry.hosts."127.0.0.1:5000"]
//   plain_http = true                       # HTTP, not HTTPS
//   insecure_skip_verify = false            # TLS without verifying the certificate
//   ca_file = ""                            # extra CA bundle for this host
//   mirrors = ["http://127.0.0.1:5001"]     # tried before the host for pulls
//   username = ""                           # credentials (never logged)
//   password = ""
//
// Flags: --config FILE and one flag per key (--socket, --state-dir, --cache-dir,
// --cache-size-limit, --cache-unit, --block-cache-bytes, --readahead-bytes, --fuse-threads,
// --device-read-ahead-kb, --loop-direct-io true|false, --log-level, --registry-config,
// --registry-ca-file, --docker-config, --connect-timeout-ms,
// --request-timeout-ms, --stall-timeout-ms, --max-attempts, --initial-backoff-ms,
// --max-backoff-ms; per host, repeatable: --plain-http HOST, --insecure-skip-verify HOST,
// --host-ca-file HOST=FILE, --mirror HOST=URL). Credentials have no flag (a command line is
// visible to every user): use the file or docker_config. Without --config the default file is
// read if it exists; a file named by --config must exist. Unknown keys are errors.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blockstore/remote/registry_config.h"

namespace dadi::blockstore::blockd {

inline constexpr char kDefaultConfigPath[] = "/etc/dadi/blockd.toml";

struct Config {
  std::string socket = "/run/dadi/blockd.sock";
  std::string state_dir = "/var/lib/dadi/blockd";
  std::string cache_dir = "/var/lib/dadi/blockd/cache";
  uint64_t cache_size_limit = 0;
  uint64_t cache_unit = 8 << 10;
  uint64_t cache_fetch = 32 << 10;
  uint64_t block_cache_bytes = 64 << 20;
  uint64_t readahead_bytes = 16 << 20;
  int fuse_threads = 4;
  uint32_t device_read_ahead_kb = 64;
  bool loop_direct_io = true;
  std::string log_level = "info";
  std::string registry_config;
  RegistryConfig registry;
};

// Applies the keys of a TOML document to `config`. `source` names it in errors. The JSON
// registry config named by `registry_config_override` (when set) or by the document's
// registry_config key is loaded first, and the document's [registry] keys apply over it.
absl::Status ApplyConfigToml(absl::string_view toml, absl::string_view source, Config* config,
                             const std::optional<std::string>& registry_config_override = {});

// Replaces config->registry with the JSON registry config in `path`.
absl::Status LoadRegistryConfigFile(const std::string& path, Config* config);

// Checks values that must hold whatever their source (absolute paths, ranges).
absl::Status ValidateConfig(const Config& config);

struct CommandLine {
  Config config;
  // Set when the program should exit at once (--help, --version, usage error); `message` is
  // then what to print.
  std::optional<int> exit_code;
  std::string message;
};

// Parses argv, reads the configuration file and applies the flags over it.
absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv);

}  // namespace dadi::blockstore::blockd
