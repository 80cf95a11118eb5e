// gemm_i8_w.comp — int8 cooperative-matrix GEMM (see gemm_i8.glsl): products whose N is a
// multiple of 96, two 128x96 tiles a workgroup, subgroups of 64x48; the activation (if any)
// is specialization constant 0.
#version 450
#define TILE_M 128
#define TILE_N 96
#define WARPS_M 2
#define WARPS_N 2
#define TILES_M 2
#include "gemm_i8.glsl"
