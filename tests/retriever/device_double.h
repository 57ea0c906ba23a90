// DeviceDouble: a Backend that stands in for the CUDA backend on a machine without a GPU.
//
// It computes with a wrapped CPU backend, but the tensors it allocates report Device::Cuda(0) and
// their data() is an address the host cannot read (a PROT_NONE reservation): a host read of a
// "device" tensor (Tensor::Contiguous, data_as, an observer walking rows) faults exactly as it
// would on a GPU. Its ops follow the CUDA backend's argument rules (core/src/cuda/ops_*.cc,
// cuda_backend.cc) for where each operand must live:
//  - every tensor operand and every output must be on the device (CheckOnDevice / CheckF32Rows:
//    InvalidArgument "must be on cuda:0 ... Transfer it to the device first");
//  - except GetRows ids and Rope positions, which may be host or device tensors (IndexOnDevice);
//  - AttentionParams::mem_q must be on the device; mem_bias is a host float array (copied);
//  - Transfer copies host→device, device→host (contiguous host destination) and device→device;
//    host→host is refused.
// A host tensor handed where the CUDA backend would refuse one makes the op fail here too, so a
// test that runs a long-context session on the double checks the session's transfer discipline.
// Results equal the CPU backend's bit for bit (the same kernels on the same bytes).
//
// Counts transfers (uploads, downloads) so tests can see what crosses the bus.
// Thread-compatible, like every backend.
#pragma once

#include <sys/mman.h>

#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "muninn/core/backend.h"
#include "muninn/core/buffer.h"
#include "muninn/core/check.h"
#include "muninn/core/train_ops.h"

namespace muninn::testing {

// A "device" block: host shadow bytes behind an unreadable address.
class FakeDeviceBuffer final : public Buffer {
 public:
  static std::shared_ptr<FakeDeviceBuffer> Make(size_t bytes) {
    const size_t reserve = bytes == 0 ? 1 : bytes;
    void* addr =
        mmap(nullptr, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    MUNINN_CHECK(addr != MAP_FAILED) << "reserving " << reserve << " bytes of fake device space";
    auto shadow = AllocateHostBuffer(reserve, /*zero=*/false);
    MUNINN_CHECK(shadow.ok()) << shadow.status();
    return std::shared_ptr<FakeDeviceBuffer>(
        new FakeDeviceBuffer(addr, bytes, reserve, std::move(*shadow)));
  }
  ~FakeDeviceBuffer() override { munmap(data(), reserve_); }
  const std::shared_ptr<Buffer>& shadow() const { return shadow_; }

 private:
  FakeDeviceBuffer(void* addr, size_t bytes, size_t reserve, std::shared_ptr<Buffer> shadow)
      : Buffer(addr, bytes, Device::Cuda(0)), reserve_(reserve), shadow_(std::move(shadow)) {}
  size_t reserve_;
  std::shared_ptr<Buffer> shadow_;
};

class DeviceDouble final : public Backend {
 public:
  explicit DeviceDouble(std::unique_ptr<Backend> cpu) : cpu_(std::move(cpu)) {
    MUNINN_CHECK(cpu_ != nullptr && cpu_->device().is_cpu());
  }

  std::string name() const override { return "device-double(cuda:0)"; }
  Device device() const override { return Device::Cuda(0); }

  StatusOr<Tensor> Allocate(DType dtype, const Shape& shape) override {
    auto strides = ContiguousStrides(dtype, shape);
    if (!strides) return InvalidArgumentError("Allocate: bad shape " + shape.ToString());
    const size_t bytes =
        static_cast<size_t>(shape.numel() / BlockSize(dtype)) * GetDTypeInfo(dtype).block_bytes;
    ++allocations;
    return Tensor::FromBuffer(FakeDeviceBuffer::Make(bytes), 0, dtype, shape);
  }

