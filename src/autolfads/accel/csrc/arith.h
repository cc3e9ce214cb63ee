// Float arithmetic shared by the C++ sources of the extension (gru_loops.cpp, elementwise.cpp).
// fused.py puts a digest of every header in the build flags, so that a change here rebuilds them.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace autolfads {

// exp(x) to ~2 ulp (Cephes expf polynomial); written so that compilers vectorise loops of it.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(float));
  return p * scale;
}
inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }
inline float tanh_(float x) { return 2.0f / (1.0f + fast_exp(-2.0f * x)) - 1.0f; }

}  // namespace autolfads
