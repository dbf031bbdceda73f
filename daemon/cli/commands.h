// daemon/cli/commands.h — the `nearcache` commands: the table parse_cli reads.
#pragma once

#include <vector>

#include "cli/command_line.h"

namespace nearcache::daemon {

const std::vector<CliCommand>& cli_commands();

}  // namespace nearcache::daemon
