// gemm_cm_wh.comp — cooperative-matrix GEMM (see gemm_coopmat.glsl): large products whose N
// is a multiple of 96, f16 output, no activation. Subgroups of 64x48; the slices go from
// global to shared memory directly, which leaves the registers for the wider tile.
#version 450
#define C_F16 1
#define TILE_M 128
#define TILE_N 96
#define WARPS_M 2
#define WARPS_N 2
#define TILES_M 2
#define PREFETCH 0
#include "gemm_coopmat.glsl"
