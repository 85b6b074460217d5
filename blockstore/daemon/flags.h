// Command-line parsing shared by dadi's daemons (CLI11).
#pragma once

#include <optional>
#include <sstream>
#include <string>

#include "CLI/CLI.hpp"

namespace dadi::blockstore::daemon {

// Parses argv with `app`. On --help, --version or a usage error, returns the exit code to
// leave with and sets *message to what to print; otherwise nullopt.
inline std::optional<int> ParseFlags(CLI::App& app, int argc, const char* const* argv,
                                     std::string* message) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    const int code = app.exit(e, out, err);
    *message = out.str() + err.str();
    return code;
  }
  return std::nullopt;
}

}  // namespace dadi::blockstore::daemon
