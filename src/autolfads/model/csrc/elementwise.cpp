// Elementwise work of a training step in C++, for float32 CPU tensors: random numbers for the
// dropout and coordinated-dropout masks. Part of the same extension as gru_loops.cpp, which
// registers these functions (`register_elementwise`).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cstdint>

namespace {

void check_contiguous_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.device().is_cpu(), name,
              ": expected a contiguous float32 CPU tensor");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Random numbers for dropout and coordinated-dropout masks: x (contiguous float32) gets uniform
// [0, 1) values, 24 random bits each, from the splitmix64 hash of (seed, element index): parallel,
// vectorised, and the same for a seed whatever the thread count (torch's CPU generator is a
// sequential Mersenne twister, ~9 ns per number here).
void uniform_fill(at::Tensor x, int64_t seed) {
  check_contiguous_float(x, "x");
  float* out = x.data_ptr<float>();
  const uint64_t base = static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ull;
  at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      uint64_t z = base + static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      out[i] = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
    }
  });
}

void register_elementwise(pybind11::module_& m) {
  m.def("uniform_fill", &uniform_fill, "uniform [0, 1) numbers from a seed, in place");
}