  Status Transfer(const Tensor& src, Tensor* dst) override {
    RETURN_IF_ERROR(CheckTransferArgs(*this, src, dst));
    const bool src_dev = src.device() == device(), dst_dev = dst->device() == device();
    if (!dst_dev && !dst->is_contiguous()) {
      return InvalidArgumentError("Transfer to the host needs a contiguous destination, got " +
                                  dst->DebugString());
    }
    if (src_dev && !dst_dev) {
      ++downloads;
      download_bytes += static_cast<int64_t>(dst->nbytes());
    } else if (!src_dev && dst_dev) {
      ++uploads;
    }
    ASSIGN_OR_RETURN(Tensor s, src_dev ? Shadow(src) : src);
    ASSIGN_OR_RETURN(Tensor d, dst_dev ? Shadow(*dst) : *dst);
    if (!src_dev && dst_dev) upload_bytes += static_cast<int64_t>(d.nbytes());
    if (src.numel() == 0) return Status::Ok();
    if (!s.is_contiguous()) {
      ASSIGN_OR_RETURN(s, s.Contiguous());
    }
    if (d.is_contiguous()) {
      std::memcpy(d.data(), s.data(), s.nbytes());
      return Status::Ok();
    }
    return cpu_->Copy(s, &d);
  }

  // The CPU's answer, less the ops Refuse() listed (a device without, e.g., q8_0 attention).
  bool SupportsOp(const OpDesc& op) const override {
    for (const OpDesc& r : refused_) {
      if (r.kind == op.kind && r.dtype == op.dtype) return false;
    }
    return cpu_->SupportsOp(op);
  }
  void Refuse(const OpDesc& op) { refused_.push_back(op); }
  Status Synchronize() override { return Status::Ok(); }

