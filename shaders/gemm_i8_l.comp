// gemm_i8_l.comp — int8 cooperative-matrix GEMM (see gemm_i8.glsl): products whose N is a
// multiple of 64 (and not of 96), two 128x64 tiles a workgroup, subgroups of 64x32.
#version 450
#define TILE_M 128
#define TILE_N 64
#define WARPS_M 2
#define WARPS_N 2
#define TILES_M 2
#include "gemm_i8.glsl"
