// Private to tools/: progress lines on stderr. On a terminal one line is redrawn in place; in a
// pipe or log a line is printed at most every 10% (and at the end) so logs stay short. Once a
// stage is under way, a line also says how long its remainder should take (at the pace so far).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace muninn::tools {

class Progress {
 public:
  explicit Progress(std::string prefix);
  ~Progress();
  void Update(std::string_view stage, int64_t done, int64_t total);
  void Message(std::string_view text);  // a line of its own

 private:
  std::string prefix_;
  bool tty_;
  bool open_line_ = false;
  int last_decile_ = -1;
  std::string last_stage_;
  std::chrono::steady_clock::time_point stage_start_;
};

}  // namespace muninn::tools
