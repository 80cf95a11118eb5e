// gemm_cm_t.comp — cooperative-matrix GEMM, 32x64 tiles for the smallest products, f16 in,
// fp32 output (see gemm_coopmat.glsl).
#version 450
#define C_F16 0
#define TILE_M 32
#define TILE_N 64
#include "gemm_coopmat.glsl"
