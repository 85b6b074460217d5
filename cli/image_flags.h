// Flags shared by the commands that read or write images (`convert`, `verify`): how to reach
// the registries named by image references, and which platform of an index to take.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blockstore/remote/manifest.h"
#include "blockstore/remote/registry_config.h"
#include "converter/image/image_reference.h"

namespace dadi::cli {

struct RegistryFlags {
  std::vector<std::string> insecure;  // hosts reached without TLS verification
  bool plain_http = false;            // plain HTTP to the registries of the images named
  std::string authfile;               // docker config.json; default ~/.docker/config.json
};

// Adds --insecure-registry, --plain-http and --authfile to `cmd`.
void AddRegistryFlags(CLI::App* cmd, RegistryFlags* flags);

// The registry configuration those flags describe; --plain-http applies to the registries of
// the `docker://` references among `images`.
absl::StatusOr<blockstore::RegistryConfig> MakeRegistryConfig(
    const RegistryFlags& flags,
    std::initializer_list<const converter::image::ImageReference*> images);

// Parses --platform "os/arch[/variant]".
absl::StatusOr<blockstore::Platform> ParsePlatform(const std::string& text);

// A private work directory `$TMPDIR/<prefix>-XXXXXX` (/tmp without TMPDIR), removed with its
// content on destruction so a failed command leaves nothing behind.
class TempWorkDir {
 public:
  static absl::StatusOr<std::unique_ptr<TempWorkDir>> Create(absl::string_view prefix);
  ~TempWorkDir();
  TempWorkDir(const TempWorkDir&) = delete;
  TempWorkDir& operator=(const TempWorkDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  explicit TempWorkDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace dadi::cli
