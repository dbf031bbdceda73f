// daemon/cli/cli.cc — `nearcache`, the operator's command line: parses argv
// against the command table (commands.cc) and runs the command.
#include "cli/command_line.h"
#include "cli/commands.h"

int main(int argc, char** argv) {
  using namespace nearcache::daemon;
  const CliCommand* cmd = nullptr;
  CliInvocation inv;
  const int rc = parse_cli(argc, argv, cli_commands(), &cmd, &inv);
  return rc >= 0 ? rc : cmd->run(inv);
}
