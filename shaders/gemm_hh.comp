// gemm_hh.comp — portable GEMM, f16 activations, weights and output (see gemm_tiled.glsl).
#version 450
#define A_F16 1
#define C_F16 1
#include "gemm_tiled.glsl"
