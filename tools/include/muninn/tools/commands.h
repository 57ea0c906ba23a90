// The `muninn` command line: every subcommand family registers itself on the CLI11 app.
//
// A command's callback must not throw; it stores its exit code in the CommandContext.
// Commands print results to stdout (JSON with --json) and progress/errors to stderr.
#pragma once

#include <CLI/CLI.hpp>

namespace muninn::tools {

struct CommandContext {
  int exit_code = 0;
};

// Adds all subcommands to `app`. `ctx` must outlive app.parse().
void RegisterCommands(CLI::App& app, CommandContext& ctx);

// Parses argv and runs the chosen subcommand; returns the process exit code.
int RunMuninn(int argc, char** argv);

}  // namespace muninn::tools
