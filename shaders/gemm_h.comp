// gemm_h.comp — portable GEMM, f16 activations and weights, fp32 output (see gemm_tiled.glsl).
#version 450
#define A_F16 1
#define C_F16 0
#include "gemm_tiled.glsl"
