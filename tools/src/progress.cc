#include "progress.h"

#include <unistd.h>

#include <cstdio>
#include <string>

namespace muninn::tools {
namespace {

// " eta 1m05s" from the pace so far, or "" before there is one.
std::string Eta(std::chrono::steady_clock::time_point start, int64_t done, int64_t total) {
  if (done <= 0 || done >= total) return {};
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto left = static_cast<long long>(elapsed * static_cast<double>(total - done) / static_cast<double>(done));
  char buf[32];
  std::snprintf(buf, sizeof buf, " eta %lldm%02llds", left / 60, left % 60);
  return buf;
}

}  // namespace

Progress::Progress(std::string prefix) : prefix_(std::move(prefix)), tty_(::isatty(2) == 1) {}

Progress::~Progress() {
  if (open_line_) std::fputc('\n', stderr);
}

void Progress::Update(std::string_view stage, int64_t done, int64_t total) {
  const int pct = total > 0 ? static_cast<int>(100 * done / total) : 100;
  if (stage != last_stage_) {
    if (open_line_) std::fputc('\n', stderr);
    open_line_ = false;
    last_decile_ = -1;
    last_stage_ = std::string(stage);
    stage_start_ = std::chrono::steady_clock::now();
  }
  const std::string eta = Eta(stage_start_, done, total);
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = pct * kWidth / 100;
    std::fprintf(stderr, "\r[%s] %-9.*s [%.*s%*s] %lld/%lld (%d%%)%-12s", prefix_.c_str(),
                 static_cast<int>(stage.size()), stage.data(), filled,
                 "##############################", kWidth - filled, "",
                 static_cast<long long>(done), static_cast<long long>(total), pct, eta.c_str());
    open_line_ = done < total;
    if (!open_line_) std::fputc('\n', stderr);
  } else {
    const int decile = pct / 10;
    if (decile == last_decile_ && done < total) return;
    last_decile_ = decile;
    std::fprintf(stderr, "[%s] %.*s %lld/%lld (%d%%)%s\n", prefix_.c_str(), static_cast<int>(stage.size()),
                 stage.data(), static_cast<long long>(done), static_cast<long long>(total), pct, eta.c_str());
  }
  std::fflush(stderr);
}

void Progress::Message(std::string_view text) {
  if (open_line_) std::fputc('\n', stderr);
  open_line_ = false;
  std::fprintf(stderr, "[%s] %.*s\n", prefix_.c_str(), static_cast<int>(text.size()), text.data());
  std::fflush(stderr);
}

}  // namespace muninn::tools
