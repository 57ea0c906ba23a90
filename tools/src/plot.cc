#include "plot.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

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

Status WriteHeatmap(const std::string& png_path, const std::string& title, const std::string& xlabel,
                    const std::string& ylabel, const HeatmapCells& cells) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    return UnavailableError("gnuplot is not installed; `apt-get install gnuplot-nox` (scripts/setup.sh does)");
  }
  if (cells.empty()) return InvalidArgumentError("a heat map needs cells");
  std::set<double> xs, ys;
  for (const HeatmapCell& c : cells) {
    xs.insert(c.x);
    ys.insert(c.y);
  }
  const std::vector<double> xv(xs.begin(), xs.end()), yv(ys.begin(), ys.end());
  auto index_of = [](const std::vector<double>& v, double x) {
    return static_cast<int>(std::lower_bound(v.begin(), v.end(), x) - v.begin());
  };
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path dir = fs::temp_directory_path(ec) / ("muninn-heat-" + std::to_string(::getpid()));
  fs::create_directories(dir, ec);
  if (ec) return IoError("cannot create a temporary directory for the plot");
  const fs::path data = dir / "cells.dat";
  {
    std::ofstream d(data);
    for (const HeatmapCell& c : cells) {
      d << index_of(xv, c.x) << " " << index_of(yv, c.y) << " " << c.value << "\n";
    }
  }
  auto label = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", v);
    return std::string(buf);
  };
  std::ofstream script(dir / "heat.gp");
  script << "set terminal pngcairo size 900,540 noenhanced\n"
         << "set output " << Quote(png_path) << "\n"
         << "set title " << Quote(title) << "\nset xlabel " << Quote(xlabel) << "\nset ylabel "
         << Quote(ylabel) << "\nset cbrange [0:100]\nset palette defined (0 '#b2182b', 50 '#fddbc7', 100 '#2166ac')\n"
         << "set xrange [-0.5:" << xv.size() - 0.5 << "]\nset yrange [-0.5:" << yv.size() - 0.5 << "]\n";
  script << "set xtics (";
  for (size_t i = 0; i < xv.size(); ++i) script << (i ? ", " : "") << Quote(label(xv[i])) << " " << i;
  script << ")\nset ytics (";
  for (size_t i = 0; i < yv.size(); ++i) script << (i ? ", " : "") << Quote(label(yv[i])) << " " << i;
  script << ")\n";
  script << "plot " << Quote(data.string()) << " using 1:2:3 with image notitle, "
         << Quote(data.string()) << " using 1:2:(sprintf('%.0f', $3)) with labels notitle\n";
  script.close();
  const std::string cmd = "gnuplot " + Quote((dir / "heat.gp").string()) + " 2>&1";
  const int rc = std::system(cmd.c_str());
  fs::remove_all(dir, ec);
  if (rc != 0) return InternalError("gnuplot failed (exit " + std::to_string(WEXITSTATUS(rc)) + ")");
  return Status::Ok();
}

}  // namespace muninn::tools
