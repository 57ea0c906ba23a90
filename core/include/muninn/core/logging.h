// Logger: a small leveled logger that components receive through their options (no global
// logger). Thread-safe: Log() may be called from any thread; lines are never interleaved.
#pragma once

#include <cstdio>
#include <memory>
#include <mutex>
#include <sstream>
#include <string_view>

namespace muninn {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kOff = 4 };

// Parses "debug", "info", "warning", "error", "off"; false for anything else.
bool ParseLogLevel(std::string_view text, LogLevel* level);

class Logger {
 public:
  virtual ~Logger() = default;
  virtual void Log(LogLevel level, std::string_view message) = 0;
  virtual LogLevel level() const = 0;
  bool Enabled(LogLevel l) const { return l >= level(); }
};

// Writes "[I] message\n" lines to a FILE* (stderr by default). Does not own the FILE*.
class StderrLogger final : public Logger {
 public:
  explicit StderrLogger(LogLevel level = LogLevel::kInfo, std::FILE* out = stderr)
      : level_(level), out_(out) {}
  void Log(LogLevel level, std::string_view message) override;
  LogLevel level() const override { return level_; }

 private:
  LogLevel level_;
  std::FILE* out_;
  std::mutex mu_;
};

// Discards everything; the default when a component is given no logger.
class NullLogger final : public Logger {
 public:
  void Log(LogLevel, std::string_view) override {}
  LogLevel level() const override { return LogLevel::kOff; }
};

// A logger that is never destroyed, for options whose `logger` is left null.
Logger* DefaultNullLogger();

}  // namespace muninn

// MUNINN_LOG(logger, kInfo) << "text"; formats only when the level is enabled.
#define MUNINN_LOG(logger, lvl)                                                      \
  for (bool muninn_log_once_ = (logger) != nullptr && (logger)->Enabled(::muninn::LogLevel::lvl); \
       muninn_log_once_; muninn_log_once_ = false)                                   \
  ::muninn::internal::LogLine((logger), ::muninn::LogLevel::lvl).stream()

namespace muninn::internal {
class LogLine {
 public:
  LogLine(Logger* logger, LogLevel level) : logger_(logger), level_(level) {}
  ~LogLine() { logger_->Log(level_, stream_.str()); }
  std::ostringstream& stream() { return stream_; }

 private:
  Logger* logger_;
  LogLevel level_;
  std::ostringstream stream_;
};
}  // namespace muninn::internal
