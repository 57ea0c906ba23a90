#include "plot.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace muninn::tools {
namespace {

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') continue;
    out += c;
  }
  return out + "\"";
}

}  // namespace

Status WriteLinePlot(const std::string& png_path, const std::string& title, const std::string& xlabel,
                     const std::string& ylabel, const std::vector<PlotSeries>& series, bool log_x) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    return UnavailableError("gnuplot is not installed; `apt-get install gnuplot-nox` (scripts/setup.sh does)");
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path dir = fs::temp_directory_path(ec) / ("muninn-plot-" + std::to_string(::getpid()));
  fs::create_directories(dir, ec);
  if (ec) return IoError("cannot create a temporary directory for the plot");
  std::ofstream script(dir / "plot.gp");
  script << "set terminal pngcairo size 900,540 noenhanced\n"
         << "set output " << Quote(png_path) << "\n"
         << "set title " << Quote(title) << "\nset xlabel " << Quote(xlabel) << "\nset ylabel "
         << Quote(ylabel) << "\nset grid\nset key bottom left\nset yrange [0:*]\n";
  if (log_x) script << "set logscale x 2\n";
  script << "plot ";
  for (size_t i = 0; i < series.size(); ++i) {
    const fs::path data = dir / ("s" + std::to_string(i) + ".dat");
    std::ofstream d(data);
    for (const auto& [x, y] : series[i].points) d << x << " " << y << "\n";
    script << (i ? ", " : "") << Quote(data.string()) << " using 1:2 with linespoints lw 2 title "
           << Quote(series[i].name);
  }
  script << "\n";
  script.close();
  const std::string cmd = "gnuplot " + Quote((dir / "plot.gp").string()) + " 2>&1";
  const int rc = std::system(cmd.c_str());
  fs::remove_all(dir, ec);
  if (rc != 0) return InternalError("gnuplot failed (exit " + std::to_string(WEXITSTATUS(rc)) + ")");
  return Status::Ok();
}

}  // namespace muninn::tools
