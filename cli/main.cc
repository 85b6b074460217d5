#include <cstdio>

#include "CLI/CLI.hpp"
#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"dadi: lazily loaded block images for containerd"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "dadi 0.1.0");
  int exit_code = 0;
  dadi::cli::RegisterBlobCommands(app, exit_code);
  dadi::cli::RegisterConvertCommands(app, exit_code);
  dadi::cli::RegisterVerifyCommands(app, exit_code);
  dadi::cli::RegisterTraceCommands(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
