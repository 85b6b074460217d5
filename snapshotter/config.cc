#include "snapshotter/config.h"

#include <optional>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "blockstore/daemon/daemon.h"
#include "blockstore/daemon/flags.h"
#include "snapshotter/remote_labels.h"
#include "toml++/toml.h"

namespace dadi::snapshotter {
namespace {

constexpr const char* kLogLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};

absl::Status CheckLogLevel(const std::string& level, absl::string_view source) {
  for (const char* l : kLogLevels) {
    if (level == l) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": log_level \"", level,
                   "\" is not one of trace, debug, info, warn, error, "
                   "critical, off"));
}

}  // namespace

absl::Status ApplyConfigToml(absl::string_view toml_text, absl::string_view source,
                             Config* config) {
  toml::table table;
  try {
    table = toml::parse(std::string_view(toml_text.data(), toml_text.size()),
                        std::string_view(source.data(), source.size()));
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.source().begin.line, ":",
                                                   e.source().begin.column, ": ",
                                                   std::string(e.description())));
  }
  for (const auto& [key, node] : table) {
    std::string* field = nullptr;
    if (key == "root") {
      field = &config->root;
    } else if (key == "address") {
      field = &config->address;
    } else if (key == "log_level") {
      field = &config->log_level;
    } else if (key == "blockd_address") {
      field = &config->blockd_address;
    } else if (key == "fallback_repository") {
      field = &config->fallback_repository;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": unknown key \"", std::string(key.str()), "\""));
    }
    const std::optional<std::string> value = node.value<std::string>();
    if (!node.is_string() || !value) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": key \"", std::string(key.str()), "\" must be a string"));
    }
    *field = *value;
  }
  return CheckLogLevel(config->log_level, source);
}

absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv) {
  CLI::App app{"dadi-snapshotter: containerd snapshotter (proxy plugin) of dadi"};
  std::optional<std::string> config_path, root, address, log_level, blockd_address,
      fallback_repository;
  app.add_option(
      "--config", config_path,
      absl::StrCat("TOML configuration file (default ", kDefaultConfigPath, ", if present)"));
  app.add_option("--root", root, "state directory (key root)");
  app.add_option("--address", address, "gRPC unix socket (key address)");
  app.add_option("--log-level", log_level,
                 "trace, debug, info, warn, error, critical or off (key log_level)");
  app.add_option("--blockd-address", blockd_address,
                 "dadi-blockd's unix socket; empty disables remote layers (key blockd_address)");
  app.add_option("--fallback-repository", fallback_repository,
                 "host[:port]/path of overlaybd blobs whose labels name no repository "
                 "(key fallback_repository)");
  app.set_version_flag("--version", "dadi-snapshotter 0.1.0");

  CommandLine out;
  out.exit_code = blockstore::daemon::ParseFlags(app, argc, argv, &out.message);
  if (out.exit_code.has_value()) return out;

  absl::StatusOr<std::optional<blockstore::daemon::ConfigFile>> file =
      blockstore::daemon::ReadConfigFileIfPresent(config_path, kDefaultConfigPath);
  if (!file.ok()) return file.status();
  if (file->has_value()) {
    if (absl::Status s = ApplyConfigToml((*file)->text, (*file)->path, &out.config); !s.ok()) {
      return s;
    }
  }
  if (root) out.config.root = *root;
  if (address) out.config.address = *address;
  if (log_level) out.config.log_level = *log_level;
  if (blockd_address) out.config.blockd_address = *blockd_address;
  if (fallback_repository) out.config.fallback_repository = *fallback_repository;
  if (absl::Status s = CheckLogLevel(out.config.log_level, "--log-level"); !s.ok()) return s;
  if (out.config.root.empty() || out.config.root[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("root \"", out.config.root, "\" must be an absolute path"));
  }
  if (out.config.address.empty() || out.config.address[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", out.config.address, "\" must be an absolute socket path"));
  }
  if (!out.config.blockd_address.empty() && out.config.blockd_address[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("blockd_address \"", out.config.blockd_address,
                                                   "\" must be an absolute socket path, or empty"));
  }
  const std::string& fallback = out.config.fallback_repository;
  if (!fallback.empty() &&
      (RepositoryOfImageRef(fallback) != fallback || fallback.find('/') == std::string::npos)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fallback_repository \"", fallback, "\" must be host[:port]/path, without tag or digest"));
  }
  return out;
}

}  // namespace dadi::snapshotter
