#include "muninn/core/logging.h"

namespace muninn {

bool ParseLogLevel(std::string_view t, LogLevel* level) {
  if (t == "debug") *level = LogLevel::kDebug;
  else if (t == "info") *level = LogLevel::kInfo;
  else if (t == "warning" || t == "warn") *level = LogLevel::kWarning;
  else if (t == "error") *level = LogLevel::kError;
  else if (t == "off") *level = LogLevel::kOff;
  else return false;
  return true;
}

void StderrLogger::Log(LogLevel level, std::string_view message) {
  if (level < level_) return;
  static constexpr char kTags[] = {'D', 'I', 'W', 'E', 'O'};
  std::lock_guard<std::mutex> lock(mu_);
  std::fprintf(out_, "[%c] %.*s\n", kTags[static_cast<int>(level)], static_cast<int>(message.size()),
               message.data());
  std::fflush(out_);
}

Logger* DefaultNullLogger() {
  static NullLogger* logger = new NullLogger();  // immutable, never destroyed
  return logger;
}

}  // namespace muninn
