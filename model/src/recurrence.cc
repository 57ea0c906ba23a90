#include "muninn/model/recurrence.h"

#include <cmath>
#include <string>

namespace muninn::model {
namespace {

// Uniform in (0, 1) from the raw 64-bit stream (std:: distributions differ between libraries).
double Uniform01(std::mt19937_64* rng) {
  return (static_cast<double>((*rng)() >> 11) + 0.5) * 0x1.0p-53;
}

}  // namespace

Status RecurrenceOptions::ParseInit(std::string_view name, StateInit* init) {
  if (name == "random") {
    *init = StateInit::kRandom;
  } else if (name == "zero" || name == "zeros") {
    *init = StateInit::kZero;
  } else {
    return InvalidArgumentError("initial state '" + std::string(name) +
                                "' is not one of random, zero");
  }
  return Status::Ok();
}

Status RecurrenceOptions::ParseWarmStart(std::string_view name, WarmStart* warm) {
  if (name == "off" || name == "none") {
    *warm = WarmStart::kOff;
  } else if (name == "normed") {
    *warm = WarmStart::kNormed;
  } else if (name == "raw") {
    *warm = WarmStart::kRaw;
  } else {
    return InvalidArgumentError("warm start '" + std::string(name) +
                                "' is not one of off, normed, raw");
  }
  return Status::Ok();
}

Status RecurrenceOptions::Validate() const {
  if (steps < 0 || steps > 4096) {
    return InvalidArgumentError("recurrent steps must be in 0..4096 (0: the model's default), "
                                "got " + std::to_string(steps));
  }
  if (draft_steps < 0 || draft_steps > 4096 || lookahead < 1 || lookahead > 256) {
    return InvalidArgumentError("draft steps must be in 0..4096 and lookahead in 1..256; got " +
                                std::to_string(draft_steps) + ", " + std::to_string(lookahead));
  }
  if (draft_steps > 0 && exit.enabled()) {
    return InvalidArgumentError("self-speculative decoding (draft steps) and adaptive exit do not "
                                "combine; choose one");
  }
  if (draft_steps > 0 && warm_start != WarmStart::kOff) {
    return InvalidArgumentError("self-speculative decoding starts every token from s0; set warm "
                                "start off");
  }
  return exit.Validate();
}

StatusOr<Tensor> MakeInitialState(StateInit init, int64_t n_tokens, int64_t n_embd,
                                  float embd_scale, std::mt19937_64* rng) {
  if (init == StateInit::kZero) return Tensor();
  MUNINN_CHECK(rng != nullptr);
  ASSIGN_OR_RETURN(Tensor t, Tensor::Empty(DType::kF32, Shape{n_tokens, n_embd}));
  const double sigma = std::sqrt(2.0 / (5.0 * static_cast<double>(n_embd)));
  float* p = t.data_as<float>();
  for (int64_t i = 0; i < n_tokens * n_embd; ++i) {
    double z;
    do {  // Box-Muller, rejecting beyond ±3σ (a truncated normal)
      z = std::sqrt(-2.0 * std::log(Uniform01(rng))) * std::cos(2.0 * M_PI * Uniform01(rng));
    } while (std::abs(z) > 3.0);
    p[i] = static_cast<float>(z * sigma * embd_scale);
  }
  return t;
}

}  // namespace muninn::model
