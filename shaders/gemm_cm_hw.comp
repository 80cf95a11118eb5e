// gemm_cm_hw.comp — cooperative-matrix GEMM, 128x64 tiles, 2x4 subgroups (EMBED_VK_BIG_TILE=1),
// f16 in, f16 output (see gemm_coopmat.glsl).
#version 450
#define C_F16 1
#define TILE_M 128
#define TILE_N 64
#include "gemm_coopmat.glsl"
