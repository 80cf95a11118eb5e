// gemm_hh_cpu.comp — GEMM for CPU Vulkan implementations, f16 in and out (see gemm_direct.glsl).
#version 450
#define A_F16 1
#define C_F16 1
#include "gemm_direct.glsl"
