#include "blockstore/blockd/config.h"

#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "blockstore/daemon/daemon.h"
#include "blockstore/daemon/flags.h"
#include "blockstore/remote/reference.h"
#include "toml++/toml.h"

namespace dadi::blockstore::blockd {
namespace {

constexpr const char* kLogLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
// read_ahead_kb beyond this is no longer readahead but a whole-image download.
constexpr uint64_t kMaxDeviceReadAheadKb = 16384;

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status KeyError(absl::string_view source, absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": key \"", key, "\" ", what));
}

absl::Status GetString(const toml::node& node, absl::string_view source, absl::string_view key,
                       std::string* out) {
  std::optional<std::string> v = node.value<std::string>();
  if (!node.is_string() || !v) return KeyError(source, key, "must be a string");
  *out = *v;
  return absl::OkStatus();
}

absl::Status GetUint(const toml::node& node, absl::string_view source, absl::string_view key,
                     uint64_t* out) {
  std::optional<int64_t> v = node.value<int64_t>();
  if (!node.is_integer() || !v || *v < 0) {
    return KeyError(source, key, "must be a non-negative integer");
  }
  *out = static_cast<uint64_t>(*v);
  return absl::OkStatus();
}

absl::Status GetBool(const toml::node& node, absl::string_view source, absl::string_view key,
                     bool* out) {
  std::optional<bool> v = node.value<bool>();
  if (!node.is_boolean() || !v) return KeyError(source, key, "must be true or false");
  *out = *v;
  return absl::OkStatus();
}

absl::Status GetMillis(const toml::node& node, absl::string_view source, absl::string_view key,
                       absl::Duration* out) {
  uint64_t ms = 0;
  if (absl::Status s = GetUint(node, source, key, &ms); !s.ok()) return s;
  *out = absl::Milliseconds(static_cast<int64_t>(ms));
  return absl::OkStatus();
}

absl::Status ApplyHostToml(const toml::table& table, const std::string& where, HostConfig* host) {
  for (const auto& [k, node] : table) {
    const std::string key(k.str());
    absl::Status s;
    if (key == "plain_http") {
      s = GetBool(node, where, key, &host->plain_http);
    } else if (key == "insecure_skip_verify") {
      s = GetBool(node, where, key, &host->insecure_skip_verify);
    } else if (key == "ca_file") {
      s = GetString(node, where, key, &host->ca_file);
    } else if (key == "mirrors") {
      const toml::array* arr = node.as_array();
      if (arr == nullptr) return KeyError(where, key, "must be an array of strings");
      host->mirrors.clear();
      for (const toml::node& m : *arr) {
        std::optional<std::string> v = m.value<std::string>();
        if (!m.is_string() || !v) return KeyError(where, key, "must be an array of strings");
        host->mirrors.push_back(*v);
      }
    } else if (key == "username" || key == "password") {
      if (!host->credentials) host->credentials = Credentials{};
      s = GetString(
          node, where, key,
          key == "username" ? &host->credentials->username : &host->credentials->password);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown key \"", key, "\""));
    }
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ApplyRegistryToml(const toml::table& table, absl::string_view source,
                               RegistryConfig* reg) {
  const std::string where = absl::StrCat(source, ": [registry]");
  for (const auto& [k, node] : table) {
    const std::string key(k.str());
    absl::Status s;
    if (key == "ca_file") {
      s = GetString(node, where, key, &reg->ca_file);
    } else if (key == "docker_config") {
      std::string path;
      s = GetString(node, where, key, &path);
      if (s.ok() && !path.empty()) s = LoadDockerConfigFile(path, reg);
    } else if (key == "connect_timeout_ms") {
      s = GetMillis(node, where, key, &reg->connect_timeout);
    } else if (key == "request_timeout_ms") {
      s = GetMillis(node, where, key, &reg->request_timeout);
    } else if (key == "stall_timeout_ms") {
      s = GetMillis(node, where, key, &reg->stall_timeout);
    } else if (key == "max_attempts") {
      uint64_t n = 0;
      s = GetUint(node, where, key, &n);
      if (s.ok() && (n < 1 || n > 100)) s = KeyError(where, key, "must be 1..100");
      reg->retry.max_attempts = static_cast<int>(n);
    } else if (key == "initial_backoff_ms") {
      s = GetMillis(node, where, key, &reg->retry.initial_backoff);
    } else if (key == "max_backoff_ms") {
      s = GetMillis(node, where, key, &reg->retry.max_backoff);
    } else if (key == "hosts") {
      const toml::table* hosts = node.as_table();
      if (hosts == nullptr) return KeyError(where, key, "must be a table of hosts");
      for (const auto& [h, hnode] : *hosts) {
        const toml::table* ht = hnode.as_table();
        const std::string host = NormalizeRegistryHost(std::string(h.str()));
        const std::string hwhere = absl::StrCat(where, ".hosts.\"", std::string(h.str()), "\"");
        if (ht == nullptr) {
          return absl::InvalidArgumentError(absl::StrCat(hwhere, " must be a table"));
        }
        if (absl::Status hs = ApplyHostToml(*ht, hwhere, &reg->hosts[host]); !hs.ok()) return hs;
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown key \"", key, "\""));
    }
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// "HOST=VALUE" of a per-host flag.
absl::Status SplitHostFlag(const std::string& flag, const std::string& value, std::string* host,
                           std::string* rest) {
  size_t eq = value.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == value.size()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " \"", value, "\": expected HOST=VALUE"));
  }
  *host = NormalizeRegistryHost(value.substr(0, eq));
  *rest = value.substr(eq + 1);
  return absl::OkStatus();
}

}  // namespace

