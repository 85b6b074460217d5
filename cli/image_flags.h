// Flags shared by the commands that read or write images (`convert`, `verify`): how to reach
// the registries named by image references, and which platform of an index to take.
#pragma once

#include <initializer_list>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
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

}  // namespace dadi::cli
