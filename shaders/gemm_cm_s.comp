// gemm_cm_s.comp — cooperative-matrix GEMM, 64x64 tiles for small products, f16 in,
// fp32 output (see gemm_coopmat.glsl).
#version 450
#define C_F16 0
#define TILE_M 64
#define TILE_N 64
#include "gemm_coopmat.glsl"
