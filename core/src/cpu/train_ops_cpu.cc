// The CPU backend's TrainOps: the host kernels of backward.h, attention_backward.h,
// cross_entropy.h and optimizer.h on the tensors' bytes (train_ops.h has the contract; its entry
// points have checked shapes, dtypes and devices before these run).
#include <memory>
#include <string>

#include "cpu/cpu_ops.h"
#include "muninn/core/train_ops.h"

namespace muninn::cpu {
namespace {

const float* F(const Tensor& t) { return t.defined() ? t.data_as<const float>() : nullptr; }
float* F(Tensor* t) { return t != nullptr ? t->data_as<float>() : nullptr; }

class CpuTrainOps final : public TrainOps {
 public:
  explicit CpuTrainOps(ThreadPool* pool) : pool_(pool) {}
  // The backend's forward kernels, in their scalar family (the host kernels' bits).
  CpuContext Scalar() const { return CpuContext{pool_, CpuIsa::kScalar}; }
  std::string name() const override { return "cpu"; }
  Device device() const override { return Device::Cpu(); }

 protected:
  Status DoLinear(const Tensor& x, const Tensor& w, Tensor* y) override {
    LinearForward(F(x), F(w), x.dim(0), w.dim(0), w.dim(1), F(y));
    return Status::Ok();
  }
  Status DoLinearBackwardInput(const Tensor& dy, const Tensor& w, bool accumulate,
                               Tensor* dx) override {
    muninn::LinearBackwardInput(F(dy), F(w), dy.dim(0), w.dim(0), w.dim(1), F(dx), accumulate);
    return Status::Ok();
  }
  Status DoLoraDropout(const LoraDims& d, const Tensor& x, Tensor* xd) override {
    muninn::LoraDropout(d, F(x), F(xd));
    return Status::Ok();
  }
  Status DoLoraForward(const LoraDims& d, const Tensor& xd, const Tensor& a, const Tensor& b,
                       Tensor* u, Tensor* y) override {
    muninn::LoraForward(d, F(xd), F(a), F(b), F(u), F(y));
    return Status::Ok();
  }
  Status DoLoraBackward(const LoraDims& d, const Tensor& dy, const Tensor& xd, const Tensor& u,
                        const Tensor& a, const Tensor& b, Tensor* da, Tensor* db,
                        Tensor* dx) override {
    muninn::LoraBackward(d, F(dy), F(xd), F(u), F(a), F(b), F(da), F(db), F(dx));
    return Status::Ok();
  }
  Status DoRmsNormForward(const Tensor& x, const Tensor& w, float eps, Tensor* y) override {
    return RmsNormOp(Scalar(), x, w, eps, y);
  }
  Status DoRmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps,
                           Tensor* dx, Tensor* dw) override {
    muninn::RmsNormBackward(pool_, F(x), F(w), F(dy), x.dim(0), x.dim(1), eps, F(dx), F(dw));
    return Status::Ok();
  }
  Status DoRopeBackward(const Tensor& dy, const Tensor& positions, const RopeParams& params,
                        Tensor* dx) override {
    return muninn::RopeBackward(pool_, F(dy), positions.data_as<const int32_t>(), dy.dim(0),
                                dy.dim(1), dy.dim(2), params, F(dx));
  }
  Status DoSwiGluForward(const Tensor& gate, const Tensor& up, Tensor* out) override {
    return SwiGluOp(Scalar(), gate, up, out);
  }
  Status DoSwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dy, Tensor* dgate,
                          Tensor* dup) override {
    muninn::SwiGluBackward(pool_, F(gate), F(up), F(dy), gate.numel(), F(dgate), F(dup));
    return Status::Ok();
  }
  Status DoAttentionForward(const AttentionTrainDims& dims, const AttentionTrainTensors& in,
                            Tensor* out, Tensor* lse) override {
    AttentionForwardTrain(pool_, dims, F(in.q), F(in.k), F(in.v), F(in.mem_q), F(in.mem_k),
                          F(in.mem_v), F(out), F(lse), F(in.mem_bias));
    return Status::Ok();
  }
  Status DoAttentionBackward(const AttentionTrainDims& dims, const AttentionTrainTensors& in,
                             const Tensor& out, const Tensor& lse, const Tensor& dout,
                             const AttentionTrainGrads& g) override {
    muninn::AttentionBackward(pool_, dims, F(in.q), F(in.k), F(in.v), F(in.mem_q), F(in.mem_k),
                              F(in.mem_v), F(out), F(lse), F(dout), F(g.dq), F(g.dk), F(g.dv),
                              F(g.dmem_q), F(in.mem_bias), F(g.dmem_bias));
    return Status::Ok();
  }
  StatusOr<CrossEntropyResult> DoCrossEntropy(const Tensor& h, const Tensor& w,
                                              std::span<const int32_t> labels,
                                              const CrossEntropyOptions& options,
                                              Tensor* dh) override {
    return FusedCrossEntropy(pool_, F(h), F(w), labels.data(), h.dim(0), h.dim(1), w.dim(0),
                             F(dh), options);
  }
  Status DoAddInPlace(const Tensor& x, Tensor* y) override { return AddOp(Scalar(), *y, x, y); }
  Status DoAdamW(const AdamWOptions& options, int64_t step, float lr, const Tensor& grad,
                 Tensor* param, Tensor* m, Tensor* v) override {
    AdamWStep(options, step, lr, F(param), F(grad), F(m), F(v), grad.numel());
    return Status::Ok();
  }

 private:
  ThreadPool* pool_;
};

}  // namespace

std::unique_ptr<TrainOps> MakeCpuTrainOps(ThreadPool* pool) {
  return std::make_unique<CpuTrainOps>(pool);
}

}  // namespace muninn::cpu
