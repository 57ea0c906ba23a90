#include "muninn/tools/commands.h"

#include <cstdio>

#include "command_registry.h"

namespace muninn::tools {

void RegisterCommands(CLI::App& app, CommandContext& ctx) {
  RegisterSystemCommands(app, ctx);
  RegisterGenerateCommands(app, ctx);
  RegisterBenchCommands(app, ctx);
  RegisterTokenizeCommands(app, ctx);
  RegisterEmbedCommands(app, ctx);
  RegisterBankCommands(app, ctx);
  RegisterModelCommands(app, ctx);
  RegisterLongContextCommands(app, ctx);
  RegisterEvalCommands(app, ctx);
  RegisterSummarizeCommands(app, ctx);
  RegisterDiagnoseCommands(app, ctx);
  RegisterServeCommands(app, ctx);
  RegisterTrainCommands(app, ctx);
}

int RunMuninn(int argc, char** argv) {
  CLI::App app{"muninn: read, remember and answer over documents longer than a model's window"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "muninn 0.1.0");
  CommandContext ctx;
  RegisterCommands(app, ctx);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return ctx.exit_code;
}

}  // namespace muninn::tools