  Status Copy(const Tensor& src, Tensor* dst) override {
    ASSIGN_OR_RETURN(Tensor s, OnDevice(src, "Copy", "src"));
    ASSIGN_OR_RETURN(Tensor d, Out(dst, "Copy"));
    return cpu_->Copy(s, &d);
  }
  Status MatMul(const Tensor& x, const Tensor& w, Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor hx, OnDevice(x, "MatMul", "x"));
    ASSIGN_OR_RETURN(Tensor hw, OnDevice(w, "MatMul", "w"));
    ASSIGN_OR_RETURN(Tensor o, Out(out, "MatMul"));
    return cpu_->MatMul(hx, hw, &o);
  }
  // Like the CUDA backend, the double takes the fused decode ops (the model then calls them); it
  // runs them as Backend's defaults do, through its own plain ops, so results stay the CPU's bit
  // for bit. `fused_calls` counts them.
  bool FusesDecodeOps(int64_t n_tokens) const override {
    return fuses_decode_ops && n_tokens <= kFusedMaxTokens;
  }
  Status RopeAndStoreKv(const Tensor& positions, const RopeParams& params, Tensor* q, Tensor* k,
                        const Tensor& v, Tensor* k_cache, Tensor* v_cache) override {
    ++fused_calls;
    return Backend::RopeAndStoreKv(positions, params, q, k, v, k_cache, v_cache);
  }
  Status MatMulAdd(const Tensor& x, const Tensor& w, Tensor* out) override {
    ++fused_calls;
    return Backend::MatMulAdd(x, w, out);
  }
  Status RmsNormMatMulShared(const Tensor& x, const Tensor& norm_weight, float eps,
                             std::span<const Tensor* const> ws,
                             std::span<Tensor* const> outs) override {
    ++fused_calls;
    return Backend::RmsNormMatMulShared(x, norm_weight, eps, ws, outs);
  }
  Status SwiGluMatMulAdd(const Tensor& gate, const Tensor& up, const Tensor& w,
                         Tensor* out) override {
    ++fused_calls;
    return Backend::SwiGluMatMulAdd(gate, up, w, out);
  }
  Status GetRows(const Tensor& table, const Tensor& ids, Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor t, OnDevice(table, "GetRows", "table"));
    ASSIGN_OR_RETURN(Tensor i, HostOrDevice(ids, "GetRows", "ids"));
    ASSIGN_OR_RETURN(Tensor o, Out(out, "GetRows"));
    return cpu_->GetRows(t, i, &o);
  }
  Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor hx, OnDevice(x, "RmsNorm", "x"));
    ASSIGN_OR_RETURN(Tensor hw, Optional(weight, "RmsNorm", "weight"));
    ASSIGN_OR_RETURN(Tensor o, Out(out, "RmsNorm"));
    return cpu_->RmsNorm(hx, hw, eps, &o);
  }
  Status LayerNorm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                   Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor hx, OnDevice(x, "LayerNorm", "x"));
    ASSIGN_OR_RETURN(Tensor hw, Optional(weight, "LayerNorm", "weight"));
    ASSIGN_OR_RETURN(Tensor hb, Optional(bias, "LayerNorm", "bias"));
    ASSIGN_OR_RETURN(Tensor o, Out(out, "LayerNorm"));
    return cpu_->LayerNorm(hx, hw, hb, eps, &o);
  }
  Status Rope(const Tensor& x, const Tensor& positions, const RopeParams& params,
              Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor hx, OnDevice(x, "Rope", "x"));
    ASSIGN_OR_RETURN(Tensor p, HostOrDevice(positions, "Rope", "positions"));
    ASSIGN_OR_RETURN(Tensor o, Out(out, "Rope"));
    return cpu_->Rope(hx, p, params, &o);
  }
  Status Softmax(const Tensor& x, float scale, Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor hx, OnDevice(x, "Softmax", "x"));
    ASSIGN_OR_RETURN(Tensor o, Out(out, "Softmax"));
    return cpu_->Softmax(hx, scale, &o);
  }
  Status Silu(const Tensor& x, Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor hx, OnDevice(x, "Silu", "x"));
    ASSIGN_OR_RETURN(Tensor o, Out(out, "Silu"));
    return cpu_->Silu(hx, &o);
  }
  Status Gelu(const Tensor& x, GeluMode mode, Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor hx, OnDevice(x, "Gelu", "x"));
    ASSIGN_OR_RETURN(Tensor o, Out(out, "Gelu"));
    return cpu_->Gelu(hx, mode, &o);
  }
  Status SwiGlu(const Tensor& gate, const Tensor& up, Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor g, OnDevice(gate, "SwiGlu", "gate"));
    ASSIGN_OR_RETURN(Tensor u, OnDevice(up, "SwiGlu", "up"));
    ASSIGN_OR_RETURN(Tensor o, Out(out, "SwiGlu"));
    return cpu_->SwiGlu(g, u, &o);
  }
  Status Add(const Tensor& a, const Tensor& b, Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor ha, OnDevice(a, "Add", "a"));
    ASSIGN_OR_RETURN(Tensor hb, OnDevice(b, "Add", "b"));
    ASSIGN_OR_RETURN(Tensor o, Out(out, "Add"));
    return cpu_->Add(ha, hb, &o);
  }
  Status Mul(const Tensor& a, const Tensor& b, Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor ha, OnDevice(a, "Mul", "a"));
    ASSIGN_OR_RETURN(Tensor hb, OnDevice(b, "Mul", "b"));
    ASSIGN_OR_RETURN(Tensor o, Out(out, "Mul"));
    return cpu_->Mul(ha, hb, &o);
  }
  Status Scale(const Tensor& x, float s, Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor hx, OnDevice(x, "Scale", "x"));
    ASSIGN_OR_RETURN(Tensor o, Out(out, "Scale"));
    return cpu_->Scale(hx, s, &o);
  }
  Status Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mem_k,
                   const Tensor& mem_v, const AttentionParams& params, Tensor* out) override {
    ASSIGN_OR_RETURN(Tensor hq, OnDevice(q, "Attention", "q"));
    ASSIGN_OR_RETURN(Tensor hk, OnDevice(k, "Attention", "k"));
    ASSIGN_OR_RETURN(Tensor hv, OnDevice(v, "Attention", "v"));
    if (mem_k.defined() != mem_v.defined()) {
      return InvalidArgumentError(
          "Attention: mem_k and mem_v must both be given or both undefined");
    }
    ASSIGN_OR_RETURN(Tensor hmk, Optional(mem_k, "Attention", "mem_k"));
    ASSIGN_OR_RETURN(Tensor hmv, Optional(mem_v, "Attention", "mem_v"));
    AttentionParams p = params;
    Tensor hmq;
    if (params.mem_q != nullptr && params.mem_q->defined()) {
      ASSIGN_OR_RETURN(hmq, OnDevice(*params.mem_q, "Attention", "mem_q"));
      p.mem_q = &hmq;
    }
    if (mem_k.defined()) ++memory_attentions;
    ASSIGN_OR_RETURN(Tensor o, Out(out, "Attention"));
    return cpu_->Attention(hq, hk, hv, hmk, hmv, p, &o);
  }

  // Training ops (train_ops.h) with the CPU's kernels on the shadow bytes, under the same
  // argument rules as the CUDA backend's: every tensor on the device, Rope positions on either.
  StatusOr<std::unique_ptr<TrainOps>> CreateTrainOps(ThreadPool* pool) override;

  // What crossed between the host and the "device".
  int64_t uploads = 0, downloads = 0, upload_bytes = 0, download_bytes = 0;
  int64_t allocations = 0;
  int64_t memory_attentions = 0;  // Attention calls with a memory block
  // Host ids / positions handed to GetRows / Rope: each is a hidden small upload on CUDA.
  int64_t host_index_uploads = 0;
  bool fuses_decode_ops = true;  // what FusesDecodeOps() answers, for up to kFusedMaxTokens
  static constexpr int64_t kFusedMaxTokens = 8;  // the CUDA backend's decode rows (kMatVecMaxRows)
  int64_t fused_calls = 0;  // calls of the fused decode ops (RopeAndStoreKv, MatMulAdd, ...)

 private:
  // The host view of a device tensor: the same offset and strides into the shadow bytes.
  static StatusOr<Tensor> Shadow(const Tensor& t) {
    const auto* fake = dynamic_cast<const FakeDeviceBuffer*>(t.buffer().get());
    if (fake == nullptr) {
      return InvalidArgumentError("tensor " + t.DebugString() + " claims " + t.device().ToString() +
                                  " but was not allocated by this backend");
    }
    std::vector<int64_t> strides;
    for (int i = 0; i < t.ndim(); ++i) strides.push_back(t.stride(i));
    return Tensor::FromBufferStrided(fake->shadow(), t.offset(), t.dtype(), t.shape(), strides);
  }
  StatusOr<Tensor> OnDevice(const Tensor& t, const char* op, const char* what) const {
    if (!t.defined()) return InvalidArgumentError(std::string(op) + ": " + what + " is undefined");
    if (t.device() != device()) {
      return InvalidArgumentError(std::string(op) + ": " + what + " must be on cuda:0, got " +
                                  t.DebugString() + " on " + t.device().ToString() +
                                  "; Transfer it to the device first");
    }
    return Shadow(t);
  }
  StatusOr<Tensor> Optional(const Tensor& t, const char* op, const char* what) const {
    if (!t.defined()) return Tensor();
    return OnDevice(t, op, what);
  }
  StatusOr<Tensor> HostOrDevice(const Tensor& t, const char* op, const char* what) {
    if (!t.defined()) return InvalidArgumentError(std::string(op) + ": " + what + " is undefined");
    if (t.device().is_cpu()) {
      ++host_index_uploads;  // the CUDA backend copies such a tensor up (IndexOnDevice)
      return t;
    }
    return OnDevice(t, op, what);
  }
  StatusOr<Tensor> Out(Tensor* out, const char* op) const {
    if (out == nullptr) return InvalidArgumentError(std::string(op) + ": out is null");
    return OnDevice(*out, op, "out");
  }

  std::unique_ptr<Backend> cpu_;
  std::vector<OpDesc> refused_;  // SupportsOp says no to these
  friend class DoubleTrainOps;
};

