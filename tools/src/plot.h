// Private to tools/: PNG line plots and heat maps through gnuplot (Debian gnuplot-nox), for `muninn eval`.
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

struct HeatmapCell {
  double x;      // column value (e.g. document tokens)
  double y;      // row value (e.g. depth)
  double value;  // 0..100
};
using HeatmapCells = std::vector<HeatmapCell>;

// A grid of labelled cells (values 0..100, printed in each cell); the columns and rows are the
// distinct x and y values, in ascending order, evenly spaced.
Status WriteHeatmap(const std::string& png_path, const std::string& title, const std::string& xlabel,
                    const std::string& ylabel, const HeatmapCells& cells);

}  // namespace muninn::tools
