// A stand-in for the CUDA runtime and cuBLAS that runs no kernel, for measuring the CUDA backend's
// host work on a machine without a GPU (bench/cuda_host/README.md). Built only with
// -DMUNINN_CUDA_HOST_STUB=ON, which links the CUDA backend against this library instead of
// cudart and cuBLAS; never part of a normal build.
//
// "Device" memory is host memory (calloc'd, so reads back as zeros until written); copies and
// memsets are done; kernel launches and GEMMs are counted and skipped, so every result is
// meaningless and only the host's time and the call counts mean anything. The first device asked
// about has the attributes of an H100 SXM (132 multiprocessors).
//
// At exit, with MUNINN_CUDA_STUB_REPORT set, the counts go to stderr: every runtime call by name,
// kernel launches by kernel, host-to-device copies from pageable (not cudaMallocHost'd) memory.
// MUNINN_CUDA_STUB_LAUNCH_NS=N spins N ns in each launch to stand for the real launch's cost.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace {

struct Counters {
  std::mutex mu;
  std::map<std::string, long> calls;                   // runtime/cuBLAS entry point -> calls
  std::map<std::string, long> launches;                // kernel (device name) -> launches
  std::map<const void*, std::string> kernel_names;     // host stub -> device name
  std::vector<std::pair<const char*, size_t>> pinned;  // cudaMallocHost ranges
  long pageable_uploads = 0;
  long upload_bytes = 0;
  long download_bytes = 0;
  long launch_ns = -1;

  ~Counters() {
    if (std::getenv("MUNINN_CUDA_STUB_REPORT") == nullptr) return;
    std::fprintf(stderr, "cuda_host_stub: runtime calls\n");
    for (const auto& [name, n] : calls) std::fprintf(stderr, "  %10ld %s\n", n, name.c_str());
    std::vector<std::pair<long, std::string>> by_count;
    long total = 0;
    for (const auto& [name, n] : launches) {
      by_count.emplace_back(n, name);
      total += n;
    }
    std::sort(by_count.rbegin(), by_count.rend());
    std::fprintf(stderr, "cuda_host_stub: %ld kernel launches\n", total);
    for (const auto& [n, name] : by_count) std::fprintf(stderr, "  %10ld %s\n", n, name.c_str());
    std::fprintf(stderr,
                 "cuda_host_stub: uploads %ld bytes (%ld copies from pageable memory), "
                 "downloads %ld bytes\n",
                 upload_bytes, pageable_uploads, download_bytes);
  }
};

Counters& C() {
  static Counters c;
  return c;
}

void Count(const char* name) {
  std::lock_guard<std::mutex> lock(C().mu);
  ++C().calls[name];
}

thread_local cudaError_t last_error = cudaSuccess;
thread_local dim3 pushed_grid, pushed_block;
thread_local size_t pushed_shmem = 0;
thread_local void* pushed_stream = nullptr;

bool IsPinned(const void* p) {
  const char* c = static_cast<const char*>(p);
  for (const auto& [base, size] : C().pinned) {
    if (c >= base && c < base + size) return true;
  }
  return false;
}

void SpinLaunch() {
  Counters& c = C();
  if (c.launch_ns < 0) {
    const char* v = std::getenv("MUNINN_CUDA_STUB_LAUNCH_NS");
    c.launch_ns = v ? std::atol(v) : 0;
  }
  if (c.launch_ns == 0) return;
  const auto end = std::chrono::steady_clock::now() + std::chrono::nanoseconds(c.launch_ns);
  while (std::chrono::steady_clock::now() < end) {
  }
}

struct FakeHandle {
  int tag;
};

}  // namespace

extern "C" {

// ---- kernel registration and launch (what nvcc's host stubs call) -------------------------------
void** __cudaRegisterFatBinary(void* fat_cubin) {
  static void* handle = nullptr;
  (void)fat_cubin;
  return &handle;
}
void __cudaRegisterFatBinaryEnd(void** /*handle*/) {}
void __cudaUnregisterFatBinary(void** /*handle*/) {}
void __cudaRegisterFunction(void** /*handle*/, const char* host_fun, char* /*device_fun*/,
                            const char* device_name, int /*thread_limit*/, uint3* /*tid*/,
                            uint3* /*bid*/, dim3* /*b_dim*/, dim3* /*g_dim*/, int* /*w_size*/) {
  std::lock_guard<std::mutex> lock(C().mu);
  C().kernel_names[host_fun] = device_name;
}
void __cudaRegisterVar(void** /*handle*/, char* /*host_var*/, char* /*device_address*/,
                       const char* /*device_name*/, int /*ext*/, size_t /*size*/, int /*constant*/,
                       int /*global*/) {}
unsigned __cudaPushCallConfiguration(dim3 grid, dim3 block, size_t shmem, struct CUstream_st* s) {
  pushed_grid = grid;
  pushed_block = block;
  pushed_shmem = shmem;
  pushed_stream = s;
  return 0;
}
cudaError_t __cudaPopCallConfiguration(dim3* grid, dim3* block, size_t* shmem, void* stream) {
  *grid = pushed_grid;
  *block = pushed_block;
  *shmem = pushed_shmem;
  *static_cast<void**>(stream) = pushed_stream;
  return cudaSuccess;
}
cudaError_t __cudaGetKernel(cudaKernel_t* kernel, const void* fun) {
  *kernel = reinterpret_cast<cudaKernel_t>(const_cast<void*>(fun));
  return cudaSuccess;
}
cudaError_t __cudaLaunchKernel(cudaKernel_t kernel, dim3 grid, dim3 block, void** /*args*/,
                               size_t /*shmem*/, cudaStream_t /*stream*/) {
  {
    std::lock_guard<std::mutex> lock(C().mu);
    const auto it = C().kernel_names.find(reinterpret_cast<const void*>(kernel));
    ++C().launches[it == C().kernel_names.end() ? std::string("?") : it->second];
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x * block.y * block.z == 0 ||
      block.x * block.y * block.z > 1024) {
    last_error = cudaErrorInvalidConfiguration;
    return last_error;
  }
  SpinLaunch();
  return cudaSuccess;
}

// ---- devices, errors
// ------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count) {
  Count("cudaGetDeviceCount");
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  Count("cudaSetDevice");
  return device == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int /*device*/) {
  Count("cudaDeviceGetAttribute");
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *value = 132;
      break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = 232448;
      break;
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      break;
    default:
      *value = 0;
      break;
  }
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* /*func*/, enum cudaFuncAttribute /*attr*/,
                                 int /*value*/) {
  Count("cudaFuncSetAttribute");
  return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
  Count("cudaGetLastError");
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : "error (cuda_host_stub)";
}
const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : "cudaError (cuda_host_stub)";
}

