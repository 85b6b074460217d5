// Each command group of `dadi` registers its subcommands on the root app. A subcommand's callback
// sets the process exit code through `exit_code`.
#pragma once

#include <cstdio>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"

namespace dadi::cli {

// For a subcommand's callback: when `result` failed, prints "dadi COMMAND: <status>" to stderr,
// sets `exit_code` to 1 and returns true.
template <typename T>
bool Failed(const absl::StatusOr<T>& result, const char* command, int& exit_code) {
  if (result.ok()) return false;
  std::fprintf(stderr, "dadi %s: %s\n", command, result.status().ToString().c_str());
  exit_code = 1;
  return true;
}

// `dadi blob ...`: ZFile, LSMT and layer-blob tools (blob_command.cc).
void RegisterBlobCommands(CLI::App& app, int& exit_code);

// `dadi convert SRC DST`: OCI/Docker image to overlaybd image (convert_command.cc).
void RegisterConvertCommands(CLI::App& app, int& exit_code);

// `dadi verify CONVERTED --source SRC`: converted image's tree vs the source's (verify_command.cc).
void RegisterVerifyCommands(CLI::App& app, int& exit_code);

// `dadi trace save|push|show`: startup traces recorded by dadi-blockd (trace_command.cc).
void RegisterTraceCommands(CLI::App& app, int& exit_code);

}  // namespace dadi::cli