absl::Status LoadRegistryConfigFile(const std::string& path, Config* config) {
  absl::StatusOr<std::string> text = ReadTextFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<RegistryConfig> reg = ParseRegistryConfig(*text);
  if (!reg.ok()) {
    return absl::Status(reg.status().code(),
                        absl::StrCat("registry config ", path, ": ", reg.status().message()));
  }
  config->registry_config = path;
  config->registry = std::move(*reg);
  return absl::OkStatus();
}

absl::Status ApplyConfigToml(absl::string_view toml_text, absl::string_view source, Config* config,
                             const std::optional<std::string>& registry_config_override) {
  toml::table table;
  try {
    table = toml::parse(std::string_view(toml_text.data(), toml_text.size()),
                        std::string_view(source.data(), source.size()));
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.source().begin.line, ":",
                                                   e.source().begin.column, ": ",
                                                   std::string(e.description())));
  }
  // The JSON registry config is the base the [registry] table refines.
  std::string registry_config;
  if (const toml::node* node = table.get("registry_config")) {
    if (absl::Status s = GetString(*node, source, "registry_config", &registry_config); !s.ok()) {
      return s;
    }
  }
  if (registry_config_override) registry_config = *registry_config_override;
  if (!registry_config.empty()) {
    if (absl::Status s = LoadRegistryConfigFile(registry_config, config); !s.ok()) return s;
  }
  for (const auto& [k, node] : table) {
    const std::string key(k.str());
    absl::Status s;
    if (key == "socket") {
      s = GetString(node, source, key, &config->socket);
    } else if (key == "state_dir") {
      s = GetString(node, source, key, &config->state_dir);
    } else if (key == "cache_dir") {
      s = GetString(node, source, key, &config->cache_dir);
    } else if (key == "cache_size_limit") {
      s = GetUint(node, source, key, &config->cache_size_limit);
    } else if (key == "cache_unit") {
      s = GetUint(node, source, key, &config->cache_unit);
    } else if (key == "cache_fetch") {
      s = GetUint(node, source, key, &config->cache_fetch);
    } else if (key == "block_cache_bytes") {
      s = GetUint(node, source, key, &config->block_cache_bytes);
    } else if (key == "readahead_bytes") {
      s = GetUint(node, source, key, &config->readahead_bytes);
    } else if (key == "fuse_threads") {
      uint64_t n = 0;
      s = GetUint(node, source, key, &n);
      config->fuse_threads = static_cast<int>(std::min<uint64_t>(n, 1024));
    } else if (key == "device_read_ahead_kb") {
      uint64_t kb = 0;
      s = GetUint(node, source, key, &kb);
      if (s.ok() && kb > kMaxDeviceReadAheadKb) {
        s = KeyError(source, key, absl::StrCat("must be at most ", kMaxDeviceReadAheadKb));
      }
      config->device_read_ahead_kb = static_cast<uint32_t>(std::min(kb, kMaxDeviceReadAheadKb));
    } else if (key == "loop_direct_io") {
      s = GetBool(node, source, key, &config->loop_direct_io);
    } else if (key == "log_level") {
      s = GetString(node, source, key, &config->log_level);
    } else if (key == "registry_config") {
      // Loaded above.
    } else if (key == "registry") {
      const toml::table* reg = node.as_table();
      if (reg == nullptr) return KeyError(source, key, "must be a table");
      s = ApplyRegistryToml(*reg, source, &config->registry);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(source, ": unknown key \"", key, "\""));
    }
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ValidateConfig(const Config& config) {
  bool level_ok = false;
  for (const char* l : kLogLevels) level_ok |= config.log_level == l;
  if (!level_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("log_level \"", config.log_level,
                     "\" is not one of trace, debug, info, warn, error, critical, off"));
  }
  for (const auto& [name, path] :
       {std::pair<const char*, const std::string*>{"socket", &config.socket},
        {"state_dir", &config.state_dir},
        {"cache_dir", &config.cache_dir}}) {
    if (path->empty() || (*path)[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " \"", *path, "\" must be an absolute path"));
    }
  }
  if (config.cache_unit < 4096 || (config.cache_unit & (config.cache_unit - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cache_unit ", config.cache_unit, " must be a power of two >= 4096"));
  }
  // A fetch below the unit is the unit (raising cache_unit alone stays valid).
  if ((config.cache_fetch > config.cache_unit && config.cache_fetch % config.cache_unit != 0) ||
      config.cache_fetch > (uint64_t{64} << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("cache_fetch ", config.cache_fetch,
                                                   " must be a multiple of cache_unit ",
                                                   config.cache_unit, " up to 64 MiB"));
  }
  if (config.fuse_threads < 1) {
    return absl::InvalidArgumentError("fuse_threads must be at least 1");
  }
  if (config.registry.retry.max_attempts < 1) {
    return absl::InvalidArgumentError("max_attempts must be at least 1");
  }
  return absl::OkStatus();
}

absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv) {
  CLI::App app{"dadi-blockd: serves overlaybd images as read-only block devices"};
  std::optional<std::string> config_path, socket, state_dir, cache_dir, log_level, registry_config,
      registry_ca_file, docker_config;
  std::optional<uint64_t> cache_size_limit, cache_unit, cache_fetch, block_cache_bytes,
      readahead_bytes, connect_timeout_ms, request_timeout_ms, stall_timeout_ms, initial_backoff_ms,
      max_backoff_ms;
  std::optional<int> fuse_threads, max_attempts;
  std::optional<uint32_t> device_read_ahead_kb;
  std::optional<bool> loop_direct_io;
  std::vector<std::string> plain_http, insecure, host_ca, mirrors;
  app.add_option(
      "--config", config_path,
      absl::StrCat("TOML configuration file (default ", kDefaultConfigPath, ", if present)"));
  app.add_option("--socket", socket, "gRPC unix socket (key socket)");
  app.add_option("--state-dir", state_dir, "FUSE and device mounts (key state_dir)");
  app.add_option("--cache-dir", cache_dir, "node cache directory (key cache_dir)");
  app.add_option("--cache-size-limit", cache_size_limit,
                 "node cache limit in bytes, 0 unlimited (key cache_size_limit)");
  app.add_option("--cache-unit", cache_unit, "node cache unit in bytes (key cache_unit)");
  app.add_option("--cache-fetch", cache_fetch,
                 "least bytes a node cache miss fetches (key cache_fetch)");
  app.add_option("--block-cache-bytes", block_cache_bytes,
                 "memory for decompressed blocks (key block_cache_bytes)");
  app.add_option("--readahead-bytes", readahead_bytes,
                 "largest readahead per blob, 0 none (key readahead_bytes)");
  app.add_option("--fuse-threads", fuse_threads, "threads serving FUSE (key fuse_threads)");
  app.add_option("--device-read-ahead-kb", device_read_ahead_kb,
                 "readahead of each image's loop device in KiB (key device_read_ahead_kb)")
      ->check(CLI::Range(uint32_t{0}, static_cast<uint32_t>(kMaxDeviceReadAheadKb)));
  app.add_option("--loop-direct-io", loop_direct_io,
                 "true or false: loop devices read without a page cache (key loop_direct_io)");
  app.add_option("--log-level", log_level,
                 "trace, debug, info, warn, error, critical or off (key log_level)");
  app.add_option("--registry-config", registry_config,
                 "JSON registry config file (key registry_config)");
  app.add_option("--registry-ca-file", registry_ca_file, "CA bundle (key registry.ca_file)");
  app.add_option("--docker-config", docker_config,
                 "docker config.json with credentials (key registry.docker_config)");
  app.add_option("--connect-timeout-ms", connect_timeout_ms, "key registry.connect_timeout_ms");
  app.add_option("--request-timeout-ms", request_timeout_ms, "key registry.request_timeout_ms");
  app.add_option("--stall-timeout-ms", stall_timeout_ms, "key registry.stall_timeout_ms");
  app.add_option("--max-attempts", max_attempts,
                 "tries of one registry request (key registry.max_attempts)");
  app.add_option("--initial-backoff-ms", initial_backoff_ms, "key registry.initial_backoff_ms");
  app.add_option("--max-backoff-ms", max_backoff_ms, "key registry.max_backoff_ms");
  app.add_option("--plain-http", plain_http,
                 "HOST to reach over plain HTTP (key registry.hosts.HOST.plain_http)");
  app.add_option("--insecure-skip-verify", insecure,
                 "HOST whose TLS certificate is not verified (registry.hosts.HOST...)");
  app.add_option("--host-ca-file", host_ca, "HOST=FILE (key registry.hosts.HOST.ca_file)");
  app.add_option("--mirror", mirrors, "HOST=URL, appended (key registry.hosts.HOST.mirrors)");
  app.set_version_flag("--version", "dadi-blockd 0.1.0");

  CommandLine out;
  out.exit_code = daemon::ParseFlags(app, argc, argv, &out.message);
  if (out.exit_code.has_value()) return out;

  Config& c = out.config;
  absl::StatusOr<std::optional<daemon::ConfigFile>> file =
      daemon::ReadConfigFileIfPresent(config_path, kDefaultConfigPath);
  if (!file.ok()) return file.status();
  if (file->has_value()) {
    if (absl::Status s = ApplyConfigToml((*file)->text, (*file)->path, &c, registry_config);
        !s.ok()) {
      return s;
    }
  } else if (registry_config) {
    if (absl::Status s = LoadRegistryConfigFile(*registry_config, &c); !s.ok()) return s;
  }
  if (socket) c.socket = *socket;
  if (state_dir) c.state_dir = *state_dir;
  if (cache_dir) c.cache_dir = *cache_dir;
  if (cache_size_limit) c.cache_size_limit = *cache_size_limit;
  if (cache_unit) c.cache_unit = *cache_unit;
  if (cache_fetch) c.cache_fetch = *cache_fetch;
  if (block_cache_bytes) c.block_cache_bytes = *block_cache_bytes;
  if (readahead_bytes) c.readahead_bytes = *readahead_bytes;
  if (fuse_threads) c.fuse_threads = *fuse_threads;
  if (device_read_ahead_kb) c.device_read_ahead_kb = *device_read_ahead_kb;
  if (loop_direct_io) c.loop_direct_io = *loop_direct_io;
  if (log_level) c.log_level = *log_level;
  if (registry_ca_file) c.registry.ca_file = *registry_ca_file;
  if (docker_config) {
    if (absl::Status s = LoadDockerConfigFile(*docker_config, &c.registry); !s.ok()) return s;
  }
  auto ms = [](uint64_t v) { return absl::Milliseconds(static_cast<int64_t>(v)); };
  if (connect_timeout_ms) c.registry.connect_timeout = ms(*connect_timeout_ms);
  if (request_timeout_ms) c.registry.request_timeout = ms(*request_timeout_ms);
  if (stall_timeout_ms) c.registry.stall_timeout = ms(*stall_timeout_ms);
  if (max_attempts) c.registry.retry.max_attempts = *max_attempts;
  if (initial_backoff_ms) c.registry.retry.initial_backoff = ms(*initial_backoff_ms);
  if (max_backoff_ms) c.registry.retry.max_backoff = ms(*max_backoff_ms);
  for (const std::string& h : plain_http)
    c.registry.hosts[NormalizeRegistryHost(h)].plain_http = true;
  for (const std::string& h : insecure) {
    c.registry.hosts[NormalizeRegistryHost(h)].insecure_skip_verify = true;
  }
  std::string host, rest;
  for (const std::string& v : host_ca) {
    if (absl::Status s = SplitHostFlag("--host-ca-file", v, &host, &rest); !s.ok()) return s;
    c.registry.hosts[host].ca_file = rest;
  }
  for (const std::string& v : mirrors) {
    if (absl::Status s = SplitHostFlag("--mirror", v, &host, &rest); !s.ok()) return s;
    c.registry.hosts[host].mirrors.push_back(rest);
  }
  if (absl::Status s = ValidateConfig(c); !s.ok()) return s;
  return out;
}

}  // namespace dadi::blockstore::blockd