class DoubleTrainOps final : public TrainOps {
 public:
  // `device` counts the host positions RopeBackward is handed (host_index_uploads).
  DoubleTrainOps(std::unique_ptr<TrainOps> cpu, DeviceDouble* device)
      : cpu_(std::move(cpu)), d_(device) {}
  std::string name() const override { return "device-double(cuda:0)"; }
  Device device() const override { return Device::Cuda(0); }

 protected:
  // The entry points (train_ops.cc) have checked that every tensor is on cuda:0, so each is a
  // FakeDeviceBuffer view: its shadow is a host tensor with the same bytes.
  static Tensor H(const Tensor& t) {
    if (!t.defined()) return t;
    auto s = DeviceDouble::Shadow(t);
    MUNINN_CHECK(s.ok()) << s.status();
    return *s;
  }
  struct Out {
    explicit Out(Tensor* t) : shadow(t != nullptr ? H(*t) : Tensor()), given(t != nullptr) {}
    Tensor* get() { return given ? &shadow : nullptr; }
    Tensor shadow;
    bool given;
  };
  static AttentionTrainTensors H(const AttentionTrainTensors& in) {
    return {H(in.q), H(in.k), H(in.v), H(in.mem_q), H(in.mem_k), H(in.mem_v), H(in.mem_bias)};
  }
  Status DoLinear(const Tensor& x, const Tensor& w, Tensor* y) override {
    Out o(y);
    return cpu_->Linear(H(x), H(w), o.get());
  }
  Status DoLinearBackwardInput(const Tensor& dy, const Tensor& w, bool acc, Tensor* dx) override {
    Out o(dx);
    return cpu_->LinearBackwardInput(H(dy), H(w), acc, o.get());
  }
  Status DoLoraDropout(const LoraDims& d, const Tensor& x, Tensor* xd) override {
    Out o(xd);
    return cpu_->LoraDropout(d, H(x), o.get());
  }
  Status DoLoraForward(const LoraDims& d, const Tensor& xd, const Tensor& a, const Tensor& b,
                       Tensor* u, Tensor* y) override {
    Out ou(u), oy(y);
    return cpu_->LoraForward(d, H(xd), H(a), H(b), ou.get(), oy.get());
  }
  Status DoLoraBackward(const LoraDims& d, const Tensor& dy, const Tensor& xd, const Tensor& u,
                        const Tensor& a, const Tensor& b, Tensor* da, Tensor* db,
                        Tensor* dx) override {
    Out oa(da), ob(db), ox(dx);
    return cpu_->LoraBackward(d, H(dy), H(xd), H(u), H(a), H(b), oa.get(), ob.get(), ox.get());
  }
  Status DoRmsNormForward(const Tensor& x, const Tensor& w, float eps, Tensor* y) override {
    Out o(y);
    return cpu_->RmsNormForward(H(x), H(w), eps, o.get());
  }
  Status DoRmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps,
                           Tensor* dx, Tensor* dw) override {
    Out ox(dx), ow(dw);
    return cpu_->RmsNormBackward(H(x), H(w), H(dy), eps, ox.get(), ow.get());
  }
  Status DoRopeBackward(const Tensor& dy, const Tensor& positions, const RopeParams& params,
                        Tensor* dx) override {
    Out o(dx);
    if (positions.device().is_cpu()) ++d_->host_index_uploads;  // CUDA copies them up too
    return cpu_->RopeBackward(H(dy), positions.device().is_cpu() ? positions : H(positions),
                              params, o.get());
  }
  Status DoSwiGluForward(const Tensor& gate, const Tensor& up, Tensor* out) override {
    Out o(out);
    return cpu_->SwiGluForward(H(gate), H(up), o.get());
  }
  Status DoSwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dy, Tensor* dgate,
                          Tensor* dup) override {
    Out og(dgate), ou(dup);
    return cpu_->SwiGluBackward(H(gate), H(up), H(dy), og.get(), ou.get());
  }
  Status DoAttentionForward(const AttentionTrainDims& dims, const AttentionTrainTensors& in,
                            Tensor* out, Tensor* lse) override {
    Out oo(out), ol(lse);
    return cpu_->AttentionForward(dims, H(in), oo.get(), ol.get());
  }
  Status DoAttentionBackward(const AttentionTrainDims& dims, const AttentionTrainTensors& in,
                             const Tensor& out, const Tensor& lse, const Tensor& dout,
                             const AttentionTrainGrads& g) override {
    Out dq(g.dq), dk(g.dk), dv(g.dv), dmq(g.dmem_q), dmb(g.dmem_bias);
    return cpu_->AttentionBackward(dims, H(in), H(out), H(lse), H(dout),
                                   {dq.get(), dk.get(), dv.get(), dmq.get(), dmb.get()});
  }
  StatusOr<CrossEntropyResult> DoCrossEntropy(const Tensor& h, const Tensor& w,
                                              std::span<const int32_t> labels,
                                              const CrossEntropyOptions& options,
                                              Tensor* dh) override {
    Out o(dh);
    ++cross_entropies;
    return cpu_->CrossEntropy(H(h), H(w), labels, options, o.get());
  }
  Status DoAddInPlace(const Tensor& x, Tensor* y) override {
    Out o(y);
    return cpu_->AddInPlace(H(x), o.get());
  }
  Status DoAdamW(const AdamWOptions& options, int64_t step, float lr, const Tensor& grad,
                 Tensor* param, Tensor* m, Tensor* v) override {
    Out op(param), om(m), ov(v);
    return cpu_->AdamW(options, step, lr, H(grad), op.get(), om.get(), ov.get());
  }

 public:
  int64_t cross_entropies = 0;  // CrossEntropy calls (the trainer's forwards reached the head)

 private:
  std::unique_ptr<TrainOps> cpu_;
  DeviceDouble* d_;
};

inline StatusOr<std::unique_ptr<TrainOps>> DeviceDouble::CreateTrainOps(ThreadPool* pool) {
  ASSIGN_OR_RETURN(std::unique_ptr<TrainOps> cpu, cpu_->CreateTrainOps(pool));
  return std::unique_ptr<TrainOps>(std::make_unique<DoubleTrainOps>(std::move(cpu), this));
}

}  // namespace muninn::testing
