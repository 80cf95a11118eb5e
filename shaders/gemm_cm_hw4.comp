// gemm_cm_hw4.comp — cooperative-matrix GEMM, 128x64 tiles, 4x2 subgroups: the default for
// large products, f16 in, f16 output (see gemm_coopmat.glsl; EMBED_VK_BIG_TILE=4).
#version 450
#define C_F16 1
#define TILE_M 128
#define TILE_N 64
#define WARPS_N 2
#include "gemm_coopmat.glsl"
