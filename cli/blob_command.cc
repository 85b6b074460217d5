#include "cli/commands.h"

namespace dadi::cli {

void RegisterBlobCommands(CLI::App& app, int& exit_code) {
  (void)exit_code;
  auto* blob = app.add_subcommand("blob", "ZFile, LSMT and overlaybd layer blob tools");
  blob->require_subcommand(1);
}

}  // namespace dadi::cli