// ---- memory
// ----------------------------------------------------------------------------------------
cudaError_t cudaMalloc(void** p, size_t bytes) {
  Count("cudaMalloc");
  *p = std::calloc(1, bytes == 0 ? 1 : bytes);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  Count("cudaFree");
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  Count("cudaMallocHost");
  *p = std::calloc(1, bytes == 0 ? 1 : bytes);
  if (*p == nullptr) return cudaErrorMemoryAllocation;
  std::lock_guard<std::mutex> lock(C().mu);
  C().pinned.emplace_back(static_cast<const char*>(*p), bytes);
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  Count("cudaFreeHost");
  {
    std::lock_guard<std::mutex> lock(C().mu);
    auto& v = C().pinned;
    v.erase(std::remove_if(v.begin(), v.end(), [&](const auto& r) { return r.first == p; }),
            v.end());
  }
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t /*stream*/) {
  Count("cudaMemcpyAsync");
  {
    std::lock_guard<std::mutex> lock(C().mu);
    if (kind == cudaMemcpyHostToDevice) {
      C().upload_bytes += static_cast<long>(bytes);
      if (!IsPinned(src)) ++C().pageable_uploads;
    } else if (kind == cudaMemcpyDeviceToHost) {
      C().download_bytes += static_cast<long>(bytes);
    }
  }
  if (bytes > 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t /*stream*/) {
  Count("cudaMemsetAsync");
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemset2DAsync(void* p, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t /*stream*/) {
  Count("cudaMemset2DAsync");
  for (size_t r = 0; r < height; ++r) std::memset(static_cast<char*>(p) + r * pitch, value, width);
  return cudaSuccess;
}

// ---- streams, events
// -----------------------------------------------------------------------------
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  Count("cudaStreamCreate");
  *s = reinterpret_cast<cudaStream_t>(new FakeHandle{1});
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned /*flags*/) {
  Count("cudaStreamCreateWithFlags");
  *s = reinterpret_cast<cudaStream_t>(new FakeHandle{1});
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  Count("cudaStreamDestroy");
  delete reinterpret_cast<FakeHandle*>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t /*s*/) {
  Count("cudaStreamSynchronize");
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned /*flags*/) {
  Count("cudaEventCreateWithFlags");
  *e = reinterpret_cast<cudaEvent_t>(new FakeHandle{2});
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  Count("cudaEventDestroy");
  delete reinterpret_cast<FakeHandle*>(e);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t /*e*/, cudaStream_t /*s*/) {
  Count("cudaEventRecord");
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t /*e*/) {
  Count("cudaEventSynchronize");
  return cudaSuccess;
}

// ---- cuBLAS
// ----------------------------------------------------------------------------------------
cublasStatus_t cublasCreate_v2(cublasHandle_t* h) {
  Count("cublasCreate");
  *h = reinterpret_cast<cublasHandle_t>(new FakeHandle{3});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
  Count("cublasDestroy");
  delete reinterpret_cast<FakeHandle*>(h);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t /*h*/, cudaStream_t /*s*/) {
  Count("cublasSetStream");
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t /*h*/, cublasMath_t /*mode*/) {
  Count("cublasSetMathMode");
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusName(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS (cuda_host_stub)";
}
const char* cublasGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "success" : "error (cuda_host_stub)";
}
cublasStatus_t cublasGemmEx(cublasHandle_t /*h*/, cublasOperation_t /*ta*/,
                            cublasOperation_t /*tb*/, int /*m*/, int /*n*/, int /*k*/,
                            const void* /*alpha*/, const void* /*a*/, cudaDataType /*at*/,
                            int /*lda*/, const void* /*b*/, cudaDataType /*bt*/, int /*ldb*/,
                            const void* /*beta*/, void* /*c*/, cudaDataType /*ct*/, int /*ldc*/,
                            cublasComputeType_t /*compute*/, cublasGemmAlgo_t /*algo*/) {
  Count("cublasGemmEx");
  SpinLaunch();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSgemm_v2(cublasHandle_t /*h*/, cublasOperation_t /*ta*/,
                              cublasOperation_t /*tb*/, int /*m*/, int /*n*/, int /*k*/,
                              const float* /*alpha*/, const float* /*a*/, int /*lda*/,
                              const float* /*b*/, int /*ldb*/, const float* /*beta*/, float* /*c*/,
                              int /*ldc*/) {
  Count("cublasSgemm");
  SpinLaunch();
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
