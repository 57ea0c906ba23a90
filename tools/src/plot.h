// Private to tools/: PNG line plots through gnuplot (Debian gnuplot-nox), for `muninn eval`.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "muninn/core/status.h"

namespace muninn::tools {

struct PlotSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y)
};

// Unavailable when gnuplot is not installed (the message says how to install it).
Status WriteLinePlot(const std::string& png_path, const std::string& title, const std::string& xlabel,
                     const std::string& ylabel, const std::vector<PlotSeries>& series, bool log_x);

}  // namespace muninn::tools
