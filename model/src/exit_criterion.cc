#include "muninn/model/exit_criterion.h"

#include <algorithm>
#include <cmath>

namespace muninn::model {
namespace {

struct KindName {
  ExitKind kind;
  const char* name;
};
constexpr KindName kKinds[] = {
    {ExitKind::kNone, "none"},           {ExitKind::kKl, "kl"},
    {ExitKind::kMinpKl, "minp-kl"},      {ExitKind::kEntropyDiff, "entropy-diff"},
    {ExitKind::kLatentDiff, "latent-diff"}, {ExitKind::kCosine, "cosine"},
    {ExitKind::kArgmaxStability, "argmax-stability"},
};

// log-softmax in double; `minp` first sets probabilities below 0.1·max to 1/V and renormalises.
std::vector<double> LogProbs(const float* logits, int64_t n, bool minp) {
  double mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, double{logits[i]});
  std::vector<double> p(static_cast<size_t>(n));
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += (p[static_cast<size_t>(i)] = std::exp(logits[i] - mx));
  for (double& v : p) v /= sum;
  if (minp) {
    const double pmax = *std::max_element(p.begin(), p.end());
    double s2 = 0.0;
    for (double& v : p) {
      if (v < 0.1 * pmax) v = 1.0 / static_cast<double>(n);
      s2 += v;
    }
    for (double& v : p) v /= s2;
  }
  for (double& v : p) v = std::log(std::max(v, 1e-300));
  return p;
}

}  // namespace

const char* ExitKindName(ExitKind kind) {
  for (const KindName& k : kKinds) {
    if (k.kind == kind) return k.name;
  }
  return "?";
}

Status ExitOptions::ParseKind(std::string_view name, ExitKind* kind) {
  for (const KindName& k : kKinds) {
    if (name == k.name) {
      *kind = k.kind;
      return Status::Ok();
    }
  }
  return InvalidArgumentError("exit criterion '" + std::string(name) +
                              "' is not one of kl, minp-kl, entropy-diff, latent-diff, cosine, "
                              "argmax-stability, none");
}

double ExitOptions::EffectiveThreshold() const {
  if (threshold >= 0.0) return threshold;
  switch (kind) {
    case ExitKind::kKl: return 5e-4;
    case ExitKind::kMinpKl: return 1e-5;
    case ExitKind::kEntropyDiff: return 1e-3;
    case ExitKind::kLatentDiff: return 0.03;
    case ExitKind::kCosine: return 1e-3;
    case ExitKind::kArgmaxStability: return 5.0;
    case ExitKind::kNone: return 0.0;
  }
  return 0.0;
}

bool ExitOptions::needs_logits() const {
  return kind == ExitKind::kKl || kind == ExitKind::kMinpKl || kind == ExitKind::kEntropyDiff ||
         kind == ExitKind::kArgmaxStability;
}

Status ExitOptions::Validate() const {
  if (min_steps < 0 || check_every < 1) {
    return InvalidArgumentError("exit min_steps must be >= 0 and check_every >= 1; got " +
                                std::to_string(min_steps) + ", " + std::to_string(check_every));
  }
  if (!std::isfinite(threshold)) return InvalidArgumentError("exit threshold must be finite");
  return Status::Ok();
}

void ExitCriterion::Reset() {
  have_prev_ = false;
  prev_logp_.clear();
  prev_entropy_ = 100.0;
  prev_state_.clear();
  prev_argmax_ = -1;
  stable_ = 0;
}

bool ExitCriterion::Update(int32_t step, const Tensor& state, const Tensor* logits) {
  if (!options_.enabled() || step % options_.check_every != 0) return false;
  const double theta = options_.EffectiveThreshold();
  double value = INFINITY;
  bool fired = false;
  switch (options_.kind) {
    case ExitKind::kKl:
    case ExitKind::kMinpKl:
    case ExitKind::kEntropyDiff:
    case ExitKind::kArgmaxStability: {
      MUNINN_CHECK(logits != nullptr) << "logit criterion without logits";
      const int64_t n = logits->dim(-1);
      const float* row = logits->data_as<const float>() + (logits->numel() - n);
      if (options_.kind == ExitKind::kArgmaxStability) {
        const int32_t am = static_cast<int32_t>(std::max_element(row, row + n) - row);
        stable_ = am == prev_argmax_ ? stable_ + 1 : 0;
        prev_argmax_ = am;
        fired = theta > 0.0 && stable_ >= theta;
        break;
      }
      std::vector<double> logp = LogProbs(row, n, options_.kind == ExitKind::kMinpKl);
      if (options_.kind == ExitKind::kEntropyDiff) {
        double h = 0.0;
        for (double lp : logp) h -= std::exp(lp) * lp;
        value = std::abs(h - prev_entropy_);
        prev_entropy_ = h;
      } else {
        if (prev_logp_.empty()) prev_logp_.assign(logp.size(), -std::log(static_cast<double>(n)));
        double kl = 0.0;
        for (size_t i = 0; i < logp.size(); ++i) {
          kl += std::exp(prev_logp_[i]) * (prev_logp_[i] - logp[i]);
        }
        value = kl;
        prev_logp_ = std::move(logp);
      }
      fired = value < theta;
      break;
    }
    case ExitKind::kLatentDiff:
    case ExitKind::kCosine: {
      const int64_t rows = state.dim(0), d = state.dim(1);
      const float* s = state.data_as<const float>();
      if (have_prev_ && prev_state_.size() == static_cast<size_t>(rows * d)) {
        double total = 0.0;
        for (int64_t r = 0; r < rows; ++r) {
          double dd = 0.0, ss = 0.0, pp = 0.0, sp = 0.0;
          for (int64_t i = 0; i < d; ++i) {
            const double a = s[r * d + i], b = prev_state_[static_cast<size_t>(r * d + i)];
            dd += (a - b) * (a - b);
            ss += a * a;
            pp += b * b;
            sp += a * b;
          }
          total += options_.kind == ExitKind::kLatentDiff
                       ? std::sqrt(dd) / std::max(std::sqrt(ss), 1e-30)
                       : 1.0 - sp / std::max(std::sqrt(ss * pp), 1e-30);
        }
        value = total / static_cast<double>(rows);
      }
      prev_state_.assign(s, s + rows * d);
      have_prev_ = true;
      fired = value < theta;
      break;
    }
    case ExitKind::kNone: return false;
  }
  return fired && theta > 0.0 && step >= options_.min_steps;
}

}  // namespace muninn::model
