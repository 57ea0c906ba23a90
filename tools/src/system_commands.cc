#include <cstdio>
#include <thread>

#include <nlohmann/json.hpp>

#include "command_registry.h"
#include "muninn/core/cpu_features.h"

namespace muninn::tools {

void RegisterSystemCommands(CLI::App& app, CommandContext& ctx) {
  auto* cmd = app.add_subcommand("system", "Show the CPU features and kernels this build will use");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "Print JSON");
  cmd->callback([&ctx, json] {
    const CpuFeatures& f = GetCpuFeatures();
    nlohmann::json j = {{"cpu_features", f.ToString()},
                        {"kernels", CpuIsaName(f.BestIsa())},
                        {"hardware_threads", std::thread::hardware_concurrency()}};
    if (*json) {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("cpu features:     %s\nkernels:          %s\nhardware threads: %u\n",
                  f.ToString().c_str(), CpuIsaName(f.BestIsa()), std::thread::hardware_concurrency());
    }
    ctx.exit_code = 0;
  });
}

}  // namespace muninn::tools
