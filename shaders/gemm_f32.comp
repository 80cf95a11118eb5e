// gemm_f32.comp — portable GEMM, fp32 activations, weights and output (see gemm_tiled.glsl).
#version 450
#define A_F16 0
#define C_F16 0
#include "gemm_tiled.glsl"
