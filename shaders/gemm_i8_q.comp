// gemm_i8_q.comp — int8 cooperative-matrix GEMM (see gemm_i8.glsl) for the FFN's down
// product (N = hidden, a multiple of 128) without outlier channels: two 128x128 tiles a
// workgroup, subgroups of 64x64. Its K (the FFN's width) is four times the others': each
// tile's 16 accumulators then repay the fewer W rows a workgroup fetches (an H100, M =
// 245760: 532 against 571-581 us with 128x96 tiles; the batch 0.7% faster), where qkv and up,
// with K = hidden, were slower so; with outliers (the staged epilogue) the batch was 1.0%
// slower so (docs/bench-gpu.md).
#version 450
#define TILE_M 128
#define TILE_N 128
#define WARPS_M 2
#define WARPS_N 2
#define TILES_M 2
#include "gemm_i8.glsl"
