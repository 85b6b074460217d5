#include "cli/image_flags.h"

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace dadi::cli {

void AddRegistryFlags(CLI::App* cmd, RegistryFlags* flags) {
  cmd->add_option("--insecure-registry", flags->insecure,
                  "registry host to reach without TLS verification");
  cmd->add_flag("--plain-http", flags->plain_http,
                "talk plain HTTP to the registries of the images named");
  cmd->add_option("--authfile", flags->authfile, "docker config.json with credentials");
}

absl::StatusOr<blockstore::RegistryConfig> MakeRegistryConfig(
    const RegistryFlags& flags,
    std::initializer_list<const converter::image::ImageReference*> images) {
  blockstore::RegistryConfig config;
  std::string authfile = flags.authfile;
  if (authfile.empty() && std::getenv("HOME") != nullptr) {
    std::string def = absl::StrCat(std::getenv("HOME"), "/.docker/config.json");
    if (std::filesystem::exists(def)) authfile = def;
  }
  if (!authfile.empty()) {
    if (absl::Status s = blockstore::LoadDockerConfigFile(authfile, &config); !s.ok()) return s;
  }
  for (const auto& h : flags.insecure) config.hosts[h].insecure_skip_verify = true;
  if (flags.plain_http) {
    for (const auto* r : images) {
      if (r->transport == converter::image::Transport::kDocker) {
        config.hosts[r->registry.registry].plain_http = true;
      }
    }
  }
  return config;
}

absl::StatusOr<blockstore::Platform> ParsePlatform(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, '/');
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--platform \"", text, "\": want os/arch[/variant]"));
  }
  blockstore::Platform p;
  p.os = parts[0];
  p.architecture = parts[1];
  if (parts.size() == 3) p.variant = parts[2];
  return p;
}

absl::StatusOr<std::unique_ptr<TempWorkDir>> TempWorkDir::Create(absl::string_view prefix) {
  const char* tmp_env = std::getenv("TMPDIR");
  std::string path = absl::StrCat(tmp_env != nullptr ? tmp_env : "/tmp", "/", prefix, "-XXXXXX");
  if (::mkdtemp(path.data()) == nullptr) return absl::InternalError(absl::StrCat("mkdtemp ", path));
  return std::unique_ptr<TempWorkDir>(new TempWorkDir(std::move(path)));
}

TempWorkDir::~TempWorkDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace dadi::cli
