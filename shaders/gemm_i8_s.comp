// gemm_i8_s.comp — int8 cooperative-matrix GEMM (see gemm_i8.glsl) for small grids: 64x64
// tiles, one a workgroup, subgroups of 32x32, so that a short batch still gives every SM
// workgroups (forward_vk.c's small_grid, as the f16 products' 64x64 tiles).
#version 450
#define TILE_M 64
#define TILE_N 64
#define WARPS_M 2
#define WARPS_N 2
#define TILES_M 1
#include "gemm_i8.glsl"
