// gemm_cm_hv.comp — cooperative-matrix GEMM, 64x128 tiles (EMBED_VK_BIG_TILE=6),
// f16 in, f16 output (see gemm_coopmat.glsl).
#version 450
#define C_F16 1
#define TILE_M 64
#define TILE_N 128
#include "gemm_coopmat.glsl"
